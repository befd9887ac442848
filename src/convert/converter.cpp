#include "convert/converter.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <functional>
#include <map>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "builder/create_image.h"
#include "builder/merge.h"
#include "convert/blob_backend.h"
#include "convert/bootstrap_layer.h"
#include "convert/chunk_dict.h"
#include "convert/mapped_file.h"
#include "format/bootstrap.h"
#include "format/digest.h"

namespace nydus::convert {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One source manifest to convert.
struct Source {
  Descriptor desc;  // as the source names it (digest, media type, platform)
  Manifest manifest;
  json config;
  Platform platform;
};

Status check_convertible(const ImageStore& src, const Manifest& m) {
  for (const auto& l : m.layers) {
    if (l.media_type == media::kNydusBlob || l.annotations.count(std::string(annotation::kNydusBootstrap)))
      return errorf(Errc::kInvalidArgument, "{} is a Nydus image already", src.describe());
    if (!is_layer_type(l.media_type))
      return errorf(Errc::kUnsupported, "layer {} has media type \"{}\", not a tar layer", l.digest, l.media_type);
  }
  return ok();
}

Result<Source> load_source(ImageStore& src, const Descriptor& d) {
  Source s;
  s.desc = d;
  NYDUS_ASSIGN_OR_RETURN(FetchedManifest m, src.get_manifest(d.digest));
  NYDUS_ASSIGN_OR_RETURN(s.manifest, parse_manifest(m.bytes));
  s.desc.media_type = s.manifest.media_type;
  s.desc.size = m.bytes.size();
  NYDUS_TRY(check_convertible(src, s.manifest));
  NYDUS_ASSIGN_OR_RETURN(std::string cfg, src.get_blob(s.manifest.config));
  s.config = json::parse(cfg, nullptr, false);
  if (!s.config.is_object()) return errorf(Errc::kCorrupt, "image config of {} is not a JSON object", src.describe());
  if (d.platform) s.platform = *d.platform;
  if (auto os = s.config.find("os"); os != s.config.end() && os->is_string()) s.platform.os = os->get<std::string>();
  if (auto a = s.config.find("architecture"); a != s.config.end() && a->is_string())
    s.platform.architecture = a->get<std::string>();
  if (auto v = s.config.find("variant"); v != s.config.end() && v->is_string()) s.platform.variant = v->get<std::string>();
  s.platform.os_features.clear();
  return s;
}

// The manifests to convert: the reference's manifest, or the index entries
// for the asked platforms (Nydus entries of an earlier merge are skipped).
Result<std::vector<Source>> resolve_sources(ImageStore& src, const std::string& reference, const ConvertOptions& o,
                                            FetchedManifest& top) {
  NYDUS_ASSIGN_OR_RETURN(top, src.get_manifest(reference));
  std::vector<Source> out;
  if (!is_index_type(top.media_type)) {
    Descriptor d;
    d.digest = top.digest;
    NYDUS_ASSIGN_OR_RETURN(Source s, load_source(src, d));
    out.push_back(std::move(s));
    return out;
  }
  NYDUS_ASSIGN_OR_RETURN(std::vector<Platform> want, parse_platforms(o.platform));
  NYDUS_ASSIGN_OR_RETURN(std::vector<Descriptor> entries, parse_index(top.bytes));
  for (const auto& e : entries) {
    if (!is_manifest_type(e.media_type) || !e.platform) continue;
    const auto& f = e.platform->os_features;
    if (std::find(f.begin(), f.end(), kNydusOsFeature) != f.end() || e.artifact_type == media::kNydusArtifact) continue;
    const bool asked = o.all_platforms ||
                       std::any_of(want.begin(), want.end(), [&](const Platform& p) { return platform_matches(p, *e.platform); });
    if (!asked) continue;
    NYDUS_ASSIGN_OR_RETURN(Source s, load_source(src, e));
    out.push_back(std::move(s));
  }
  if (out.empty())
    return errorf(Errc::kNotFound, "{} has no manifest for {}", src.describe(), o.all_platforms ? "any platform" : o.platform);
  return out;
}

// One source layer -> one Nydus blob (with its bootstrap inlined and a ToC,
// as nydus-snapshotter's tar2rafs writes them) plus a separate bootstrap.
Status convert_layer(const fs::path& tar, const fs::path& dir, const std::string& name, const ConvertOptions& o,
                     const fs::path& chunk_dict, unsigned threads, LayerResult& out) {
  builder::CreateOptions c;
  c.source_type = o.oci_ref ? builder::SourceType::kTargzRef : builder::SourceType::kTar;
  c.source = tar;
  c.bootstrap = dir / (name + ".boot");
  c.blob_file = dir / (name + ".blob");
  c.compressor = o.compressor;
  c.chunk_size = o.chunk_size;
  c.batch_size = o.oci_ref ? 0 : o.batch_size;
  // Not `repeatable`: like upstream's --repeatable it stores every uid/gid
  // as 0, and the snapshotter's converter never passes it. The build is
  // deterministic anyway (owners and times come from the tar headers).
  c.repeatable = false;
  c.blob_inline_meta = true;
  c.blob_toc = true;
  c.threads = threads;
  c.chunk_dict = chunk_dict;
  // As the snapshotter's converter (--prefetch-policy fs with the patterns):
  // the listed files also go first in the layer's blob.
  c.prefetch_patterns = o.prefetch_patterns;
  auto rep = builder::create_image(c);
  std::error_code ec;
  // The downloaded tar is not needed any more (a layout's own file stays;
  // an --oci-ref layer may have to be pushed to the target as it is).
  if (tar.parent_path() == dir && !o.oci_ref) fs::remove(tar, ec);
  if (!rep) return std::unexpected(std::move(rep).error().context(fmt::format("converting layer {}", out.source_digest)));
  out.bootstrap = c.bootstrap;
  out.implicit_dirs = std::move(rep->implicit_dirs);
  // An --oci-ref layer without file data still has its meta blob (holding
  // the bootstrap), listed in the manifest as upstream does.
  if (rep->blobs.empty() && !(o.oci_ref && !rep->blob_path.empty())) {
    fs::remove(c.blob_file, ec);
    return ok();
  }
  // A ref layer's Nydus blob is its meta blob, named by its own digest (the
  // blob table's id is the gzip layer's).
  std::string id;
  if (o.oci_ref) {
    NYDUS_ASSIGN_OR_RETURN(MappedFile m, MappedFile::open_read(c.blob_file));
    id = format::to_hex(format::sha256(m.bytes()));
    if (!rep->blobs.empty()) out.toc_digest = format::to_hex(rep->blobs[0].toc_digest);
  } else {
    id = rep->blobs[0].blob_id;
  }
  out.blob_digest = "sha256:" + id;
  const fs::path blob = o.work_dir / "layers" / "blobs" / id;
  fs::create_directories(blob.parent_path(), ec);
  fs::rename(c.blob_file, blob, ec);
  if (ec) return sys_error(fmt::format("rename {} to {}", c.blob_file.string(), blob.string()), ec.value());
  out.blob_size = fs::file_size(blob, ec);
  return ok();
}

// Run `fn(i)` for i in [0, n) on `jobs` threads; the first error wins.
Status parallel(int n, unsigned jobs, const std::function<Status(int)>& fn) {
  std::atomic<int> next{0};
  std::mutex mu;
  std::optional<Error> first;
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < std::clamp<unsigned>(jobs, 1, std::max(1, n)); ++w)
    workers.emplace_back([&] {
      for (int i; (i = next++) < n;) {
        {
          std::lock_guard lk(mu);
          if (first) return;
        }
        if (auto st = fn(i); !st) {
          std::lock_guard lk(mu);
          if (!first) first = st.error();
          return;
        }
      }
    });
  for (auto& w : workers) w.join();
  if (first) return std::unexpected(*first);
  return ok();
}

