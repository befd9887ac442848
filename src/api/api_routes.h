// Upstream nydusd's v1 HTTP API, mapped onto api::DaemonApi.
//
// Method mapping follows upstream (api/src/http_endpoint_v1.rs and
// nydus-snapshotter's client): POST /api/v1/mount mounts, PUT remounts,
// DELETE umounts.
#pragma once

#include <functional>

#include "api/daemon_api.h"
#include "api/http_server.h"

namespace nydus::api {

struct ApiHooks {
  // PUT /api/v1/daemon/exit; 501 when unset. Should only request the exit
  // (the reply is sent before the daemon goes away).
  std::function<Status()> on_exit;
};

// HTTP status for an error category (kInvalidArgument→400, kNotFound→404,
// kExists→409, kUnsupported→501, else 500).
int http_status_for(Errc code);
// The "code" string of the JSON error body for an error category.
const char* error_code_name(Errc code);
HttpResponse error_response(const Error& e);

// Registers all v1 routes plus GET /metrics (Prometheus). `api` must outlive
// the router.
void register_api_routes(Router& router, DaemonApi& api, ApiHooks hooks = {});

// Parses a mount/remount body ({"source","fs_type","config","prefetch_files"}).
Result<MountRequest> parse_mount_body(std::string_view body);

}  // namespace nydus::api
