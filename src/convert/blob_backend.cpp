#include "convert/blob_backend.h"

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "convert/mapped_file.h"
#include "storage/s3_backend.h"

namespace nydus::convert {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string hex_of(const std::string& digest) { return digest.starts_with("sha256:") ? digest.substr(7) : digest; }

class ObjectStoreBackend final : public BlobBackend {
 public:
  ObjectStoreBackend(std::shared_ptr<storage::S3Backend> s3, bool force) : s3_(std::move(s3)), force_(force) {}
  std::string type() const override { return s3_->type(); }
  Result<bool> push(const std::string& digest, const fs::path& file) override {
    const std::string id = hex_of(digest);
    if (!force_) {
      NYDUS_ASSIGN_OR_RETURN(bool there, s3_->has_blob(id));
      if (there) return false;
    }
    NYDUS_ASSIGN_OR_RETURN(MappedFile m, MappedFile::open_read(file));
    NYDUS_TRY(s3_->put_blob(id, m.bytes()));
    return true;
  }

 private:
  std::shared_ptr<storage::S3Backend> s3_;
  bool force_;
};

class LocalFsBackend final : public BlobBackend {
 public:
  LocalFsBackend(fs::path dir, bool force) : dir_(std::move(dir)), force_(force) {}
  std::string type() const override { return "localfs"; }
  Result<bool> push(const std::string& digest, const fs::path& file) override {
    const fs::path dst = dir_ / hex_of(digest);
    std::error_code ec;
    if (!force_ && fs::exists(dst, ec)) return false;
    fs::create_directories(dir_, ec);
    if (ec) return sys_error(fmt::format("create directory in localfs backend {}", dir_.string()), ec.value());
    fs::copy_file(file, dst, fs::copy_options::overwrite_existing, ec);
    if (ec) return sys_error(fmt::format("copy blob to {}", dst.string()), ec.value());
    return true;
  }

 private:
  fs::path dir_;
  bool force_;
};

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Result<std::unique_ptr<BlobBackend>> open_blob_backend(const std::string& type, const std::string& config_json,
                                                       bool force_push) {
  json j = json::parse(config_json, nullptr, false);
  if (!j.is_object()) return errorf(Errc::kInvalidArgument, "parse {} storage backend configuration: not a JSON object", type);
  if (type == "localfs") {
    const std::string dir = string_field(j, "dir");
    if (dir.empty()) return errorf(Errc::kInvalidArgument, "create blob backend: no `dir` option is specified");
    return std::unique_ptr<BlobBackend>(new LocalFsBackend(dir, force_push));
  }
  if (type != "s3" && type != "oss") return errorf(Errc::kInvalidArgument, "unsupported backend type {}", type);
  const bool oss = type == "oss";
  if (oss) {
    if (string_field(j, "endpoint").empty() || string_field(j, "bucket_name").empty())
      return errorf(Errc::kInvalidArgument, "create blob backend: no endpoint or bucket is specified");
    // Aliyun's SDK takes an endpoint with or without its scheme.
    std::string ep = string_field(j, "endpoint");
    for (const char* scheme : {"http", "https"})
      if (ep.starts_with(std::string(scheme) + "://")) {
        j["scheme"] = scheme;
        ep.erase(0, std::string(scheme).size() + 3);
      }
    j["endpoint"] = ep;
  } else if (string_field(j, "bucket_name").empty() || string_field(j, "region").empty()) {
    return errorf(Errc::kInvalidArgument, "create blob backend: invalid S3 configuration: missing 'bucket_name' or 'region'");
  }
  NYDUS_ASSIGN_OR_RETURN(storage::S3Config cfg, storage::parse_s3_config(j, oss));
  // A blob upload takes as long as it takes unless the config says otherwise.
  if (!j.contains("timeout")) cfg.timeout = storage::Millis(0);
  NYDUS_ASSIGN_OR_RETURN(std::shared_ptr<storage::S3Backend> s3, storage::S3Backend::create(std::move(cfg)));
  return std::unique_ptr<BlobBackend>(new ObjectStoreBackend(std::move(s3), force_push));
}

}  // namespace nydus::convert
