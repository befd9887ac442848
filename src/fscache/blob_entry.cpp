#include "fscache/blob_entry.h"

namespace nydus::fscache {

using nlohmann::json;

namespace {

Result<std::string> string_field(const json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return errorf(Errc::kInvalidArgument, "blob entry: \"{}\" is required", key);
    return std::string();
  }
  if (!it->is_string()) return errorf(Errc::kInvalidArgument, "blob entry: \"{}\" must be a string", key);
  return it->get<std::string>();
}

// Ids end up in mount options (split at ','), in keys (split at '/') and in
// the kernel's cache file names, which are "D<id>" only for printable ids.
Status check_id(std::string_view what, std::string_view id, bool may_be_empty) {
  if (id.empty() && !may_be_empty) return errorf(Errc::kInvalidArgument, "blob entry: empty {}", what);
  if (id.size() > 240) return errorf(Errc::kInvalidArgument, "blob entry: {} longer than 240 bytes", what);
  for (char c : id)
    if (c == '/' || c == ',' || uint8_t(c) <= 0x20 || uint8_t(c) >= 0x7f)
      return errorf(Errc::kInvalidArgument, "blob entry: {} \"{}\" holds a character not allowed in an id", what,
                    id);
  return ok();
}

// The legacy shape, turned into the v1 daemon config it mirrors.
Result<json> legacy_to_v1(const json& c) {
  NYDUS_ASSIGN_OR_RETURN(std::string backend_type, string_field(c, "backend_type", true));
  NYDUS_ASSIGN_OR_RETURN(std::string cache_type, string_field(c, "cache_type", false));
  json v1{{"device", {{"backend", {{"type", backend_type}, {"config", c.value("backend_config", json::object())}}},
                      {"cache", {{"type", cache_type}, {"config", c.value("cache_config", json::object())}}}}}};
  if (auto p = c.find("prefetch_config"); p != c.end() && !p->is_null()) v1["fs_prefetch"] = *p;
  return v1;
}

}  // namespace

std::string blob_key(std::string_view domain_id, std::string_view id) {
  if (domain_id.empty()) return std::string(id);
  return fmt::format("{}/{}", domain_id, id);
}

Result<BlobEntry> parse_blob_entry(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return errorf(Errc::kInvalidArgument, "blob entry: request body is not valid JSON");
  return blob_entry_from_json(j);
}

Result<BlobEntry> blob_entry_from_json(const json& j) {
  if (!j.is_object()) return errorf(Errc::kInvalidArgument, "blob entry: must be a JSON object");
  BlobEntry e;
  e.raw = j;
  NYDUS_ASSIGN_OR_RETURN(e.type, string_field(j, "type", true));
  if (e.type == "datablob")
    return errorf(Errc::kInvalidArgument, "blob entry: data blobs are registered through their bootstrap");
  if (e.type != "bootstrap") return errorf(Errc::kInvalidArgument, "blob entry: unknown type \"{}\"", e.type);
  NYDUS_ASSIGN_OR_RETURN(e.id, string_field(j, "id", true));
  NYDUS_ASSIGN_OR_RETURN(e.domain_id, string_field(j, "domain_id", false));
  NYDUS_TRY(check_id("id", e.id, false));
  NYDUS_TRY(check_id("domain_id", e.domain_id, true));

  const json* cfg = nullptr;
  json v1;
  if (auto v2 = j.find("config_v2"); v2 != j.end() && !v2->is_null()) {
    if (!v2->is_object()) return errorf(Errc::kInvalidArgument, "blob entry: \"config_v2\" must be an object");
    cfg = &*v2;
    auto ver = cfg->find("version");
    if (ver == cfg->end() || !ver->is_number_integer() || ver->get<int64_t>() != 2)
      return errorf(Errc::kInvalidArgument, "blob entry: \"config_v2.version\" must be 2");
    NYDUS_ASSIGN_OR_RETURN(e.config, runtime::parse_config(cfg->dump()));
  } else if (auto legacy = j.find("config"); legacy != j.end() && !legacy->is_null()) {
    if (!legacy->is_object()) return errorf(Errc::kInvalidArgument, "blob entry: \"config\" must be an object");
    cfg = &*legacy;
    NYDUS_ASSIGN_OR_RETURN(v1, legacy_to_v1(*cfg));
    NYDUS_ASSIGN_OR_RETURN(e.config, runtime::parse_config(v1.dump()));
  } else {
    return errorf(Errc::kInvalidArgument, "blob entry: \"config_v2\" (or legacy \"config\") is required");
  }
  NYDUS_ASSIGN_OR_RETURN(std::string meta, string_field(*cfg, "metadata_path", false));
  if (meta.empty()) return errorf(Errc::kInvalidArgument, "blob entry: \"metadata_path\" of the bootstrap is required");
  e.metadata_path = meta;
  return e;
}

}  // namespace nydus::fscache
