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

}  // namespace nydus::snapshotter
