// The snapshotter's Prometheus metrics: histogram buckets are cumulative with
// upstream's bounds (the exposition format's rule), label values escaped, and
// the endpoint answers GET /v1/metrics only. containers.sh parses a real
// scrape with python3-prometheus-client.
#include "snapshotter/metrics.h"
#include "snapshotter/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

using namespace nydus::snapshotter;

namespace {

std::string http(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  (void)!::write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

TEST(SnapshotterMetrics, HistogramBucketsAreCumulative) {
  Metrics m;
  m.observe(SnapshotOp::kPrepare, std::chrono::microseconds(300));
  m.observe(SnapshotOp::kPrepare, std::chrono::milliseconds(7));
  m.observe(SnapshotOp::kPrepare, std::chrono::milliseconds(2000));
  Metrics::Gauges g;
  g.daemons_by_version["v1 \"q\"\\"] = 2;
  std::string text = m.render(g);
  const std::string h = "snapshotter_snapshot_operation_elapsed_milliseconds";
  EXPECT_NE(text.find(h + "_bucket{snapshot_operation=\"PREPARE\",le=\"0.5\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find(h + "_bucket{snapshot_operation=\"PREPARE\",le=\"5\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find(h + "_bucket{snapshot_operation=\"PREPARE\",le=\"10\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find(h + "_bucket{snapshot_operation=\"PREPARE\",le=\"1000\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find(h + "_bucket{snapshot_operation=\"PREPARE\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find(h + "_count{snapshot_operation=\"PREPARE\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find(h + "_count{snapshot_operation=\"REMOVE\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("nydusd_counts{version=\"v1 \\\"q\\\"\\\\\"} 2\n"), std::string::npos);
}

TEST(SnapshotterMetrics, EndpointServesV1MetricsOnly) {
  MetricsServer server([] { return std::string("up 1\n"); });
  ASSERT_TRUE(server.start("127.0.0.1:0"));
  ASSERT_GT(server.port(), 0);
  std::string ok = http(server.port(), "GET /v1/metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(ok.starts_with("HTTP/1.1 200 OK\r\n")) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_TRUE(ok.ends_with("\r\n\r\nup 1\n"));
  EXPECT_TRUE(http(server.port(), "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
  EXPECT_TRUE(http(server.port(), "POST /v1/metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
  EXPECT_FALSE(server.start("127.0.0.1:0"));  // once
  EXPECT_FALSE(MetricsServer([] { return std::string(); }).start("no-port-here"));
  server.stop();
}
