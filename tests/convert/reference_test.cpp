// Image references normalised as Docker's distribution/reference does
// (ParseDockerRef): the expected strings are what `docker pull` resolves.
#include <gtest/gtest.h>

#include "convert/converter.h"
#include "convert/oci.h"

namespace nydus::convert {
namespace {

struct Case {
  const char* in;
  const char* host;
  const char* repository;
  const char* tag;
  const char* digest;
  const char* api_host;
  const char* full;
};

TEST(ImageRef, NormalisedAsDocker) {
  const std::string d = "sha256:" + std::string(64, 'a');
  const Case cases[] = {
      {"ubuntu", "docker.io", "library/ubuntu", "latest", "", "registry-1.docker.io", "docker.io/library/ubuntu:latest"},
      {"ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", "", "registry-1.docker.io",
       "docker.io/library/ubuntu:22.04"},
      {"library/ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", "", "registry-1.docker.io",
       "docker.io/library/ubuntu:22.04"},
      {"docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", "", "registry-1.docker.io",
       "docker.io/library/ubuntu:latest"},
      {"index.docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25", "", "registry-1.docker.io",
       "docker.io/library/nginx:1.25"},
      {"user/app:v1", "docker.io", "user/app", "v1", "", "registry-1.docker.io", "docker.io/user/app:v1"},
      {"ghcr.io/org/app:v1", "ghcr.io", "org/app", "v1", "", "ghcr.io", "ghcr.io/org/app:v1"},
      {"localhost/app", "localhost", "app", "latest", "", "localhost", "localhost/app:latest"},
      {"localhost:5000/a/b/c:t_1", "localhost:5000", "a/b/c", "t_1", "", "localhost:5000", "localhost:5000/a/b/c:t_1"},
      {"127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", "", "127.0.0.1:5000", "127.0.0.1:5000/app:latest"},
      // An upper-case first component is a host (Docker's rule).
      {"Registry/app", "Registry", "app", "latest", "", "Registry", "Registry/app:latest"},
      {"docker://quay.io/x/y:1", "quay.io", "x/y", "1", "", "quay.io", "quay.io/x/y:1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    auto r = parse_image_ref(c.in);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->host, c.host);
    EXPECT_EQ(r->repository, c.repository);
    EXPECT_EQ(r->tag, c.tag);
    EXPECT_EQ(r->digest, c.digest);
    EXPECT_EQ(r->api_host(), c.api_host);
    EXPECT_EQ(r->to_string(), c.full);
  }
  // A digest wins over a tag given with it, as ParseDockerRef does.
  auto r = parse_image_ref("ubuntu:22.04@" + d);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->repository, "library/ubuntu");
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->digest, d);
  EXPECT_EQ(r->reference(), d);
  EXPECT_EQ(r->to_string(), "docker.io/library/ubuntu@" + d);
}

TEST(ImageRef, RejectsWhatDockerRejects) {
  for (const char* bad : {"", "Ubuntu", "docker.io/Library/ubuntu", "ubuntu:", "ubuntu:-x", "ubuntu@sha256:12",
                          "host:5000/", "a//b", "ubuntu:t/x", "ubuntu:bad tag"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(parse_image_ref(bad));
  }
}

TEST(ImageRef, OciLayout) {
  auto r = parse_image_ref("oci:/tmp/img:v1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, ImageRef::Kind::kOciLayout);
  EXPECT_EQ(r->layout_dir, "/tmp/img");
  EXPECT_EQ(r->tag, "v1");
}

TEST(Platforms, ListAndHostDefault) {
  auto ps = parse_platforms("linux/amd64, linux/arm64/v8,");
  ASSERT_TRUE(ps);
  ASSERT_EQ(ps->size(), 2u);
  EXPECT_EQ((*ps)[1].architecture, "arm64");
  EXPECT_EQ((*ps)[1].variant, "v8");
  EXPECT_FALSE(parse_platforms(""));
  EXPECT_FALSE(parse_platforms("linux"));
#if defined(__x86_64__)
  EXPECT_EQ(host_platform(), "linux/amd64");
#elif defined(__aarch64__)
  EXPECT_EQ(host_platform(), "linux/arm64");
#endif
}

TEST(GoDuration, AsTimeParseDuration) {
  EXPECT_EQ(parse_go_duration("5s")->count(), 5000);
  EXPECT_EQ(parse_go_duration("1m30s")->count(), 90000);
  EXPECT_EQ(parse_go_duration("500ms")->count(), 500);
  EXPECT_EQ(parse_go_duration("1.5h")->count(), 5400000);
  EXPECT_EQ(parse_go_duration("0")->count(), 0);
  for (const char* bad : {"", "5", "s", "5x", "-1s"}) EXPECT_FALSE(parse_go_duration(bad)) << bad;
}

}  // namespace
}  // namespace nydus::convert
