#include "snapshotter/kube_secrets.h"

#include <cstdlib>

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "common/base64.h"
#include "common/file_util.h"
#include "storage/docker_config.h"
#include "storage/http_client.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxKubeconfigSize = 4 << 20;
constexpr size_t kMaxListPage = 64 << 20;       // one page of at most kListLimit secrets
constexpr size_t kMaxWatchEvent = 4 << 20;      // a secret is at most 1 MiB; its event a bit more
constexpr size_t kMaxSecrets = 1 << 16;         // more are logged and ignored
constexpr int kListLimit = 500;
constexpr int kWatchSeconds = 300;              // the server ends a watch after this; we resume it
constexpr auto kMinBackoff = std::chrono::seconds(1);
constexpr auto kMaxBackoff = std::chrono::seconds(30);
constexpr std::string_view kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

std::string scalar(const YAML::Node& n) { return n && n.IsScalar() ? n.as<std::string>() : std::string(); }

Result<std::string> read_small(const fs::path& p, std::string_view what) {
  auto text = read_file_bounded(p, kMaxKubeconfigSize);
  if (!text) return errorf(text.error().code, "{}: {}", what, text.error().message);  // the message names the file
  return std::move(*text);
}

// A named entry of a kubeconfig list ("clusters", "users", "contexts"): its `inner` mapping.
YAML::Node named(const YAML::Node& root, const char* list, const std::string& name, const char* inner) {
  const YAML::Node l = root[list];
  if (!l || !l.IsSequence()) return YAML::Node();
  for (const auto& e : l)
    if (e.IsMap() && scalar(e["name"]) == name) return e[inner];
  return YAML::Node();
}

// A "<x>-data" field (base64) or a "<x>" file name relative to the kubeconfig's dir.
Result<std::string> data_or_file(const YAML::Node& n, const char* file_key, const char* data_key,
                                 const fs::path& dir) {
  if (const std::string data = scalar(n[data_key]); !data.empty()) {
    auto decoded = base64_decode(data);
    if (!decoded) return errorf(Errc::kInvalidArgument, "kubeconfig: {} is not base64", data_key);
    return std::move(*decoded);
  }
  if (const std::string file = scalar(n[file_key]); !file.empty()) {
    fs::path p(file);
    if (p.is_relative()) p = dir / p;
    return read_small(p, std::string("kubeconfig ") + file_key);
  }
  return std::string();
}

std::string trim_slash(std::string s) {
  while (s.ends_with('/')) s.pop_back();
  return s;
}

Result<KubeApiConfig> in_cluster_config() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port)
    return make_error(Errc::kNotFound,
                      "no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod (KUBERNETES_SERVICE_HOST unset)");
  KubeApiConfig c;
  const std::string h(host);
  c.server = "https://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + port;
  c.token_file = fs::path(kServiceAccountDir) / "token";
  NYDUS_ASSIGN_OR_RETURN(c.ca_pem, read_small(fs::path(kServiceAccountDir) / "ca.crt", "service account CA"));
  c.source = "the pod's service account";
  return c;
}

std::string secret_key(const json& secret) {
  const auto md = secret.find("metadata");
  if (md == secret.end() || !md->is_object()) return {};
  return md->value("namespace", "") + "/" + md->value("name", "");
}

// The docker config a kubernetes.io/dockerconfigjson secret holds; null when
// it is another type, or its .dockerconfigjson is missing or not a JSON object.
json docker_config_of(const json& secret) {
  if (secret.value("type", "") != kDockerConfigJsonSecretType) return nullptr;
  const auto data = secret.find("data");
  if (data == secret.end() || !data->is_object()) return nullptr;
  const auto encoded = data->find(kDockerConfigJsonKey);
  if (encoded == data->end() || !encoded->is_string()) return nullptr;
  auto text = base64_decode(encoded->get_ref<const std::string&>());
  if (!text || text->size() > storage::kMaxDockerConfigSize) return nullptr;
  json config = json::parse(*text, nullptr, false);
  return config.is_object() ? config : json(nullptr);
}

// Put a secret's docker config into `configs`, or (as upstream, which keeps
// no config it cannot load) drop an older one when the secret has none.
void store(std::map<std::string, json>& configs, const json& secret) {
  const std::string key = secret_key(secret);
  json config = docker_config_of(secret);
  if (config.is_null()) {
    spdlog::warn("kube secrets: {}: {} is missing or not a docker config", key, kDockerConfigJsonKey);
    configs.erase(key);
    return;
  }
  if (configs.size() >= kMaxSecrets && !configs.contains(key)) {
    spdlog::warn("kube secrets: more than {} secrets; {} ignored", kMaxSecrets, key);
    return;
  }
  configs[key] = std::move(config);
}

}  // namespace

