#include "format/stargz_toc.h"

#include "common/base64.h"

#include <algorithm>
#include <bit>
#include <ctime>
#include <limits>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nydus::format {

namespace {

using nlohmann::json;

Result<StargzType> parse_type(const std::string& t) {
  if (t == "dir") return StargzType::kDir;
  if (t == "reg") return StargzType::kReg;
  if (t == "symlink") return StargzType::kSymlink;
  if (t == "hardlink") return StargzType::kHardlink;
  if (t == "char") return StargzType::kChar;
  if (t == "block") return StargzType::kBlock;
  if (t == "fifo") return StargzType::kFifo;
  if (t == "chunk") return StargzType::kChunk;
  return corrupt("unknown entry type '{}'", t.substr(0, 32));
}

// An unsigned integer field no larger than `max`; absent or null = 0.
Result<uint64_t> uint_field(const json& e, const char* key, uint64_t max) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return uint64_t(0);
  uint64_t v = 0;
  if (it->is_number_unsigned()) v = it->get<uint64_t>();
  else if (it->is_number_integer() && it->get<int64_t>() >= 0) v = uint64_t(it->get<int64_t>());
  else return corrupt("'{}' is not a non-negative integer", key);
  if (v > max) return corrupt("'{}' = {} exceeds {}", key, v, max);
  return v;
}

Result<std::string> string_field(const json& e, const char* key) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return std::string();
  if (!it->is_string()) return corrupt("'{}' is not a string", key);
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > kMaxStargzNameSize) return corrupt("'{}' is {} bytes long", key, s.size());
  return s;
}


// RFC 3339 as Go's time.Time marshals it: "2006-01-02T15:04:05[.frac](Z|±hh:mm)".
// Anything else gives 0 (mtime unknown), as the field is informational.
int64_t parse_rfc3339(const std::string& s) {
  int Y, M, D, h, m, sec, n = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 || n != 19) return 0;
  size_t i = 19;
  if (i < s.size() && s[i] == '.')
    for (i++; i < s.size() && s[i] >= '0' && s[i] <= '9'; i++) {
    }
  int64_t off = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (s.size() != i + 6 || std::sscanf(s.c_str() + i + 1, "%2d:%2d", &oh, &om) != 2) return 0;
    off = (s[i] == '-' ? -1 : 1) * int64_t(oh * 3600 + om * 60);
  } else if (i + 1 != s.size() || s[i] != 'Z') {
    return 0;
  }
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return 0;
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  return int64_t(timegm(&tm)) - off;
}

Result<StargzEntry> parse_entry(const json& e) {
  if (!e.is_object()) return corrupt("entry is not an object");
  StargzEntry x;
  NYDUS_ASSIGN_OR_RETURN(x.name, string_field(e, "name"));
  if (x.name.empty()) return corrupt("entry without a name");
  NYDUS_ASSIGN_OR_RETURN(std::string type, string_field(e, "type"));
  NYDUS_ASSIGN_OR_RETURN(x.type, parse_type(type));
  constexpr uint64_t kU32 = std::numeric_limits<uint32_t>::max();
  constexpr uint64_t kOff = uint64_t(1) << 56;  // far beyond any layer; keeps sums from overflowing
  NYDUS_ASSIGN_OR_RETURN(x.size, uint_field(e, "size", kOff));
  NYDUS_ASSIGN_OR_RETURN(x.link_name, string_field(e, "linkName"));
  NYDUS_ASSIGN_OR_RETURN(uint64_t mode, uint_field(e, "mode", kU32));
  x.mode = uint32_t(mode);
  NYDUS_ASSIGN_OR_RETURN(uint64_t uid, uint_field(e, "uid", kU32));
  NYDUS_ASSIGN_OR_RETURN(uint64_t gid, uint_field(e, "gid", kU32));
  x.uid = uint32_t(uid);
  x.gid = uint32_t(gid);
  NYDUS_ASSIGN_OR_RETURN(uint64_t maj, uint_field(e, "devMajor", 0xfff));
  NYDUS_ASSIGN_OR_RETURN(uint64_t min, uint_field(e, "devMinor", 0xfffff));
  x.dev_major = uint32_t(maj);
  x.dev_minor = uint32_t(min);
  NYDUS_ASSIGN_OR_RETURN(std::string mt, string_field(e, "modtime"));
  if (!mt.empty()) x.mtime = parse_rfc3339(mt);
  NYDUS_ASSIGN_OR_RETURN(x.offset, uint_field(e, "offset", kOff));
  NYDUS_ASSIGN_OR_RETURN(x.chunk_offset, uint_field(e, "chunkOffset", kOff));
  NYDUS_ASSIGN_OR_RETURN(x.chunk_size, uint_field(e, "chunkSize", kOff));
  NYDUS_ASSIGN_OR_RETURN(x.inner_offset, uint_field(e, "innerOffset", kOff));
  NYDUS_ASSIGN_OR_RETURN(std::string cd, string_field(e, "chunkDigest"));
  if (!cd.empty()) {
    if (!cd.starts_with("sha256:")) return corrupt("chunkDigest '{}' is not sha256", cd.substr(0, 80));
    auto d = digest_from_hex(std::string_view(cd).substr(7));
    if (!d || cd.size() != 7 + 64) return corrupt("chunkDigest '{}' is not 64 hex digits", cd.substr(0, 80));
    x.chunk_digest = *d;
  }
  if (auto it = e.find("xattrs"); it != e.end() && !it->is_null()) {
    if (!it->is_object()) return corrupt("'xattrs' is not an object");
    for (const auto& [k, v] : it->items()) {
      if (k.empty() || k.size() > 255) return corrupt("xattr name of {} bytes", k.size());
      if (!v.is_string()) return corrupt("xattr {} is not a base64 string", k);
      const auto& s = v.get_ref<const std::string&>();
      if (s.size() > kMaxStargzXattrSize / 3 * 4 + 4) return corrupt("xattr {} is too large", k);
      auto val = base64_decode(s);
      if (!val) return std::unexpected(std::move(val).error().context("xattr " + k));
      x.xattrs.emplace_back(k, std::move(*val));
    }
  }
  return x;
}

}  // namespace

