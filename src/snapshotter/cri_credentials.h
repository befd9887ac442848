// The CRI keychain's store (nydus-snapshotter v0.15 pkg/auth/cri.go, after
// stargz-snapshotter's service/keychain/cri): the AuthConfig of every CRI
// PullImage that went through the image service proxy
// (snapshotter/cri_image_proxy.h), keyed by the image reference normalised
// as Docker does ("nginx" -> "docker.io/library/nginx:latest"); RemoveImage
// forgets it. The snapshot's image reference (the CRI plugin's
// containerd.io/snapshot/cri.image-ref label) finds it again. Kubelet hands
// the pod's imagePullSecrets over this way, so a private image runs lazily
// with no docker config on the node. Held in memory only (not renewable):
// the kubelet pulls again with fresh secrets when it needs to.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/result.h"
#include "snapshotter/registry_auth.h"

namespace nydus::snapshotter {

// A CRI AuthConfig (runtime.v1.AuthConfig).
struct CriAuthConfig {
  std::string username;
  std::string password;
  std::string auth;  // base64("user:password")
  std::string server_address;
  std::string identity_token;
  std::string registry_token;
};

// stargz-snapshotter's resolver.ParseAuth: none when server_address names
// another host than `host` (Docker Hub is "index.docker.io"); then
// username/password, else the identity token (as a token), else `auth`
// decoded. An empty config is none (anonymous). Errors: a bad `auth`.
Result<std::optional<PassKeyChain>> cri_auth_credential(const CriAuthConfig& a, std::string_view host);

class CriCredentials {
 public:
  // After a PullImage of `image_ref` (as the CRI request names it).
  void remember(std::string_view image_ref, const CriAuthConfig& auth);
  // After a RemoveImage.
  void forget(std::string_view image_ref);
  // The credential for a snapshot's image reference, if a pull left one for it.
  std::optional<PassKeyChain> lookup(std::string_view image_ref) const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, CriAuthConfig> by_ref_;
};

}  // namespace nydus::snapshotter
