// Registry credentials for the nydusd daemons, found as nydus-snapshotter
// v0.15 finds them (pkg/auth), in this order:
//   1. snapshot labels containerd.io/snapshot/pullusername + .../pullsecret
//      (both non-empty; available at pull time only, so never renewed);
//   2. the credentials of the kubelet's CRI PullImage, kept by the image
//      service proxy ([remote.auth] enable_cri_keychain; cri_credentials.h);
//      kept in memory until its RemoveImage, never renewed;
//   3. the docker config, $DOCKER_CONFIG/config.json, else ~/.docker/config.json,
//      read as docker/cli reads it (storage/docker_config.h): "credHelpers" and
//      "credsStore" run docker-credential-<helper> get, else "auths". Re-read
//      (and the helper run again) at every lookup: renewable.
//   4. kubelet credential provider plugins ([remote.auth]
//      enable_kubelet_credential_providers; snapshotter/kubelet_credentials.h).
//   5. Kubernetes image pull secrets, watched on the API server ([remote.auth]
//      enable_kubeconfig_keychain; snapshotter/kube_secrets.h).
// The daemon config carries them as backend.config.auth (base64 "user:pass"),
// or backend.config.registry_token when only a token is known (empty user),
// as upstream's FillAuth.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"

namespace nydus::snapshotter {

// nydus-snapshotter's pkg/label NydusImagePullUsername / NydusImagePullSecret.
inline constexpr std::string_view kPullUsernameLabel = "containerd.io/snapshot/pullusername";
inline constexpr std::string_view kPullSecretLabel = "containerd.io/snapshot/pullsecret";

struct PassKeyChain {
  std::string username;
  std::string password;
  // Username empty, password set: the password is a bearer token.
  bool token_based() const { return username.empty() && !password.empty(); }
  // base64("user:pass"); empty when both are empty.
  std::string to_base64() const;
  bool operator==(const PassKeyChain&) const = default;
};

// Where the docker config is read: storage::docker_config_dir()/config.json.
std::filesystem::path default_docker_config_file();

// Credentials for `host` from a docker config's text (storage/docker_config.h:
// auths, credsStore, credHelpers); none when it has no complete user and
// password for the host. Errors: not JSON, a bad "auth" (not base64, no ':'),
// a credential helper that is missing, fails or does not answer in 30 s.
Result<std::optional<PassKeyChain>> docker_config_credential(std::string_view config_text, std::string_view host);
// The same from a file: an absent file is no credential; over kMaxDockerConfigSize is refused.
Result<std::optional<PassKeyChain>> docker_config_file_credential(const std::filesystem::path& file,
                                                                  std::string_view host);

// From the pull labels (both non-empty), else none.
std::optional<PassKeyChain> labels_credential(const std::map<std::string, std::string>& labels);

class KubeletCredentials;  // snapshotter/kubelet_credentials.h
class CriCredentials;      // snapshotter/cri_credentials.h
class KubeSecrets;         // snapshotter/kube_secrets.h

// Where credentials come from, in upstream's priority order.
class Keychain {
 public:
  // `kubelet`: the credential provider plugins, when enabled; `renew_every`:
  // the renewal interval, which a cached plugin answer must outlive.
  // `cri`: what the CRI image service proxy kept from PullImage calls.
  // `kube_secrets`: the image pull secrets watched on the API server.
  explicit Keychain(std::filesystem::path docker_config, std::shared_ptr<const KubeletCredentials> kubelet = nullptr,
                    std::chrono::milliseconds renew_every = std::chrono::milliseconds(0),
                    std::shared_ptr<const CriCredentials> cri = nullptr,
                    std::shared_ptr<const KubeSecrets> kube_secrets = nullptr)
      : docker_config_(std::move(docker_config)), kubelet_(std::move(kubelet)), renew_every_(renew_every),
        cri_(std::move(cri)), kube_secrets_(std::move(kube_secrets)) {}
  // Labels, then CRI PullImage credentials, then the docker config, then the
  // kubelet plugins, then the Kubernetes secrets. A docker config
  // error is logged (never its content) and means no credential, as
  // upstream's provider chain.
  std::optional<PassKeyChain> lookup(std::string_view image_ref,
                                     const std::map<std::string, std::string>& labels) const;
  // The renewable providers only (the docker config, the kubelet plugins, the
  // Kubernetes secrets): what a renewal re-reads.
  std::optional<PassKeyChain> renewable(std::string_view image_ref) const;
  const std::filesystem::path& docker_config() const { return docker_config_; }

 private:
  std::filesystem::path docker_config_;
  std::shared_ptr<const KubeletCredentials> kubelet_;
  std::chrono::milliseconds renew_every_;
  std::shared_ptr<const CriCredentials> cri_;
  std::shared_ptr<const KubeSecrets> kube_secrets_;
};

// A nydusd config text with `kc` in its registry backend (auth, or
// registry_token when token-based); also an fscache blob entry (upstream's
// legacy "config": backend_type/backend_config), which is what an image of
// the fscache driver keeps as its config file. Other backends are left unchanged.
Result<std::string> config_with_auth(std::string_view config_text, const PassKeyChain& kc);
// The credential a nydusd config carries (auth or registry_token), and its registry host/repo.
struct ConfigRegistry {
  std::string host;
  std::string repo;
  std::optional<PassKeyChain> auth;
};
Result<ConfigRegistry> config_registry(std::string_view config_text);

// Go's time.ParseDuration for the forms config.toml uses ("0s", "2s", "30m",
// "1h30m", "500ms", a bare "0"); negative or malformed is an error.
Result<std::chrono::milliseconds> parse_go_duration(std::string_view s);

}  // namespace nydus::snapshotter
