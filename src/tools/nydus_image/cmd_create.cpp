// nydus-image create: build a RAFS v6 image from a directory or a layer tar.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "builder/create_image.h"
#include "builder/create_stargz.h"
#include "builder/merge.h"
#include "builder/prefetch_list.h"
#include "format/compress.h"
#include "format/digest.h"
#include "tools/nydus_image/cli_util.h"
#include "tools/nydus_image/commands.h"
#include "tools/nydus_image/log.h"

namespace nydus::tools {

namespace {

struct CreateArgs {
  std::string source, bootstrap, blob_dir, blob, blob_cache_dir, output_json;
  std::string compressor = "zstd", digester = "blake3", chunk_size = "0x100000";
  std::string fs_version = "6", type = "dir-rafs", prefetch_policy = "none", prefetch_files;
  std::string whiteout_spec = "oci", chunk_dict, features, parent_bootstrap;
  std::string blob_id, blob_data_size;  // estargztoc-ref
  bool repeatable = false, inline_meta = false, aligned_chunk = false, disable_check = false;
  bool compressor_given = false, chunk_size_given = false;
  std::string batch_size = "0";
  bool encrypt = false;
  unsigned threads = 0;
};

Result<uint32_t> parse_size(const std::string& s) {
  try {
    size_t pos = 0;
    unsigned long long v = std::stoull(s, &pos, 0);
    if (pos != s.size() || v > UINT32_MAX) throw std::invalid_argument(s);
    return uint32_t(v);
  } catch (...) {
    return errorf(Errc::kInvalidArgument, "bad size '{}'", s);
  }
}

// Renames a bootstrap written to TMP to <its dir>/<sha256 of its bytes>.
Result<std::filesystem::path> bootstrap_named_by_digest(const std::filesystem::path& tmp) {
  std::ifstream f(tmp, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (!f.good() && !f.eof()) return errorf(Errc::kIo, "cannot read {}", tmp.string());
  auto named = tmp.parent_path() / format::to_hex(format::sha256(bytes));
  std::error_code ec;
  std::filesystem::rename(tmp, named, ec);
  if (ec) return errorf(Errc::kIo, "cannot rename {} to {}: {}", tmp.string(), named.string(), ec.message());
  return named;
}

int run_create(const CreateArgs& a) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "nydus-image create: %s\n", msg.c_str());
    return kExitFailure;
  };
  if (a.fs_version == "5" && !a.parent_bootstrap.empty())
    return fail("--parent-bootstrap with --fs-version 5 is not supported");
  if (!a.blob_cache_dir.empty() && a.blob.empty() && a.blob_dir.empty()) {
    // Upstream's mode: only the cache files, uncompressed; clap makes these
    // conflicts (exit 2). Together with -D/--blob (which upstream refuses)
    // we write both, an extension the kernel-mount workflow uses.
    if (a.inline_meta) return usage_error("create", "the argument '--blob-cache-dir' cannot be used with '--blob-inline-meta'");
    if (a.compressor_given) return usage_error("create", "the argument '--blob-cache-dir' cannot be used with '--compressor'");
  }
  builder::CreateOptions o;
  if (a.type == "tar-rafs" || a.type == "targz-rafs") {
    // Compression (none, gzip, zstd, ...) is detected from the stream either way.
    o.source_type = builder::SourceType::kTar;
  } else if (a.type == "targz-ref" || a.type == "estargz-ref") {
    // The layer is referenced, not converted (ZRAN): upstream forces gzip and
    // sha256 for it (logging that other values are ignored). An eStargz
    // layer is valid gzip: the same path (the tar reader leaves its TOC out).
    o.source_type = builder::SourceType::kTargzRef;
  } else if (a.type == "estargz-rafs") {
    o.source_type = builder::SourceType::kTar;
  } else if (a.type == "estargztoc-ref" || a.type == "stargz_index") {
    // The TOC alone; the layer (--blob-id, --blob-data-size) is the data blob.
    if (a.blob_id.empty()) return usage_error("create", "'--blob-id' is missing for '--type stargz_index'");
    if (a.blob_data_size.empty()) return fail("no value specified for '--blob-data-size'");
    std::string hex = a.blob_data_size;
    if (hex.starts_with("0x") || hex.starts_with("0X")) hex.erase(0, 2);
    // Upstream reads the size as hex, with or without "0x".
    size_t pos = 0;
    try {
      o.blob_data_size = std::stoull(hex, &pos, 16);
    } catch (...) {
      pos = std::string::npos;
    }
    if (hex.empty() || pos != hex.size()) return fail("invalid blob data size " + a.blob_data_size);
    o.source_type = builder::SourceType::kEstargzToc;
    o.blob_id = a.blob_id;
  } else if (a.type == "tar-tarfs") {
    // The tar is the data blob (upstream forces compressor none, sha256).
    o.source_type = builder::SourceType::kTarfs;
    o.blob_id = a.blob_id;
  } else if (a.type != "dir-rafs" && a.type != "directory") {
    return fail("--type " + a.type + " is not supported (dir-rafs, tar-rafs, targz-rafs, targz-ref, estargz-ref, "
                "estargz-rafs, estargztoc-ref)");
  }
  if (!a.blob_id.empty() && o.source_type != builder::SourceType::kEstargzToc && o.source_type != builder::SourceType::kTarfs)
    return fail("--blob-id is only supported with --type estargztoc-ref and tar-tarfs");
  o.source = a.source;
  o.bootstrap = a.bootstrap;
  // Upstream without -B: the bootstrap goes into -D, named by its sha256
  // (written under a temporary name, renamed once its digest is known).
  const bool bootstrap_in_dir = a.bootstrap.empty() && !a.inline_meta && !a.blob_dir.empty();
  if (bootstrap_in_dir) {
    std::error_code ec;
    std::filesystem::create_directories(a.blob_dir, ec);
    o.bootstrap = std::filesystem::path(a.blob_dir) / fmt::format(".bootstrap-{}.tmp", getpid());
  }
  // --parent-bootstrap: this build is one layer over the parent's tree; the
  // layer's bootstrap is written aside, then merged over the parent (whiteouts
  // applied) into the output, whose blob table holds the parent's blobs too.
  const bool layered = !a.parent_bootstrap.empty();
  if (layered) {
    if (a.inline_meta) return usage_error("create", "the argument '--parent-bootstrap' cannot be used with '--blob-inline-meta'");
    if (o.bootstrap.empty()) return fail("--parent-bootstrap needs -B or -D for the merged bootstrap");
    o.bootstrap += ".layer";
  }
  o.blob_dir = a.blob_dir;
  o.blob_file = a.blob;
  o.blob_cache_dir = a.blob_cache_dir;
  o.repeatable = a.repeatable;
  o.fs_version = a.fs_version == "5" ? 5 : 6;
  o.aligned_chunk = a.aligned_chunk;  // v5 only: upstream forces aligned chunks for v6
  o.blob_inline_meta = a.inline_meta;
  o.threads = a.threads;
  o.progress = isatty(STDERR_FILENO);
  if (!a.chunk_dict.empty()) {
    // Upstream's syntax is "bootstrap=<path>"; a bare path is taken as one.
    std::string d = a.chunk_dict;
    if (d.starts_with("bootstrap=")) d.erase(0, 10);
    else if (d.find('=') != std::string::npos) return fail("--chunk-dict " + a.chunk_dict + ": only bootstrap=<path>");
    o.chunk_dict = d;
  }
  if (a.features == "blob-toc") o.blob_toc = true;
  // Upstream stores only the blob-cache files uncompressed in that mode.
  auto c = format::parse_compressor(a.blob_cache_dir.empty() || !a.blob.empty() || !a.blob_dir.empty() ? a.compressor : "none");
  if (!c) return fail(c.error().message);
  o.compressor = *c;
  auto d = format::parse_digester(a.digester);
  if (!d) return fail(d.error().message);
  o.digester = *d;
  if (o.source_type == builder::SourceType::kTargzRef || o.source_type == builder::SourceType::kEstargzToc) {
    o.compressor = format::Compressor::kGzip;
    o.digester = format::Digester::kSha256;
  }
  if (o.source_type == builder::SourceType::kTarfs) {
    o.compressor = format::Compressor::kNone;
    o.digester = format::Digester::kSha256;
  }
  // Upstream's default chunk size for estargztoc-ref is eStargz's (4 MiB).
  auto cs = parse_size(o.source_type == builder::SourceType::kEstargzToc && !a.chunk_size_given
                           ? fmt::format("{:#x}", builder::kEstargzChunkSize)
                           : a.chunk_size);
  if (!cs) return fail(cs.error().message);
  o.chunk_size = *cs;
  // --batch-size / --encrypt: upstream accepts them for the *-rafs builds only.
  const bool full_build = o.source_type == builder::SourceType::kDirectory ||
                          o.source_type == builder::SourceType::kTar;
  auto bs = parse_size(a.batch_size);
  if (!bs) return fail(bs.error().message);
  if (*bs != 0) {
    if (o.fs_version == 5) return fail("`--batch-size` with non-zero value conflicts with `--fs-version 5`");
    if (!full_build) return fail("`--batch-size` is only supported by the *-rafs conversion types");
    if (*bs < 0x1000 || *bs > 0x1000000 || (*bs & (*bs - 1)) != 0)
      return fail(fmt::format("invalid batch size: {}", *bs));
    if (*bs > o.chunk_size)
      return fail(fmt::format("batch size {:#x} is bigger than chunk size {:#x}", *bs, o.chunk_size));
  }
  o.batch_size = *bs;
  if (a.encrypt && (o.fs_version == 5 || !full_build))
    return fail("`--encrypt` is only supported by RAFS v6 *-rafs conversion types");
  o.encrypt = a.encrypt;
  // fs: a prefetch table from the list (stdin as upstream, or our
  // --prefetch-files); blob: upstream reads the list too but writes no table
  // for RAFS v6, only lays the files' data first, so it is read and used for
  // the blob order of directory builds.
  if (a.prefetch_policy != "none") {
    builder::PrefetchPatterns pp;
    if (!a.prefetch_files.empty()) {
      std::ifstream f(a.prefetch_files);
      if (!f) return fail("cannot read " + a.prefetch_files);
      pp = builder::parse_prefetch_patterns(f);
    } else {
      pp = builder::parse_prefetch_patterns(std::cin);
    }
    for (auto& w : pp.warnings) log_warn("{}", w);
    o.prefetch_patterns = std::move(pp.paths);
    o.prefetch_table = a.prefetch_policy == "fs";
  }

