#include "snapshotter/image_reference.h"

#include <algorithm>
#include <cctype>

namespace nydus::snapshotter {

Result<ImageReference> parse_image_reference(std::string_view ref) {
  if (ref.empty() || ref.size() > 4096)
    return make_error(Errc::kInvalidArgument, "image reference empty or too long");
  std::string_view name = ref;
  if (auto at = name.find('@'); at != std::string_view::npos) name = name.substr(0, at);
  // A tag is a ':' after the last '/' (a ':' before it is a registry port).
  auto slash = name.rfind('/');
  auto colon = name.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash))
    name = name.substr(0, colon);
  ImageReference r;
  auto first = name.find('/');
  std::string_view head = name.substr(0, first);
  if (first != std::string_view::npos &&
      (head.find('.') != std::string_view::npos || head.find(':') != std::string_view::npos ||
       head == "localhost" || std::any_of(head.begin(), head.end(), [](char c) { return std::isupper(static_cast<unsigned char>(c)); }))) {
    r.host = std::string(head);
    r.repo = std::string(name.substr(first + 1));
  } else {
    r.host = "docker.io";
    r.repo = std::string(name);
    if (r.repo.find('/') == std::string::npos) r.repo = "library/" + r.repo;
  }
  if (r.repo.empty() || r.host.empty())
    return errorf(Errc::kInvalidArgument, "image reference {:?}: no repository", std::string(ref));
  for (char c : r.repo)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) ||
          c == '/' || c == '.' || c == '_' || c == '-'))
      return errorf(Errc::kInvalidArgument, "image reference {:?}: bad repository character", std::string(ref));
  return r;
}

Result<std::string> normalized_image(std::string_view image_ref) {
  NYDUS_ASSIGN_OR_RETURN(ImageReference r, parse_image_reference(image_ref));
  std::string out = r.host + "/" + r.repo;
  if (auto at = image_ref.find('@'); at != std::string_view::npos) return out + std::string(image_ref.substr(at));
  const auto slash = image_ref.rfind('/'), colon = image_ref.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash))
    return out + std::string(image_ref.substr(colon));
  return out + ":latest";
}

}  // namespace nydus::snapshotter
