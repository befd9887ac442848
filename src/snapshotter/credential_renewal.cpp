#include "snapshotter/credential_renewal.h"

#include <signal.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "api/api_client.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;

namespace {

constexpr std::uintmax_t kMaxDaemonConfig = 4 << 20;

SResult<std::string> read_config(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return snap_error(Code::kInternal, "{}: {}", path, ec.message());
  if (size > kMaxDaemonConfig) return snap_error(Code::kInternal, "{}: over 4 MiB", path);
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) return snap_error(Code::kInternal, "read {}", path);
  return ss.str();
}

// Replaced whole (a rename): a daemon (re)started meanwhile reads the old or the new file, never half.
SResult<void> replace_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return snap_error(Code::kInternal, "write {}", tmp);
  }
  fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write);  // it holds a secret
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return snap_error(Code::kInternal, "rename {}: {}", tmp, std::strerror(errno));
  return {};
}

// The percent-encoded query value of an API id ("/" -> "%2F").
std::string encode_id(const std::string& id) {
  std::string out;
  for (unsigned char c : id) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += char(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

}  // namespace

SResult<void> update_daemon_auth(const DaemonInstance& d, const PassKeyChain& kc) {
  auto text = read_config(d.config_path);
  if (!text) return std::unexpected(text.error());
  auto updated = config_with_auth(*text, kc);
  if (!updated) return from_error(updated.error(), "nydusd config " + d.config_path);
  SNAP_TRY(replace_file(d.config_path, *updated));
  if (kc.token_based()) {
    spdlog::warn("nydusd {}: a bearer token is written to its config file only (nydusd takes no token through "
                 "its API)", d.id);
    return {};
  }
  // fscache: the image's fsid in the singleton daemon; a shared FUSE daemon: the
  // image's mount ("/<snapshot id>"); a dedicated one: "/".
  const std::string id = !d.fscache_id.empty() ? d.fscache_id : d.shared ? "/" + d.meta_id : "/";
  const std::string body = nlohmann::json{{"registry_auth", kc.to_base64()}}.dump();
  api::ApiClient c(d.apisock, std::chrono::seconds(10));
  auto reply = c.request("PUT", "/api/v1/config?id=" + encode_id(id), body);
  if (!reply) return snap_error(Code::kUnavailable, "nydusd {}: PUT /api/v1/config: {}", d.id, reply.error().to_string());
  if (reply->status / 100 != 2)
    return snap_error(Code::kUnavailable, "nydusd {}: PUT /api/v1/config: HTTP {}: {}", d.id, reply->status,
                      reply->body.substr(0, 300));
  return {};
}

CredentialRenewal::~CredentialRenewal() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CredentialRenewal::start() {
  if (interval_.count() <= 0 || thread_.joinable()) return;
  spdlog::info("credential renewal every {} ms from {}", interval_.count(), keychain_->docker_config().string());
  thread_ = std::thread([this] { loop(); });
}

void CredentialRenewal::loop() {
  for (;;) {
    {
      std::unique_lock lk(mu_);
      if (cv_.wait_for(lk, interval_, [this] { return stop_; })) return;
    }
    renew_once();
  }
}

int CredentialRenewal::renew_once() {
  int renewed = 0;
  for (const DaemonInstance& d : daemons_.instances()) {
    if (d.pid <= 0 || ::kill(d.pid, 0) != 0) continue;  // not running: its restart reads the file
    auto text = read_config(d.config_path);
    if (!text) continue;
    auto reg = config_registry(*text);
    if (!reg || reg->host.empty() || reg->repo.empty()) continue;
    std::string ref = image_ref_of_ ? image_ref_of_(d.meta_id) : std::string();
    if (ref.empty()) ref = reg->host + "/" + reg->repo;
    auto kc = keychain_->renewable(ref);
    if (!kc || (reg->auth && *reg->auth == *kc)) continue;
    if (auto st = update_daemon_auth(d, *kc); !st) {
      spdlog::warn("credential renewal for {} (snapshot {}): {}", ref, d.meta_id, st.error().message);
      continue;
    }
    spdlog::info("credential renewal: new registry credentials for {} sent to nydusd {} (snapshot {})", ref, d.id,
                 d.meta_id);
    ++renewed;
  }
  return renewed;
}

}  // namespace nydus::snapshotter