Result<KubeApiConfig> parse_kubeconfig(std::string_view text, const fs::path& dir) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return errorf(Errc::kInvalidArgument, "kubeconfig: {}", e.what());
  }
  if (!root.IsMap()) return make_error(Errc::kInvalidArgument, "kubeconfig is not a mapping");
  try {
    const std::string current = scalar(root["current-context"]);
    if (current.empty()) return make_error(Errc::kInvalidArgument, "kubeconfig: no current-context");
    const YAML::Node ctx = named(root, "contexts", current, "context");
    if (!ctx || !ctx.IsMap()) return errorf(Errc::kInvalidArgument, "kubeconfig: context {:?} not found", current);
    const std::string cluster_name = scalar(ctx["cluster"]), user_name = scalar(ctx["user"]);
    const YAML::Node cluster = named(root, "clusters", cluster_name, "cluster");
    if (!cluster || !cluster.IsMap())
      return errorf(Errc::kInvalidArgument, "kubeconfig: cluster {:?} not found", cluster_name);
    KubeApiConfig c;
    c.server = trim_slash(scalar(cluster["server"]));
    if (!c.server.starts_with("https://") && !c.server.starts_with("http://"))
      return errorf(Errc::kInvalidArgument, "kubeconfig: cluster {:?}: server {:?} is not an http(s) URL", cluster_name,
                    c.server);
    NYDUS_ASSIGN_OR_RETURN(c.ca_pem, data_or_file(cluster, "certificate-authority", "certificate-authority-data", dir));
    c.insecure_skip_verify = scalar(cluster["insecure-skip-tls-verify"]) == "true";
    if (!user_name.empty()) {
      const YAML::Node user = named(root, "users", user_name, "user");
      if (user && user.IsMap()) {
        if (user["exec"] || user["auth-provider"])
          return errorf(Errc::kUnsupported, "kubeconfig: user {:?} uses an exec or auth-provider plugin", user_name);
        c.token = scalar(user["token"]);
        if (const std::string tf = scalar(user["tokenFile"]); !tf.empty())
          c.token_file = fs::path(tf).is_relative() ? dir / tf : fs::path(tf);
        NYDUS_ASSIGN_OR_RETURN(c.client_cert_pem,
                               data_or_file(user, "client-certificate", "client-certificate-data", dir));
        NYDUS_ASSIGN_OR_RETURN(c.client_key_pem, data_or_file(user, "client-key", "client-key-data", dir));
        if (c.client_cert_pem.empty() != c.client_key_pem.empty())
          return errorf(Errc::kInvalidArgument, "kubeconfig: user {:?}: a client certificate needs its key", user_name);
        c.username = scalar(user["username"]);
        c.password = scalar(user["password"]);
      }
    }
    return c;
  } catch (const YAML::Exception& e) {
    return errorf(Errc::kInvalidArgument, "kubeconfig: {}", e.what());
  }
}

Result<KubeApiConfig> load_kube_api_config(const fs::path& explicit_path) {
  auto load = [](const fs::path& p) -> Result<KubeApiConfig> {
    NYDUS_ASSIGN_OR_RETURN(auto text, read_small(p, "kubeconfig"));
    auto c = parse_kubeconfig(text, p.parent_path());
    if (!c) return errorf(c.error().code, "{}: {}", p.string(), c.error().message);
    c->source = p.string();
    return c;
  };
  if (!explicit_path.empty()) return load(explicit_path);
  std::error_code ec;
  if (const char* env = std::getenv("KUBECONFIG"); env && *env) {
    std::string_view list(env);
    while (!list.empty()) {
      const auto colon = list.find(':');
      const fs::path p(std::string(list.substr(0, colon)));
      if (!p.empty() && fs::exists(p, ec)) return load(p);
      list = colon == std::string_view::npos ? std::string_view() : list.substr(colon + 1);
    }
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    if (const fs::path p = fs::path(home) / ".kube" / "config"; fs::exists(p, ec)) return load(p);
  }
  return in_cluster_config();
}

struct KubeSecrets::Client {
  explicit Client(storage::HttpOptions o) : http(std::move(o)) {}
  storage::HttpClient http;
};

KubeSecrets::KubeSecrets(KubeApiConfig api) : api_(std::move(api)) {
  storage::HttpOptions o;
  o.timeout = std::chrono::seconds(60);
  o.skip_verify = api_.insecure_skip_verify;
  o.ca_bundle_pem = api_.ca_pem;
  o.client_cert_pem = api_.client_cert_pem;
  o.client_key_pem = api_.client_key_pem;
  o.http2 = false;  // one watch per connection; HTTP/1.1 chunked is what every API server speaks
  o.max_idle_handles = 2;
  client_ = std::make_unique<Client>(std::move(o));
}

