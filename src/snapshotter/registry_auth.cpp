#include "snapshotter/registry_auth.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/base64.h"
#include "snapshotter/cri_credentials.h"
#include "snapshotter/image_reference.h"
#include "snapshotter/kube_secrets.h"
#include "snapshotter/kubelet_credentials.h"
#include "storage/docker_config.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string host_of(std::string_view image_ref) {
  auto r = parse_image_reference(image_ref);
  return r ? r->host : std::string();
}

}  // namespace

std::string PassKeyChain::to_base64() const {
  if (username.empty() && password.empty()) return "";
  return base64_encode(username + ":" + password);
}

fs::path default_docker_config_file() { return storage::docker_config_dir() / "config.json"; }

namespace {
// As upstream's DockerProvider: only a complete user and password is a
// credential (an identity token alone is none: nydusd cannot use it).
Result<std::optional<PassKeyChain>> to_keychain(Result<std::optional<storage::RegistryCredential>> c) {
  if (!c) return std::unexpected(std::move(c).error());
  if (!*c || (*c)->username.empty() || (*c)->password.empty()) return std::nullopt;
  return PassKeyChain{(*c)->username, (*c)->password};
}
}  // namespace

Result<std::optional<PassKeyChain>> docker_config_credential(std::string_view config_text, std::string_view host) {
  return to_keychain(storage::credentials_from_text(config_text, host));
}

Result<std::optional<PassKeyChain>> docker_config_file_credential(const fs::path& file, std::string_view host) {
  return to_keychain(storage::credentials_from_file(file, host));
}

std::optional<PassKeyChain> labels_credential(const std::map<std::string, std::string>& labels) {
  auto u = labels.find(std::string(kPullUsernameLabel));
  auto p = labels.find(std::string(kPullSecretLabel));
  if (u == labels.end() || p == labels.end() || u->second.empty() || p->second.empty()) return std::nullopt;
  return PassKeyChain{u->second, p->second};
}

std::optional<PassKeyChain> Keychain::lookup(std::string_view image_ref,
                                             const std::map<std::string, std::string>& labels) const {
  if (auto kc = labels_credential(labels)) {
    spdlog::info("registry credentials for {}: from the snapshot labels", image_ref);
    return kc;
  }
  if (cri_) {
    if (auto kc = cri_->lookup(image_ref)) {
      spdlog::info("registry credentials for {}: from the CRI PullImage request", image_ref);
      return kc;
    }
  }
  auto kc = renewable(image_ref);
  if (kc) spdlog::info("registry credentials for {}: from the docker config, a kubelet plugin or a kube secret", image_ref);
  return kc;
}

std::optional<PassKeyChain> Keychain::renewable(std::string_view image_ref) const {
  const std::string host = host_of(image_ref);
  if (host.empty()) return std::nullopt;
  auto kc = docker_config_file_credential(docker_config_, host);
  if (!kc) spdlog::warn("registry credentials for {}: {}", image_ref, kc.error().to_string());
  if (kc && *kc) {
    spdlog::debug("registry credentials for {}: from the docker config {}", image_ref, docker_config_.string());
    return *kc;
  }
  if (kubelet_) {
    if (auto k = kubelet_->lookup(image_ref, renew_every_)) {
      spdlog::debug("registry credentials for {}: from a kubelet credential provider plugin", image_ref);
      return k;
    }
  }
  if (kube_secrets_) return kube_secrets_->lookup(host);
  return std::nullopt;
}

namespace {

// The registry backend's config object in a daemon config
// (device.backend {"type": "registry", "config"}) or in the fscache blob
// entry made from one (config {"backend_type": "registry", "backend_config"});
// null when the backend is another kind. `create`: add an empty config object
// when the registry backend has none.
json* registry_config(json& j, bool create) {
  if (!j.is_object()) return nullptr;
  auto field = [create](json& parent, const char* key) -> json* {
    auto it = parent.find(key);
    if (it != parent.end() && it->is_object()) return &*it;
    if (!create || (it != parent.end() && !it->is_null())) return nullptr;
    parent[key] = json::object();
    return &parent[key];
  };
  if (auto dev = j.find("device"); dev != j.end() && dev->is_object()) {
    auto b = dev->find("backend");
    if (b == dev->end() || !b->is_object() || b->value("type", "") != "registry") return nullptr;
    return field(*b, "config");
  }
  if (auto c = j.find("config"); c != j.end() && c->is_object() && c->value("backend_type", "") == "registry")
    return field(*c, "backend_config");
  return nullptr;
}

}  // namespace

