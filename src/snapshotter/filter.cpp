#include "snapshotter/filter.h"

#include <cctype>

namespace nydus::snapshotter {
namespace {

// Filters come from clients; keep them to a sane size.
constexpr std::size_t kMaxFilterBytes = 64 * 1024;

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  bool at_end() {
    skip_space();
    return pos_ >= s_.size();
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  char peek() {
    skip_space();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  size_t pos() const { return pos_; }

  static bool field_char(char c) {
    return c == '_' || std::isalnum(static_cast<unsigned char>(c));
  }

  // A field: identifier characters or a quoted string.
  Result<std::string> field() {
    skip_space();
    if (pos_ < s_.size() && (s_[pos_] == '"' || s_[pos_] == '`')) return quoted();
    size_t start = pos_;
    while (pos_ < s_.size() && field_char(s_[pos_])) ++pos_;
    if (start == pos_) return error("expected a field name");
    return std::string(s_.substr(start, pos_ - start));
  }

  // An operator if one follows.
  std::optional<std::string> op() {
    skip_space();
    if (pos_ + 1 < s_.size() && s_[pos_ + 1] == '=' &&
        (s_[pos_] == '=' || s_[pos_] == '!' || s_[pos_] == '~')) {
      std::string o(s_.substr(pos_, 2));
      pos_ += 2;
      return o;
    }
    return std::nullopt;
  }

  // A value: quoted ("..", /../, `..`) or a run of non-space, non-comma characters.
  Result<std::string> value() {
    skip_space();
    if (pos_ < s_.size() && (s_[pos_] == '"' || s_[pos_] == '/' || s_[pos_] == '`')) return quoted();
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != ',' && !std::isspace(static_cast<unsigned char>(s_[pos_])))
      ++pos_;
    if (start == pos_) return error("expected a value");
    return std::string(s_.substr(start, pos_ - start));
  }

  std::unexpected<Error> error(std::string_view what) const {
    return errorf(Errc::kInvalidArgument, "filter {:?}: {} at offset {}", std::string(s_), what, pos_);
  }

 private:
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }

  // Go-style quoted string with the common escapes; the delimiter may be
  // escaped inside (/a\/b/ as containerd's scanner allows).
  Result<std::string> quoted() {
    char q = s_[pos_++];
    std::string out;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == q) return out;
      if (c == '\\' && q != '`') {
        if (pos_ >= s_.size()) break;
        char e = s_[pos_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case '\\': out += '\\'; break;
          case '"': out += '"'; break;
          case '/': out += (q == '/') ? "/" : "\\/"; break;
          default:
            // Keep unknown escapes for regexps (\d, \.): they are the regexp's.
            out += '\\';
            out += e;
        }
        continue;
      }
      out += c;
    }
    return error("unterminated quoted string");
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

Result<Filter> Filter::parse(std::string_view text) {
  if (text.size() > kMaxFilterBytes) return make_error(Errc::kInvalidArgument, "filter too long");
  Filter f;
  Parser p(text);
  if (p.at_end()) return f;  // empty: match all
  std::vector<Selector> all;
  while (true) {
    Selector sel;
    NYDUS_ASSIGN_OR_RETURN(std::string first, p.field());
    sel.fieldpath.push_back(std::move(first));
    while (p.eat('.')) {
      NYDUS_ASSIGN_OR_RETURN(std::string next, p.field());
      sel.fieldpath.push_back(std::move(next));
    }
    if (auto o = p.op()) {
      NYDUS_ASSIGN_OR_RETURN(sel.value, p.value());
      if (*o == "==") {
        sel.op = Op::kEqual;
      } else if (*o == "!=") {
        sel.op = Op::kNotEqual;
      } else {
        sel.op = Op::kMatches;
        try {
          sel.re.emplace(sel.value, std::regex::ECMAScript);
        } catch (const std::regex_error& e) {
          return p.error(std::string("bad regexp: ") + e.what());
        }
      }
    }
    all.push_back(std::move(sel));
    if (p.at_end()) break;
    if (!p.eat(',')) return p.error("expected ','");
  }
  f.any_of_.push_back(std::move(all));
  return f;
}

Result<Filter> Filter::parse_any(const std::vector<std::string>& texts) {
  Filter f;
  for (const auto& t : texts) {
    NYDUS_ASSIGN_OR_RETURN(Filter one, parse(t));
    if (one.any_of_.empty()) return Filter{};  // one empty filter matches all
    for (auto& c : one.any_of_) f.any_of_.push_back(std::move(c));
  }
  return f;
}

bool Filter::match(const Adaptor& field) const {
  if (any_of_.empty()) return true;
  for (const auto& conj : any_of_) {
    bool ok = true;
    for (const auto& sel : conj) {
      auto v = field(sel.fieldpath);
      switch (sel.op) {
        case Op::kPresent: ok = v.has_value(); break;
        case Op::kEqual: ok = v && *v == sel.value; break;
        case Op::kNotEqual: ok = !v || *v != sel.value; break;
        case Op::kMatches: ok = v && std::regex_search(*v, *sel.re); break;
      }
      if (!ok) break;
    }
    if (ok) return true;
  }
  return false;
}

}  // namespace nydus::snapshotter
