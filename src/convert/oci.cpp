#include "convert/oci.h"

#include "format/digest.h"

namespace nydus::convert {

using nlohmann::json;

namespace {

Result<std::string> str_field(const json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return errorf(Errc::kCorrupt, "\"{}\" is missing", key);
    return std::string();
  }
  if (!it->is_string()) return errorf(Errc::kCorrupt, "\"{}\" is not a string", key);
  return it->get<std::string>();
}

json parse_json(std::string_view bytes) { return json::parse(bytes, nullptr, /*allow_exceptions=*/false); }

}  // namespace

bool valid_digest(std::string_view d) {
  if (!d.starts_with("sha256:") || d.size() != 7 + 64) return false;
  for (char c : d.substr(7))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string sha256_digest(std::string_view data) {
  auto d = format::sha256({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  return "sha256:" + format::to_hex(d);
}

Result<Descriptor> parse_descriptor(const json& j) {
  if (!j.is_object()) return errorf(Errc::kCorrupt, "descriptor is not an object");
  Descriptor d;
  NYDUS_ASSIGN_OR_RETURN(d.media_type, str_field(j, "mediaType", false));
  NYDUS_ASSIGN_OR_RETURN(d.digest, str_field(j, "digest", true));
  if (!valid_digest(d.digest)) return errorf(Errc::kCorrupt, "digest \"{}\" is not sha256:<64 hex>", d.digest);
  auto size = j.find("size");
  if (size == j.end() || !size->is_number_unsigned()) return errorf(Errc::kCorrupt, "descriptor size is missing");
  d.size = size->get<uint64_t>();
  if (auto a = j.find("annotations"); a != j.end() && a->is_object())
    for (const auto& [k, v] : a->items())
      if (v.is_string()) d.annotations[k] = v.get<std::string>();
  if (auto p = j.find("platform"); p != j.end() && p->is_object()) {
    Platform pl;
    NYDUS_ASSIGN_OR_RETURN(pl.os, str_field(*p, "os", false));
    NYDUS_ASSIGN_OR_RETURN(pl.architecture, str_field(*p, "architecture", false));
    NYDUS_ASSIGN_OR_RETURN(pl.variant, str_field(*p, "variant", false));
    if (auto f = p->find("os.features"); f != p->end() && f->is_array())
      for (const auto& x : *f)
        if (x.is_string()) pl.os_features.push_back(x.get<std::string>());
    d.platform = pl;
  }
  return d;
}

json to_json(const Descriptor& d) {
  json j{{"mediaType", d.media_type}, {"digest", d.digest}, {"size", d.size}};
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (d.platform) {
    json p{{"os", d.platform->os}, {"architecture", d.platform->architecture}};
    if (!d.platform->variant.empty()) p["variant"] = d.platform->variant;
    if (!d.platform->os_features.empty()) p["os.features"] = d.platform->os_features;
    j["platform"] = p;
  }
  return j;
}

bool is_index_type(std::string_view t) { return t == media::kOciIndex || t == media::kDockerList; }
bool is_manifest_type(std::string_view t) { return t == media::kOciManifest || t == media::kDockerManifest; }
bool is_layer_type(std::string_view t) {
  return t == media::kOciLayerTar || t == media::kOciLayerGzip || t == media::kOciLayerZstd ||
         t == media::kDockerLayerGzip || t == media::kDockerLayerTar;
}

std::string sniff_media_type(std::string_view bytes) {
  json j = parse_json(bytes);
  if (!j.is_object()) return "";
  if (auto t = j.find("mediaType"); t != j.end() && t->is_string()) return t->get<std::string>();
  if (j.contains("manifests")) return std::string(media::kOciIndex);
  if (j.contains("layers")) return std::string(media::kOciManifest);
  return "";
}

Result<Manifest> parse_manifest(std::string_view bytes) {
  json j = parse_json(bytes);
  if (!j.is_object()) return errorf(Errc::kCorrupt, "manifest is not a JSON object");
  Manifest m;
  m.media_type = sniff_media_type(bytes);
  if (!is_manifest_type(m.media_type)) return errorf(Errc::kUnsupported, "not an image manifest: \"{}\"", m.media_type);
  auto cfg = j.find("config");
  if (cfg == j.end()) return errorf(Errc::kCorrupt, "manifest has no config");
  NYDUS_ASSIGN_OR_RETURN(m.config, parse_descriptor(*cfg));
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return errorf(Errc::kCorrupt, "manifest has no layers");
  if (layers->size() > 1024) return errorf(Errc::kCorrupt, "manifest has {} layers", layers->size());
  for (const auto& l : *layers) {
    auto d = parse_descriptor(l);
    if (!d) return std::unexpected(std::move(d).error().context("layer"));
    m.layers.push_back(std::move(*d));
  }
  return m;
}

Result<std::vector<Descriptor>> parse_index(std::string_view bytes) {
  json j = parse_json(bytes);
  if (!j.is_object()) return errorf(Errc::kCorrupt, "index is not a JSON object");
  auto ms = j.find("manifests");
  if (ms == j.end() || !ms->is_array()) return errorf(Errc::kCorrupt, "index has no manifests");
  std::vector<Descriptor> out;
  for (const auto& m : *ms) {
    auto d = parse_descriptor(m);
    if (!d) return std::unexpected(std::move(d).error().context("index entry"));
    out.push_back(std::move(*d));
  }
  return out;
}

Result<Platform> parse_platform(std::string_view s) {
  Platform p;
  const auto a = s.find('/');
  if (a == std::string_view::npos || a == 0) return errorf(Errc::kInvalidArgument, "platform \"{}\" is not os/arch", s);
  p.os = std::string(s.substr(0, a));
  std::string_view rest = s.substr(a + 1);
  const auto b = rest.find('/');
  p.architecture = std::string(rest.substr(0, b));
  if (b != std::string_view::npos) p.variant = std::string(rest.substr(b + 1));
  if (p.architecture.empty()) return errorf(Errc::kInvalidArgument, "platform \"{}\" has no architecture", s);
  return p;
}

bool platform_matches(const Platform& want, const Platform& have) {
  return want.os == have.os && want.architecture == have.architecture &&
         (want.variant.empty() || want.variant == have.variant);
}

std::string ImageRef::to_string() const {
  if (kind == Kind::kOciLayout) return "oci:" + layout_dir + (tag.empty() ? "" : ":" + tag);
  return host + "/" + repository + (digest.empty() ? ":" + tag : "@" + digest);
}

Result<ImageRef> parse_image_ref(std::string_view s) {
  ImageRef r;
  if (s.starts_with("oci:")) {
    r.kind = ImageRef::Kind::kOciLayout;
    std::string_view rest = s.substr(4);
    // The last ':' after the last '/' separates a tag.
    const auto slash = rest.rfind('/');
    const auto colon = rest.rfind(':');
    if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
      r.layout_dir = std::string(rest.substr(0, colon));
      r.tag = std::string(rest.substr(colon + 1));
    } else {
      r.layout_dir = std::string(rest);
    }
    if (r.layout_dir.empty()) return errorf(Errc::kInvalidArgument, "\"{}\": no OCI layout directory", s);
    return r;
  }
  if (s.starts_with("docker://")) s.remove_prefix(9);
  const auto slash = s.find('/');
  if (slash == std::string_view::npos || slash == 0)
    return errorf(Errc::kInvalidArgument, "\"{}\" is not host/repository[:tag] (a registry host is required)", s);
  r.host = std::string(s.substr(0, slash));
  std::string_view path = s.substr(slash + 1);
  if (auto at = path.find('@'); at != std::string_view::npos) {
    r.digest = std::string(path.substr(at + 1));
    path = path.substr(0, at);
    if (!valid_digest(r.digest)) return errorf(Errc::kInvalidArgument, "\"{}\": bad digest", s);
  } else if (auto colon = path.rfind(':'); colon != std::string_view::npos) {
    r.tag = std::string(path.substr(colon + 1));
    path = path.substr(0, colon);
  } else {
    r.tag = "latest";
  }
  r.repository = std::string(path);
  if (r.repository.empty()) return errorf(Errc::kInvalidArgument, "\"{}\": no repository", s);
  for (char c : r.repository)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '/' ||
          c == '.' || c == '_' || c == '-'))
      return errorf(Errc::kInvalidArgument, "\"{}\": repository names are lower-case [a-z0-9._/-]", s);
  for (char c : r.tag)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return errorf(Errc::kInvalidArgument, "\"{}\": bad tag", s);
  return r;
}

}  // namespace nydus::convert
