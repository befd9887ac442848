// Scans a source directory into the tree the bootstrap writer serialises:
// one TreeNode per entry (lstat, xattrs, symlink targets), hardlinked
// non-directories grouped by (st_dev, st_ino), and the source path of every node so the
// chunker can read file data later.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/bootstrap_writer.h"

namespace nydus::builder {

struct SourceTree {
  std::vector<format::TreeNode> nodes;  // nodes[0] = root
  std::vector<std::string> paths;       // source path of each node
  std::vector<std::string> image_paths; // "/a/b" path inside the image
  std::vector<std::string> warnings;    // things skipped (e.g. unsupported xattrs)
};

Result<SourceTree> scan_directory(const std::filesystem::path& root);

}  // namespace nydus::builder