  auto r = builder::create_image(o);
  if (!r) {
    if (bootstrap_in_dir || layered) std::filesystem::remove(o.bootstrap);
    return fail(r.error().message);
  }
  std::vector<std::string> blob_ids;
  for (auto& b : r->blobs) blob_ids.push_back(b.blob_id);
  if (layered) {
    builder::MergeOptions m;
    m.parent_bootstrap = a.parent_bootstrap;
    m.layers = {o.bootstrap};
    m.implicit_dirs = {r->implicit_dirs};
    m.whiteout = a.whiteout_spec == "overlayfs" ? builder::WhiteoutSpec::kOverlayfs
                 : a.whiteout_spec == "none"    ? builder::WhiteoutSpec::kNone
                                                : builder::WhiteoutSpec::kOci;
    if (o.prefetch_table) m.prefetch_patterns = o.prefetch_patterns;
    m.bootstrap = bootstrap_in_dir ? std::filesystem::path() : std::filesystem::path(a.bootstrap);
    if (bootstrap_in_dir) m.bootstrap_dir = a.blob_dir;
    auto merged = builder::merge_layers(m);
    std::filesystem::remove(o.bootstrap);
    if (!merged) return fail("over --parent-bootstrap: " + merged.error().message);
    r->bootstrap = merged->bootstrap;
    blob_ids.clear();
    for (auto& b : merged->blobs) blob_ids.push_back(b.blob_id);
  } else if (bootstrap_in_dir) {
    auto named = bootstrap_named_by_digest(o.bootstrap);
    if (!named) return fail(named.error().message);
    r->bootstrap = *named;
  }
  for (auto& w : r->warnings) log_warn("{}", w);