Result<StargzToc> parse_stargz_toc(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxStargzTocSize)
    return corrupt("eStargz TOC of {} bytes exceeds {} bytes", bytes.size(), kMaxStargzTocSize);
  json j;
  try {
    // The TOC is 3 levels deep ({entries: [{xattrs: {}}]}): refuse deeper
    // nesting while parsing, before it costs memory.
    j = json::parse(bytes.begin(), bytes.end(), [](int depth, json::parse_event_t, json&) {
      if (depth > 4) throw std::runtime_error("nested deeper than an eStargz TOC");
      return true;
    });
  } catch (const std::exception& ex) {
    return corrupt("eStargz TOC is not valid JSON: {}", ex.what());
  }
  if (!j.is_object()) return corrupt("eStargz TOC is not a JSON object");
  StargzToc toc;
  auto v = uint_field(j, "version", std::numeric_limits<uint32_t>::max());
  if (!v) return std::unexpected(std::move(v).error().context("eStargz TOC"));
  toc.version = uint32_t(*v);
  if (toc.version != 1) return errorf(Errc::kUnsupported, "eStargz TOC version {} is unsupported (1)", toc.version);
  auto it = j.find("entries");
  if (it == j.end() || !it->is_array()) return corrupt("eStargz TOC has no 'entries' array");
  if (it->empty()) return corrupt("eStargz TOC has no entries");
  if (it->size() > kMaxStargzTocEntries) return corrupt("eStargz TOC has {} entries", it->size());
  toc.entries.reserve(it->size());
  for (size_t i = 0; i < it->size(); i++) {
    auto e = parse_entry((*it)[i]);
    if (!e) return std::unexpected(std::move(e).error().context(fmt::format("eStargz TOC entry {}", i)));
    toc.entries.push_back(std::move(*e));
  }
  return toc;
}

uint64_t stargz_writer_chunk_size(const StargzToc& toc) {
  constexpr uint64_t kDefault = 4u << 20;  // eStargz's, and upstream's --chunk-size for these images
  uint64_t cut = 0, largest = 0;
  for (const auto& e : toc.entries) {
    if (e.type != StargzType::kReg && e.type != StargzType::kChunk) continue;
    cut = std::max(cut, e.chunk_size);
    if (e.type == StargzType::kReg) largest = std::max(largest, e.size);
  }
  if (cut != 0) return cut;
  return largest <= kDefault ? kDefault : std::bit_ceil(std::min<uint64_t>(largest, uint64_t(1) << 62));
}

Result<uint64_t> parse_stargz_footer(std::span<const uint8_t> tail) {
  auto hex16 = [](std::span<const uint8_t> s) -> std::optional<uint64_t> {
    uint64_t v = 0;
    for (uint8_t c : s) {
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v << 4 | uint64_t(d);
    }
    return v;
  };
  // eStargz: gzip header with FEXTRA (10 bytes), XLEN=26, subfield "SG" of
  // 22 bytes: %016x + "STARGZ"; then an empty deflate block and the trailer.
  if (tail.size() >= kEstargzFooterSize) {
    auto f = tail.last(kEstargzFooterSize);
    if (f[0] == 0x1f && f[1] == 0x8b && f[2] == 8 && (f[3] & 4) && f[10] == 26 && f[11] == 0 && f[12] == 'S' &&
        f[13] == 'G' && f[14] == 22 && f[15] == 0 && std::string_view(reinterpret_cast<const char*>(&f[32]), 6) == "STARGZ") {
      if (auto v = hex16(f.subspan(16, 16))) return *v;
    }
  }
  // Legacy stargz: XLEN=22 and the 22 bytes %016x"STARGZ" with no subfield header.
  if (tail.size() >= kLegacyStargzFooterSize) {
    auto f = tail.last(kLegacyStargzFooterSize);
    if (f[0] == 0x1f && f[1] == 0x8b && f[2] == 8 && (f[3] & 4) && f[10] == 22 && f[11] == 0 &&
        std::string_view(reinterpret_cast<const char*>(&f[28]), 6) == "STARGZ") {
      if (auto v = hex16(f.subspan(12, 16))) return *v;
    }
  }
  return corrupt("no eStargz footer at the end of the layer");
}

}  // namespace nydus::format