KubeSecrets::~KubeSecrets() {
  {
    std::lock_guard lk(mu_);  // so a sleep_for between its check and its wait cannot miss it
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KubeSecrets::start() {
  spdlog::info("kube secrets: watching {} secrets on {} (from {})", kDockerConfigJsonSecretType, api_.server, api_.source);
  thread_ = std::thread([this] { run(); });
}

bool KubeSecrets::wait_synced(std::chrono::milliseconds timeout) const {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, timeout, [this] { return synced_; });
}

bool KubeSecrets::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, d, [this] { return stopping_.load(); });
  return !stopping_;
}

Result<std::vector<std::pair<std::string, std::string>>> KubeSecrets::headers() const {
  std::vector<std::pair<std::string, std::string>> h{{"Accept", "application/json"}};
  std::string token = api_.token;
  if (!api_.token_file.empty()) {
    NYDUS_ASSIGN_OR_RETURN(token, read_small(api_.token_file, "token file"));
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
  }
  if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
  else if (!api_.username.empty())
    h.emplace_back("Authorization", "Basic " + storage::base64_encode(api_.username + ":" + api_.password));
  return h;
}

Result<storage::HttpRequest> KubeSecrets::request(std::string_view query) const {
  storage::HttpRequest req;
  req.url = api_.server + "/api/v1/secrets?fieldSelector=" +
            storage::url_encode("type=" + std::string(kDockerConfigJsonSecretType)) + std::string(query);
  NYDUS_ASSIGN_OR_RETURN(req.headers, headers());
  req.cancelled = [this] { return stopping_.load(); };
  return req;
}

Status KubeSecrets::list() {
  const std::string query = "&limit=" + std::to_string(kListLimit);
  std::map<std::string, json> fresh;
  std::string cont, rv;
  int pages = 0;
  do {
    NYDUS_ASSIGN_OR_RETURN(auto req, request(cont.empty() ? query : query + "&continue=" + storage::url_encode(cont)));
    req.max_body = kMaxListPage;
    NYDUS_ASSIGN_OR_RETURN(auto resp, client_->http.perform(req));
    if (resp.status != 200)
      return errorf(Errc::kIo, "list secrets: HTTP {}: {}", resp.status, resp.body.substr(0, 256));
    const json page = json::parse(resp.body, nullptr, false);
    if (!page.is_object() || !page.contains("items") || !page["items"].is_array())
      return make_error(Errc::kCorrupt, "list secrets: not a SecretList");
    const json& md = page.contains("metadata") && page["metadata"].is_object() ? page["metadata"] : json::object();
    rv = md.value("resourceVersion", "");
    cont = md.value("continue", "");
    for (const auto& item : page["items"])
      if (item.is_object()) store(fresh, item);
    if (++pages > 10000) return make_error(Errc::kCorrupt, "list secrets: the pages do not end");
  } while (!cont.empty());
  if (rv.empty()) return make_error(Errc::kCorrupt, "list secrets: no resourceVersion");
  const size_t listed = fresh.size();
  {
    std::lock_guard lk(mu_);
    configs_.swap(fresh);
    synced_ = true;
  }
  cv_.notify_all();
  resource_version_ = rv;
  lists_++;
  spdlog::info("kube secrets: {} {} secrets listed (resourceVersion {})", listed, kDockerConfigJsonSecretType, rv);
  return ok();
}

Result<KubeSecrets::WatchEnd> KubeSecrets::apply_event(std::string_view line) {
  const json ev = json::parse(line, nullptr, false);
  if (!ev.is_object() || !ev.contains("type") || !ev["type"].is_string() || !ev.contains("object") ||
      !ev["object"].is_object())
    return make_error(Errc::kCorrupt, "watch secrets: an event is not {type, object}");
  const std::string type = ev["type"].get<std::string>();
  const json& obj = ev["object"];
  if (type == "ERROR") {
    // A Status; 410 Gone: the resourceVersion is too old, list again.
    const int code = obj.contains("code") && obj["code"].is_number_integer() ? obj["code"].get<int>() : 0;
    if (code == 410) return WatchEnd::kRelist;
    return errorf(Errc::kIo, "watch secrets: error event {}: {}", code, obj.value("message", ""));
  }
  if (type != "ADDED" && type != "MODIFIED" && type != "DELETED" && type != "BOOKMARK")
    return errorf(Errc::kCorrupt, "watch secrets: unknown event type {:?}", type);
  if (const auto md = obj.find("metadata"); md != obj.end() && md->is_object())
    if (const auto rv = md->find("resourceVersion"); rv != md->end() && rv->is_string() && !rv->get_ref<const std::string&>().empty())
      resource_version_ = rv->get<std::string>();
  if (type == "BOOKMARK") return WatchEnd::kResume;
  if (type == "DELETED") {
    const std::string key = secret_key(obj);
    std::lock_guard lk(mu_);
    configs_.erase(key);
    spdlog::info("kube secrets: {} deleted", key);
    return WatchEnd::kResume;
  }
  {
    std::lock_guard lk(mu_);
    store(configs_, obj);
  }
  spdlog::info("kube secrets: {} {}", secret_key(obj), type == "ADDED" ? "added" : "modified");
  return WatchEnd::kResume;
}

