// containerd's filter language (github.com/containerd/containerd/filters) for
// List/Walk: `field[.field...] [op value]` selectors joined by ',' (AND); a
// request's several filters are OR-ed. Operators ==, != and ~= (a regexp);
// no operator means "present". Fields and values may be "quoted"; a value may
// also be /quoted/ (for regexps). Field paths the snapshotter knows: kind,
// name, parent, labels.<key>.
#pragma once

#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "common/result.h"

namespace nydus::snapshotter {

class Filter {
 public:
  // The value of a field path, or nullopt when the item has no such field.
  using Adaptor = std::function<std::optional<std::string>(const std::vector<std::string>&)>;

  // Parses one filter string; an empty string matches everything.
  static Result<Filter> parse(std::string_view text);
  // ParseAll: an item matches when any of the filters does (none: all).
  static Result<Filter> parse_any(const std::vector<std::string>& texts);

  bool match(const Adaptor& field) const;

 private:
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  struct Selector {
    std::vector<std::string> fieldpath;
    Op op = Op::kPresent;
    std::string value;
    std::optional<std::regex> re;
  };
  // Disjunction of conjunctions; an empty outer list matches everything.
  std::vector<std::vector<Selector>> any_of_;
};

}  // namespace nydus::snapshotter
