#include "api/api_routes.h"

#include <deque>
#include <mutex>

#include <fmt/chrono.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

namespace nydus::api {

namespace {

constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4";

// Daemon-provided JSON may hold bytes from images (file names): never let
// invalid UTF-8 turn into an exception.
std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HttpResponse from_status(const Status& s) {
  if (!s) return error_response(s.error());
  return HttpResponse::no_content();
}

Result<std::string> required_mountpoint(const HttpRequest& req) {
  auto mp = req.query_param("mountpoint");
  if (!mp || mp->empty())
    return make_error(Errc::kInvalidArgument, "'mountpoint' should be specified in query string");
  return *mp;
}

// Upstream's ErrorHolder (GET /api/v1/daemon/events): the daemon's error
// log lines, newest last, at most 500 of them and 50 KiB in all.
class ErrorEvents final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  static constexpr size_t kMaxErrors = 500, kMaxSize = 50 * 1024;
  nlohmann::json to_json() {
    std::lock_guard lk(mutex_);
    return nlohmann::json{{"max_errors", kMaxErrors},
                          {"total_errors", errors_.size()},
                          {"max_size", kMaxSize},
                          {"total_size", size_},
                          {"errors", errors_}};
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (msg.level < spdlog::level::err) return;
    std::string line = fmt::format("{:%a, %d %b %Y %H:%M:%S} GMT - {}", fmt::gmtime(std::chrono::system_clock::to_time_t(msg.time)),
                                   std::string_view(msg.payload.data(), msg.payload.size()));
    if (line.size() > kMaxSize) line.resize(kMaxSize);
    while (!errors_.empty() && (errors_.size() >= kMaxErrors || size_ + line.size() > kMaxSize)) {
      size_ -= errors_.front().size();
      errors_.pop_front();
    }
    size_ += line.size();
    errors_.push_back(std::move(line));
  }
  void flush_() override {}

 private:
  std::deque<std::string> errors_;
  size_t size_ = 0;
};

// The process's error events, fed by a sink on the default logger (added
// once, the first time routes are registered).
std::shared_ptr<ErrorEvents> error_events() {
  static std::shared_ptr<ErrorEvents> events = [] {
    auto e = std::make_shared<ErrorEvents>();
    spdlog::default_logger()->sinks().push_back(e);
    return e;
  }();
  return events;
}

// Upstream's runtime config keys (utils/src/config.rs), stored per id.
struct RuntimeConfig {
  std::mutex mu;
  std::map<std::string, std::map<std::string, std::string>> by_id;
};
bool known_config_key(const std::string& k) {
  return k == "registry_auth" || k == "proxy_url" || k == "dragonfly_scheduler_endpoint";
}

// PUT /api/v{1,2}/daemon {"log_level": "info"}: log's LevelFilter names.
HttpResponse configure_daemon(const HttpRequest& req) {
  auto j = nlohmann::json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("log_level") || !j["log_level"].is_string())
    return HttpResponse::error(400, "BadRequest", "body must be {\"log_level\": \"<level>\"}");
  std::string v = j["log_level"].get<std::string>();
  for (auto& c : v) c = char(std::tolower(static_cast<unsigned char>(c)));
  static const std::map<std::string, spdlog::level::level_enum> kLevels = {
      {"off", spdlog::level::off},   {"error", spdlog::level::err},   {"warn", spdlog::level::warn},
      {"info", spdlog::level::info}, {"debug", spdlog::level::debug}, {"trace", spdlog::level::trace}};
  auto it = kLevels.find(v);
  // Upstream fails an unknown level as an internal error (500).
  if (it == kLevels.end())
    return HttpResponse::error(500, "Internal", fmt::format("invalid log level '{}'", j["log_level"].get<std::string>()));
  spdlog::set_level(it->second);
  spdlog::info("log level set to {} through the API", v);
  return HttpResponse::no_content();
}

HttpResponse not_implemented(const HttpRequest& req) {
  return HttpResponse::error(501, "NotImplemented", fmt::format("{} is not implemented yet", req.path));
}

}  // namespace

int http_status_for(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return 400;
    case Errc::kNotFound: return 404;
    case Errc::kExists: return 409;
    case Errc::kUnsupported: return 501;
    default: return 500;
  }
}

