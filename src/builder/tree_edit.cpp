#include "builder/tree_edit.h"

#include <sys/stat.h>

namespace nydus::builder {

EditTree::EditTree() {
  format::TreeNode root;
  root.mode = S_IFDIR | 0755;
  add(std::move(root));
}

uint32_t EditTree::add(format::TreeNode node, int64_t link_group) {
  node.children.clear();
  node.hardlink_of = -1;
  nodes_.push_back(std::move(node));
  kids_.emplace_back();
  group_.push_back(link_group);
  return uint32_t(nodes_.size() - 1);
}

bool EditTree::is_dir(uint32_t i) const { return S_ISDIR(nodes_[i].mode); }

int64_t EditTree::child(uint32_t dir, const std::string& name) const {
  auto it = kids_[dir].find(name);
  return it == kids_[dir].end() ? -1 : int64_t(it->second);
}

void EditTree::set_child(uint32_t dir, const std::string& name, uint32_t node) {
  nodes_[node].name = name;
  kids_[dir][name] = node;
}

void EditTree::remove_child(uint32_t dir, const std::string& name) { kids_[dir].erase(name); }

void EditTree::clear_children(uint32_t dir) { kids_[dir].clear(); }

EditTree::Finished EditTree::finish() const {
  Finished f;
  std::map<int64_t, uint32_t> leaders;  // group -> output index of its first reachable member
  // Explicit stack: the depth of an untrusted tree must not bound our C++ stack.
  struct Item {
    uint32_t arena;
    int64_t parent;  // output index
    std::string path;
  };
  std::vector<Item> stack{{0, -1, "/"}};
  while (!stack.empty()) {
    Item it = std::move(stack.back());
    stack.pop_back();
    const uint32_t out = uint32_t(f.nodes.size());
    f.nodes.push_back(nodes_[it.arena]);
    f.nodes.back().children.clear();
    f.origin.push_back(it.arena);
    f.image_paths.push_back(it.path);
    if (it.parent >= 0) f.nodes[size_t(it.parent)].children.push_back(out);
    if (group_[it.arena] >= 0 && !is_dir(it.arena)) {
      auto [l, fresh] = leaders.try_emplace(group_[it.arena], out);
      if (!fresh) f.nodes.back().hardlink_of = l->second;
    }
    const auto& kids = kids_[it.arena];
    for (auto k = kids.rbegin(); k != kids.rend(); ++k)
      stack.push_back({k->second, out, (it.path == "/" ? "" : it.path) + "/" + k->first});
  }
  return f;
}

}  // namespace nydus::builder
