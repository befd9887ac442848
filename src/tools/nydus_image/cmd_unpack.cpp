// nydus-image unpack: write an image's tree as a PAX tar, or extract it.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "builder/unpack_image.h"
#include "format/image_reader.h"
#include "tools/nydus_image/commands.h"

namespace nydus::tools {

namespace {

struct UnpackArgs {
  std::string bootstrap, blob, blob_dir, output;
  bool untar = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "nydus-image unpack: %s\n", msg.c_str());
  return 1;
}

int run_unpack(const UnpackArgs& a) {
  if (!a.blob.empty() && !a.blob_dir.empty()) return fail("give either --blob or --blob-dir, not both");
  if (a.untar && (a.output.empty() || a.output == "-")) return fail("--untar needs --output DIR");

  format::BlobLocation loc;
  loc.blob_file = a.blob;
  loc.blob_dir = a.blob_dir;
  auto image = format::ImageReader::open(a.bootstrap, loc);
  if (!image) return fail(a.bootstrap + ": " + image.error().message);

  Result<builder::UnpackReport> rep;
  if (a.untar) {
    rep = builder::unpack_to_dir(**image, a.output);
  } else {
    const bool to_stdout = a.output.empty() || a.output == "-";
    int fd = STDOUT_FILENO;
    if (to_stdout) {
      if (isatty(STDOUT_FILENO)) return fail("refusing to write a tar to a terminal; use --output FILE");
    } else {
      fd = ::open(a.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return fail(a.output + ": " + sys_error("open").error().message);
    }
    rep = builder::unpack_to_tar(**image, fd);
    if (!to_stdout) {
      if (::close(fd) != 0 && rep) rep = std::unexpected(sys_error("closing " + a.output).error());
      if (!rep) ::unlink(a.output.c_str());  // don't leave a truncated tar behind
    }
  }
  if (!rep) {
    if (a.blob.empty() && a.blob_dir.empty() && !(*image)->bootstrap().blobs().empty())
      return fail(rep.error().message + " (give --blob or --blob-dir)");
    return fail(rep.error().message);
  }

  constexpr size_t kMaxShown = 20;
  for (size_t i = 0; i < rep->warnings.size() && i < kMaxShown; i++)
    std::fprintf(stderr, "warning: %s\n", rep->warnings[i].c_str());
  if (rep->warnings.size() > kMaxShown)
    std::fprintf(stderr, "warning: ... and %zu more\n", rep->warnings.size() - kMaxShown);
  std::fprintf(stderr, "unpacked %llu entries (%llu files, %llu hardlinks, %llu bytes)%s%s\n",
               (unsigned long long)rep->entries, (unsigned long long)rep->files,
               (unsigned long long)rep->hardlinks, (unsigned long long)rep->bytes,
               a.output.empty() || a.output == "-" ? "" : " to ", a.output == "-" ? "" : a.output.c_str());
  return 0;
}

}  // namespace

Command add_unpack_command(CLI::App& parent) {
  auto args = std::make_shared<UnpackArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("unpack", "Write an image's file tree as a PAX tar, or extract it (--untar)");
  cmd.app = app;
  app->add_option("-B,--bootstrap", args->bootstrap, "bootstrap (metadata) file")->required();
  app->add_option("-b,--blob", args->blob, "the data blob file (single-blob images)");
  app->add_option("-D,--blob-dir", args->blob_dir, "directory holding the data blobs, named by id");
  app->add_option("-o,--output", args->output, "tar file to write (default or '-': stdout); directory with --untar");
  app->add_flag("--untar", args->untar, "extract into the --output directory instead of writing a tar");
  cmd.run = [args] { return run_unpack(*args); };
  return cmd;
}

}  // namespace nydus::tools
