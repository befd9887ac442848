#include "builder/prefetch_list.h"

namespace nydus::builder {

std::vector<uint32_t> prefetch_nodes(const std::vector<std::string>& image_paths,
                                     const std::vector<std::string>& patterns) {
  std::vector<uint32_t> out;
  std::vector<std::string> kept;
  for (auto p : patterns) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    bool covered = false;
    for (auto& k : kept) covered |= (p == k || k == "/" || p.starts_with(k + "/"));
    if (covered) continue;
    for (uint32_t i = 0; i < image_paths.size(); i++) {
      if (image_paths[i] == p) {
        kept.push_back(p);
        out.push_back(i);
        break;
      }
    }
  }
  return out;
}

}  // namespace nydus::builder
