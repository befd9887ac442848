#include "runtime/config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace nydus::runtime {

namespace {

using nlohmann::json;

constexpr uintmax_t kMaxConfigFile = 1 << 20;  // upstream refuses bigger files

std::unexpected<Error> bad(std::string_view where, std::string_view want, const json& got) {
  return errorf(Errc::kInvalidArgument, "config: \"{}\" must be {}, got {}", where, want, got.type_name());
}

// Optional member readers: absent or null keeps the default.
Status get_bool(const json& obj, const char* key, std::string_view where, bool& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return ok();
  if (!it->is_boolean()) return bad(where, "a boolean", *it);
  out = it->get<bool>();
  return ok();
}

bool has_value(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && !it->is_null();
}

Status get_u64(const json& obj, const char* key, std::string_view where, uint64_t& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return ok();
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
    return bad(where, "a non-negative integer", *it);
  out = it->get<uint64_t>();
  return ok();
}

Status get_unsigned(const json& obj, const char* key, std::string_view where, unsigned& out) {
  uint64_t v = out;
  NYDUS_TRY(get_u64(obj, key, where, v));
  if (v > 1024) return errorf(Errc::kInvalidArgument, "config: \"{}\" = {} is too large (at most 1024)", where, v);
  out = unsigned(v);
  return ok();
}

Status get_string(const json& obj, const char* key, std::string_view where, std::string& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return ok();
  if (!it->is_string()) return bad(where, "a string", *it);
  out = it->get<std::string>();
  return ok();
}

Result<const json*> get_object(const json& obj, const char* key, std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  if (!it->is_object()) return bad(where, "an object", *it);
  return &*it;
}

Status check_mode(const std::string& mode, std::string_view where) {
  if (mode != "direct" && mode != "cached")
    return errorf(Errc::kInvalidArgument, "config: \"{}\" must be \"direct\" or \"cached\", got \"{}\"", where, mode);
  return ok();
}

bool is_file_cache(const std::string& t) { return t == "blobcache" || t == "filecache"; }

Status check_cache_type(std::string& t, std::string_view where) {
  if (t == "none") t.clear();  // accepted by earlier versions of this daemon
  if (!t.empty() && !is_file_cache(t) && t != "fscache" && t != "dummycache")
    return errorf(Errc::kUnsupported,
                  "config: \"{}\" = \"{}\" is not a cache type (blobcache, filecache, fscache, dummycache or \"\")",
                  where, t);
  return ok();
}

// The filecache section (v2 `cache.filecache`, v1 `device.cache.config` of a
// blobcache/filecache): work_dir defaults to "." as upstream's does.
Status parse_filecache(const json& fc, const std::string& where, DaemonConfig& c) {
  std::string wd = ".";
  NYDUS_TRY(get_string(fc, "work_dir", where + ".work_dir", wd));
  if (wd.empty()) return errorf(Errc::kInvalidArgument, "config: \"{}.work_dir\" is empty", where);
  c.work_dir = wd;
  bool unused = false;
  NYDUS_TRY(get_bool(fc, "disable_indexed_map", where + ".disable_indexed_map", unused));
  NYDUS_TRY(get_bool(fc, "enable_convergent_encryption", where + ".enable_convergent_encryption", unused));
  std::string key;
  NYDUS_TRY(get_string(fc, "encryption_key", where + ".encryption_key", key));
  bool encrypt = false;
  NYDUS_TRY(get_bool(fc, "enable_encryption", where + ".enable_encryption", encrypt));
  // Refused rather than ignored: ignoring it would leave data in plain text
  // where the user asked for it to be encrypted.
  if (encrypt)
    return errorf(Errc::kUnsupported, "config: \"{}.enable_encryption\": cache encryption is not supported", where);
  return ok();
}

// The fscache section: work_dir, upstream default "."; here an absent
// work_dir leaves the choice to the daemon (its --fscache dir).
Status parse_fscache(const json& fc, const std::string& where, DaemonConfig& c) {
  std::string wd;
  NYDUS_TRY(get_string(fc, "work_dir", where + ".work_dir", wd));
  c.work_dir = wd;
  return ok();
}

// v2 `prefetch` (rafs or cache): upstream's PrefetchConfigV2 defaults.
Status parse_v2_prefetch(const json& pf, const std::string& where, PrefetchConfig& p) {
  p = PrefetchConfig{};
  NYDUS_TRY(get_bool(pf, "enable", where + ".enable", p.enable));
  NYDUS_TRY(get_unsigned(pf, "threads", where + ".threads", p.threads_count));
  NYDUS_TRY(get_unsigned(pf, "threads_count", where + ".threads_count", p.threads_count));  // v1 spelling
  NYDUS_TRY(get_u64(pf, "batch_size", where + ".batch_size", p.merging_size));
  NYDUS_TRY(get_u64(pf, "merging_size", where + ".merging_size", p.merging_size));  // v1 spelling
  NYDUS_TRY(get_u64(pf, "bandwidth_limit", where + ".bandwidth_limit", p.bandwidth_rate));
  NYDUS_TRY(get_u64(pf, "bandwidth_rate", where + ".bandwidth_rate", p.bandwidth_rate));  // v1 spelling
  NYDUS_TRY(get_bool(pf, "prefetch_all", where + ".prefetch_all", p.prefetch_all));
  bool unused = false;
  NYDUS_TRY(get_bool(pf, "stream_prefetch", where + ".stream_prefetch", unused));
  return ok();
}

// Upstream's validate(): an enabled prefetch needs 1..1024 threads and a
// batch of at most 0x10000000 bytes.
Status check_prefetch(const PrefetchConfig& p, std::string_view where) {
  if (!p.enable) return ok();
  if (p.threads_count == 0)
    return errorf(Errc::kInvalidArgument, "config: \"{}\": an enabled prefetch needs 1 to 1024 threads", where);
  if (p.merging_size > kMaxBatchSize)
    return errorf(Errc::kInvalidArgument, "config: \"{}\": batch size {} exceeds {}", where, p.merging_size,
                  kMaxBatchSize);
  return ok();
}

Status check_batch(uint64_t v, std::string_view where) {
  if (v > kMaxBatchSize)
    return errorf(Errc::kInvalidArgument, "config: \"{}\" = {} exceeds {}", where, v, kMaxBatchSize);
  return ok();
}

Result<DaemonConfig> parse_v1(const json& root) {
  DaemonConfig c;
  NYDUS_ASSIGN_OR_RETURN(const json* device, get_object(root, "device", "device"));
  if (!device) return errorf(Errc::kInvalidArgument, "config: missing \"device\"");
  NYDUS_TRY(get_string(*device, "id", "device.id", c.id));
  NYDUS_ASSIGN_OR_RETURN(const json* backend, get_object(*device, "backend", "device.backend"));
  if (!backend) return errorf(Errc::kInvalidArgument, "config: missing \"device.backend\"");
  c.backend = *backend;
  NYDUS_ASSIGN_OR_RETURN(const json* cache, get_object(*device, "cache", "device.cache"));
  bool cache_validate = false;
  if (cache) {
    NYDUS_TRY(get_string(*cache, "type", "device.cache.type", c.cache_type));
    NYDUS_TRY(check_cache_type(c.cache_type, "device.cache.type"));
    bool unused = false;
    NYDUS_TRY(get_bool(*cache, "compressed", "device.cache.compressed", unused));
    NYDUS_TRY(get_bool(*cache, "validate", "device.cache.validate", cache_validate));
    NYDUS_ASSIGN_OR_RETURN(const json* cc, get_object(*cache, "config", "device.cache.config"));
    // Upstream refuses a file/fs cache without "config"; we let the daemon pick a dir.
    if (cc && is_file_cache(c.cache_type)) NYDUS_TRY(parse_filecache(*cc, "device.cache.config", c));
    if (cc && c.cache_type == "fscache") NYDUS_TRY(parse_fscache(*cc, "device.cache.config", c));
  }
  NYDUS_TRY(get_string(root, "mode", "mode", c.mode));
  NYDUS_TRY(check_mode(c.mode, "mode"));
  NYDUS_TRY(get_bool(root, "digest_validate", "digest_validate", c.digest_validate));
  c.digest_validate = c.digest_validate || cache_validate;
  NYDUS_TRY(get_bool(root, "iostats_files", "iostats_files", c.iostats_files));
  NYDUS_TRY(get_bool(root, "enable_xattr", "enable_xattr", c.enable_xattr));
  NYDUS_TRY(get_bool(root, "access_pattern", "access_pattern", c.access_pattern));
  NYDUS_TRY(get_bool(root, "latest_read_files", "latest_read_files", c.latest_read_files));
  NYDUS_TRY(get_u64(root, "amplify_io", "amplify_io", c.amplify_io));
  NYDUS_TRY(check_batch(c.amplify_io, "amplify_io"));
  c.amplify_io_set = has_value(root, "amplify_io");
  NYDUS_ASSIGN_OR_RETURN(const json* pf, get_object(root, "fs_prefetch", "fs_prefetch"));
  if (pf) {
    // v1's FsPrefetchControl: threads 8, merging 1 MiB and prefetch_all true
    // unless given.
    c.prefetch.prefetch_all = true;
    NYDUS_TRY(get_bool(*pf, "enable", "fs_prefetch.enable", c.prefetch.enable));
    NYDUS_TRY(get_unsigned(*pf, "threads_count", "fs_prefetch.threads_count", c.prefetch.threads_count));
    NYDUS_TRY(get_u64(*pf, "merging_size", "fs_prefetch.merging_size", c.prefetch.merging_size));
    NYDUS_TRY(get_u64(*pf, "bandwidth_rate", "fs_prefetch.bandwidth_rate", c.prefetch.bandwidth_rate));
    NYDUS_TRY(get_bool(*pf, "prefetch_all", "fs_prefetch.prefetch_all", c.prefetch.prefetch_all));
    bool unused = false;
    NYDUS_TRY(get_bool(*pf, "stream_prefetch", "fs_prefetch.stream_prefetch", unused));
    NYDUS_TRY(check_prefetch(c.prefetch, "fs_prefetch"));
  }
  return c;
}

Result<DaemonConfig> parse_v2(const json& root) {
  DaemonConfig c;
  NYDUS_TRY(get_string(root, "id", "id", c.id));
  NYDUS_ASSIGN_OR_RETURN(const json* backend, get_object(root, "backend", "backend"));
  if (!backend) return errorf(Errc::kInvalidArgument, "config: missing \"backend\"");
  std::string type;
  NYDUS_TRY(get_string(*backend, "type", "backend.type", type));
  if (type.empty()) return errorf(Errc::kInvalidArgument, "config: missing \"backend.type\"");
  // v2 keeps each backend's settings under its type name ("http-proxy"
  // included); make_backend wants v1's shape.
  NYDUS_ASSIGN_OR_RETURN(const json* bc, get_object(*backend, type.c_str(), "backend." + type));
  c.backend = json{{"type", type}, {"config", bc ? *bc : json::object()}};

  NYDUS_ASSIGN_OR_RETURN(const json* cache, get_object(root, "cache", "cache"));
  PrefetchConfig cache_prefetch;
  if (cache) {
    NYDUS_TRY(get_string(*cache, "type", "cache.type", c.cache_type));
    NYDUS_TRY(check_cache_type(c.cache_type, "cache.type"));
    // Upstream reads `filecache` for both "blobcache" and "filecache".
    if (is_file_cache(c.cache_type)) {
      NYDUS_ASSIGN_OR_RETURN(const json* fc, get_object(*cache, "filecache", "cache.filecache"));
      if (fc) NYDUS_TRY(parse_filecache(*fc, "cache.filecache", c));
    } else if (c.cache_type == "fscache") {
      NYDUS_ASSIGN_OR_RETURN(const json* fc, get_object(*cache, "fscache", "cache.fscache"));
      if (fc) NYDUS_TRY(parse_fscache(*fc, "cache.fscache", c));
    }
    bool unused = false;
    NYDUS_TRY(get_bool(*cache, "compressed", "cache.compressed", unused));
    NYDUS_TRY(get_bool(*cache, "validate", "cache.validate", c.digest_validate));
    NYDUS_ASSIGN_OR_RETURN(const json* pf, get_object(*cache, "prefetch", "cache.prefetch"));
    if (pf) {
      NYDUS_TRY(parse_v2_prefetch(*pf, "cache.prefetch", cache_prefetch));
      NYDUS_TRY(check_prefetch(cache_prefetch, "cache.prefetch"));
    }
  }
  NYDUS_ASSIGN_OR_RETURN(const json* rafs, get_object(root, "rafs", "rafs"));
  PrefetchConfig rafs_prefetch;
  if (rafs) {
    NYDUS_TRY(get_string(*rafs, "mode", "rafs.mode", c.mode));
    NYDUS_TRY(check_mode(c.mode, "rafs.mode"));
    bool validate = false;
    NYDUS_TRY(get_bool(*rafs, "validate", "rafs.validate", validate));
    c.digest_validate = c.digest_validate || validate;  // upstream: cache.validate || rafs.validate
    NYDUS_TRY(get_bool(*rafs, "iostats_files", "rafs.iostats_files", c.iostats_files));
    NYDUS_TRY(get_bool(*rafs, "enable_xattr", "rafs.enable_xattr", c.enable_xattr));
    NYDUS_TRY(get_bool(*rafs, "access_pattern", "rafs.access_pattern", c.access_pattern));
    NYDUS_TRY(get_bool(*rafs, "latest_read_files", "rafs.latest_read_files", c.latest_read_files));
    NYDUS_TRY(get_u64(*rafs, "batch_size", "rafs.batch_size", c.amplify_io));
    NYDUS_TRY(check_batch(c.amplify_io, "rafs.batch_size"));
    c.amplify_io_set = c.amplify_io_set || has_value(*rafs, "batch_size");
    NYDUS_ASSIGN_OR_RETURN(const json* pf, get_object(*rafs, "prefetch", "rafs.prefetch"));
    if (pf) {
      NYDUS_TRY(parse_v2_prefetch(*pf, "rafs.prefetch", rafs_prefetch));
      NYDUS_TRY(check_prefetch(rafs_prefetch, "rafs.prefetch"));
    }
  }
  // Filesystem prefetch follows rafs.prefetch; without it (a blob entry has
  // no rafs section) the cache's blob-level prefetch.
  c.prefetch = rafs_prefetch.enable ? rafs_prefetch : cache_prefetch;
  return c;
}

}  // namespace

