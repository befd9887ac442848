#include "convert/docker_config.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace nydus::convert {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kDockerHubKey = "https://index.docker.io/v1/";
constexpr size_t kMaxConfig = 1 << 20;
constexpr size_t kMaxHelperOutput = 64 << 10;

std::optional<std::string> base64_decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = val(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xff));
    }
  }
  return out;
}

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
  if (auths == config.end() || !auths->is_object()) return std::nullopt;
  const json* entry = nullptr;
  if (auto it = auths->find(key); it != auths->end()) entry = &*it;
  else
    for (const auto& [k, v] : auths->items())
      if (to_hostname(k) == key) {
        entry = &v;
        break;
      }
  if (!entry || !entry->is_object()) return std::nullopt;
  RegistryCredential c;
  c.username = str_or_empty(*entry, "username");
  c.password = str_or_empty(*entry, "password");
  if (std::string a = str_or_empty(*entry, "auth"); !a.empty()) {
    auto decoded = base64_decode(a);
    if (!decoded) return errorf(Errc::kInvalidArgument, "docker config: the auth of \"{}\" is not base64", key);
    const auto colon = decoded->find(':');
    if (colon == std::string::npos)
      return errorf(Errc::kInvalidArgument, "docker config: the auth of \"{}\" is not user:password", key);
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
  return ".docker";
}

Result<std::optional<RegistryCredential>> run_credential_helper(const std::string& helper, const std::string& server) {
  if (!valid_helper_name(helper)) return errorf(Errc::kInvalidArgument, "docker config: bad credential helper \"{}\"", helper);
  const std::string prog = "docker-credential-" + helper;
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return sys_error("pipe");
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]), ::close(in[1]);
    return sys_error("pipe");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);  // helpers print "not found" on either
  char* argv[] = {const_cast<char*>(prog.c_str()), const_cast<char*>("get"), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, prog.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]), ::close(out[0]);
    return errorf(Errc::kNotFound, "credential helper {} (credsStore/credHelpers in the docker config): {}", prog,
                  std::strerror(rc));
  }
  // The server on stdin (small: fits the pipe), then read the answer with a deadline.
  const std::string input = server + "\n";
  [[maybe_unused]] ssize_t w = ::write(in[1], input.data(), input.size());
  ::close(in[1]);
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool timed_out = false;
  for (char buf[4096];;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, int(left.count())) <= 0) continue;
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    if (text.size() < kMaxHelperOutput) text.append(buf, size_t(n));
  }
  ::close(out[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return errorf(Errc::kIo, "credential helper {} did not answer in 30 s", prog);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
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

Result<std::optional<RegistryCredential>> docker_credentials(std::string_view host, const fs::path& config_dir) {
  const fs::path file = config_dir / "config.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::nullopt;
  const auto size = fs::file_size(file, ec);
  if (ec || size > kMaxConfig) return errorf(Errc::kInvalidArgument, "{}: unreadable or over 1 MiB", file.string());
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (!j.is_object()) return errorf(Errc::kCorrupt, "{} is not a JSON object", file.string());
  auto c = credentials_from_config(j, host);
  if (!c) return std::unexpected(std::move(c).error().context(file.string()));
  return c;
}

}  // namespace nydus::convert
