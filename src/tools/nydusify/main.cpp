// nydusify: convert OCI/Docker images into Nydus images, and check them.
//
//   nydusify [--log-level L] [-D] [--log-file F] convert --source REF --target REF [options]
//   nydusify check --target REF [--source REF] [...]   (format, bootstrap, every chunk, and
//                                                       the tree against the source's layers)
// The command line is upstream nydusify v2.4.4's (cmd/nydusify.go): the same
// flags, aliases, environment variables and defaults; every error exits 1.
// Flags for features this nydusify does not have (check's blob backends,
// build caches, zran, RAFS v5, archives) are accepted by the
// parser and refused with a message naming the flag. REF is a Docker
// reference (ubuntu:22.04 = docker.io/library/ubuntu:22.04) or oci:DIR:TAG.
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "convert/checker.h"
#include "convert/chunk_dict.h"
#include "convert/converter.h"

namespace {

using nydus::convert::ConvertOptions;

nydus::Result<nydus::format::Compressor> compressor_named(const std::string& s) {
  if (s == "none") return nydus::format::Compressor::kNone;
  if (s == "lz4_block") return nydus::format::Compressor::kLz4Block;
  if (s == "zstd") return nydus::format::Compressor::kZstd;
  return nydus::errorf(nydus::Errc::kInvalidArgument, "--compressor \"{}\": none, lz4_block or zstd", s);
}

// "0x100000" or "1048576" (upstream passes the string on to nydus-image,
// which reads both).
nydus::Result<uint64_t> size_arg(const std::string& flag, const std::string& s) {
  try {
    size_t used = 0;
    const bool hex = s.starts_with("0x") || s.starts_with("0X");
    const uint64_t v = std::stoull(hex ? s.substr(2) : s, &used, hex ? 16 : 10);
    if (used == (hex ? s.size() - 2 : s.size())) return v;
  } catch (const std::exception&) {
  }
  return nydus::errorf(nydus::Errc::kInvalidArgument, "--{} \"{}\" is not a number", flag, s);
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

int fail(const std::string& msg) {
  std::fprintf(stderr, "nydusify: %s\n", msg.c_str());
  return 1;
}

// upstream's metric JSON (acceleration-service converter.Metric: Go field
// names, durations in nanoseconds); "null" when the conversion failed.
void write_metric(const std::string& path, const nydus::convert::ConvertReport* r) {
  std::ofstream out(path, std::ios::trunc);
  if (!r) {
    out << "null\n";
    return;
  }
  auto ns = [](double s) { return int64_t(s * 1e9); };
  nlohmann::json j{{"SourceImageSize", r->source_image_size},
                   {"TargetImageSize", r->target_image_size},
                   {"SourcePullElapsed", ns(r->pull_seconds)},
                   {"ConversionElapsed", ns(r->convert_seconds)},
                   {"TargetPushElapsed", ns(r->push_seconds)}};
  out << j.dump() << "\n";
}

// Upstream's addReferenceSuffix: the source, normalised and tagged, + suffix.
nydus::Result<std::string> with_suffix(const std::string& source, const std::string& suffix) {
  NYDUS_ASSIGN_OR_RETURN(nydus::convert::ImageRef r, nydus::convert::parse_image_ref(source));
  if (!r.digest.empty())
    return nydus::errorf(nydus::Errc::kInvalidArgument, "unsupported digested image reference: {}", r.to_string());
  if (r.kind == nydus::convert::ImageRef::Kind::kOciLayout && r.tag.empty())
    return nydus::errorf(nydus::Errc::kInvalidArgument, "--target-suffix needs a tagged source, not {}", source);
  return r.to_string() + suffix;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nydusify: convert OCI images into Nydus images and check them"};
  app.name("nydusify");
  app.set_version_flag("-v,--version", "nydusify 0.1.0 (nydus-cpp; upstream nydusify v2.4.4 command line)");
  app.require_subcommand(1);
  app.fallthrough();  // global flags also after the subcommand

  bool debug = false;
  std::string log_level = "info", log_file;
  app.add_flag("-D,--debug", debug, "debug log level (overrides --log-level)")->envname("DEBUG_LOG_LEVEL");
  app.add_option("-l,--log-level", log_level, "panic, fatal, error, warn, info, debug, trace")
      ->envname("LOG_LEVEL")->capture_default_str();
  app.add_option("--log-file", log_file, "write logs to this file")->envname("LOG_FILE");

  // ---- convert ----
  ConvertOptions o;
  o.work_dir = "./tmp";
  std::string compressor = "zstd", fs_version = "6", chunk_size = "0x100000", batch_size = "0";
  std::string source_auth, target_auth, target_suffix, output_json, prefetch_dir, patterns_file;
  std::string source_archive, target_archive, source_backend_type, source_backend_config;
  std::string backend_type, backend_config, backend_config_file, build_cache, build_cache_tag;
  std::string build_cache_version = "v1", chunk_dict, nydus_image = "nydus-image", push_retry_delay = "5s";
  unsigned build_cache_max_records = 200;
  int push_retry_count = 3;
  bool source_insecure = false, target_insecure = false, plain_http = false, patterns_stdin = false;
  bool backend_force_push = false, build_cache_insecure = false, chunk_dict_insecure = false, oci_ref = false;
  bool with_referrer = false, reverse = false, docker_v2_format = false, fs_align_chunk = false;
  bool backend_aligned_chunk = false;
  auto* conv = app.add_subcommand("convert", "Generate a Nydus image from an OCI image");
  conv->add_option("--source", o.source, "source image: a Docker reference or oci:DIR:TAG")->required()->envname("SOURCE");
  conv->add_option("--source-archive", source_archive, "(not supported) source OCI layout tar")->envname("SOURCE_ARCHIVE");
  conv->add_option("--target", o.target, "target image: a Docker reference or oci:DIR:TAG")->envname("TARGET");
  conv->add_option("--target-archive", target_archive, "(not supported) target OCI layout tar")->envname("TARGET_ARCHIVE");
  conv->add_option("--source-backend-type", source_backend_type, "(not supported) modelfile, model-artifact");
  conv->add_option("--source-backend-config", source_backend_config, "(not supported)");
  conv->add_option("--target-suffix", target_suffix, "target = source reference + this suffix")->envname("TARGET_SUFFIX");
  conv->add_flag("--source-insecure", source_insecure, "skip TLS verification for the source registry")
      ->envname("SOURCE_INSECURE");
  conv->add_flag("--target-insecure", target_insecure, "skip TLS verification for the target registry")
      ->envname("TARGET_INSECURE");
  conv->add_option("--backend-type", backend_type, "blob storage instead of the registry: oss, s3, localfs")
      ->envname("BACKEND_TYPE");
  conv->add_option("--backend-config", backend_config, "JSON configuration of the blob storage")
      ->envname("BACKEND_CONFIG");
  conv->add_option("--backend-config-file", backend_config_file, "file with the JSON configuration of the blob storage")
      ->envname("BACKEND_CONFIG_FILE");
  conv->add_flag("--backend-force-push", backend_force_push, "upload blobs the storage has already")
      ->envname("BACKEND_FORCE_PUSH");
  conv->add_option("--build-cache", build_cache, "(not supported) cache image")->envname("BUILD_CACHE");
  conv->add_option("--build-cache-tag", build_cache_tag, "(not supported)")->envname("BUILD_CACHE_TAG");
  conv->add_option("--build-cache-version", build_cache_version, "(not supported)")->envname("BUILD_CACHE_VERSION");
  conv->add_flag("--build-cache-insecure", build_cache_insecure, "(not supported)")->envname("BUILD_CACHE_INSECURE");
  conv->add_option("--build-cache-max-records", build_cache_max_records, "(not supported)")
      ->envname("BUILD_CACHE_MAX_RECORDS");
  conv->add_option("--chunk-dict", chunk_dict,
                  "chunk dictionary: bootstrap:registry:REF or bootstrap:local:REF, REF a Nydus image")
      ->envname("CHUNK_DICT");
  conv->add_flag("--chunk-dict-insecure", chunk_dict_insecure, "skip TLS verification for the dict registry")
      ->envname("CHUNK_DICT_INSECURE");
  conv->add_flag("--merge-platform,--multi-platform", o.merge_platform,
                 "push an OCI index with both the source and the Nydus manifests")->envname("MERGE_PLATFORM");
  conv->add_flag("--all-platforms", o.all_platforms, "convert every platform of an index");
  conv->add_option("--platform", o.platform, "platforms to convert, e.g. linux/amd64,linux/arm64")->capture_default_str();
  conv->add_flag("--oci-ref", oci_ref, "convert to an OCI-referenced (zran) image: the gzip layers stay the data")->envname("OCI_REF");
  conv->add_flag("--with-referrer", with_referrer, "(not supported) subject of the source manifest")
      ->envname("WITH_REFERRER");
  conv->add_flag("--oci", o.oci, "Docker media types become OCI media types")->envname("OCI");
  conv->add_flag("--reverse", reverse, "(not supported) Nydus to OCI")->envname("REVERSE");
  conv->add_flag("--docker-v2-format", docker_v2_format, "deprecated: keep Docker media types (the default)");
  conv->add_option("--fs-version", fs_version, "RAFS version (6; 5 is not supported)")->envname("FS_VERSION")
      ->capture_default_str();
  conv->add_flag("--fs-align-chunk", fs_align_chunk, "(not supported) 4K-aligned chunks, RAFS v5")
      ->envname("FS_ALIGN_CHUNK");
  conv->add_flag("--backend-aligned-chunk", backend_aligned_chunk, "(deprecated, not supported)")
      ->envname("BACKEND_ALIGNED_CHUNK");
  conv->add_option("--prefetch-dir", prefetch_dir, "an absolute path in the image to prefetch")->envname("PREFETCH_DIR");
  conv->add_flag("--prefetch-patterns", patterns_stdin, "read paths to prefetch from stdin (one per line)")
      ->envname("PREFETCH_PATTERNS");
  conv->add_option("--prefetch-file", patterns_file, "read paths to prefetch from this file")->check(CLI::ExistingFile);
  conv->add_option("--compressor", compressor, "none, lz4_block, zstd")->envname("COMPRESSOR")->capture_default_str();
  conv->add_option("--fs-chunk-size,--chunk-size", chunk_size, "chunk size: a power of two, 0x1000-0x1000000")
      ->envname("FS_CHUNK_SIZE")->capture_default_str();
  conv->add_option("--batch-size", batch_size,
                   "size of batch data chunks, must be power of two, between 0x1000-0x1000000 or zero")->envname("BATCH_SIZE")
      ->capture_default_str();
  conv->add_option("--work-dir", o.work_dir, "scratch directory")->envname("WORK_DIR")->capture_default_str();
  conv->add_option("--nydus-image", nydus_image, "ignored: the builder is built in")->envname("NYDUS_IMAGE");
  conv->add_option("--output-json", output_json, "write conversion metrics (upstream's JSON) to this file")
      ->envname("OUTPUT_JSON");
  conv->add_flag("--plain-http", plain_http, "talk plain HTTP to the registries")->envname("PLAIN_HTTP");
  conv->add_option("--push-retry-count", push_retry_count, "retries of a failed push")->envname("PUSH_RETRY_COUNT")
      ->capture_default_str();
  conv->add_option("--push-retry-delay", push_retry_delay, "delay between push retries (5s, 1m, 500ms)")
      ->envname("PUSH_RETRY_DELAY")->capture_default_str();
  conv->add_option("--jobs", o.jobs, "layers converted at once")->capture_default_str();
  conv->add_option("--source-auth", source_auth, "base64(user:pass) for the source (else docker config)");
  conv->add_option("--target-auth", target_auth, "base64(user:pass) for the target (else docker config)");

  // ---- check ----
  nydus::convert::CheckOptions c;
  c.work_dir = "./output";
  c.platform = nydus::convert::host_platform();
  bool check_source_insecure = false, check_target_insecure = false, check_multi_platform = false;
  std::string check_nydus_image = "nydus-image", check_nydusd = "nydusd", check_source_auth, check_target_auth;
  std::string sb_type, sb_config, sb_config_file, tb_type, tb_config, tb_config_file;
  auto* check = app.add_subcommand("check", "Verify nydus image format and content");
  check->add_option("--target", c.target, "the Nydus image")->required()->envname("TARGET");
  check->add_option("--source", c.source, "the original image, to compare the file trees")->envname("SOURCE");
  check->add_flag("--source-insecure", check_source_insecure, "skip TLS verification for the source")
      ->envname("SOURCE_INSECURE");
  check->add_flag("--target-insecure", check_target_insecure, "skip TLS verification for the target")
      ->envname("TARGET_INSECURE");
  check->add_option("--source-backend-type", sb_type, "(not supported)");
  check->add_option("--source-backend-config", sb_config, "(not supported)");
  check->add_option("--source-backend-config-file", sb_config_file, "(not supported)");
  check->add_option("--target-backend-type", tb_type, "(not supported)");
  check->add_option("--target-backend-config", tb_config, "(not supported)");
  check->add_option("--target-backend-config-file", tb_config_file, "(not supported)");
  check->add_flag("--multi-platform", check_multi_platform, "the target must be an index with OCI and Nydus manifests")
      ->envname("MULTI_PLATFORM");
  check->add_option("--platform", c.platform, "os/arch[/variant]")->capture_default_str();
  check->add_option("--work-dir", c.work_dir, "scratch directory")->envname("WORK_DIR")->capture_default_str();
  check->add_option("--nydus-image", check_nydus_image, "ignored: the checker is built in")->envname("NYDUS_IMAGE");
  check->add_option("--nydusd", check_nydusd, "ignored: the checker reads the image itself")->envname("NYDUSD");
  check->add_option("--source-auth", check_source_auth, "base64(user:pass) for the source (else docker config)");
  check->add_option("--target-auth", check_target_auth, "base64(user:pass) for the target (else docker config)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;  // upstream: every error is logrus.Fatal, exit 1
  }

  // Logging: progress lines are info; -D / debug and trace add nothing more yet.
  static const std::set<std::string> kLevels{"panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"};
  if (!kLevels.count(log_level)) {
    std::fprintf(stderr, "nydusify: failed to parse log level(%s), default log level(info) will be used\n",
                 log_level.c_str());
    log_level = "info";
  }
  const bool quiet = !debug && (log_level == "panic" || log_level == "fatal" || log_level == "error" ||
                                log_level == "warn" || log_level == "warning");
  if (!log_file.empty() && !std::freopen(log_file.c_str(), "a", stderr))
    std::fprintf(stdout, "nydusify: failed to open log file %s\n", log_file.c_str());

  if (*check) {
    for (const auto& [flag, v] : {std::pair{"source-backend-type", sb_type}, {"target-backend-type", tb_type},
                                  {"source-backend-config", sb_config}, {"target-backend-config", tb_config},
                                  {"source-backend-config-file", sb_config_file},
                                  {"target-backend-config-file", tb_config_file}})
      if (!v.empty()) return fail(fmt::format("--{}: blobs in OSS/S3/localfs are not supported; blobs are read from the registry", flag));
    c.source_store.skip_verify = check_source_insecure;
    c.target_store.skip_verify = check_target_insecure;
    c.source_store.auth = check_source_auth;
    c.target_store.auth = check_target_auth;
    c.multi_platform = check_multi_platform;
    auto r = nydus::convert::check_image(c);
    if (!r) return fail("check: " + r.error().message);
    for (const auto& p : r->problems) std::printf("PROBLEM %s\n", p.c_str());
    std::printf("%s: %s — %llu blobs, %llu chunks verified, %llu inodes%s\n", c.target.c_str(),
                r->ok() ? "OK" : "FAILED", (unsigned long long)r->blobs, (unsigned long long)r->chunks_verified,
                (unsigned long long)r->entries,
                c.source.empty() ? "" : fmt::format(", {} entries equal to {}", r->entries_compared, c.source).c_str());
    return r->ok() ? 0 : 1;
  }

  // ---- convert: what upstream refuses, then what this one does not have ----
  if (!o.target.empty() && !target_suffix.empty()) return fail("--target conflicts with --target-suffix");
  if (o.target.empty() && target_suffix.empty()) return fail("--target or --target-suffix is required");
  if (!target_suffix.empty()) {
    auto t = with_suffix(o.source, target_suffix);
    if (!t) return fail(t.error().message);
    o.target = *t;
  }
  if (fs_version != "5" && fs_version != "6") return fail("--fs-version should be one of [5 6]");
  if (!chunk_dict.empty()) {
    auto ref = nydus::convert::parse_chunk_dict_arg(chunk_dict);
    if (!ref) return fail(ref.error().message);
    o.chunk_dict = *ref;
  }
  if (!prefetch_dir.empty() && patterns_stdin) return fail("--prefetch-dir conflicts with --prefetch-patterns");
  if (!build_cache.empty() && !build_cache_tag.empty()) return fail("--build-cache conflicts with --build-cache-tag");
  if (build_cache_max_records < 1) return fail("--build-cache-max-records should be greater than 0");
  if (build_cache_max_records > 200) return fail("--build-cache-max-records should not be greater than 200");
  // As upstream's getBackendConfig: without --backend-type the backend config
  // is not read at all (docs/nydusify.md's localfs example relies on it).
  if (!backend_type.empty() && !backend_config.empty() && !backend_config_file.empty())
    return fail("--backend-config conflicts with --backend-config-file");
  auto unsupported = [](const std::string& flag, const std::string& why) {
    return fail(fmt::format("{} is not supported by this nydusify: {}", flag, why));
  };
  if (fs_version == "5") return unsupported("--fs-version 5", "it builds RAFS v6 only");
  if (!source_archive.empty()) return unsupported("--source-archive", "use --source oci:DIR:TAG (an OCI layout dir)");
  if (!target_archive.empty()) return unsupported("--target-archive", "use --target oci:DIR:TAG (an OCI layout dir)");
  if (!source_backend_type.empty()) return unsupported("--source-backend-type", "model images cannot be converted");
  if (!backend_type.empty()) {
    if (backend_type != "oss" && backend_type != "s3" && backend_type != "localfs")
      return fail("--backend-type should be one of [oss s3 localfs]");
    o.backend_config = backend_config;
    if (!backend_config_file.empty()) {
      std::ifstream in(backend_config_file, std::ios::binary);
      if (!in) return fail(fmt::format("parse backend config file: open {}: {}", backend_config_file, std::strerror(errno)));
      o.backend_config.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    if (o.backend_config.find_first_not_of(" \t\r\n") == std::string::npos)
      return fail("backend configuration is empty, please specify option '--backend-config'");
    o.backend_type = backend_type;
    o.backend_force_push = backend_force_push;
  }
  if (!build_cache.empty() || !build_cache_tag.empty())
    return unsupported(!build_cache.empty() ? "--build-cache" : "--build-cache-tag",
                       "layers already in the target are not pushed again anyway");
  if (with_referrer) return unsupported("--with-referrer", "referrer (subject) manifests");
  if (reverse) return unsupported("--reverse", "Nydus to OCI conversion");
  if (fs_align_chunk || backend_aligned_chunk)
    return unsupported(fs_align_chunk ? "--fs-align-chunk" : "--backend-aligned-chunk", "it is a RAFS v5 option");
  if (docker_v2_format) {
    std::fprintf(stderr, "nydusify: the option `--docker-v2-format` has been deprecated, use `--oci` instead\n");
    o.oci = false;
  }
  if (oci_ref) {
    // As upstream: a zran image is always OCI.
    std::fprintf(stderr, "nydusify: forcibly enabled `--oci` option when `--oci-ref` be enabled\n");
    o.oci = true;
    o.oci_ref = true;
  }
  auto bs = size_arg("batch-size", batch_size);
  if (!bs) return fail(bs.error().message);
  auto cs = size_arg("fs-chunk-size", chunk_size);
  if (!cs) return fail(cs.error().message);
  if (*cs < 0x1000 || *cs > 0x1000000 || (*cs & (*cs - 1)))
    return fail(fmt::format("--fs-chunk-size {}: a power of two between 0x1000 and 0x1000000", chunk_size));
  o.chunk_size = uint32_t(*cs);
  // As `nydus-image create --batch-size` checks it (the builder runs in process).
  if (*bs != 0 && (*bs < 0x1000 || *bs > 0x1000000 || (*bs & (*bs - 1)) || *bs > *cs))
    return fail(fmt::format("invalid batch size: {} (a power of two 0x1000..0x1000000, at most the chunk size)",
                            batch_size));
  o.batch_size = uint32_t(*bs);

  auto comp = compressor_named(compressor);
  if (!comp) return fail(comp.error().message);
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
  if (!prefetch_dir.empty()) {
    if (prefetch_dir[0] != '/') return fail("--prefetch-dir must be an absolute path in the image");
    o.prefetch_patterns.push_back(prefetch_dir);
  }
  o.push_retry_count = std::max(0, push_retry_count);
  {
    auto d = nydus::convert::parse_go_duration(push_retry_delay);
    if (!d) return fail("parse push retry delay: " + d.error().message);
    o.push_retry_delay = *d;
  }
  for (auto* s : {&o.source_store, &o.target_store}) s->plain_http = plain_http;
  o.source_store.skip_verify = source_insecure;
  o.target_store.skip_verify = target_insecure;
  o.source_store.auth = source_auth;
  o.target_store.auth = target_auth;
  o.chunk_dict_store.plain_http = plain_http;
  o.chunk_dict_store.skip_verify = chunk_dict_insecure;
  Progress progress(::isatty(2));
  if (!quiet) o.progress = [&](int i, int n, const std::string& s, const std::string& d) { progress(i, n, s, d); };
  auto rep = nydus::convert::convert_image(o);
  if (!output_json.empty()) write_metric(output_json, rep ? &*rep : nullptr);
  if (!rep) return fail(rep.error().message);
  uint64_t src_bytes = 0, blob_bytes = 0, blobs = 0;
  for (const auto& p : rep->platforms)
    for (const auto& l : p.layers) src_bytes += l.source_size, blob_bytes += l.blob_size, blobs += !l.blob_digest.empty();
  std::printf("converted %s -> %s in %.1f s: %zu platform(s), %.1f MB of layers -> %llu blobs (%.1f MB) + bootstrap; "
              "pushed %llu blobs (%.1f MB), %llu already there; %s %s\n",
              o.source.c_str(), o.target.c_str(), rep->seconds, rep->platforms.size(), double(src_bytes) / 1e6,
              (unsigned long long)blobs, double(blob_bytes) / 1e6, (unsigned long long)rep->push.blobs_pushed,
              double(rep->push.bytes_pushed) / 1e6, (unsigned long long)rep->push.blobs_present,
              rep->target_media_type.c_str(), rep->target_digest.c_str());
  return 0;
}
