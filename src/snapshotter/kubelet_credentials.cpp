#include "snapshotter/kubelet_credentials.h"

#include <fnmatch.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "common/file_util.h"
#include "common/subprocess.h"
#include "snapshotter/image_reference.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxConfigSize = 1 << 20;
constexpr size_t kMaxResponseSize = 1 << 20;
constexpr size_t kMaxPlugins = 64;
constexpr auto kPluginTimeout = std::chrono::minutes(1);
constexpr std::string_view kGlobalKey = "<global>";  // angle brackets: never an image or registry

std::string scalar(const YAML::Node& n) {
  return n && n.IsScalar() ? n.as<std::string>() : std::string();
}

Result<std::vector<std::string>> string_list(const YAML::Node& n, std::string_view what) {
  std::vector<std::string> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) return errorf(Errc::kInvalidArgument, "{} is not a list", what);
  for (const auto& e : n) {
    if (!e.IsScalar()) return errorf(Errc::kInvalidArgument, "{}: an entry is not a string", what);
    out.push_back(e.as<std::string>());
  }
  return out;
}

Result<KubeletPlugin> parse_plugin(const YAML::Node& n) {
  if (!n.IsMap()) return make_error(Errc::kInvalidArgument, "a provider is not a mapping");
  KubeletPlugin p;
  p.name = scalar(n["name"]);
  if (p.name.empty()) return make_error(Errc::kInvalidArgument, "provider name is required");
  if (p.name.find_first_of(" /\\") != std::string::npos || p.name == "." || p.name == "..")
    return errorf(Errc::kInvalidArgument, "invalid provider name {:?}: no spaces or path separators, not . or ..", p.name);
  p.api_version = scalar(n["apiVersion"]);
  if (p.api_version.empty()) return errorf(Errc::kInvalidArgument, "provider {}: apiVersion is required", p.name);
  if (p.api_version != kCredentialProviderApiV1)
    return errorf(Errc::kUnsupported, "provider {}: apiVersion {:?} (only {} is supported)", p.name, p.api_version,
                  kCredentialProviderApiV1);
  NYDUS_ASSIGN_OR_RETURN(p.match_images, string_list(n["matchImages"], "matchImages"));
  if (p.match_images.empty()) return errorf(Errc::kInvalidArgument, "provider {}: at least one matchImage is required", p.name);
  if (std::ranges::find(p.match_images, std::string()) != p.match_images.end())
    return errorf(Errc::kInvalidArgument, "provider {}: empty matchImage pattern", p.name);
  const std::string dur = scalar(n["defaultCacheDuration"]);
  if (dur.empty()) return errorf(Errc::kInvalidArgument, "provider {}: defaultCacheDuration is required", p.name);
  auto d = parse_go_duration(dur);  // refuses a negative one
  if (!d) return errorf(Errc::kInvalidArgument, "provider {}: defaultCacheDuration: {}", p.name, d.error().message);
  p.default_cache_duration = *d;
  NYDUS_ASSIGN_OR_RETURN(p.args, string_list(n["args"], "args"));
  if (const YAML::Node env = n["env"]; env && !env.IsNull()) {
    if (!env.IsSequence()) return errorf(Errc::kInvalidArgument, "provider {}: env is not a list", p.name);
    std::set<std::string> names;
    for (const auto& e : env) {
      const std::string name = e.IsMap() ? scalar(e["name"]) : std::string();
      if (name.empty() || name.find('=') != std::string::npos)
        return errorf(Errc::kInvalidArgument, "provider {}: environment variable name empty or with '='", p.name);
      if (!names.insert(name).second)
        return errorf(Errc::kInvalidArgument, "provider {}: duplicate environment variable name: {}", p.name, name);
      p.env.push_back(name + "=" + scalar(e["value"]));
    }
  }
  return p;
}

// url.Parse("https://" + s) without the scheme: the host (with port) and the path.
struct SchemelessUrl {
  std::string_view host, port, path;
};
SchemelessUrl split_schemeless(std::string_view s) {
  SchemelessUrl u;
  const auto slash = s.find('/');
  std::string_view hostport = s.substr(0, slash);
  u.path = slash == std::string_view::npos ? std::string_view() : s.substr(slash);
  // net.SplitHostPort: a port only after the last ':' of a non-bracketed host with one ':'.
  const auto colon = hostport.rfind(':');
  if (colon != std::string_view::npos && hostport.find(':') == colon) {
    u.host = hostport.substr(0, colon);
    u.port = hostport.substr(colon + 1);
  } else {
    u.host = hostport;
  }
  return u;
}

