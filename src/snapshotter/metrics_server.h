// The Prometheus endpoint: GET /v1/metrics (nydus-snapshotter's path) on a TCP
// address ("host:port", ":port" for every interface, "[v6]:port"), from
// config.toml's [metrics] address or --metrics-address. One thread answers one
// connection at a time, Connection: close; a request must arrive within 5 s
// and its head fit in 16 KiB (scrapes are rare and small).
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "common/result.h"

namespace nydus::snapshotter {

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  explicit MetricsServer(Render render) : render_(std::move(render)) {}
  ~MetricsServer() { stop(); }
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  Status start(const std::string& address);
  void stop();
  int port() const { return port_; }  // the bound port (":0" picks one)

 private:
  void serve();
  void answer(int fd);

  Render render_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace nydus::snapshotter
