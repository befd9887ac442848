#include "convert/oci.h"

#include <algorithm>
#include <cctype>

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
  NYDUS_ASSIGN_OR_RETURN(d.artifact_type, str_field(j, "artifactType", false));
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
  if (!d.artifact_type.empty()) j["artifactType"] = d.artifact_type;
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

Result<std::vector<Platform>> parse_platforms(std::string_view s) {
  std::vector<Platform> out;
  while (!s.empty()) {
    const auto comma = s.find(',');
    std::string_view one = s.substr(0, comma);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    if (!one.empty()) {
      NYDUS_ASSIGN_OR_RETURN(Platform p, parse_platform(one));
      out.push_back(std::move(p));
    }
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  if (out.empty()) return errorf(Errc::kInvalidArgument, "no platform given");
  return out;
}

std::string host_platform() {
#if defined(__x86_64__)
  return "linux/amd64";
#elif defined(__aarch64__)
  return "linux/arm64";
#elif defined(__i386__)
  return "linux/386";
#elif defined(__arm__)
  return "linux/arm";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "linux/ppc64le";
#elif defined(__s390x__)
  return "linux/s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "linux/riscv64";
#else
  return "linux/amd64";
#endif
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
  if (s.empty() || s.size() > 4096) return errorf(Errc::kInvalidArgument, "\"{}\": not an image reference", s);
  std::string_view rest = s;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    r.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!valid_digest(r.digest)) return errorf(Errc::kInvalidArgument, "\"{}\": bad digest", s);
  }
  // A tag is after the last ':' that comes after the last '/' (a ':' before
  // it is a port).
  std::string tag;
  if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    const auto slash = rest.rfind('/');
    if (slash == std::string_view::npos || colon > slash) {
      tag = std::string(rest.substr(colon + 1));
      rest = rest.substr(0, colon);
      if (tag.empty() || tag.size() > 128) return errorf(Errc::kInvalidArgument, "\"{}\": bad tag", s);
      for (char c : tag)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
          return errorf(Errc::kInvalidArgument, "\"{}\": bad tag", s);
      if (tag[0] == '.' || tag[0] == '-') return errorf(Errc::kInvalidArgument, "\"{}\": bad tag", s);
    }
  }
  std::string_view path = rest;
  const auto slash = rest.find('/');
  if (slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, slash);
    const bool lower = std::none_of(first.begin(), first.end(), [](char c) { return std::isupper(static_cast<unsigned char>(c)); });
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost" || !lower) {
      r.host = std::string(first);
      path = rest.substr(slash + 1);
    }
  }
  if (auto colon = r.host.rfind(':'); colon != std::string::npos && r.host.find(']') == std::string::npos) {
    const std::string port = r.host.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      return errorf(Errc::kInvalidArgument, "\"{}\": bad registry port", s);
  }
  if (r.host.empty()) r.host = "docker.io";
  if (r.host == "index.docker.io") r.host = "docker.io";
  r.repository = std::string(path);
  if (r.host == "docker.io" && r.repository.find('/') == std::string::npos) r.repository = "library/" + r.repository;
  if (path.empty() || path.front() == '/' || path.back() == '/' || path.find("//") != std::string_view::npos)
    return errorf(Errc::kInvalidArgument, "\"{}\": no repository", s);
  for (char c : r.repository)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '/' ||
          c == '.' || c == '_' || c == '-'))
      return errorf(Errc::kInvalidArgument, "\"{}\": repository names are lower-case [a-z0-9._/-]", s);
  if (r.digest.empty()) r.tag = tag.empty() ? "latest" : tag;
  return r;
}

}  // namespace nydus::convert
