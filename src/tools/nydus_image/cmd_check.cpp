// nydus-image check: validate a bootstrap and, with its blobs, every chunk.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "format/image_check.h"
#include "format/compress.h"
#include "tools/nydus_image/cli_util.h"
#include "tools/nydus_image/commands.h"

namespace nydus::tools {

namespace {

struct CheckArgs {
  std::string bootstrap, bootstrap_pos, bootstrap_opt, blob_dir, blob, output_json;
  bool no_data = false, verbose = false;
};

int run_check(CheckArgs a) {
  if (auto e = pick_bootstrap(a.bootstrap_pos, a.bootstrap_opt, a.bootstrap); !e.empty()) return usage_error("check", e);
  format::BlobLocation loc{a.blob_dir, a.blob};
  auto img = format::ImageReader::open(a.bootstrap, loc);
  // Upstream's OutputSerializer keys first (nydusify check decodes "blobs").
  nlohmann::json j = upstream_output_json(a.bootstrap, {}, "");
  int rc = 0;
  if (!img) {
    std::fprintf(stderr, "nydus-image check: %s: %s\n", a.bootstrap.c_str(), img.error().message.c_str());
    j["valid"] = false;
    j["errors"] = {img.error().message};
    rc = 1;
  } else {
    format::CheckOptions o;
    o.verify_data = !a.no_data;
    auto rep = format::check_image(**img, o);
    for (auto& w : rep.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    for (auto& e : rep.errors) std::fprintf(stderr, "error: %s\n", e.c_str());
    const auto& boot = (*img)->bootstrap();
    std::printf("bootstrap %s: %s\n", a.bootstrap.c_str(), rep.ok() ? "valid" : "INVALID");
    std::printf("  inodes %llu (dirs %llu, files %llu, symlinks %llu, other %llu, extra hardlinks %llu)\n",
                (unsigned long long)rep.inodes, (unsigned long long)rep.dirs, (unsigned long long)rep.files,
                (unsigned long long)rep.symlinks, (unsigned long long)rep.others, (unsigned long long)rep.hardlinks);
    std::printf("  file bytes %llu, chunk references %llu, blobs %zu\n", (unsigned long long)rep.file_bytes,
                (unsigned long long)rep.chunk_refs, boot.blobs().size());
    if ((*img)->has_blobs() && o.verify_data)
      std::printf("  chunks verified %llu (%llu bytes)\n", (unsigned long long)rep.chunks_verified,
                  (unsigned long long)rep.bytes_verified);
    j["valid"] = rep.ok();
    j["errors"] = rep.errors;
    j["warnings"] = rep.warnings;
    j["inodes"] = rep.inodes;
    j["files"] = rep.files;
    j["dirs"] = rep.dirs;
    j["symlinks"] = rep.symlinks;
    j["file_bytes"] = rep.file_bytes;
    j["chunk_refs"] = rep.chunk_refs;
    j["chunks_verified"] = rep.chunks_verified;
    j["blobs"] = nlohmann::json::array();
    for (auto& b : boot.blobs()) j["blobs"].push_back(b.blob_id);
    j["compressor"] = format::compressor_name(boot.compressor());
    rc = rep.ok() ? 0 : 1;
  }
  if (!a.output_json.empty()) {
    std::ofstream f(a.output_json);
    f << j.dump(2) << "\n";
  }
  return rc;
}

}  // namespace

Command add_check_command(CLI::App& parent) {
  auto args = std::make_shared<CheckArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("check", "Validate a RAFS v6 image (and its blobs' chunks)");
  cmd.app = app;
  app->add_option("BOOTSTRAP", args->bootstrap_pos, "bootstrap to check");
  app->add_option("-B,--bootstrap", args->bootstrap_opt, "bootstrap to check (deprecated form)");
  app->add_option("-D,--blob-dir", args->blob_dir, "directory holding the data blobs (by id)");
  app->add_option("-b,--blob", args->blob, "the data blob file");
  app->add_flag("--no-data", args->no_data, "skip reading and digest-checking chunk data");
  app->add_option("-J,--output-json", args->output_json, "write a JSON report here");
  app->add_flag("-v,--verbose", args->verbose, "more output");
  cmd.run = [args] { return run_check(*args); };
  return cmd;
}

}  // namespace nydus::tools