Result<DaemonConfig> parse_config(std::string_view text) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    // Upstream also reads TOML (ConfigV2::from_str); we do not.
    const bool toml = text.find("version = 2") != std::string_view::npos || text.find("\n[") != std::string_view::npos;
    if (toml) return errorf(Errc::kUnsupported, "config: TOML configuration files are not supported, use JSON");
    return errorf(Errc::kInvalidArgument, "config: not valid JSON");
  }
  if (!root.is_object()) return errorf(Errc::kInvalidArgument, "config: top level must be an object");
  auto ver = root.find("version");
  if (ver != root.end() && !ver->is_null()) {
    if (!ver->is_number_integer()) return bad("version", "an integer", *ver);
    const int64_t v = ver->get<int64_t>();
    if (v == 2) return parse_v2(root);
    if (v != 1) return errorf(Errc::kUnsupported, "config: version {} is not supported (1 or 2)", v);
  }
  return parse_v1(root);
}

Result<DaemonConfig> load_config(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxConfigFile)
    return errorf(Errc::kInvalidArgument, "{}: configuration file is larger than 1 MiB", path.string());
  std::ifstream in(path);
  if (!in) return sys_error(fmt::format("open config {}", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = parse_config(ss.str());
  if (!c) return std::unexpected(std::move(c).error().context(path.string()));
  // Upstream nydusd (main.rs) replaces the registry auth of the --config file
  // with IMAGE_PULL_AUTH when the variable is set, even to "".
  const auto type = c->backend.find("type");
  const bool registry = type != c->backend.end() && type->is_string() && type->get<std::string>() == "registry";
  if (const char* auth = std::getenv("IMAGE_PULL_AUTH"); auth && registry) {
    if (!c->backend.contains("config") || !c->backend["config"].is_object()) c->backend["config"] = json::object();
    c->backend["config"]["auth"] = auth;
  }
  return c;
}

}  // namespace nydus::runtime