const char* error_code_name(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return "InvalidArgument";
    case Errc::kCorrupt: return "Corrupt";
    case Errc::kUnsupported: return "Unsupported";
    case Errc::kNotFound: return "NotFound";
    case Errc::kIo: return "Io";
    case Errc::kExists: return "Exists";
    case Errc::kNoSpace: return "NoSpace";
    case Errc::kInternal: return "Internal";
    case Errc::kAnswer: return "Internal";  // a filesystem's errno answer never reaches the API
  }
  return "Internal";
}

HttpResponse error_response(const Error& e) {
  return HttpResponse::error(http_status_for(e.code), error_code_name(e.code), e.message);
}

Result<MountRequest> parse_mount_body(std::string_view body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return make_error(Errc::kInvalidArgument, "request body is not valid JSON");
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "request body must be a JSON object");
  MountRequest req;
  auto src = j.find("source");
  if (src == j.end() || !src->is_string())
    return make_error(Errc::kInvalidArgument, "'source' (string) is required");
  req.source = src->get<std::string>();
  // Upstream defaults fs_type to "" and treats it as rafs; say so explicitly.
  if (auto t = j.find("fs_type"); t != j.end() && !t->is_null()) {
    if (!t->is_string()) return make_error(Errc::kInvalidArgument, "'fs_type' must be a string");
    req.fs_type = t->get<std::string>();
  }
  if (req.fs_type.empty()) req.fs_type = "rafs";
  // Upstream sends the config as JSON *text*; also accept an inline object.
  auto cfg = j.find("config");
  if (cfg == j.end() || !(cfg->is_string() || cfg->is_object()))
    return make_error(Errc::kInvalidArgument, "'config' (string of JSON) is required");
  req.config = cfg->is_string() ? cfg->get<std::string>() : dump(*cfg);
  if (auto p = j.find("prefetch_files"); p != j.end() && !p->is_null()) {
    if (!p->is_array()) return make_error(Errc::kInvalidArgument, "'prefetch_files' must be an array");
    for (const auto& f : *p) {
      if (!f.is_string())
        return make_error(Errc::kInvalidArgument, "'prefetch_files' must hold strings");
      req.prefetch_files.push_back(f.get<std::string>());
    }
    req.prefetch_files_given = true;
  }
  return req;
}