  nlohmann::json j = upstream_output_json(r->bootstrap.string(), blob_ids, format::compressor_name(o.compressor));
  j["blob_path"] = r->blob_path.string();
  j["stats"] = {{"inodes", r->inodes},         {"files", r->files},
                {"bytes", r->bytes_read},      {"chunks", r->chunks_total},
                {"chunks_stored", r->chunks_stored}, {"chunks_from_dict", r->chunks_from_dict},
                {"bootstrap_size", r->bootstrap_size}};
  if (!r->blobs.empty()) {
    j["stats"]["blob_size"] = r->blobs[0].compressed_size;
    j["stats"]["blob_uncompressed_size"] = r->blobs[0].uncompressed_size;
  }
  if (!a.output_json.empty()) {
    std::ofstream f(a.output_json);
    f << j.dump(2) << "\n";
    if (!f) return fail("cannot write " + a.output_json);
  }
  (void)a.disable_check;
  log_info("built {}: {} inodes, {} files, {} chunks ({} stored{}), blob {}",
           r->bootstrap.empty() ? "(inline)" : r->bootstrap.string(), r->inodes, r->files, r->chunks_total, r->chunks_stored,
           a.chunk_dict.empty() ? "" : fmt::format(", {} from the chunk dict", r->chunks_from_dict),
           r->blobs.empty() ? "(none)" : r->blobs[0].blob_id);
  return 0;
}

}  // namespace

