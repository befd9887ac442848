#include "tools/nydus_image/backend_fetch.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "format/bootstrap.h"
#include "storage/backend.h"
#include "common/io.h"

namespace nydus::tools {

namespace fs = std::filesystem;

ScratchBlobs::~ScratchBlobs() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

namespace {

Status copy_blob(storage::Backend& backend, const std::string& id, const fs::path& to) {
  NYDUS_ASSIGN_OR_RETURN(uint64_t size, backend.blob_size(id));
  const int fd = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("create " + to.string());
  std::vector<uint8_t> buf(4u << 20);
  Status st = ok();
  for (uint64_t off = 0; off < size && st;) {
    const size_t n = size_t(std::min<uint64_t>(buf.size(), size - off));
    st = backend.read(id, off, std::span(buf.data(), n));
    if (st) st = write_full(fd, std::span(buf.data(), n), "write " + to.string());
    off += n;
  }
  if (::close(fd) != 0 && st) st = sys_error("close " + to.string());
  if (!st) return std::unexpected(std::move(st).error().context("blob " + id));
  return ok();
}

}  // namespace

Result<std::unique_ptr<ScratchBlobs>> fetch_blobs_from_backend(const std::string& bootstrap, const std::string& type,
                                                               const std::string& config,
                                                               const std::string& config_file) {
  if (type == "localfs") return make_error(Errc::kInvalidArgument, "Use --blob-dir to specify localfs backend");
  std::string text = config;
  if (!config_file.empty()) {
    std::ifstream f(config_file);
    if (!f) return errorf(Errc::kInvalidArgument, "fail to read backend config file {}", config_file);
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  if (text.empty()) return make_error(Errc::kInvalidArgument, "--backend-config or --backend-config-file must be specified");
  auto cfg = nlohmann::json::parse(text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) return make_error(Errc::kInvalidArgument, "backend config is not a JSON object");
  NYDUS_ASSIGN_OR_RETURN(auto backend, storage::make_backend(nlohmann::json{{"type", type}, {"config", cfg}}));
  NYDUS_ASSIGN_OR_RETURN(auto boot, format::Bootstrap::open(bootstrap));

  std::string tmpl = (fs::temp_directory_path() / "nydus-unpack-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return sys_error("mkdtemp");
  auto scratch = std::make_unique<ScratchBlobs>(tmpl);
  for (const auto& b : boot->blobs()) {
    const std::string& id = b.blob_id;
    if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..")
      return errorf(Errc::kCorrupt, "blob id '{}' is not usable as a name", id);
    if (fs::exists(fs::path(tmpl) / id)) continue;
    NYDUS_TRY(copy_blob(*backend, id, fs::path(tmpl) / id));
  }
  return scratch;
}

}  // namespace nydus::tools