std::vector<std::string> split_dots(std::string_view s) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const auto dot = s.find('.', start);
    parts.emplace_back(s.substr(start, dot - start));
    if (dot == std::string_view::npos) return parts;
    start = dot + 1;
  }
}

// The first part of an image ("reg.io:5000/a/b:v1" -> "reg.io:5000"): the kubelet's Registry cache key.
std::string registry_of(std::string_view image) { return std::string(image.substr(0, image.find('/'))); }

// The most specific auth key matching the image: reverse alphabetical order puts
// "gcr.io/etcd-development" before "gcr.io".
std::optional<PassKeyChain> best_match(const std::map<std::string, PassKeyChain>& auth, std::string_view image) {
  for (auto it = auth.rbegin(); it != auth.rend(); ++it)
    if (registry_glob_matches(it->first, image)) return it->second;
  return std::nullopt;
}

}  // namespace

Result<std::vector<KubeletPlugin>> parse_credential_provider_config(std::string_view text) {
  if (text.size() > kMaxConfigSize) return make_error(Errc::kInvalidArgument, "credential provider config over 1 MiB");
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));  // YAML is a superset of JSON: both forms load
  } catch (const YAML::Exception& e) {
    return errorf(Errc::kInvalidArgument, "credential provider config: {}", e.what());
  }
  if (!root.IsMap()) return make_error(Errc::kInvalidArgument, "credential provider config: not a mapping");
  const YAML::Node providers = root["providers"];
  if (!providers || !providers.IsSequence() || providers.size() == 0)
    return make_error(Errc::kInvalidArgument, "credential provider config: at least one provider is required");
  if (providers.size() > kMaxPlugins)
    return errorf(Errc::kInvalidArgument, "credential provider config: more than {} providers", kMaxPlugins);
  std::vector<KubeletPlugin> out;
  std::set<std::string> names;
  for (const auto& n : providers) {
    NYDUS_ASSIGN_OR_RETURN(KubeletPlugin p, parse_plugin(n));
    if (!names.insert(p.name).second)
      return errorf(Errc::kInvalidArgument, "credential provider config: duplicate provider name: {}", p.name);
    out.push_back(std::move(p));
  }
  return out;
}

bool registry_glob_matches(std::string_view glob, std::string_view image) {
  const SchemelessUrl g = split_schemeless(glob), t = split_schemeless(image);
  if (g.port != t.port || !t.path.starts_with(g.path)) return false;
  const auto gp = split_dots(g.host), tp = split_dots(t.host);
  if (gp.size() != tp.size()) return false;
  for (size_t i = 0; i < gp.size(); ++i) {
    // Go's filepath.Match per part; a '[' never closed is its ErrBadPattern
    // (fnmatch would take it literally): no match.
    const auto open = gp[i].find('[');
    if (open != std::string::npos && gp[i].find(']', open + 1) == std::string::npos) return false;
    if (::fnmatch(gp[i].c_str(), tp[i].c_str(), 0) != 0) return false;
  }
  return true;
}

Result<KubeletResponse> parse_credential_provider_response(std::string_view text, std::string_view api_version) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return make_error(Errc::kCorrupt, "plugin response: not a JSON object");
  const std::string version = j.value("apiVersion", json()).is_string() ? j["apiVersion"].get<std::string>() : "";
  if (version != api_version)
    return errorf(Errc::kCorrupt, "plugin returned API version {:?}, expected {:?}", version, std::string(api_version));
  KubeletResponse r;
  if (auto k = j.find("cacheKeyType"); k != j.end() && k->is_string()) r.cache_key_type = k->get<std::string>();
  if (auto d = j.find("cacheDuration"); d != j.end() && !d->is_null()) {
    if (!d->is_string()) return make_error(Errc::kCorrupt, "plugin response: cacheDuration is not a string");
    auto ms = parse_go_duration(d->get<std::string>());
    if (!ms) return errorf(Errc::kCorrupt, "plugin response: cacheDuration: {}", ms.error().message);
    r.cache_duration = *ms;
  }
  if (auto a = j.find("auth"); a != j.end() && !a->is_null()) {
    if (!a->is_object()) return make_error(Errc::kCorrupt, "plugin response: auth is not an object");
    for (const auto& [glob, cred] : a->items()) {
      if (!cred.is_object()) return errorf(Errc::kCorrupt, "plugin response: auth[{:?}] is not an object", glob);
      auto str = [&](const char* k) {
        auto it = cred.find(k);
        return it != cred.end() && it->is_string() ? it->get<std::string>() : std::string();
      };
      r.auth[glob] = PassKeyChain{str("username"), str("password")};
    }
  }
  return r;
}

