// Kubernetes' kubelet credential provider plugins as a source of registry
// credentials (nydus-snapshotter v0.15 pkg/auth/kubelet.go; config.toml
// [remote.auth] enable_kubelet_credential_providers, credential_provider_config,
// credential_provider_bin_dir). The config is the kubelet's own
// CredentialProviderConfig (YAML or JSON):
//   providers: [{name, matchImages: [glob], defaultCacheDuration: "12h",
//                apiVersion: credentialprovider.kubelet.k8s.io/v1, args, env: [{name, value}]}]
// A plugin is <bin_dir>/<name> args..., run with the caller's environment
// plus env, given {"kind": "CredentialProviderRequest", "apiVersion", "image"}
// on stdin, answering {"apiVersion", "cacheKeyType": Image|Registry|Global,
// "cacheDuration", "auth": {registry glob: {"username", "password"}}} within
// a minute. Every plugin whose matchImages match the image is run; the most
// specific matching auth key wins (reverse alphabetical order, as the
// kubelet). Answers are cached per cacheKeyType for cacheDuration (else the
// plugin's defaultCacheDuration; 0 = not cached).
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "snapshotter/registry_auth.h"

namespace nydus::snapshotter {

inline constexpr std::string_view kCredentialProviderApiV1 = "credentialprovider.kubelet.k8s.io/v1";

struct KubeletPlugin {
  std::string name;
  std::vector<std::string> match_images;
  std::chrono::milliseconds default_cache_duration{0};
  std::string api_version;
  std::vector<std::string> args;
  std::vector<std::string> env;  // "NAME=value"
};

// A CredentialProviderConfig's text (YAML or JSON), validated as upstream:
// at least one provider; each with a name (no spaces, '/', '\', not . or ..,
// unique), apiVersion v1, matchImages non-empty without an empty pattern,
// defaultCacheDuration >= 0, env names non-empty and unique.
Result<std::vector<KubeletPlugin>> parse_credential_provider_config(std::string_view text);

// The kubelet's urlsMatch: `glob` ("*.registry.io", "reg.io:5000/team")
// against an image ("reg.io:5000/team/app:v1"): same port, same number of
// host parts each matching its glob part, the glob's path a prefix of the image's.
bool registry_glob_matches(std::string_view glob, std::string_view image);

// A plugin's answer.
struct KubeletResponse {
  std::string cache_key_type;  // Image, Registry or Global
  std::optional<std::chrono::milliseconds> cache_duration;
  std::map<std::string, PassKeyChain> auth;  // registry glob -> credential
};
// Errors: not JSON, another apiVersion than `api_version`, a bad duration.
Result<KubeletResponse> parse_credential_provider_response(std::string_view text, std::string_view api_version);

class KubeletCredentials {
 public:
  KubeletCredentials(std::vector<KubeletPlugin> plugins, std::filesystem::path bin_dir)
      : plugins_(std::move(plugins)), bin_dir_(std::move(bin_dir)) {}
  // Reads and validates the config; bin_dir must be given.
  static Result<std::shared_ptr<KubeletCredentials>> load(const std::filesystem::path& config,
                                                          const std::filesystem::path& bin_dir);

  // Credentials for an image reference ("reg.io/a/b:v1"); none when no plugin
  // matches or answers. A cached answer is used only if it stays valid for
  // `must_last` more (the renewal interval, so a renewal never hands out
  // credentials that expire before the next one). Thread-safe.
  std::optional<PassKeyChain> lookup(std::string_view image_ref,
                                     std::chrono::milliseconds must_last = std::chrono::milliseconds(0)) const;

  // How many times a plugin was run (tests).
  int plugin_runs() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Cached {
    std::map<std::string, PassKeyChain> auth;
    Clock::time_point expires;
  };
  Result<KubeletResponse> run_plugin(const KubeletPlugin& p, const std::string& image) const;

  std::vector<KubeletPlugin> plugins_;
  std::filesystem::path bin_dir_;
  mutable std::mutex mu_;
  mutable std::map<std::string, Cached> cache_;  // image, registry or "<global>" -> answer
  mutable int runs_ = 0;
};

}  // namespace nydus::snapshotter
