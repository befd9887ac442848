#include "daemon/config.h"

#include <fstream>
#include <sstream>

namespace nydus::daemon {

namespace {

using nlohmann::json;

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
  if (v > 1024) return errorf(Errc::kInvalidArgument, "config: \"{}\" = {} is too large", where, v);
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

Status check_mode(const std::string& mode) {
  if (mode != "direct" && mode != "cached")
    return errorf(Errc::kInvalidArgument, "config: \"mode\" must be \"direct\" or \"cached\", got \"{}\"", mode);
  return ok();
}

Status parse_cache_type(DaemonConfig& c) {
  if (c.cache_type == "none") c.cache_type.clear();
  if (!c.cache_type.empty() && c.cache_type != "blobcache" && c.cache_type != "filecache" &&
      c.cache_type != "fscache")
    return errorf(Errc::kUnsupported, "config: cache type \"{}\" is not supported (blobcache/filecache)",
                  c.cache_type);
  return ok();
}

Result<DaemonConfig> parse_v1(const json& root) {
  DaemonConfig c;
  NYDUS_ASSIGN_OR_RETURN(const json* device, get_object(root, "device", "device"));
  if (!device) return errorf(Errc::kInvalidArgument, "config: missing \"device\"");
  NYDUS_ASSIGN_OR_RETURN(const json* backend, get_object(*device, "backend", "device.backend"));
  if (!backend) return errorf(Errc::kInvalidArgument, "config: missing \"device.backend\"");
  c.backend = *backend;
  NYDUS_ASSIGN_OR_RETURN(const json* cache, get_object(*device, "cache", "device.cache"));
  if (cache) {
    NYDUS_TRY(get_string(*cache, "type", "device.cache.type", c.cache_type));
    NYDUS_ASSIGN_OR_RETURN(const json* cc, get_object(*cache, "config", "device.cache.config"));
    if (cc) {
      std::string wd;
      NYDUS_TRY(get_string(*cc, "work_dir", "device.cache.config.work_dir", wd));
      c.work_dir = wd;
    }
  }
  NYDUS_TRY(parse_cache_type(c));
  NYDUS_TRY(get_string(root, "mode", "mode", c.mode));
  NYDUS_TRY(check_mode(c.mode));
  NYDUS_TRY(get_bool(root, "digest_validate", "digest_validate", c.digest_validate));
  NYDUS_TRY(get_bool(root, "iostats_files", "iostats_files", c.iostats_files));
  NYDUS_TRY(get_bool(root, "enable_xattr", "enable_xattr", c.enable_xattr));
  NYDUS_TRY(get_u64(root, "amplify_io", "amplify_io", c.amplify_io));
  NYDUS_ASSIGN_OR_RETURN(const json* pf, get_object(root, "fs_prefetch", "fs_prefetch"));
  if (pf) {
    NYDUS_TRY(get_bool(*pf, "enable", "fs_prefetch.enable", c.prefetch.enable));
    NYDUS_TRY(get_unsigned(*pf, "threads_count", "fs_prefetch.threads_count", c.prefetch.threads_count));
    NYDUS_TRY(get_u64(*pf, "merging_size", "fs_prefetch.merging_size", c.prefetch.merging_size));
    NYDUS_TRY(get_u64(*pf, "bandwidth_rate", "fs_prefetch.bandwidth_rate", c.prefetch.bandwidth_rate));
    NYDUS_TRY(get_bool(*pf, "prefetch_all", "fs_prefetch.prefetch_all", c.prefetch.prefetch_all));
  }
  return c;
}

Status parse_v2_prefetch(const json& pf, const std::string& where, PrefetchConfig& p) {
  NYDUS_TRY(get_bool(pf, "enable", where + ".enable", p.enable));
  NYDUS_TRY(get_unsigned(pf, "threads_count", where + ".threads_count", p.threads_count));
  NYDUS_TRY(get_unsigned(pf, "threads", where + ".threads", p.threads_count));
  NYDUS_TRY(get_u64(pf, "batch_size", where + ".batch_size", p.merging_size));
  NYDUS_TRY(get_u64(pf, "bandwidth_limit", where + ".bandwidth_limit", p.bandwidth_rate));
  NYDUS_TRY(get_u64(pf, "bandwidth_rate", where + ".bandwidth_rate", p.bandwidth_rate));
  NYDUS_TRY(get_bool(pf, "prefetch_all", where + ".prefetch_all", p.prefetch_all));
  return ok();
}

Result<DaemonConfig> parse_v2(const json& root) {
  DaemonConfig c;
  NYDUS_ASSIGN_OR_RETURN(const json* backend, get_object(root, "backend", "backend"));
  if (!backend) return errorf(Errc::kInvalidArgument, "config: missing \"backend\"");
  std::string type;
  NYDUS_TRY(get_string(*backend, "type", "backend.type", type));
  if (type.empty()) return errorf(Errc::kInvalidArgument, "config: missing \"backend.type\"");
  // v2 keeps each backend's settings under its type name; make_backend wants v1's shape.
  NYDUS_ASSIGN_OR_RETURN(const json* bc, get_object(*backend, type.c_str(), "backend." + type));
  c.backend = json{{"type", type}, {"config", bc ? *bc : json::object()}};

  NYDUS_ASSIGN_OR_RETURN(const json* cache, get_object(root, "cache", "cache"));
  if (cache) {
    NYDUS_TRY(get_string(*cache, "type", "cache.type", c.cache_type));
    if (!c.cache_type.empty()) {
      NYDUS_ASSIGN_OR_RETURN(const json* cc, get_object(*cache, c.cache_type.c_str(), "cache." + c.cache_type));
      if (cc) {
        std::string wd;
        NYDUS_TRY(get_string(*cc, "work_dir", "cache." + c.cache_type + ".work_dir", wd));
        c.work_dir = wd;
      }
    }
  }
  NYDUS_TRY(parse_cache_type(c));
  if (cache) {
    // Blob-level settings (the shape of upstream's CacheConfigV2, which the
    // fscache blob API sends): digest validation and blob prefetch.
    NYDUS_TRY(get_bool(*cache, "validate", "cache.validate", c.digest_validate));
    NYDUS_ASSIGN_OR_RETURN(const json* pf, get_object(*cache, "prefetch", "cache.prefetch"));
    if (pf) NYDUS_TRY(parse_v2_prefetch(*pf, "cache.prefetch", c.prefetch));
  }
  NYDUS_ASSIGN_OR_RETURN(const json* rafs, get_object(root, "rafs", "rafs"));
  if (rafs) {
    NYDUS_TRY(get_string(*rafs, "mode", "rafs.mode", c.mode));
    NYDUS_TRY(check_mode(c.mode));
    NYDUS_TRY(get_bool(*rafs, "validate", "rafs.validate", c.digest_validate));
    NYDUS_TRY(get_bool(*rafs, "iostats_files", "rafs.iostats_files", c.iostats_files));
    NYDUS_TRY(get_bool(*rafs, "enable_xattr", "rafs.enable_xattr", c.enable_xattr));
    NYDUS_TRY(get_u64(*rafs, "batch_size", "rafs.batch_size", c.amplify_io));
    NYDUS_ASSIGN_OR_RETURN(const json* pf, get_object(*rafs, "prefetch", "rafs.prefetch"));
    if (pf) NYDUS_TRY(parse_v2_prefetch(*pf, "rafs.prefetch", c.prefetch));
  }
  return c;
}

}  // namespace

Result<DaemonConfig> parse_config(std::string_view text) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return errorf(Errc::kInvalidArgument, "config: not valid JSON");
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
  std::ifstream in(path);
  if (!in) return sys_error(fmt::format("open config {}", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = parse_config(ss.str());
  if (!c) return std::unexpected(std::move(c).error().context(path.string()));
  return c;
}

}  // namespace nydus::daemon
