// nydusify: convert OCI/Docker images into Nydus images.
//
//   nydusify convert --source HOST/REPO:TAG --target HOST/REPO:TAG [--source-insecure] [--target-insecure]
//   nydusify convert --source oci:DIR:TAG --target oci:DIR:TAG
//   nydusify check --target REF [--source REF] [...]   (format, bootstrap, every chunk, and
//                                                       the tree against the source's layers)
// Options follow upstream's nydusify where they exist (--source, --target,
// --work-dir, --platform, --compressor, --chunk-size, --fs-version).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "convert/checker.h"
#include "convert/converter.h"

namespace {

nydus::Result<nydus::format::Compressor> compressor_named(const std::string& s) {
  if (s == "none") return nydus::format::Compressor::kNone;
  if (s == "lz4_block") return nydus::format::Compressor::kLz4Block;
  if (s == "zstd") return nydus::format::Compressor::kZstd;
  return nydus::errorf(nydus::Errc::kInvalidArgument, "compressor \"{}\": none, lz4_block or zstd", s);
}

// One line per event; on a terminal the layer lines are redrawn in place.
class Progress {
 public:
  explicit Progress(bool tty) : tty_(tty) {}
  void operator()(int i, int n, const std::string& stage, const std::string& detail) {
    std::lock_guard lk(mu_);
    if (i < 0) {
      std::fprintf(stderr, "%s %s\n", stage.c_str(), detail.c_str());
      return;
    }
    if (tty_) {
      if (lines_.empty()) {
        lines_.resize(size_t(n));
        for (int k = 0; k < n; ++k) std::fprintf(stderr, "\n");
      }
      lines_[size_t(i)] = fmt::format("layer {}/{}: {:<10} {}", i + 1, n, stage, detail);
      std::fprintf(stderr, "\x1b[%dA", n);  // up to the first layer line
      for (const auto& l : lines_) std::fprintf(stderr, "\r\x1b[2K%s\n", l.c_str());
    } else {
      std::fprintf(stderr, "layer %d/%d: %s %s\n", i + 1, n, stage.c_str(), detail.c_str());
    }
  }

 private:
  bool tty_;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nydusify: convert OCI images into Nydus images"};
  app.require_subcommand(1);
  nydus::convert::ConvertOptions o;
  std::string compressor = "zstd", fs_version = "6", source_auth, target_auth;
  bool source_insecure = false, target_insecure = false;
  auto* conv = app.add_subcommand("convert", "convert an image and push the result");
  conv->add_option("--source", o.source, "source image: HOST/REPO:TAG or oci:DIR:TAG")->required();
  conv->add_option("--target", o.target, "target image: HOST/REPO:TAG or oci:DIR:TAG")->required();
  conv->add_option("--work-dir", o.work_dir, "scratch directory")->capture_default_str();
  conv->add_option("--platform", o.platform, "os/arch[/variant] to convert")->capture_default_str();
  conv->add_option("--compressor", compressor, "none, lz4_block, zstd")->capture_default_str();
  conv->add_option("--chunk-size", o.chunk_size, "chunk size (power of two, 4 KiB..16 MiB)");
  conv->add_option("--fs-version", fs_version, "RAFS version (6 only)")->check(CLI::IsMember({"6"}));
  conv->add_option("--jobs", o.jobs, "layers converted at once")->capture_default_str();
  conv->add_flag("--source-insecure", source_insecure, "source registry over plain HTTP");
  conv->add_flag("--target-insecure", target_insecure, "target registry over plain HTTP");
  bool patterns_stdin = false;
  std::string patterns_file;
  conv->add_flag("--prefetch-patterns", patterns_stdin, "read paths to prefetch from stdin (one per line)");
  conv->add_option("--prefetch-file", patterns_file, "read paths to prefetch from this file")->check(CLI::ExistingFile);
  conv->add_option("--source-auth", source_auth, "base64(user:pass) for the source registry");
  conv->add_option("--target-auth", target_auth, "base64(user:pass) for the target registry");
  o.work_dir = "./tmp";
  nydus::convert::CheckOptions c;
  c.work_dir = "./tmp-check";
  bool check_source_insecure = false, check_target_insecure = false;
  auto* check = app.add_subcommand("check", "check a converted image (and compare it with its source)");
  check->add_option("--target", c.target, "the Nydus image")->required();
  check->add_option("--source", c.source, "the original image, to compare the file trees");
  check->add_option("--work-dir", c.work_dir, "scratch directory")->capture_default_str();
  check->add_option("--platform", c.platform, "os/arch[/variant]")->capture_default_str();
  check->add_flag("--source-insecure", check_source_insecure, "source registry over plain HTTP");
  check->add_flag("--target-insecure", check_target_insecure, "target registry over plain HTTP");
  CLI11_PARSE(app, argc, argv);

