// Prefetch lists as upstream's builder reads them for `--prefetch-policy fs`
// (and `blob`): one image path per line, surrounding whitespace trimmed; a
// path that is not absolute is skipped with a warning, and so is a path equal
// to or below an earlier kept one. The prefetch table then holds, in pattern
// order, the node each kept pattern names (a directory means everything below
// it); patterns naming nothing in this image are left out.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <unordered_set>
#include <vector>

namespace nydus::builder {

struct PrefetchPatterns {
  std::vector<std::string> paths;     // normalised: "/a/b", "/" for the root
  std::vector<std::string> warnings;  // one per skipped line
};

// Bounded: at most `max_lines` lines of at most 4096 bytes are considered.
PrefetchPatterns parse_prefetch_patterns(std::istream& in, size_t max_lines = 1u << 20);

// "/a//b/./c/" -> "/a/b/c"; "" stays "" (not absolute).
std::string normalize_image_path(const std::string& p);

// Patterns are normalised and coverage re-applied, so raw lists work too.
std::vector<uint32_t> prefetch_nodes(const std::vector<std::string>& image_paths,
                                     const std::vector<std::string>& patterns);

}  // namespace nydus::builder

namespace nydus::builder {

// Whether an image path is at or below one of the patterns (normalised);
// a lookup of the path and each of its parents, so long lists stay cheap.
class PrefetchMatcher {
 public:
  explicit PrefetchMatcher(const std::vector<std::string>& patterns);
  bool empty() const { return set_.empty(); }
  bool covers_all() const { return set_.count("/") != 0; }
  bool covers(const std::string& image_path) const;

 private:
  std::unordered_set<std::string> set_;
};

}  // namespace nydus::builder
