#include "convert/converter.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "builder/create_image.h"
#include "builder/merge.h"
#include "convert/bootstrap_layer.h"

namespace nydus::convert {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Source {
  Manifest manifest;
  json config;
  Platform platform;
};

// The manifest for `platform` (through an index when the reference names one).
Result<Source> resolve_source(ImageStore& src, const std::string& reference, const Platform& want) {
  Source s;
  // A Nydus manifest in an index is the result of an earlier conversion: skip it.
  NYDUS_ASSIGN_OR_RETURN(FetchedManifest m, resolve_manifest(src, reference, want, /*nydus=*/false, &s.platform));
  NYDUS_ASSIGN_OR_RETURN(s.manifest, parse_manifest(m.bytes));
  for (const auto& l : s.manifest.layers) {
    if (l.media_type == media::kNydusBlob || l.annotations.count(std::string(annotation::kNydusBootstrap)))
      return errorf(Errc::kInvalidArgument, "{} is a Nydus image already", src.describe());
    if (!is_layer_type(l.media_type))
      return errorf(Errc::kUnsupported, "layer {} has media type \"{}\", not a tar layer", l.digest, l.media_type);
  }
  NYDUS_ASSIGN_OR_RETURN(std::string cfg, src.get_blob(s.manifest.config));
  s.config = json::parse(cfg, nullptr, false);
  if (!s.config.is_object()) return errorf(Errc::kCorrupt, "image config of {} is not a JSON object", src.describe());
  if (auto os = s.config.find("os"); os != s.config.end() && os->is_string()) s.platform.os = os->get<std::string>();
  if (auto a = s.config.find("architecture"); a != s.config.end() && a->is_string())
    s.platform.architecture = a->get<std::string>();
  return s;
}

// One source layer -> one Nydus blob (with its bootstrap inlined and a ToC,
// as nydus-snapshotter's tar2rafs writes them) plus a separate bootstrap.
Status convert_layer(ImageStore& src, const Descriptor& layer, size_t index, const ConvertOptions& o,
                     unsigned threads, LayerResult& out) {
  const fs::path dir = o.work_dir / "layers";
  out.source_digest = layer.digest;
  out.source_size = layer.size;
  NYDUS_ASSIGN_OR_RETURN(fs::path tar, src.blob_file(layer, dir));
  builder::CreateOptions c;
  c.source_type = builder::SourceType::kTar;
  c.source = tar;
  c.bootstrap = dir / fmt::format("{:04}.boot", index);
  c.blob_file = dir / fmt::format("{:04}.blob", index);
  c.compressor = o.compressor;
  c.chunk_size = o.chunk_size;
  // Not `repeatable`: like upstream's --repeatable it stores every uid/gid
  // as 0, and the snapshotter's converter never passes it. The build is
  // deterministic anyway (owners and times come from the tar headers).
  c.repeatable = false;
  c.blob_inline_meta = true;
  c.blob_toc = true;
  c.threads = threads;
  auto rep = builder::create_image(c);
  std::error_code ec;
  // The downloaded tar is not needed any more (a layout's own file stays).
  if (tar.parent_path() == dir) fs::remove(tar, ec);
  if (!rep) return std::unexpected(std::move(rep).error().context(fmt::format("converting layer {}", layer.digest)));
  out.bootstrap = c.bootstrap;
  out.implicit_dirs = std::move(rep->implicit_dirs);
  if (rep->blobs.empty()) {
    fs::remove(c.blob_file, ec);
    return ok();
  }
  out.blob_digest = "sha256:" + rep->blobs[0].blob_id;
  const fs::path blob = dir / "blobs" / rep->blobs[0].blob_id;
  fs::create_directories(blob.parent_path(), ec);
  fs::rename(c.blob_file, blob, ec);
  if (ec) return sys_error(fmt::format("rename {} to {}", c.blob_file.string(), blob.string()), ec.value());
  out.blob_size = fs::file_size(blob, ec);
  return ok();
}

}  // namespace

