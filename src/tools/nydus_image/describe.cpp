#include "tools/nydus_image/describe.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "format/layout.h"

namespace nydus::tools {

namespace {

// Length of the valid UTF-8 sequence at s[i], 0 if invalid.
size_t utf8_len(std::string_view s, size_t i) {
  const auto c = uint8_t(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
  else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
  else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; k++) {
    const auto d = uint8_t(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (d & 0x3F);
  }
  // Reject overlong forms, surrogates and out-of-range code points.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

std::string scalar_text(const OJson& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  return v.dump();
}

void print_table(const OJson& rows, int indent) {
  std::vector<std::string> cols;
  for (const auto& r : rows)
    for (const auto& [k, _] : r.items())
      if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> width;
  for (auto& c : cols) width.push_back(c.size());
  for (const auto& r : rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < cols.size(); i++) {
      std::string s = r.contains(cols[i]) ? scalar_text(r[cols[i]]) : "";
      width[i] = std::max(width[i], s.size());
      line.push_back(std::move(s));
    }
    cells.push_back(std::move(line));
  }
  auto emit = [&](const std::vector<std::string>& line) {
    std::string out(size_t(indent), ' ');
    for (size_t i = 0; i < line.size(); i++) {
      out += line[i];
      if (i + 1 < line.size()) out += std::string(width[i] - line[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  emit(cols);
  for (auto& l : cells) emit(l);
}

void print_node(const OJson& j, int indent, const std::vector<std::string>& tables) {
  const std::string pad(size_t(indent), ' ');
  for (const auto& [key, v] : j.items()) {
    if (v.is_object()) {
      std::cout << pad << key << ":\n";
      print_node(v, indent + 2, tables);
    } else if (v.is_array()) {
      const bool objects = !v.empty() && std::all_of(v.begin(), v.end(), [](const OJson& e) { return e.is_object(); });
      if (!objects) {
        std::string line;
        for (const auto& e : v) line += (line.empty() ? "" : ", ") + scalar_text(e);
        std::cout << pad << key << ": " << (v.empty() ? "(none)" : line) << "\n";
      } else if (std::find(tables.begin(), tables.end(), key) != tables.end()) {
        std::cout << pad << key << ":\n";
        print_table(v, indent + 2);
      } else {
        std::cout << pad << key << ":\n";
        for (const auto& e : v) {
          std::cout << pad << "  -\n";
          print_node(e, indent + 4, tables);
        }
      }
    } else {
      std::cout << pad << key << ": " << scalar_text(v) << "\n";
    }
  }
}

}  // namespace

std::string escape_bytes(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const auto c = uint8_t(raw[i]);
    if (c == '\\') { out += "\\\\"; i++; continue; }
    if (c == '\n') { out += "\\n"; i++; continue; }
    if (c == '\t') { out += "\\t"; i++; continue; }
    if (c < 0x20 || c == 0x7F) { out += fmt::format("\\x{:02x}", c); i++; continue; }
    size_t n = utf8_len(raw, i);
    if (n == 0) { out += fmt::format("\\x{:02x}", c); i++; continue; }
    out.append(raw.substr(i, n));
    i += n;
  }
  return out;
}

static void name_bits(std::vector<std::string>& out, uint64_t flags,
                      std::initializer_list<std::pair<uint64_t, const char*>> names) {
  uint64_t known = 0;
  for (auto& [bit, name] : names) {
    known |= bit;
    if (flags & bit) out.push_back(name);
  }
  if (flags & ~known) out.push_back(hex_u64(flags & ~known));
}

std::vector<std::string> super_flag_names(uint64_t f) {
  namespace sf = format::super_flags;
  std::vector<std::string> out;
  name_bits(out, f,
            {{sf::kCompressionNone, "compress_none"}, {sf::kCompressionLz4, "compress_lz4_block"},
             {sf::kHashBlake3, "hash_blake3"}, {sf::kHashSha256, "hash_sha256"},
             {sf::kExplicitUidGid, "explicit_uid_gid"}, {sf::kHasXattr, "has_xattr"},
             {sf::kCompressionGzip, "compress_gzip"}, {sf::kCompressionZstd, "compress_zstd"},
             {sf::kInlinedChunkDigest, "inlined_chunk_digest"}, {sf::kTarfsMode, "tarfs_mode"},
             {sf::kEncryptionNone, "encryption_none"}, {sf::kEncryptionAes128Xts, "encryption_aes128xts"}});
  return out;
}

std::vector<std::string> blob_feature_names(uint32_t f) {
  namespace bf = format::blob_features;
  std::vector<std::string> out;
  name_bits(out, f,
            {{bf::kAligned, "aligned"}, {bf::kInlinedFsMeta, "inlined_fs_meta"},
             {bf::kChunkInfoV2, "chunk_info_v2"}, {bf::kZran, "zran"}, {bf::kSeparate, "separate"},
             {bf::kInlinedChunkDigest, "inlined_chunk_digest"}, {bf::kTarfs, "tarfs"}, {bf::kBatch, "batch"},
             {bf::kEncrypted, "encrypted"}, {bf::kIsChunkdictGenerated, "chunkdict_generated"},
             {bf::kIsSeparatedWithPrefetchFiles, "separated_with_prefetch_files"},
             {bf::kExternal, "external"}, {bf::kHasTarHeader, "has_tar_header"}, {bf::kHasToc, "has_toc"},
             {bf::kCapTarToc, "cap_tar_toc"}, {bf::kV5NoExtBlobTable, "v5_no_ext_blob_table"}});
  return out;
}

std::string hex_u64(uint64_t v) { return fmt::format("{:#x}", v); }

std::string octal_mode(uint32_t mode) { return fmt::format("0{:o}", mode); }

std::string utc_time(uint64_t sec, uint32_t nsec) {
  std::tm tm{};
  const time_t t = time_t(sec);
  if (sec > uint64_t(INT64_MAX) || !gmtime_r(&t, &tm)) return fmt::format("{}.{:09}", sec, nsec);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:09}Z", buf, nsec);
}

void print_text(const OJson& doc, const std::vector<std::string>& tables) { print_node(doc, 0, tables); }

std::string write_json(const OJson& doc, const std::string& path) {
  const std::string text = doc.dump(2, ' ', false, OJson::error_handler_t::replace) + "\n";
  if (path == "-") {
    std::cout << text << std::flush;
    return std::cout ? "" : "writing stdout failed";
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) return "cannot write " + path + ": " + std::strerror(errno);
  return "";
}

}  // namespace nydus::tools
