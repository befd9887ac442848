// Fuzz target: the API server's HTTP/1.1 request parser, fed the way the poll
// loop feeds it (the whole buffer, then pipelined requests after `consumed`),
// plus percent_decode and parse_query on the input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "api/http_server.h"

using namespace nydus::api;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  HttpServerOptions opts;
  opts.max_header_bytes = 2048;
  opts.max_body_bytes = 4096;
  for (int i = 0; i < 16 && !buf.empty(); i++) {
    ParseOutcome o = parse_http_request(buf, opts);
    if (o.kind != ParseOutcome::kComplete) break;
    if (o.consumed == 0 || o.consumed > buf.size()) __builtin_trap();  // must make progress
    (void)o.request.query_param("id");
    buf.remove_prefix(o.consumed);
  }
  std::string_view all(reinterpret_cast<const char*>(data), size);
  (void)percent_decode(all, true);
  (void)parse_query(all);
  return 0;
}
