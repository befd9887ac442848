// A mutable filesystem tree for builders whose input can change what was
// already added (a tar stream with duplicate paths, overlay merges of layers):
// nodes live in an arena and are never moved; a replaced or removed node just
// becomes unreachable. finish() keeps the reachable nodes only, in the
// bootstrap writer's form.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "format/bootstrap_writer.h"

namespace nydus::builder {

class EditTree {
 public:
  EditTree();  // creates the root (node 0), a 0755 directory

  uint32_t add(format::TreeNode node, int64_t link_group = -1);
  format::TreeNode& node(uint32_t i) { return nodes_[i]; }
  const format::TreeNode& node(uint32_t i) const { return nodes_[i]; }
  size_t size() const { return nodes_.size(); }
  bool is_dir(uint32_t i) const;

  // Child of directory `dir` by name, or -1.
  int64_t child(uint32_t dir, const std::string& name) const;
  // Makes `node` the child `name` of `dir`, replacing (unlinking) any earlier one.
  void set_child(uint32_t dir, const std::string& name, uint32_t node);
  void remove_child(uint32_t dir, const std::string& name);
  void clear_children(uint32_t dir);
  const std::map<std::string, uint32_t>& children(uint32_t dir) const { return kids_[dir]; }
  // Hardlink group of a node (-1 if none); groups are caller-chosen ids.
  int64_t link_group(uint32_t i) const { return group_[i]; }
  void set_link_group(uint32_t i, int64_t g) { group_[i] = g; }

  struct Finished {
    std::vector<format::TreeNode> nodes;   // nodes[0] = root, children filled
    std::vector<uint32_t> origin;          // arena index of each output node
    std::vector<std::string> image_paths;  // "/a/b"
  };
  // Reachable nodes depth first. In a hardlink group the first reachable
  // member becomes the leader (its origin is still its own arena node).
  Finished finish() const;

 private:
  std::vector<format::TreeNode> nodes_;
  std::vector<std::map<std::string, uint32_t>> kids_;
  std::vector<int64_t> group_;
};

}  // namespace nydus::builder