  if (*check) {
    c.source_store.plain_http = check_source_insecure;
    c.target_store.plain_http = check_target_insecure;
    auto r = nydus::convert::check_image(c);
    if (!r) {
      std::fprintf(stderr, "nydusify check: %s\n", r.error().message.c_str());
      return 1;
    }
    for (const auto& p : r->problems) std::printf("PROBLEM %s\n", p.c_str());
    std::printf("%s: %s — %llu blobs, %llu chunks verified, %llu inodes%s\n", c.target.c_str(),
                r->ok() ? "OK" : "FAILED", (unsigned long long)r->blobs, (unsigned long long)r->chunks_verified,
                (unsigned long long)r->entries,
                c.source.empty() ? "" : fmt::format(", {} entries equal to {}", r->entries_compared, c.source).c_str());
    return r->ok() ? 0 : 1;
  }

  auto comp = compressor_named(compressor);
  if (!comp) {
    std::fprintf(stderr, "nydusify: %s\n", comp.error().message.c_str());
    return 2;
  }
  o.compressor = *comp;
  auto read_patterns = [&](std::istream& in) {
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] == '/') o.prefetch_patterns.push_back(line);
  };
  if (patterns_stdin) read_patterns(std::cin);
  if (!patterns_file.empty()) {
    std::ifstream in(patterns_file);
    read_patterns(in);
  }
  o.source_store.plain_http = source_insecure;
  o.target_store.plain_http = target_insecure;
  o.source_store.auth = source_auth;
  o.target_store.auth = target_auth;
  Progress progress(::isatty(2));
  o.progress = [&](int i, int n, const std::string& s, const std::string& d) { progress(i, n, s, d); };
  auto rep = nydus::convert::convert_image(o);
  if (!rep) {
    std::fprintf(stderr, "nydusify: %s\n", rep.error().message.c_str());
    return 1;
  }
  uint64_t src_bytes = 0, blob_bytes = 0;
  for (const auto& l : rep->layers) src_bytes += l.source_size, blob_bytes += l.blob_size;
  std::printf("converted %s -> %s in %.1f s: %zu layers (%.1f MB) -> %llu blobs (%.1f MB) + bootstrap (%.1f KB); "
              "pushed %llu blobs (%.1f MB), %llu already there; index %s, manifest %s\n",
              o.source.c_str(), o.target.c_str(), rep->seconds, rep->layers.size(), double(src_bytes) / 1e6,
              (unsigned long long)std::count_if(rep->layers.begin(), rep->layers.end(),
                                                [](const auto& l) { return !l.blob_digest.empty(); }),
              double(blob_bytes) / 1e6, double(rep->bootstrap_size) / 1e3,
              (unsigned long long)rep->push.blobs_pushed, double(rep->push.bytes_pushed) / 1e6,
              (unsigned long long)rep->push.blobs_present, rep->index_digest.c_str(), rep->manifest_digest.c_str());
  return 0;
}
