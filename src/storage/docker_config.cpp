#include "storage/docker_config.h"

#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "common/base64.h"
#include "common/file_util.h"
#include "common/subprocess.h"

namespace nydus::storage {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kDockerHubKey = "https://index.docker.io/v1/";
constexpr size_t kMaxHelperOutput = 64 << 10;

// docker/cli's ConvertToHostname: "https://host/v1/" -> "host".
std::string to_hostname(std::string_view s) {
  if (s.starts_with("http://")) s.remove_prefix(7);
  else if (s.starts_with("https://")) s.remove_prefix(8);
  return std::string(s.substr(0, s.find('/')));
}

std::string str_or_empty(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<std::optional<RegistryCredential>> from_auths(const json& config, const std::string& key) {
  auto auths = config.find("auths");
  if (auths == config.end()) return std::nullopt;
  if (!auths->is_object()) return make_error(Errc::kCorrupt, "docker config: \"auths\" is not an object");
  const json* entry = nullptr;
  if (auto it = auths->find(key); it != auths->end()) entry = &*it;
  else
    for (const auto& [k, v] : auths->items())
      if (to_hostname(k) == key) {
        entry = &v;
        break;
      }
  if (!entry) return std::nullopt;
  if (!entry->is_object()) return errorf(Errc::kCorrupt, "docker config: auths[{:?}] is not an object", key);
  RegistryCredential c;
  c.username = str_or_empty(*entry, "username");
  c.password = str_or_empty(*entry, "password");
  if (std::string a = str_or_empty(*entry, "auth"); !a.empty()) {
    // docker's decodeAuth: base64 of "user:password", split at the first ':'.
    // The errors never quote the value (a secret).
    auto decoded = base64_decode(a);
    if (!decoded) return errorf(Errc::kCorrupt, "docker config: auths[{:?}].auth is not base64", key);
    const auto colon = decoded->find(':');
    if (colon == std::string::npos)
      return errorf(Errc::kCorrupt, "docker config: auths[{:?}].auth is not base64 of user:password", key);
    c.username = decoded->substr(0, colon);
    c.password = decoded->substr(colon + 1);
  }
  c.identity_token = str_or_empty(*entry, "identitytoken");
  if (c.empty()) return std::nullopt;
  return c;
}

bool valid_helper_name(const std::string& h) {
  if (h.empty() || h.size() > 64) return false;
  for (char c : h)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

std::string docker_config_key(std::string_view host) {
  if (host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io") return std::string(kDockerHubKey);
  return std::string(host);
}

fs::path docker_config_dir() {
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) return d;
  if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".docker";
  // No $HOME (a daemon started by init): the user's home, as docker's homedir.Get.
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir && *pw->pw_dir) return fs::path(pw->pw_dir) / ".docker";
  return "/root/.docker";
}

Result<std::optional<RegistryCredential>> run_credential_helper(const std::string& helper, const std::string& server) {
  if (!valid_helper_name(helper)) return errorf(Errc::kInvalidArgument, "docker config: bad credential helper \"{}\"", helper);
  const std::string prog = "docker-credential-" + helper;
  ProcessOptions po;
  po.search_path = true;
  po.merge_stderr = true;  // helpers print "not found" on either
  po.timeout = std::chrono::seconds(30);
  po.max_output = kMaxHelperOutput;
  auto ran = run_process({prog, "get"}, server + "\n", po);
  if (!ran) return std::unexpected(std::move(ran).error().context("credential helper (credsStore/credHelpers in the docker config)"));
  std::string& text = ran->out;
  if (ran->exit_code != 0) {
    // docker-credential-helpers' ErrCredentialsNotFound text: no credential.
    if (text.find("credentials not found") != std::string::npos) return std::nullopt;
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return errorf(Errc::kIo, "credential helper {} failed for {}: {}", prog, server, text.substr(0, 300));
  }
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return errorf(Errc::kCorrupt, "credential helper {}: the answer is not a JSON object", prog);
  RegistryCredential c;
  const std::string user = str_or_empty(j, "Username"), secret = str_or_empty(j, "Secret");
  if (user == "<token>") c.identity_token = secret;
  else c.username = user, c.password = secret;
  if (c.empty()) return std::nullopt;
  return c;
}

Result<std::optional<RegistryCredential>> credentials_from_config(const json& config, std::string_view host) {
  if (!config.is_object()) return errorf(Errc::kCorrupt, "docker config is not a JSON object");
  const std::string key = docker_config_key(host);
  std::string helper;
  if (auto h = config.find("credHelpers"); h != config.end() && h->is_object())
    if (auto it = h->find(key); it != h->end() && it->is_string()) helper = it->get<std::string>();
  if (helper.empty()) helper = str_or_empty(config, "credsStore");
  if (!helper.empty()) return run_credential_helper(helper, key);
  return from_auths(config, key);
}

Result<std::optional<RegistryCredential>> credentials_from_auths(const json& config, std::string_view host) {
  if (!config.is_object()) return errorf(Errc::kCorrupt, "docker config is not a JSON object");
  return from_auths(config, docker_config_key(host));
}

Result<std::optional<RegistryCredential>> credentials_from_text(std::string_view text, std::string_view host) {
  if (text.size() > kMaxDockerConfigSize)
    return errorf(Errc::kInvalidArgument, "docker config: larger than {} bytes", kMaxDockerConfigSize);
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return make_error(Errc::kCorrupt, "docker config: not a JSON object");
  return credentials_from_config(j, host);
}

Result<std::optional<RegistryCredential>> credentials_from_file(const fs::path& file, std::string_view host) {
  auto text = read_file_bounded(file, kMaxDockerConfigSize);
  if (!text && text.error().code == Errc::kNotFound) return std::nullopt;
  if (!text) return std::unexpected(std::move(text).error());
  auto c = credentials_from_text(*text, host);
  if (!c) return std::unexpected(std::move(c).error().context(file.string()));
  return c;
}

Result<std::optional<RegistryCredential>> docker_credentials(std::string_view host, const fs::path& config_dir) {
  return credentials_from_file(config_dir / "config.json", host);
}

}  // namespace nydus::storage
