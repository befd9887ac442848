// Docker image references as the registry backend needs them: registry host
// and repository ("localhost:5000/a/b:tag" -> localhost:5000, a/b), normalised
// as Docker does (no domain -> docker.io, one path element -> library/...).
#pragma once

#include <string>

#include "common/result.h"

namespace nydus::snapshotter {

struct ImageReference {
  std::string host;
  std::string repo;
};

Result<ImageReference> parse_image_reference(std::string_view ref);

// The whole reference normalised the same way, as the kubelet hands it to
// credential plugins and as CRI keys an image: host/repo with the tag
// (":latest" when none) or digest ("nginx" -> "docker.io/library/nginx:latest").
Result<std::string> normalized_image(std::string_view image_ref);

}  // namespace nydus::snapshotter
