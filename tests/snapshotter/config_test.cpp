// Image references, the nydusd config made from a template, config.toml.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "snapshotter/config_file.h"
#include "snapshotter/daemon_manager.h"
#include "snapshotter/image_reference.h"

using namespace nydus::snapshotter;

TEST(ImageReference, DockerNormalisation) {
  struct Case {
    const char* ref;
    const char* host;
    const char* repo;
  } cases[] = {
      {"localhost:5000/nydus/busybox:nydus", "localhost:5000", "nydus/busybox"},
      {"127.0.0.1:5000/a/b/c@sha256:0123", "127.0.0.1:5000", "a/b/c"},
      {"busybox", "docker.io", "library/busybox"},
      {"busybox:1.36", "docker.io", "library/busybox"},
      {"user/app:v1", "docker.io", "user/app"},
      {"ghcr.io/org/img:latest", "ghcr.io", "org/img"},
      {"localhost/img", "localhost", "img"},
  };
  for (const auto& c : cases) {
    auto r = parse_image_reference(c.ref);
    ASSERT_TRUE(r) << c.ref;
    EXPECT_EQ(r->host, c.host) << c.ref;
    EXPECT_EQ(r->repo, c.repo) << c.ref;
  }
  EXPECT_FALSE(parse_image_reference(""));
  EXPECT_FALSE(parse_image_reference("host:5000/Bad Repo"));
}

TEST(DaemonConfig, TemplateGetsHostRepoAndCache) {
  auto cfg = make_daemon_config(default_fusedev_template(), "localhost:5000/ns/img:tag", "/r/cache");
  ASSERT_TRUE(cfg) << cfg.error().to_string();
  auto j = nlohmann::json::parse(*cfg);
  EXPECT_EQ(j["device"]["backend"]["type"], "registry");
  EXPECT_EQ(j["device"]["backend"]["config"]["host"], "localhost:5000");
  EXPECT_EQ(j["device"]["backend"]["config"]["repo"], "ns/img");
  EXPECT_EQ(j["device"]["backend"]["config"]["timeout"], 5);  // template values kept
  EXPECT_EQ(j["device"]["cache"]["config"]["work_dir"], "/r/cache");
  EXPECT_EQ(j["fs_prefetch"]["threads_count"], 8);
  // docker.io becomes index.docker.io as nydus-snapshotter does.
  auto hub = make_daemon_config(default_fusedev_template(), "busybox", "/c");
  ASSERT_TRUE(hub);
  EXPECT_EQ(nlohmann::json::parse(*hub)["device"]["backend"]["config"]["host"], "index.docker.io");
  EXPECT_FALSE(make_daemon_config("{}", "busybox", "/c"));
  EXPECT_FALSE(make_daemon_config("not json", "busybox", "/c"));
  EXPECT_FALSE(make_daemon_config(R"({"device":{"backend":{"type":"ftp"}}})", "busybox", "/c"));
}

TEST(ConfigToml, SnapshotterKeys) {
  auto c = parse_config_toml(R"(version = 1
root = "/var/lib/x"   # comment
address = '/run/x.sock'
[daemon]
nydusd_path = "/usr/bin/nydusd"
threads_number = 4
[log]
log_to_stdout = true
[remote.mirrors_config]
dir = ""
)");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ(c->at("root"), "/var/lib/x");
  EXPECT_EQ(c->at("address"), "/run/x.sock");
  EXPECT_EQ(c->at("daemon.nydusd_path"), "/usr/bin/nydusd");
  EXPECT_EQ(c->at("daemon.threads_number"), "4");
  EXPECT_EQ(c->at("log.log_to_stdout"), "true");
  EXPECT_EQ(c->at("remote.mirrors_config.dir"), "");
  EXPECT_FALSE(parse_config_toml("[daemon\n"));
  EXPECT_FALSE(parse_config_toml("key \"x\"\n"));
  EXPECT_FALSE(parse_config_toml("k = \"open\n"));
}