std::string docker_or_oci(bool oci, std::string_view docker_type, std::string_view oci_type) {
  return std::string(oci ? oci_type : docker_type);
}

}  // namespace

Result<std::chrono::milliseconds> parse_go_duration(std::string_view s) {
  const std::string_view orig = s;
  if (s == "0") return std::chrono::milliseconds(0);
  double total_ms = 0;
  if (s.empty()) return errorf(Errc::kInvalidArgument, "invalid duration \"{}\"", orig);
  while (!s.empty()) {
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    if (i == 0) return errorf(Errc::kInvalidArgument, "invalid duration \"{}\"", orig);
    double v = 0;
    try {
      v = std::stod(std::string(s.substr(0, i)));
    } catch (const std::exception&) {
      return errorf(Errc::kInvalidArgument, "invalid duration \"{}\"", orig);
    }
    s.remove_prefix(i);
    size_t u = 0;
    while (u < s.size() && std::isalpha(static_cast<unsigned char>(s[u]))) ++u;
    const std::string_view unit = s.substr(0, u);
    s.remove_prefix(u);
    double scale;
    if (unit == "ns") scale = 1e-6;
    else if (unit == "us" || unit == "µs") scale = 1e-3;
    else if (unit == "ms") scale = 1;
    else if (unit == "s") scale = 1e3;
    else if (unit == "m") scale = 60e3;
    else if (unit == "h") scale = 3600e3;
    else return errorf(Errc::kInvalidArgument, "invalid duration \"{}\": unit \"{}\"", orig, unit);
    total_ms += v * scale;
  }
  if (total_ms > 86400e3 * 365) return errorf(Errc::kInvalidArgument, "duration \"{}\" is too long", orig);
  return std::chrono::milliseconds(int64_t(total_ms));
}