Result<std::shared_ptr<KubeletCredentials>> KubeletCredentials::load(const fs::path& config, const fs::path& bin_dir) {
  if (config.empty()) return make_error(Errc::kInvalidArgument, "credential_provider_config is empty");
  if (bin_dir.empty()) return make_error(Errc::kInvalidArgument, "credential_provider_bin_dir is empty");
  auto text = read_file_bounded(config, kMaxConfigSize);
  if (!text) return std::unexpected(std::move(text).error());
  auto plugins = parse_credential_provider_config(*text);
  if (!plugins) return std::unexpected(std::move(plugins).error().context(config.string()));
  for (const auto& p : *plugins) spdlog::info("kubelet credential provider plugin {} ({})", p.name, (bin_dir / p.name).string());
  return std::make_shared<KubeletCredentials>(std::move(*plugins), bin_dir);
}

Result<KubeletResponse> KubeletCredentials::run_plugin(const KubeletPlugin& p, const std::string& image) const {
  const json request{{"kind", "CredentialProviderRequest"}, {"apiVersion", p.api_version}, {"image", image}};
  std::vector<std::string> argv{(bin_dir_ / p.name).string()};
  argv.insert(argv.end(), p.args.begin(), p.args.end());
  ProcessOptions po;
  po.env = p.env;
  po.timeout = kPluginTimeout;
  po.max_output = kMaxResponseSize;
  {
    std::lock_guard lk(mu_);
    ++runs_;
  }
  NYDUS_ASSIGN_OR_RETURN(ProcessOutput ran, run_process(argv, request.dump(), po));
  if (ran.exit_code != 0) {
    std::string err = ran.err.substr(0, 300);
    while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.pop_back();
    return errorf(Errc::kIo, "exit status {}, stderr: {}", ran.exit_code, err);
  }
  return parse_credential_provider_response(ran.out, p.api_version);
}

std::optional<PassKeyChain> KubeletCredentials::lookup(std::string_view image_ref, std::chrono::milliseconds must_last) const {
  auto image = normalized_image(image_ref);
  if (!image) {
    spdlog::warn("kubelet credential providers: {}", image.error().message);
    return std::nullopt;
  }
  const auto now = Clock::now();
  {
    // Cached answers, in the kubelet's order: image, registry, global.
    std::lock_guard lk(mu_);
    std::erase_if(cache_, [&](const auto& kv) { return kv.second.expires <= now; });
    for (const std::string& key : {*image, registry_of(*image), std::string(kGlobalKey)}) {
      auto it = cache_.find(key);
      if (it == cache_.end() || it->second.expires <= now + must_last) continue;
      if (auto kc = best_match(it->second.auth, *image)) return kc;
    }
  }
  std::map<std::string, PassKeyChain> all;
  for (const auto& p : plugins_) {
    if (std::ranges::none_of(p.match_images, [&](const std::string& g) { return registry_glob_matches(g, *image); }))
      continue;
    auto resp = run_plugin(p, *image);
    if (!resp) {
      spdlog::warn("kubelet credential provider plugin {} for {}: {}", p.name, *image, resp.error().message);
      continue;
    }
    if (resp->auth.empty()) continue;  // the plugin has no credential for this image
    std::string key;
    if (resp->cache_key_type == "Image") key = *image;
    else if (resp->cache_key_type == "Registry") key = registry_of(*image);
    else if (resp->cache_key_type == "Global") key = kGlobalKey;
    else {
      spdlog::warn("kubelet credential provider plugin {}: invalid cacheKeyType {:?}", p.name, resp->cache_key_type);
      continue;
    }
    // An earlier plugin's auth key wins over a later one's (the kubelet's rule).
    std::map<std::string, PassKeyChain> mine;
    for (auto& [glob, kc] : resp->auth)
      if (!all.contains(glob)) all[glob] = mine[glob] = kc;
    const auto ttl = resp->cache_duration.value_or(p.default_cache_duration);
    if (ttl.count() > 0) {
      std::lock_guard lk(mu_);
      cache_[key] = Cached{std::move(mine), now + ttl};
    }
  }
  return best_match(all, *image);
}

int KubeletCredentials::plugin_runs() const {
  std::lock_guard lk(mu_);
  return runs_;
}

}  // namespace nydus::snapshotter