Result<std::string> config_with_auth(std::string_view config_text, const PassKeyChain& kc) {
  json j = json::parse(config_text, nullptr, false);
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "nydusd config: not a JSON object");
  const bool daemon_config = j.contains("device") && j["device"].is_object();
  const bool fscache_entry = j.contains("config") && j["config"].is_object() && j["config"].contains("backend_type");
  if (!daemon_config && !fscache_entry)
    return make_error(Errc::kInvalidArgument, "nydusd config: no device (nor an fscache entry's config)");
  json* cfg = registry_config(j, true);
  if (!cfg) return j.dump(2);  // another backend: no credentials to carry
  if (kc.token_based()) {
    (*cfg)["registry_token"] = kc.password;
    cfg->erase("auth");
  } else {
    (*cfg)["auth"] = kc.to_base64();
  }
  return j.dump(2);
}

Result<ConfigRegistry> config_registry(std::string_view config_text) {
  json j = json::parse(config_text, nullptr, false);
  const json* cfg = registry_config(j, false);
  if (!cfg) return make_error(Errc::kNotFound, "nydusd config: no registry backend");
  ConfigRegistry r{string_field(*cfg, "host"), string_field(*cfg, "repo"), std::nullopt};
  if (const std::string a = string_field(*cfg, "auth"); !a.empty()) {
    auto d = base64_decode(a);
    if (d && d->find(':') != std::string::npos)
      r.auth = PassKeyChain{d->substr(0, d->find(':')), d->substr(d->find(':') + 1)};
  } else if (const std::string t = string_field(*cfg, "registry_token"); !t.empty()) {
    r.auth = PassKeyChain{"", t};
  }
  return r;
}

Result<std::chrono::milliseconds> parse_go_duration(std::string_view s) {
  if (s == "0") return std::chrono::milliseconds(0);
  if (s.empty() || s.size() > 64) return errorf(Errc::kInvalidArgument, "duration {:?}: empty or too long", std::string(s));
  double total_ms = 0;
  std::string_view rest = s;
  while (!rest.empty()) {
    size_t i = 0;
    while (i < rest.size() && (std::isdigit(static_cast<unsigned char>(rest[i])) || rest[i] == '.')) ++i;
    if (i == 0) return errorf(Errc::kInvalidArgument, "duration {:?}: want e.g. 30s, 5m, 1h30m", std::string(s));
    const double n = std::strtod(std::string(rest.substr(0, i)).c_str(), nullptr);
    rest.remove_prefix(i);
    size_t u = 0;
    while (u < rest.size() && !std::isdigit(static_cast<unsigned char>(rest[u])) && rest[u] != '.') ++u;
    const std::string_view unit = rest.substr(0, u);
    rest.remove_prefix(u);
    double scale = 0;
    if (unit == "ms") scale = 1;
    else if (unit == "s") scale = 1000;
    else if (unit == "m") scale = 60'000;
    else if (unit == "h") scale = 3'600'000;
    else if (unit == "us" || unit == "µs") scale = 0.001;
    else if (unit == "ns") scale = 0.000001;
    else return errorf(Errc::kInvalidArgument, "duration {:?}: unknown unit {:?}", std::string(s), std::string(unit));
    total_ms += n * scale;
  }
  if (total_ms > 1e12) return errorf(Errc::kInvalidArgument, "duration {:?}: too long", std::string(s));
  return std::chrono::milliseconds(static_cast<int64_t>(total_ms));
}

}  // namespace nydus::snapshotter
