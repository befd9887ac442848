// nydus-image unpack: write an image's tree as a PAX tar, or extract it.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include <sys/stat.h>

#include "builder/unpack_image.h"
#include "tools/nydus_image/backend_fetch.h"
#include "format/image_reader.h"
#include "tools/nydus_image/cli_util.h"
#include "tools/nydus_image/commands.h"
#include "tools/nydus_image/log.h"

namespace nydus::tools {

namespace {

struct UnpackArgs {
  std::string bootstrap, bootstrap_pos, bootstrap_opt, blob, blob_dir, output;
  std::string backend_type, backend_config, backend_config_file;
  bool untar = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "nydus-image unpack: %s\n", msg.c_str());
  return 1;
}

int run_unpack(UnpackArgs a) {
  if (auto e = pick_bootstrap(a.bootstrap_pos, a.bootstrap_opt, a.bootstrap); !e.empty()) return usage_error("unpack", e);
  // Upstream's arg group "backend": one of --backend-type, --blob, --blob-dir.
  if (int(!a.blob.empty()) + int(!a.blob_dir.empty()) + int(!a.backend_type.empty()) > 1)
    return usage_error("unpack", "only one of --backend-type, --blob and --blob-dir may be given");
  if (!a.backend_config.empty() && !a.backend_config_file.empty())
    return usage_error("unpack", "the argument '--backend-config-file' cannot be used with '--backend-config'");
  std::unique_ptr<ScratchBlobs> fetched;
  if (!a.backend_type.empty()) {
    auto f = fetch_blobs_from_backend(a.bootstrap, a.backend_type, a.backend_config, a.backend_config_file);
    if (!f) return fail(f.error().message);
    fetched = std::move(*f);
    a.blob_dir = fetched->dir();
  }
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
    struct stat st{};
    const bool regular = !to_stdout && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    rep = builder::unpack_to_tar(**image, fd);
    if (!to_stdout) {
      if (::close(fd) != 0 && rep) rep = std::unexpected(sys_error("closing " + a.output).error());
      // Don't leave a truncated tar behind (a FIFO, the converter's --output, stays).
      if (!rep && regular) ::unlink(a.output.c_str());
    }
  }
  if (!rep) {
    if (a.blob.empty() && a.blob_dir.empty() && !(*image)->bootstrap().blobs().empty())
      return fail(rep.error().message + " (give --blob or --blob-dir)");
    return fail(rep.error().message);
  }

  constexpr size_t kMaxShown = 20;
  for (size_t i = 0; i < rep->warnings.size() && i < kMaxShown; i++) log_warn("{}", rep->warnings[i]);
  if (rep->warnings.size() > kMaxShown) log_warn("... and {} more", rep->warnings.size() - kMaxShown);
  log_info("unpacked {} entries ({} files, {} hardlinks, {} bytes){}{}", rep->entries, rep->files, rep->hardlinks,
           rep->bytes, a.output.empty() || a.output == "-" ? "" : " to ", a.output == "-" ? "" : a.output);
  return 0;
}

}  // namespace

Command add_unpack_command(CLI::App& parent) {
  auto args = std::make_shared<UnpackArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("unpack", "Write an image's file tree as a PAX tar, or extract it (--untar)");
  cmd.app = app;
  app->add_option("BOOTSTRAP", args->bootstrap_pos, "bootstrap (metadata) file");
  app->add_option("-B,--bootstrap", args->bootstrap_opt, "bootstrap (metadata) file (deprecated form)");
  app->add_option("--backend-type", args->backend_type, "read blobs from this backend: registry, s3, oss");
  app->add_option("--backend-config", args->backend_config, "the backend's config JSON (upstream's fields)");
  app->add_option("--backend-config-file", args->backend_config_file, "file holding the backend's config JSON");
  app->add_option("-b,--blob", args->blob, "the data blob file (single-blob images)");
  app->add_option("-D,--blob-dir", args->blob_dir, "directory holding the data blobs, named by id");
  app->add_option("-o,--output", args->output, "tar file to write (default or '-': stdout); directory with --untar");
  app->add_flag("--untar", args->untar, "extract into the --output directory instead of writing a tar");
  cmd.run = [args] { return run_unpack(*args); };
  return cmd;
}

}  // namespace nydus::tools