Command add_create_command(CLI::App& parent) {
  auto args = std::make_shared<CreateArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("create", "Build a RAFS v6 image from a directory or an OCI layer tar");
  cmd.app = app;
  app->add_option("SOURCE", args->source, "source directory, or layer tar ('-' = stdin) with --type tar-rafs")->required();
  app->add_option("-B,--bootstrap", args->bootstrap, "bootstrap (metadata) file to write");
  auto* blob_dir = app->add_option("-D,--blob-dir", args->blob_dir, "directory to store the data blob in, named by its id");
  auto* blob = app->add_option("-b,--blob", args->blob, "file to write the data blob to (a FIFO is written in place)");
  app->add_option("--blob-cache-dir", args->blob_cache_dir,
                  "write <id>.blob.data (uncompressed layout) and <id>.blob.meta here; alone: only these");
  app->add_option("-v,--fs-version", args->fs_version, "RAFS version: 6 (default) or 5")
      ->check(CLI::IsMember({"5", "6"}));
  app->add_option("-t,--type,--source-type", args->type,
                  "conversion type: dir-rafs (= directory), tar-rafs, targz-rafs (tar compression is auto-detected), targz-ref "
                  "(gzip layer referenced in place, ZRAN), estargz-ref / estargz-rafs (the same for an eStargz layer), "
                  "estargztoc-ref (SOURCE = the eStargz TOC JSON; needs --blob-id, --blob-data-size), tar-tarfs (SOURCE = a plain "
                  "tar, file or FIFO, that is itself the data blob; --blob-id names it)")
      ->check(CLI::IsMember({"directory", "dir-rafs", "estargz-rafs", "estargz-ref", "estargztoc-ref", "tar-rafs",
                             "tar-tarfs", "targz-rafs", "targz-ref", "stargz_index"}));
  auto* comp = app->add_option("-c,--compressor", args->compressor, "none, lz4_block, zstd")
                   ->check(CLI::IsMember({"none", "lz4_block", "zstd"}));
  app->add_option("-d,--digester", args->digester, "blake3, sha256")->check(CLI::IsMember({"blake3", "sha256"}));
  auto* chunk_size = app->add_option("-S,--chunk-size", args->chunk_size, "chunk size, power of two 0x1000..0x1000000");
  app->add_option("--blob-id", args->blob_id, "estargztoc-ref / tar-tarfs: id of the layer, the data blob");
  app->add_option("--blob-data-size", args->blob_data_size, "estargztoc-ref: size of that layer (hex)");
  app->add_flag("-R,--repeatable", args->repeatable, "byte-identical output for identical input");
  app->add_flag("-A,--blob-inline-meta,--inline-bootstrap", args->inline_meta, "store the bootstrap inside the data blob");
  app->add_option("--features", args->features, "blob-toc")->check(CLI::IsMember({"blob-toc"}));
  app->add_option("-P,--prefetch-policy", args->prefetch_policy, "fs, blob or none (list of paths on stdin)")
      ->check(CLI::IsMember({"fs", "blob", "none"}));
  app->add_option("--prefetch-files", args->prefetch_files, "file listing prefetch paths (default: stdin)");
  app->add_option("-W,--whiteout-spec", args->whiteout_spec,
                  "oci, overlayfs, none (single-layer builds keep whiteout files as-is; merge applies them)")
      ->check(CLI::IsMember({"oci", "overlayfs", "none"}));
  app->add_option("-J,--output-json", args->output_json, "write a JSON report here");
  app->add_option("--threads", args->threads, "worker threads (default: all cores)");
  app->add_option("--chunk-dict", args->chunk_dict, "bootstrap=<path>: reference chunks that bootstrap's blobs hold");
  app->add_option("--parent-bootstrap", args->parent_bootstrap,
                  "build this source as a layer over that bootstrap's tree (whiteouts applied)");
  app->add_flag("--aligned-chunk", args->aligned_chunk, "RAFS v5: align uncompressed chunks to 4K (v6 always is)");
  app->add_option("--batch-size", args->batch_size,
                  "pack small single-chunk files into batches of this size (power of two 0x1000..0x1000000, "
                  "at most the chunk size; 0 = off)");
  app->add_flag("-E,--encrypt", args->encrypt,
                "encrypt chunks and blob meta with AES-128-XTS (random key, stored in the bootstrap's blob table)");
  app->add_flag("--disable-check", args->disable_check)->group("");  // upstream's hidden flag; no-op
  (void)blob_dir;
  (void)blob;
  app->callback([args, comp, chunk_size] {
    args->compressor_given = comp->count() > 0;
    args->chunk_size_given = chunk_size->count() > 0;
  });
  cmd.run = [args] { return run_create(*args); };
  return cmd;
}

}  // namespace nydus::tools
