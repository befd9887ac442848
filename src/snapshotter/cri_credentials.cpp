#include "snapshotter/cri_credentials.h"

#include <spdlog/spdlog.h>

#include "common/base64.h"
#include "snapshotter/image_reference.h"

namespace nydus::snapshotter {

namespace {

// The most references kept: one per image the kubelet pulled; a bound so a
// client pulling endless names cannot grow the snapshotter without limit.
constexpr size_t kMaxRemembered = 4096;

// The host of a server address with or without a scheme ("https://index.docker.io/v1/",
// "reg.io:5000"). stargz-snapshotter's url.Parse leaves the host empty without a
// scheme, so such an address never matched there; here it does.
std::string_view address_host(std::string_view s) {
  if (auto p = s.find("://"); p != std::string_view::npos) s.remove_prefix(p + 3);
  return s.substr(0, s.find('/'));
}

}  // namespace

Result<std::optional<PassKeyChain>> cri_auth_credential(const CriAuthConfig& a, std::string_view host) {
  if (host == "docker.io" || host == "registry-1.docker.io") host = "index.docker.io";
  if (!a.server_address.empty() && address_host(a.server_address) != host) return std::nullopt;
  if (!a.username.empty()) return PassKeyChain{a.username, a.password};
  if (!a.identity_token.empty()) return PassKeyChain{"", a.identity_token};
  if (!a.auth.empty()) {
    auto decoded = base64_decode(a.auth);
    if (!decoded) return make_error(Errc::kCorrupt, "CRI auth config: auth is not base64");
    const auto colon = decoded->find(':');
    if (colon == std::string::npos) return make_error(Errc::kCorrupt, "CRI auth config: auth is not base64 of user:password");
    std::string password = decoded->substr(colon + 1);
    while (!password.empty() && password.back() == '\0') password.pop_back();
    return PassKeyChain{decoded->substr(0, colon), password};
  }
  return std::nullopt;
}

void CriCredentials::remember(std::string_view image_ref, const CriAuthConfig& auth) {
  auto ref = normalized_image(image_ref);
  if (!ref) return;
  std::lock_guard lk(mu_);
  if (by_ref_.size() >= kMaxRemembered && !by_ref_.contains(*ref)) by_ref_.erase(by_ref_.begin());
  by_ref_[*ref] = auth;
}

void CriCredentials::forget(std::string_view image_ref) {
  auto ref = normalized_image(image_ref);
  if (!ref) return;
  std::lock_guard lk(mu_);
  by_ref_.erase(*ref);
}

std::optional<PassKeyChain> CriCredentials::lookup(std::string_view image_ref) const {
  auto ref = normalized_image(image_ref);
  if (!ref) return std::nullopt;
  CriAuthConfig auth;
  {
    std::lock_guard lk(mu_);
    auto it = by_ref_.find(*ref);
    if (it == by_ref_.end()) return std::nullopt;
    auth = it->second;
  }
  auto kc = cri_auth_credential(auth, std::string_view(*ref).substr(0, ref->find('/')));  // its host
  if (!kc) {
    spdlog::warn("CRI credentials for {}: {}", image_ref, kc.error().message);
    return std::nullopt;
  }
  return *kc;
}

size_t CriCredentials::size() const {
  std::lock_guard lk(mu_);
  return by_ref_.size();
}

}  // namespace nydus::snapshotter
