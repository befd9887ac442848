#include "api/api_routes.h"

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
    return HttpResponse::json(200, dump(d->daemon_info()));
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
