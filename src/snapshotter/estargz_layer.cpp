#include "snapshotter/estargz_layer.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "format/bootstrap.h"
#include "format/digest.h"
#include "format/stargz_toc.h"
#include "storage/backend.h"

extern char** environ;

namespace nydus::snapshotter {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kTocName = "stargz.index.json";

// A tar header's numeric field: octal text, or base-256 (high bit set).
std::optional<uint64_t> tar_number(std::span<const uint8_t> f) {
  if (!f.empty() && (f[0] & 0x80)) {
    uint64_t v = f[0] & 0x7f;
    for (size_t i = 1; i < f.size(); ++i) {
      if (v >> 55) return std::nullopt;
      v = v << 8 | f[i];
    }
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < f.size() && f[i] == ' ') ++i;
  for (; i < f.size() && f[i] >= '0' && f[i] <= '7'; ++i) {
    if (v >> 60) return std::nullopt;
    v = v << 3 | uint64_t(f[i] - '0');
  }
  return v;
}

// Inflates one gzip member of `gz`, at most `max` bytes of output.
Result<std::string> gunzip_bounded(std::span<const uint8_t> gz, size_t max) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return make_error(Errc::kInternal, "inflateInit2");
  std::string out;
  z.next_in = const_cast<Bytef*>(gz.data());
  z.avail_in = static_cast<uInt>(gz.size());
  int rc = Z_OK;
  char buf[64 << 10];
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      return corrupt("eStargz TOC: gzip: {}", z.msg ? z.msg : "truncated stream");
    }
    size_t n = sizeof buf - z.avail_out;
    if (out.size() + n > max) {
      inflateEnd(&z);
      return corrupt("eStargz TOC inflates to more than {} bytes", max);
    }
    out.append(buf, n);
    if (rc == Z_OK && n == 0 && z.avail_in == 0) {
      inflateEnd(&z);
      return corrupt("eStargz TOC: gzip stream truncated");
    }
  }
  inflateEnd(&z);
  return out;
}

// Runs argv (argv[0] a path), output to `log`; the exit status, or why not.
Status run_tool(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return errorf(Errc::kNotFound, "run {}: {}", argv[0], std::strerror(rc));
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return ok();
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string tail = ss.str();
  if (tail.size() > 1500) tail = tail.substr(tail.size() - 1500);
  return errorf(Errc::kIo, "{} {} failed (status {:#x}): {}", argv[0], argv.size() > 1 ? argv[1] : "", st, tail);
}

Status write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), std::streamsize(text.size()));
  out.close();
  if (!out) return sys_error("write " + path);
  return ok();
}

}  // namespace

Result<std::string> toc_json_from_gzip_tar(std::span<const uint8_t> gz, size_t max_json) {
  // The TOC tar holds stargz.index.json (maybe after PAX headers): at most
  // the JSON plus a few headers and padding.
  NYDUS_ASSIGN_OR_RETURN(std::string tar, gunzip_bounded(gz, max_json + (64u << 10)));
  const auto* p = reinterpret_cast<const uint8_t*>(tar.data());
  size_t off = 0;
  while (off + 512 <= tar.size()) {
    std::span<const uint8_t> h(p + off, 512);
    if (std::all_of(h.begin(), h.end(), [](uint8_t c) { return c == 0; })) break;
    std::string name(reinterpret_cast<const char*>(h.data()), strnlen(reinterpret_cast<const char*>(h.data()), 100));
    auto size = tar_number(h.subspan(124, 12));
    if (!size) return corrupt("eStargz TOC: bad tar size field");
    char type = char(h[156]);
    off += 512;
    if (*size > tar.size() - off) return corrupt("eStargz TOC: tar member {:?} runs past the stream", name);
    if ((type == '0' || type == '\0') && (name == kTocName || name == "./" + std::string(kTocName))) {
      if (*size > max_json) return corrupt("eStargz TOC larger than {} bytes", max_json);
      return tar.substr(off, *size);
    }
    off += (*size + 511) / 512 * 512;
  }
  return corrupt("eStargz TOC: no {} in the TOC tar", kTocName);
}