Result<ConvertReport> convert_image(const ConvertOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  auto note = [&](int i, int n, const std::string& stage, const std::string& detail) {
    if (o.progress) o.progress(i, n, stage, detail);
  };
  NYDUS_ASSIGN_OR_RETURN(ImageRef sref, parse_image_ref(o.source));
  NYDUS_ASSIGN_OR_RETURN(ImageRef tref, parse_image_ref(o.target));
  if (tref.tag.empty()) return errorf(Errc::kInvalidArgument, "target {} needs a tag", o.target);
  NYDUS_ASSIGN_OR_RETURN(Platform want, parse_platform(o.platform));
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> src, open_store(sref, o.source_store));
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> dst, open_store(tref, o.target_store));
  std::error_code ec;
  fs::create_directories(o.work_dir / "layers", ec);
  if (ec) return sys_error(fmt::format("create {}", o.work_dir.string()), ec.value());

  NYDUS_ASSIGN_OR_RETURN(Source s, resolve_source(*src, sref.reference(), want));
  const int n = int(s.manifest.layers.size());
  ConvertReport rep;
  rep.layers.resize(size_t(n));

  // Layers in parallel; each builder gets a share of the cores.
  const unsigned jobs = std::clamp<unsigned>(o.jobs, 1, std::max(1, n));
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency() / jobs);
  std::atomic<int> next{0};
  std::mutex err_mu;
  std::optional<Error> first_error;
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < jobs; ++w)
    workers.emplace_back([&] {
      for (int i; (i = next++) < n;) {
        {
          std::lock_guard lk(err_mu);
          if (first_error) return;
        }
        const auto& l = s.manifest.layers[size_t(i)];
        note(i, n, "convert", fmt::format("{} ({:.1f} MB)", l.digest.substr(0, 19), double(l.size) / 1e6));
        if (auto st = convert_layer(*src, l, size_t(i), o, threads, rep.layers[size_t(i)]); !st) {
          std::lock_guard lk(err_mu);
          if (!first_error) first_error = st.error();
          return;
        }
        const auto& r = rep.layers[size_t(i)];
        note(i, n, "converted",
             r.blob_digest.empty() ? "no file data" : fmt::format("blob {:.1f} MB", double(r.blob_size) / 1e6));
      }
    });
  for (auto& w : workers) w.join();
  if (first_error) return std::unexpected(*first_error);

  // Merge the layer bootstraps, lowest first, applying OCI whiteouts.
  note(-1, n, "merge", "");
  builder::MergeOptions m;
  for (const auto& l : rep.layers) {
    m.layers.push_back(l.bootstrap);
    m.implicit_dirs.push_back(l.implicit_dirs);
  }
  m.bootstrap = o.work_dir / "image.boot";
  m.whiteout = builder::WhiteoutSpec::kOci;
  m.prefetch_patterns = o.prefetch_patterns;
  NYDUS_ASSIGN_OR_RETURN(builder::MergeReport merged, builder::merge_layers(m));
  NYDUS_ASSIGN_OR_RETURN(BootstrapLayer boot, write_bootstrap_layer(m.bootstrap, o.work_dir));
  rep.bootstrap_digest = boot.digest;
  rep.bootstrap_size = boot.size;

  // Blobs in the order of the merged blob table (what the bootstrap names).
  std::vector<Descriptor> layers;
  json diff_ids = json::array();
  for (const auto& b : merged.blobs) {
    const std::string digest = "sha256:" + b.blob_id;
    auto it = std::find_if(rep.layers.begin(), rep.layers.end(), [&](const LayerResult& r) { return r.blob_digest == digest; });
    if (it == rep.layers.end()) return errorf(Errc::kInternal, "merged bootstrap names blob {} no layer produced", digest);
    Descriptor d;
    d.media_type = std::string(media::kNydusBlob);
    d.digest = digest;
    d.size = it->blob_size;
    d.annotations[std::string(annotation::kNydusBlob)] = "true";
    layers.push_back(d);
    diff_ids.push_back(digest);
  }
  Descriptor bd;
  bd.media_type = std::string(media::kOciLayerGzip);
  bd.digest = boot.digest;
  bd.size = boot.size;
  bd.annotations[std::string(annotation::kNydusBootstrap)] = "true";
  bd.annotations[std::string(annotation::kNydusFsVersion)] = "6";
  layers.push_back(bd);
  diff_ids.push_back(boot.diff_id);

  // The image config: the source's, with the new layers' diff ids.
  json config = s.config;
  config["rootfs"] = json{{"type", "layers"}, {"diff_ids", diff_ids}};
  if (!config.contains("history") || !config["history"].is_array()) config["history"] = json::array();
  config["history"].push_back(json{{"created_by", "Nydus Converter"}, {"comment", "Nydus Bootstrap Layer"}});
  const std::string config_bytes = config.dump();
  Descriptor cd;
  cd.media_type = std::string(media::kOciConfig);
  cd.digest = sha256_digest(config_bytes);
  cd.size = config_bytes.size();

  // Push: blobs (those the target has already are skipped), config,
  // manifest by digest, then the index under the tag.
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    note(-1, n, "push", layers[i].digest.substr(0, 19));
    const fs::path blob = o.work_dir / "layers" / "blobs" / layers[i].digest.substr(7);
    NYDUS_TRY(dst->push_blob(layers[i].digest, blob));
  }
  note(-1, n, "push", "bootstrap");
  NYDUS_TRY(dst->push_blob(boot.digest, boot.file));
  NYDUS_TRY(dst->push_blob_bytes(cd.digest, config_bytes));
  json manifest{{"schemaVersion", 2}, {"mediaType", media::kOciManifest}, {"config", to_json(cd)}, {"layers", json::array()}};
  for (const auto& l : layers) manifest["layers"].push_back(to_json(l));
  const std::string manifest_bytes = manifest.dump();
  rep.manifest_digest = sha256_digest(manifest_bytes);
  NYDUS_TRY(dst->push_manifest(rep.manifest_digest, media::kOciManifest, manifest_bytes));
  Descriptor md;
  md.media_type = std::string(media::kOciManifest);
  md.digest = rep.manifest_digest;
  md.size = manifest_bytes.size();
  Platform p = s.platform;
  p.os_features.push_back(std::string(kNydusOsFeature));
  md.platform = p;
  json index{{"schemaVersion", 2}, {"mediaType", media::kOciIndex}, {"manifests", json::array({to_json(md)})}};
  const std::string index_bytes = index.dump();
  rep.index_digest = sha256_digest(index_bytes);
  NYDUS_TRY(dst->push_manifest(tref.tag, media::kOciIndex, index_bytes));
  rep.push = dst->push_stats();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  note(-1, n, "done", "");
  return rep;
}

}  // namespace nydus::convert