void register_api_routes(Router& router, DaemonApi& api, ApiHooks hooks) {
  DaemonApi* d = &api;

  router.add("GET", "/api/v1/daemon", [d](const HttpRequest&) {
    return HttpResponse::json(200, dump(d->daemon_info()));
  });
  router.add("PUT", "/api/v1/daemon", configure_daemon);
  router.add("PUT", "/api/v2/daemon", configure_daemon);
  auto events = error_events();
  router.add("GET", "/api/v1/daemon/events", [events](const HttpRequest&) {
    return HttpResponse::json(200, dump(events->to_json()));
  });
  router.add("GET", "/api/v1/daemon/backend", [d](const HttpRequest& req) {
    auto mp = required_mountpoint(req);
    if (!mp) return error_response(mp.error());
    auto info = d->backend_info(*mp);
    // Upstream reports a failed lookup as a daemon error (500).
    if (!info) return HttpResponse::error(500, error_code_name(info.error().code), info.error().message);
    return HttpResponse::json(200, dump(*info));
  });

  // Runtime config (upstream utils/src/config.rs): string values by id and
  // key; registry_auth also reaches the registry backends of that id.
  auto config = std::make_shared<RuntimeConfig>();
  router.add("GET", "/api/v1/config", [config](const HttpRequest& req) {
    const auto id = req.query_param("id");
    nlohmann::json out = nlohmann::json::object();
    std::lock_guard lk(config->mu);
    for (const auto& [cid, kv] : config->by_id)
      if (!id || *id == cid)
        for (const auto& [k, v] : kv) out[id ? k : cid + ":" + k] = v;
    return HttpResponse::json(200, dump(out));
  });
  router.add("PUT", "/api/v1/config", [d, config](const HttpRequest& req) {
    auto j = nlohmann::json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return HttpResponse::error(400, "BadRequest", "body must be a JSON object of strings");
    for (const auto& [k, v] : j.items())
      if (!v.is_string()) return HttpResponse::error(400, "BadRequest", fmt::format("'{}' must be a string", k));
    for (const auto& [k, v] : j.items())
      if (!known_config_key(k))  // upstream: an unknown key fails the request (500)
        return HttpResponse::error(500, "Internal", fmt::format("unknown config key '{}'", k));
    const std::string id = req.query_param("id").value_or("");
    if (j.contains("registry_auth")) {
      if (auto st = d->set_registry_auth(id, j["registry_auth"].get<std::string>()); !st) return error_response(st.error());
    }
    std::lock_guard lk(config->mu);
    for (const auto& [k, v] : j.items()) config->by_id[id][k] = v.get<std::string>();
    return HttpResponse::no_content();
  });

  // Mount, remount, umount share the path and the mountpoint check.
  auto mount_like = [d](bool remount) {
    return [d, remount](const HttpRequest& req) {
      auto mp = required_mountpoint(req);
      if (!mp) return error_response(mp.error());
      auto body = parse_mount_body(req.body);
      if (!body) return HttpResponse::error(400, "InvalidRequest", body.error().message);
      body->mountpoint = *mp;
      return from_status(remount ? d->remount(*body) : d->mount(*body));
    };
  };
  router.add("POST", "/api/v1/mount", mount_like(false));
  router.add("PUT", "/api/v1/mount", mount_like(true));
  router.add("DELETE", "/api/v1/mount", [d](const HttpRequest& req) {
    auto mp = required_mountpoint(req);
    if (!mp) return error_response(mp.error());
    return from_status(d->umount(*mp));
  });

  for (const char* kind : {"", "files", "pattern", "backend", "blobcache", "inflight"}) {
    std::string path = std::string("/api/v1/metrics") + (*kind ? "/" : "") + kind;
    router.add("GET", path, [d, k = std::string(kind)](const HttpRequest& req) {
      auto m = d->metrics(k, req.query);
      if (!m) return error_response(m.error());
      if (m->is_null()) return HttpResponse::no_content();  // inflight: nothing in progress
      return HttpResponse::json(200, dump(*m));
    });
  }

  router.add("GET", "/metrics", [d](const HttpRequest&) {
    return HttpResponse{200, kPrometheusContentType, d->prometheus_metrics(), {}};
  });

  router.add("PUT", "/api/v1/daemon/exit", [exit = hooks.on_exit](const HttpRequest& req) {
    if (!exit) return not_implemented(req);
    return from_status(exit());
  });
  router.add("PUT", "/api/v1/daemon/start", [d](const HttpRequest&) { return from_status(d->start()); });
  router.add("PUT", "/api/v1/daemon/fuse/sendfd", [d](const HttpRequest&) { return from_status(d->send_fd()); });
  router.add("PUT", "/api/v1/daemon/fuse/takeover", [d](const HttpRequest&) { return from_status(d->takeover()); });

  // v2: daemon info and blob objects (fscache mode).
  router.add("GET", "/api/v2/daemon", [d](const HttpRequest&) {
    // Upstream's v2 info leaves the filesystems out.
    nlohmann::json info = d->daemon_info();
    if (info.is_object() && info.contains("backend_collection")) info["backend_collection"] = nullptr;
    return HttpResponse::json(200, dump(info));
  });
  auto create_blob = [d](const HttpRequest& req) { return from_status(d->create_blob(req.body)); };
  router.add("PUT", "/api/v2/blobs", create_blob);
  router.add("POST", "/api/v2/blobs", create_blob);
  router.add("GET", "/api/v2/blobs", [d](const HttpRequest& req) {
    auto domain = req.query_param("domain_id");
    if (!domain)
      return HttpResponse::error(400, "InvalidArgument", "'domain_id' should be specified in query string");
    auto list = d->list_blobs(*domain, req.query_param("blob_id").value_or(""));
    if (!list) return error_response(list.error());
    return HttpResponse::json(200, dump(*list));
  });
  router.add("DELETE", "/api/v2/blobs", [d](const HttpRequest& req) {
    auto domain = req.query_param("domain_id");
    auto blob = req.query_param("blob_id");
    if (domain) return from_status(d->delete_blobs(*domain, blob.value_or("")));
    if (blob) return from_status(d->delete_blob_file(*blob));
    return HttpResponse::error(400, "InvalidArgument", "'domain_id' or 'blob_id' should be specified in query string");
  });
}

}  // namespace nydus::api