Status prepare_estargz_layer(const EstargzLayerRequest& req) {
  auto cfg = nlohmann::json::parse(req.backend_json, nullptr, false);
  if (!cfg.is_object() || !cfg.contains("device") || !cfg["device"].is_object() || !cfg["device"].contains("backend"))
    return make_error(Errc::kInvalidArgument, "nydusd config has no device.backend");
  NYDUS_ASSIGN_OR_RETURN(auto backend, storage::make_backend(cfg["device"]["backend"]));
  NYDUS_ASSIGN_OR_RETURN(uint64_t size, backend->blob_size(req.blob_id));
  if (size < format::kLegacyStargzFooterSize) return errorf(Errc::kNotFound, "layer of {} bytes: no eStargz footer", size);
  // The footer (51 bytes; a legacy stargz one is its last 47).
  std::vector<uint8_t> tail(std::min<uint64_t>(size, format::kEstargzFooterSize));
  NYDUS_TRY(backend->read(req.blob_id, size - tail.size(), tail));
  auto toc_off = format::parse_stargz_footer(tail);
  if (!toc_off) return errorf(Errc::kNotFound, "not eStargz: {}", toc_off.error().message);
  // Which footer it was decides where the TOC region ends.
  bool estargz = tail.size() == format::kEstargzFooterSize && tail[10] == 26 && tail[12] == 'S';
  uint64_t footer = estargz ? format::kEstargzFooterSize : format::kLegacyStargzFooterSize;
  if (*toc_off >= size - footer) return corrupt("eStargz footer: TOC offset {} outside the {}-byte layer", *toc_off, size);
  uint64_t region = size - footer - *toc_off;
  if (region > kMaxEstargzTocRegion)
    return corrupt("eStargz TOC region of {} bytes exceeds {} bytes", region, kMaxEstargzTocRegion);
  std::vector<uint8_t> gz(region);
  NYDUS_TRY(backend->read(req.blob_id, *toc_off, gz));
  NYDUS_ASSIGN_OR_RETURN(std::string json, toc_json_from_gzip_tar(gz, format::kMaxStargzTocSize));
  if (!req.toc_digest.empty()) {
    std::string got = "sha256:" + format::to_hex(format::sha256(
                                      std::span(reinterpret_cast<const uint8_t*>(json.data()), json.size())));
    if (got != req.toc_digest)
      return corrupt("eStargz TOC of {} hashes to {}, not the layer's toc.digest annotation {}", req.blob_id, got,
                     req.toc_digest.substr(0, 80));
  }

  // The image's chunk size is the one the layer's files were cut with
  // (upstream passes 4 MiB whatever the layer, a FIXME there); nydus-image
  // refuses what RAFS cannot hold, and containerd then downloads the layer.
  auto toc = format::parse_stargz_toc(std::span(reinterpret_cast<const uint8_t*>(json.data()), json.size()));
  if (!toc) return std::unexpected(std::move(toc).error().context("eStargz TOC"));
  const uint64_t chunk_size = format::stargz_writer_chunk_size(*toc);
  if (!req.below_bootstrap.empty()) {
    NYDUS_ASSIGN_OR_RETURN(auto below, format::Bootstrap::open(req.below_bootstrap));
    if (below->chunk_size() != chunk_size)
      return errorf(Errc::kUnsupported,
                    "its files are cut in chunks of {:#x}, the eStargz layers below it in {:#x} (one image, one chunk "
                    "size)", chunk_size, below->chunk_size());
  }

  const std::string toc_path = req.out_dir + "/" + std::string(kTocName);
  NYDUS_TRY(write_file(toc_path, json));
  const std::string boot = req.out_dir + "/" + req.blob_id;
  const std::string tmp = boot + ".tmp";
  NYDUS_TRY(run_tool({req.nydus_image, "create", "--type", "estargztoc-ref", "--blob-id", req.blob_id,
                      "--blob-data-size", fmt::format("{:x}", size), "--chunk-size", fmt::format("{:#x}", chunk_size),
                      "--bootstrap", tmp, toc_path},
                     req.out_dir + "/nydus-image.log"));
  if (::rename(tmp.c_str(), boot.c_str()) != 0) return sys_error("rename " + tmp);
  return ok();
}

Status merge_estargz_bootstraps(const std::string& nydus_image, const std::vector<std::string>& layer_boots,
                                const std::string& out) {
  if (layer_boots.empty()) return make_error(Errc::kInvalidArgument, "no eStargz layer bootstraps to merge");
  const std::string tmp = out + ".merging";
  std::error_code ec;
  if (layer_boots.size() == 1) {
    fs::copy_file(layer_boots[0], tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) return errorf(Errc::kIo, "copy {}: {}", layer_boots[0], ec.message());
  } else {
    std::vector<std::string> argv{nydus_image, "merge", "--bootstrap", tmp};
    argv.insert(argv.end(), layer_boots.begin(), layer_boots.end());
    NYDUS_TRY(run_tool(argv, out + ".merge.log"));
  }
  if (::rename(tmp.c_str(), out.c_str()) != 0) return sys_error("rename " + tmp);
  return ok();
}

}  // namespace nydus::snapshotter
