#include "storage/backend.h"

#include <nlohmann/json.hpp>

#include "storage/http_proxy_backend.h"
#include "storage/localdisk_backend.h"
#include "storage/localfs_backend.h"
#include "storage/registry_backend.h"
#include "storage/s3_backend.h"

namespace nydus::storage {

namespace {

// Optional string member; a present member of another type is an error.
Result<std::string> opt_string(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be a string", key);
  return it->get<std::string>();
}

Result<std::shared_ptr<Backend>> make_localfs(const nlohmann::json& config) {
  LocalFsConfig cfg;
  NYDUS_ASSIGN_OR_RETURN(std::string dir, opt_string(config, "dir"));
  NYDUS_ASSIGN_OR_RETURN(std::string blob_file, opt_string(config, "blob_file"));
  cfg.dir = dir;
  cfg.blob_file = blob_file;
  if (auto it = config.find("alt_dirs"); it != config.end() && !it->is_null()) {
    if (!it->is_array()) return errorf(Errc::kInvalidArgument, "backend config \"alt_dirs\" must be a list");
    for (const auto& d : *it) {
      if (!d.is_string()) return errorf(Errc::kInvalidArgument, "backend config \"alt_dirs\" entries must be strings");
      cfg.alt_dirs.emplace_back(d.get<std::string>());
    }
  }
  NYDUS_ASSIGN_OR_RETURN(auto b, LocalFsBackend::create(std::move(cfg)));
  return std::shared_ptr<Backend>(std::move(b));
}

}  // namespace

Result<std::shared_ptr<Backend>> make_backend(const nlohmann::json& backend) {
  if (!backend.is_object()) return errorf(Errc::kInvalidArgument, "backend config must be a JSON object");
  // A missing type means localfs (`{"config": {"blob_file": ...}}`).
  NYDUS_ASSIGN_OR_RETURN(std::string type, opt_string(backend, "type"));
  if (type.empty()) type = "localfs";
  static const nlohmann::json kEmpty = nlohmann::json::object();
  const nlohmann::json* config = &kEmpty;
  if (auto it = backend.find("config"); it != backend.end() && !it->is_null()) {
    if (!it->is_object()) return errorf(Errc::kInvalidArgument, "backend \"config\" must be a JSON object");
    config = &*it;
  }
  if (type == "localfs") return make_localfs(*config);
  if (type == "registry") {
    NYDUS_ASSIGN_OR_RETURN(auto cfg, parse_registry_config(*config));
    NYDUS_ASSIGN_OR_RETURN(auto b, RegistryBackend::create(std::move(cfg)));
    return std::shared_ptr<Backend>(std::move(b));
  }
  if (type == "s3" || type == "oss") {
    NYDUS_ASSIGN_OR_RETURN(auto cfg, parse_s3_config(*config, type == "oss"));
    NYDUS_ASSIGN_OR_RETURN(auto b, S3Backend::create(std::move(cfg)));
    return std::shared_ptr<Backend>(std::move(b));
  }
  if (type == "http-proxy") {
    NYDUS_ASSIGN_OR_RETURN(auto cfg, parse_http_proxy_config(*config));
    NYDUS_ASSIGN_OR_RETURN(auto b, HttpProxyBackend::create(std::move(cfg)));
    return std::shared_ptr<Backend>(std::move(b));
  }
  if (type == "localdisk") {
    NYDUS_ASSIGN_OR_RETURN(auto cfg, parse_localdisk_config(*config));
    NYDUS_ASSIGN_OR_RETURN(auto b, LocalDiskBackend::create(std::move(cfg)));
    return std::shared_ptr<Backend>(std::move(b));
  }
  return errorf(Errc::kUnsupported,
                "backend type '{}' is not supported (supported: localfs, localdisk, registry, s3, oss, http-proxy)",
                type);
}

}  // namespace nydus::storage