Result<KubeSecrets::WatchEnd> KubeSecrets::watch() {
  NYDUS_ASSIGN_OR_RETURN(auto req, request("&watch=true&allowWatchBookmarks=true&timeoutSeconds=" +
                                            std::to_string(kWatchSeconds) +
                                            "&resourceVersion=" + storage::url_encode(resource_version_)));
  req.timeout = std::chrono::seconds(kWatchSeconds + 30);
  std::string pending;  // a partial event line
  WatchEnd end = WatchEnd::kResume;
  req.on_body = [&](std::string_view chunk) -> Status {
    pending.append(chunk);
    size_t start = 0, nl;
    while ((nl = pending.find('\n', start)) != std::string::npos) {
      std::string_view line(pending.data() + start, nl - start);
      start = nl + 1;
      if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
      NYDUS_ASSIGN_OR_RETURN(auto e, apply_event(line));
      if (e == WatchEnd::kRelist) {
        end = WatchEnd::kRelist;
        return make_error(Errc::kAnswer, "relist");  // ends the transfer
      }
    }
    pending.erase(0, start);
    if (pending.size() > kMaxWatchEvent)
      return errorf(Errc::kCorrupt, "watch secrets: an event over {} bytes", kMaxWatchEvent);
    return ok();
  };
  watches_++;
  auto resp = client_->http.perform(req);
  if (end == WatchEnd::kRelist) return WatchEnd::kRelist;
  if (!resp) return std::unexpected(std::move(resp).error());
  if (resp->status == 410) return WatchEnd::kRelist;
  if (resp->status != 200) return errorf(Errc::kIo, "watch secrets: HTTP {}: {}", resp->status, resp->body.substr(0, 256));
  if (!pending.empty() && pending.find_first_not_of(" \r\t\n") != std::string::npos) {
    NYDUS_ASSIGN_OR_RETURN(auto e, apply_event(pending));  // a last event without its newline
    return e;
  }
  return WatchEnd::kResume;
}

void KubeSecrets::run() {
  std::chrono::milliseconds backoff = kMinBackoff;
  // After a failure: log it, wait (1 s doubling to 30 s); false when stopping.
  auto back_off = [&](const Error& e, const char* next) {
    spdlog::warn("kube secrets: {} ({} in {} s)", e.message, next, backoff.count() / 1000);
    if (!sleep_for(backoff)) return false;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
    return true;
  };
  bool need_list = true;
  while (!stopping_) {
    if (need_list) {
      if (auto st = list(); !st) {
        if (stopping_ || !back_off(st.error(), "listing again")) break;
        continue;
      }
      need_list = false;
      backoff = kMinBackoff;
    }
    auto w = watch();
    if (stopping_) break;
    if (!w) {
      if (!back_off(w.error(), "watching again")) break;
      continue;
    }
    need_list = *w == WatchEnd::kRelist;
    if (need_list) spdlog::info("kube secrets: resourceVersion {} expired; listing again", resource_version_);
    backoff = kMinBackoff;
  }
}

std::optional<PassKeyChain> KubeSecrets::lookup(std::string_view host) const {
  std::lock_guard lk(mu_);
  for (const auto& [key, config] : configs_) {
    auto c = storage::credentials_from_auths(config, host);
    if (!c) {
      spdlog::warn("kube secrets: {}: {}", key, c.error().message);
      continue;
    }
    if (*c && !(*c)->username.empty() && !(*c)->password.empty()) {
      spdlog::debug("registry credentials for {}: from kube secret {}", host, key);
      return PassKeyChain{(*c)->username, (*c)->password};
    }
  }
  return std::nullopt;
}

std::vector<std::string> KubeSecrets::secret_names() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (const auto& [k, v] : configs_) out.push_back(k);
  return out;
}

}  // namespace nydus::snapshotter
