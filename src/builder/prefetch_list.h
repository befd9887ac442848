// The prefetch table of an image from `--prefetch-policy fs` patterns: the
// nodes whose image path equals a pattern (a directory means everything below
// it), each pattern once and none already covered by an earlier one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nydus::builder {

std::vector<uint32_t> prefetch_nodes(const std::vector<std::string>& image_paths,
                                     const std::vector<std::string>& patterns);

}  // namespace nydus::builder
