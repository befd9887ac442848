// nydus-image export --block: a raw EROFS disk with metadata and data.
#include <cstdio>

#include "builder/export_block.h"
#include "tools/nydus_image/commands.h"

namespace nydus::tools {

namespace {

struct ExportArgs {
  std::string bootstrap, blob_dir, blob, output;
  bool block = false, no_verify = false, verity = false;
};

int run_export(const ExportArgs& a) {
  if (!a.block) {
    std::fprintf(stderr, "nydus-image export: only --block is supported\n");
    return 1;
  }
  auto img = format::ImageReader::open(a.bootstrap, {a.blob_dir, a.blob});
  if (!img) {
    std::fprintf(stderr, "nydus-image export: %s: %s\n", a.bootstrap.c_str(), img.error().message.c_str());
    return 1;
  }
  auto r = builder::export_block(**img, a.output, !a.no_verify, a.verity);
  if (!r) {
    std::fprintf(stderr, "nydus-image export: %s\n", r.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "exported %s: %llu bytes, %llu chunks\n", a.output.c_str(), (unsigned long long)r->disk_size,
               (unsigned long long)r->chunks_written);
  // On stdout, as upstream: nydus-snapshotter scans this line for the layout.
  if (r->verity) std::printf("%s\n", format::verity_options_line(*r->verity).c_str());
  return 0;
}

}  // namespace

Command add_export_command(CLI::App& parent) {
  auto args = std::make_shared<ExportArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("export", "Export an image as a raw EROFS block image");
  cmd.app = app;
  app->add_flag("--block", args->block, "write one raw disk image (metadata + uncompressed data)");
  app->add_option("-B,--bootstrap", args->bootstrap, "bootstrap to export")->required();
  app->add_option("-D,--blob-dir,--localfs-dir", args->blob_dir, "directory holding the data blobs (by id)");
  app->add_option("-b,--blob", args->blob, "the data blob file");
  app->add_option("-O,--output", args->output, "disk image to write")->required();
  app->add_flag("--no-verify", args->no_verify, "skip digest checks of chunk data");
  app->add_flag("--verity", args->verity, "append a dm-verity hash tree and print its veritysetup options");
  cmd.run = [args] { return run_export(*args); };
  return cmd;
}

}  // namespace nydus::tools