Result<ConvertReport> convert_image(const ConvertOptions& o) {
  const auto t0 = Clock::now();
  auto note = [&](int i, int n, const std::string& stage, const std::string& detail) {
    if (o.progress) o.progress(i, n, stage, detail);
  };
  NYDUS_ASSIGN_OR_RETURN(ImageRef sref, parse_image_ref(o.source));
  NYDUS_ASSIGN_OR_RETURN(ImageRef tref, parse_image_ref(o.target));
  if (tref.tag.empty()) return errorf(Errc::kInvalidArgument, "target {} needs a tag", o.target);
  if (auto p = parse_platforms(o.platform); !p) return std::unexpected(std::move(p).error());
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> src, open_store(sref, o.source_store));
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> dst, open_store(tref, o.target_store));
  if (o.oci_ref && !o.backend_type.empty())
    return make_error(Errc::kUnsupported,
                      "--oci-ref with --backend-type is not supported (the data stays in the source layers)");
  std::unique_ptr<BlobBackend> blob_backend;
  if (!o.backend_type.empty()) {
    NYDUS_ASSIGN_OR_RETURN(blob_backend, open_blob_backend(o.backend_type, o.backend_config, o.backend_force_push));
  }
  std::error_code ec;
  fs::create_directories(o.work_dir / "layers", ec);
  if (ec) return sys_error(fmt::format("create {}", o.work_dir.string()), ec.value());

  // ---- pull: manifests, configs and every layer of the asked platforms ----
  FetchedManifest top;
  NYDUS_ASSIGN_OR_RETURN(std::vector<Source> sources, resolve_sources(*src, sref.reference(), o, top));
  const bool source_is_index = is_index_type(top.media_type);
  ConvertReport rep;
  // Each distinct layer is pulled and converted once, however many
  // platforms share it.
  std::vector<Descriptor> uniq;
  std::map<std::string, size_t> index_of;
  for (auto& src_m : sources) {
    rep.source_image_size += src_m.manifest.config.size;
    for (const auto& l : src_m.manifest.layers) {
      rep.source_image_size += l.size;
      if (index_of.emplace(l.digest, uniq.size()).second) uniq.push_back(l);
    }
  }
  const int n = int(uniq.size());
  const fs::path layer_dir = o.work_dir / "layers";
  std::vector<fs::path> files(uniq.size());
  NYDUS_TRY(parallel(n, o.jobs, [&](int i) -> Status {
    const auto& l = uniq[size_t(i)];
    note(i, n, "pull", fmt::format("{} ({:.1f} MB)", l.digest.substr(0, 19), double(l.size) / 1e6));
    NYDUS_ASSIGN_OR_RETURN(files[size_t(i)], src->blob_file(l, layer_dir));
    return ok();
  }));
  // The chunk dictionary: the image's bootstrap, and its blobs by digest.
  std::optional<ChunkDict> dict;
  if (!o.chunk_dict.empty()) {
    note(-1, n, "pull", "chunk dict " + o.chunk_dict);
    NYDUS_ASSIGN_OR_RETURN(dict, load_chunk_dict(o.chunk_dict, o.chunk_dict_store, sources[0].platform,
                                                 o.work_dir / "chunk-dict"));
  }
  // Upstream builds ref layers without the dictionary at all. Here one of
  // plain Nydus blobs with sha256 chunk digests is used: chunks it holds are
  // read from its blobs (copied to the target), not from the gzip layers.
  // Others are left out with a note, as upstream would: blake3 digests
  // (nydusify's own images) can match no ref chunk, and a ref image's data
  // is in its own source layers, which the target does not get.
  if (dict && o.oci_ref) {
    NYDUS_ASSIGN_OR_RETURN(auto dboot, format::Bootstrap::open(dict->bootstrap));
    std::string why;
    if (dboot->digester() != format::Digester::kSha256)
      why = fmt::format("its chunks have {} digests, a ref layer's sha256", format::digester_name(dboot->digester()));
    else if (std::ranges::any_of(dboot->blobs(), [](const format::BlobInfo& b) {
               return (b.features & format::blob_features::kSeparate) != 0;
             }))
      why = "it is a ref image (its data is in its own source layers)";
    if (!why.empty()) {
      note(-1, n, "chunk dict", fmt::format("{}: {}; the layers are built without it", o.chunk_dict, why));
      dict.reset();
    }
  }
  const fs::path dict_boot = dict ? dict->bootstrap : fs::path();
  rep.pull_seconds = since(t0);

  // ---- convert: layers in parallel, each builder with a share of the cores ----
  const auto t1 = Clock::now();
  std::vector<LayerResult> converted(uniq.size());
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency() / std::clamp<unsigned>(o.jobs, 1, std::max(1, n)));
  NYDUS_TRY(parallel(n, o.jobs, [&](int i) -> Status {
    const auto& d = uniq[size_t(i)];
    LayerResult& r = converted[size_t(i)];
    r.source_digest = d.digest;
    r.source_size = d.size;
    note(i, n, "convert", fmt::format("{} ({:.1f} MB)", d.digest.substr(0, 19), double(d.size) / 1e6));
    NYDUS_TRY(convert_layer(files[size_t(i)], layer_dir, fmt::format("{:04}", i), o, dict_boot, threads, r));
    note(i, n, "converted",
         r.blob_digest.empty() ? "no file data" : fmt::format("blob {:.1f} MB", double(r.blob_size) / 1e6));
    return ok();
  }));
  rep.platforms.resize(sources.size());
  for (size_t s = 0; s < sources.size(); ++s) {
    rep.platforms[s].platform = sources[s].platform;
    for (const auto& l : sources[s].manifest.layers) rep.platforms[s].layers.push_back(converted[index_of.at(l.digest)]);
  }

  // Per platform: merge the layer bootstraps (lowest first, OCI whiteouts),
  // then its manifest.
  struct Built {
    std::vector<Descriptor> blobs;   // the Nydus blobs the bootstrap uses
    std::vector<Descriptor> layers;  // the manifest's: blobs (none with a blob backend), then the bootstrap layer
    std::string config_bytes, manifest_bytes;
    Descriptor config, manifest;
    BootstrapLayer boot;
  };
  std::vector<Built> built(sources.size());
  for (size_t s = 0; s < sources.size(); ++s) {
    const Source& src_m = sources[s];
    PlatformResult& pr = rep.platforms[s];
    Built& b = built[s];
    note(-1, n, "merge", fmt::format("{}/{}", pr.platform.os, pr.platform.architecture));
    builder::MergeOptions m;
    for (const auto& l : pr.layers) {
      m.layers.push_back(l.bootstrap);
      m.implicit_dirs.push_back(l.implicit_dirs);
      if (o.oci_ref) {
        // As the snapshotter's Merge: each ref layer's meta blob digest, size
        // and ToC digest go into the merged blob table (meta fields).
        // A layer without file data has no blob of its own, so merge never
        // reads its entry: zeros keep the lists one entry per layer.
        const std::string zeros(64, '0');
        m.blob_digests.push_back(l.blob_digest.empty() ? zeros : l.blob_digest.substr(7));
        m.blob_sizes.push_back(l.blob_size);
        m.blob_toc_digests.push_back(l.toc_digest.empty() ? zeros : l.toc_digest);
      }
    }
    const fs::path pdir = o.work_dir / fmt::format("platform-{:02}", s);
    fs::create_directories(pdir, ec);
    m.bootstrap = pdir / "image.boot";
    m.whiteout = builder::WhiteoutSpec::kOci;
    m.prefetch_patterns = o.prefetch_patterns;
    m.chunk_dict = dict_boot;
    NYDUS_ASSIGN_OR_RETURN(builder::MergeReport merged, builder::merge_layers(m));
    NYDUS_ASSIGN_OR_RETURN(b.boot, write_bootstrap_layer(m.bootstrap, pdir));
    pr.bootstrap_digest = b.boot.digest;
    pr.bootstrap_size = b.boot.size;

    // As the snapshotter's converter: an OCI source manifest makes the
    // bootstrap layer OCI even without --oci.
    const bool oci = o.oci || src_m.manifest.media_type == media::kOciManifest;
    json diff_ids = json::array();
    // The layers' own blobs in the merged blob table's order, then the chunk
    // dictionary's blobs the image uses (the snapshotter converter's
    // mergeManifestBlobDigests order).
    std::vector<Descriptor> dict_layers;
    // A blob of the merged table that no layer produced: the dictionary's.
    auto dict_layer = [&](const std::string& digest) -> Result<Descriptor> {
      const Descriptor* in_dict = nullptr;
      if (dict)
        if (auto it = dict->blobs.find(digest); it != dict->blobs.end()) in_dict = &it->second;
      if (!in_dict)
        return errorf(Errc::kInternal, "merged bootstrap names blob {} no layer produced{}", digest,
                      dict ? " and the chunk dict image does not list" : "");
      Descriptor d;
      d.media_type = std::string(media::kNydusBlob);
      d.digest = digest;
      d.size = in_dict->size;
      d.annotations[std::string(annotation::kNydusBlob)] = "true";
      return d;
    };
    if (o.oci_ref) {
      // The snapshotter's MergeLayers lists the ref blobs in layer order
      // (not the merged table's), each annotated with its source layer.
      // The chunk dictionary's blobs the image uses go after them.
      for (const auto& bi : merged.blobs) {
        const std::string digest = "sha256:" + bi.blob_id;
        if (std::any_of(pr.layers.begin(), pr.layers.end(),
                        [&](const LayerResult& r) { return r.source_digest == digest; }))
          continue;
        NYDUS_ASSIGN_OR_RETURN(Descriptor d, dict_layer(digest));
        dict_layers.push_back(std::move(d));
      }
      std::set<std::string> listed;
      for (const auto& r : pr.layers) {
        if (r.blob_digest.empty() || !listed.insert(r.blob_digest).second) continue;
        Descriptor d;
        d.media_type = std::string(media::kNydusBlob);
        d.digest = r.blob_digest;
        d.size = r.blob_size;
        d.annotations[std::string(annotation::kNydusBlob)] = "true";
        d.annotations[std::string(annotation::kNydusRef)] = r.source_digest;
        b.blobs.push_back(d);
      }
    }
    for (const auto& bi : merged.blobs) {
      if (o.oci_ref) break;
      const std::string digest = "sha256:" + bi.blob_id;
      Descriptor d;
      d.media_type = std::string(media::kNydusBlob);
      d.digest = digest;
      d.annotations[std::string(annotation::kNydusBlob)] = "true";
      const LayerResult* found = nullptr;
      for (const auto& r : pr.layers)
        if (r.blob_digest == digest) found = &r;
      if (found) {
        d.size = found->blob_size;
        b.blobs.push_back(d);
        continue;
      }
      NYDUS_ASSIGN_OR_RETURN(d, dict_layer(digest));
      dict_layers.push_back(std::move(d));
    }
    b.blobs.insert(b.blobs.end(), dict_layers.begin(), dict_layers.end());
    // With a blob backend the manifest lists the bootstrap layer only (the
    // snapshotter converter's convertManifest).
    if (!blob_backend) b.layers = b.blobs;
    for (const auto& l : b.layers) diff_ids.push_back(l.digest);
    Descriptor bd;
    bd.media_type = docker_or_oci(oci, media::kDockerLayerGzip, media::kOciLayerGzip);
    bd.digest = b.boot.digest;
    bd.size = b.boot.size;
    bd.annotations[std::string(annotation::kNydusBootstrap)] = "true";
    bd.annotations[std::string(annotation::kNydusFsVersion)] = "6";
    b.layers.push_back(bd);
    diff_ids.push_back(b.boot.diff_id);

    // The image config: the source's, with the new layers' diff ids.
    json config = src_m.config;
    config["rootfs"] = json{{"type", "layers"}, {"diff_ids", diff_ids}};
    if (!config.contains("history") || !config["history"].is_array() || blob_backend) config["history"] = json::array();
    config["history"].push_back(json{{"created_by", "Nydus Converter"}, {"comment", "Nydus Bootstrap Layer"}});
    b.config_bytes = config.dump();
    b.config.media_type = o.merge_platform ? std::string(media::kNydusConfig)
                          : o.oci ? std::string(media::kOciConfig)
                                  : src_m.manifest.config.media_type;
    if (b.config.media_type.empty()) b.config.media_type = std::string(media::kOciConfig);
    b.config.digest = sha256_digest(b.config_bytes);
    b.config.size = b.config_bytes.size();

    const std::string mt = o.oci ? std::string(media::kOciManifest) : src_m.manifest.media_type;
    json manifest{{"schemaVersion", 2}, {"mediaType", mt}, {"config", to_json(b.config)}, {"layers", json::array()}};
    for (const auto& l : b.layers) manifest["layers"].push_back(to_json(l));
    manifest["annotations"] = json{{std::string(annotation::kNydusSourceDigest), src_m.desc.digest},
                                   {std::string(annotation::kNydusSourceReference), sref.to_string()},
                                   {std::string(annotation::kNydusFsVersion), "6"}};
    b.manifest_bytes = manifest.dump();
    b.manifest.media_type = mt;
    b.manifest.digest = sha256_digest(b.manifest_bytes);
    b.manifest.size = b.manifest_bytes.size();
    b.manifest.platform = pr.platform;
    pr.manifest_digest = b.manifest.digest;
    pr.manifest_media_type = mt;
    rep.target_image_size += b.config.size;
    for (const auto& l : b.layers) rep.target_image_size += l.size;
  }
  rep.convert_seconds = since(t1);

  // ---- push: blobs (those the target has already are skipped), configs,
  // manifests by digest, then what the tag names; each push is retried ----
  const auto t2 = Clock::now();
  auto retry = [&](const std::function<Status()>& push) -> Status {
    for (int attempt = 0;; ++attempt) {
      auto st = push();
      if (st || attempt >= o.push_retry_count) return st;
      note(-1, n, "retry", fmt::format("push failed ({}), again in {} ms", st.error().message, o.push_retry_delay.count()));
      std::this_thread::sleep_for(o.push_retry_delay);
    }
  };
  for (size_t s = 0; s < sources.size(); ++s) {
    Built& b = built[s];
    for (const auto& blob : b.blobs) {
      fs::path file = o.work_dir / "layers" / "blobs" / blob.digest.substr(7);
      const bool from_dict = dict && !fs::exists(file);
      if (blob_backend) {
        // The dictionary's blobs are the dictionary's to store.
        if (from_dict) continue;
        note(-1, n, "push", fmt::format("{} to {}", blob.digest.substr(0, 19), blob_backend->type()));
        NYDUS_TRY(retry([&]() -> Status {
          NYDUS_ASSIGN_OR_RETURN(bool pushed, blob_backend->push(blob.digest, file));
          (void)pushed;
          return ok();
        }));
        continue;
      }
      note(-1, n, "push", blob.digest.substr(0, 19));
      if (from_dict) {
        // A chunk dict blob: the target gets it from the dictionary image.
        NYDUS_ASSIGN_OR_RETURN(file, dict->store->blob_file(dict->blobs.at(blob.digest), layer_dir));
      }
      NYDUS_TRY(retry([&] { return dst->push_blob(blob.digest, file); }));
    }
    if (o.oci_ref) {
      // nydusd reads the data from the source layers by digest in the
      // target repository: make sure they are there (HEAD first, so
      // nothing is uploaded when the target has them, as in the same repo).
      for (const auto& l : sources[s].manifest.layers) {
        note(-1, n, "push", "source layer " + l.digest.substr(0, 19));
        NYDUS_ASSIGN_OR_RETURN(fs::path f, src->blob_file(l, layer_dir));
        NYDUS_TRY(retry([&] { return dst->push_blob(l.digest, f); }));
      }
    }
    note(-1, n, "push", "bootstrap");
    NYDUS_TRY(retry([&] { return dst->push_blob(b.boot.digest, b.boot.file); }));
    NYDUS_TRY(retry([&] { return dst->push_blob_bytes(b.config.digest, b.config_bytes); }));
  }
  const bool same_repo = sref.kind == tref.kind && sref.api_host() == tref.api_host() &&
                         sref.repository == tref.repository && sref.layout_dir == tref.layout_dir;
  if (o.merge_platform) {
    // The source manifests go into the target too (with their blobs).
    std::vector<Descriptor> entries;
    for (const auto& s : sources) {
      if (!same_repo) {
        note(-1, n, "push", "source " + s.desc.digest.substr(0, 19));
        for (size_t l = 0; l < s.manifest.layers.size(); ++l) {
          const auto& d = s.manifest.layers[l];
          NYDUS_ASSIGN_OR_RETURN(fs::path f, src->blob_file(d, layer_dir));
          NYDUS_TRY(retry([&] { return dst->push_blob(d.digest, f); }));
          if (f.parent_path() == layer_dir) fs::remove(f, ec);
        }
        NYDUS_ASSIGN_OR_RETURN(std::string cfg, src->get_blob(s.manifest.config));
        NYDUS_TRY(retry([&] { return dst->push_blob_bytes(s.manifest.config.digest, cfg); }));
      }
      NYDUS_ASSIGN_OR_RETURN(FetchedManifest m, src->get_manifest(s.desc.digest));
      NYDUS_TRY(retry([&] { return dst->push_manifest(m.digest, m.media_type, m.bytes); }));
      Descriptor d = s.desc;
      d.platform = s.platform;
      d.annotations.clear();
      entries.push_back(d);
    }
    for (size_t s = 0; s < sources.size(); ++s) {
      NYDUS_TRY(retry([&] { return dst->push_manifest(built[s].manifest.digest, built[s].manifest.media_type, built[s].manifest_bytes); }));
      Descriptor d = built[s].manifest;
      d.artifact_type = std::string(media::kNydusArtifact);
      d.platform->os_features.push_back(std::string(kNydusOsFeature));
      entries.push_back(d);
    }
    json index{{"schemaVersion", 2}, {"mediaType", media::kOciIndex}, {"manifests", json::array()}};
    for (const auto& e : entries) index["manifests"].push_back(to_json(e));
    const std::string bytes = index.dump();
    rep.target_digest = sha256_digest(bytes);
    rep.target_media_type = std::string(media::kOciIndex);
    NYDUS_TRY(retry([&] { return dst->push_manifest(tref.tag, media::kOciIndex, bytes); }));
  } else if (!source_is_index || sources.size() == 1) {
    // A manifest stays a manifest; an index converted to one platform too
    // (the snapshotter converter's convertIndex does the same).
    NYDUS_TRY(retry([&] { return dst->push_manifest(built[0].manifest.digest, built[0].manifest.media_type, built[0].manifest_bytes); }));
    NYDUS_TRY(retry([&] { return dst->push_manifest(tref.tag, built[0].manifest.media_type, built[0].manifest_bytes); }));
    rep.target_digest = built[0].manifest.digest;
    rep.target_media_type = built[0].manifest.media_type;
  } else {
    const std::string mt = o.oci ? std::string(media::kOciIndex) : top.media_type;
    json index{{"schemaVersion", 2}, {"mediaType", mt}, {"manifests", json::array()}};
    for (const auto& b : built) {
      NYDUS_TRY(retry([&] { return dst->push_manifest(b.manifest.digest, b.manifest.media_type, b.manifest_bytes); }));
      index["manifests"].push_back(to_json(b.manifest));
    }
    const std::string bytes = index.dump();
    rep.target_digest = sha256_digest(bytes);
    rep.target_media_type = mt;
    NYDUS_TRY(retry([&] { return dst->push_manifest(tref.tag, mt, bytes); }));
  }
  rep.push = dst->push_stats();
  rep.push_seconds = since(t2);
  rep.seconds = since(t0);
  note(-1, n, "done", "");
  return rep;
}

}  // namespace nydus::convert
