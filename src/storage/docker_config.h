// Registry credentials the way `docker login` leaves them, read as Docker's
// own client reads them (docker/cli config.GetAuthConfig), which is what
// upstream nydusify uses: $DOCKER_CONFIG/config.json (default ~/.docker),
//  - "credHelpers": {host: helper} and then "credsStore": helper — run
//    `docker-credential-<helper> get` with the server on stdin; it answers
//    {"ServerURL","Username","Secret"}, Username "<token>" meaning Secret is
//    an identity token; "credentials not found" is no credential, not an error;
//  - otherwise "auths": {server: {"auth": base64(user:pass), "identitytoken"}},
//    matched exactly or by host (keys may be "https://host/v1/").
// Docker Hub's entry is under "https://index.docker.io/v1/".
// Used by nydusify (convert) and the snapshotter's keychain.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace nydus::storage {

// A docker config larger than this is refused (docker's own are a few KiB).
inline constexpr size_t kMaxDockerConfigSize = 1 << 20;

struct RegistryCredential {
  std::string username;
  std::string password;
  std::string identity_token;  // an OAuth2 refresh token (Docker's "identitytoken")
  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
};

// The key Docker stores a registry's credentials under: the host itself, or
// "https://index.docker.io/v1/" for Docker Hub (docker.io, registry-1.docker.io).
std::string docker_config_key(std::string_view host);

// $DOCKER_CONFIG, else $HOME/.docker, else the user's home (passwd)/.docker.
std::filesystem::path docker_config_dir();

// Credentials for `host` from a parsed config.json (helpers are run).
Result<std::optional<RegistryCredential>> credentials_from_config(const nlohmann::json& config, std::string_view host);

// The same from a config.json's text (over kMaxDockerConfigSize is refused).
Result<std::optional<RegistryCredential>> credentials_from_text(std::string_view text, std::string_view host);

// The same from a config.json file; none when the file is absent.
Result<std::optional<RegistryCredential>> credentials_from_file(const std::filesystem::path& file,
                                                                std::string_view host);

// Credentials for `host` from `config_dir`/config.json; none when the file is absent.
Result<std::optional<RegistryCredential>> docker_credentials(std::string_view host,
                                                             const std::filesystem::path& config_dir);

// Only the "auths" entry for `host`, never a helper: for configs from others
// (a Kubernetes secret), which must not make this node run programs.
Result<std::optional<RegistryCredential>> credentials_from_auths(const nlohmann::json& config, std::string_view host);

// Run `docker-credential-<helper> get` (found on PATH) for `server`.
Result<std::optional<RegistryCredential>> run_credential_helper(const std::string& helper, const std::string& server);

}  // namespace nydus::storage
