#include "convert/checker.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "convert/bootstrap_layer.h"
#include "convert/layer_apply.h"
#include "format/digest.h"
#include "format/image_check.h"
#include "format/image_reader.h"

namespace nydus::convert {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxProblems = 50;

// The Nydus image's tree, in the reference's terms.
Result<RefTree> nydus_tree(format::ImageReader& img, std::vector<std::string>& problems) {
  RefTree t;
  const auto& b = img.bootstrap();
  NYDUS_TRY(b.walk([&](const std::string& path, const format::InodeView& ino) -> Status {
    RefEntry e;
    e.mode = ino.mode;
    e.uid = ino.uid;
    e.gid = ino.gid;
    e.mtime = int64_t(ino.mtime);
    if (ino.is_symlink()) {
      NYDUS_ASSIGN_OR_RETURN(e.link_target, b.read_link(ino));
    }
    if (ino.is_device()) {
      e.rdev_major = format::rdev_major(ino.rdev());
      e.rdev_minor = format::rdev_minor(ino.rdev());
    }
    NYDUS_ASSIGN_OR_RETURN(auto xs, b.xattrs(ino));
    for (auto& x : xs) e.xattrs[x.name] = std::string(x.value.begin(), x.value.end());
    if (ino.is_reg()) {
      e.size = ino.size;
      format::Sha256Stream h;
      auto st = img.read_file(ino, true, [&](uint64_t, std::span<const uint8_t> d) -> Status {
        h.update(d);
        return ok();
      });
      if (!st && problems.size() < kMaxProblems) problems.push_back(fmt::format("{}: {}", path, st.error().message));
      e.sha256 = format::to_hex(h.finish());
    }
    t[path] = std::move(e);
    return ok();
  }));
  return t;
}

void compare_trees(const RefTree& want, const RefTree& got, std::vector<std::string>& problems, uint64_t& compared) {
  auto report = [&](const std::string& s) {
    if (problems.size() < kMaxProblems) problems.push_back(s);
  };
  for (const auto& [path, w] : want) {
    auto it = got.find(path);
    if (it == got.end()) {
      report(fmt::format("{}: missing from the Nydus image", path));
      continue;
    }
    const RefEntry& g = it->second;
    compared++;
    if ((w.mode & S_IFMT) != (g.mode & S_IFMT)) {
      report(fmt::format("{}: type {:o} != {:o}", path, w.mode & S_IFMT, g.mode & S_IFMT));
      continue;
    }
    // A directory no layer described has no attributes to compare.
    if (w.described) {
      if ((w.mode & 07777) != (g.mode & 07777)) report(fmt::format("{}: mode {:o} != {:o}", path, w.mode & 07777, g.mode & 07777));
      if (w.uid != g.uid || w.gid != g.gid)
        report(fmt::format("{}: owner {}:{} != {}:{}", path, w.uid, w.gid, g.uid, g.gid));
      if (w.mtime != g.mtime && path != "/") report(fmt::format("{}: mtime {} != {}", path, w.mtime, g.mtime));
      if (w.xattrs != g.xattrs) report(fmt::format("{}: xattrs differ", path));
    }
    if (S_ISREG(w.mode) && (w.size != g.size || w.sha256 != g.sha256))
      report(fmt::format("{}: content differs ({} bytes {} vs {} bytes {})", path, w.size, w.sha256.substr(0, 12),
                         g.size, g.sha256.substr(0, 12)));
    if (S_ISLNK(w.mode) && w.link_target != g.link_target)
      report(fmt::format("{}: link target {} != {}", path, w.link_target, g.link_target));
    if ((S_ISCHR(w.mode) || S_ISBLK(w.mode)) && (w.rdev_major != g.rdev_major || w.rdev_minor != g.rdev_minor))
      report(fmt::format("{}: device numbers differ", path));
  }
  for (const auto& [path, g] : got)
    if (!want.count(path)) report(fmt::format("{}: only in the Nydus image", path));
}

}  // namespace

// Writes JSON BYTES to PATH indented (as Go's json.MarshalIndent would), creating its directory.
static Status dump_pretty_json(const fs::path& path, std::string_view bytes) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  json j = json::parse(bytes, nullptr, false);
  std::ofstream f(path);
  f << (j.is_discarded() ? std::string(bytes) : j.dump(2));
  if (!f) return sys_error(fmt::format("write {}", path.string()), errno);
  return {};
}

Result<CheckReport> check_image(const CheckOptions& o) {
  CheckReport rep;
  auto problem = [&](std::string s) {
    if (rep.problems.size() < kMaxProblems) rep.problems.push_back(std::move(s));
  };
  NYDUS_ASSIGN_OR_RETURN(ImageRef tref, parse_image_ref(o.target));
  NYDUS_ASSIGN_OR_RETURN(Platform want, parse_platform(o.platform));
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> dst, open_store(tref, o.target_store));
  const fs::path blob_dir = o.work_dir / "blobs";
  std::error_code ec;
  fs::create_directories(blob_dir, ec);
  if (ec) return sys_error(fmt::format("create {}", blob_dir.string()), ec.value());

  // Format.
  if (o.multi_platform) {
    NYDUS_ASSIGN_OR_RETURN(FetchedManifest top, dst->get_manifest(tref.reference()));
    bool nydus = false, plain = false;
    if (is_index_type(top.media_type)) {
      NYDUS_ASSIGN_OR_RETURN(std::vector<Descriptor> entries, parse_index(top.bytes));
      for (const auto& e : entries) {
        if (!e.platform || !platform_matches(want, *e.platform)) continue;
        const auto& f = e.platform->os_features;
        if (std::find(f.begin(), f.end(), kNydusOsFeature) != f.end() || e.artifact_type == media::kNydusArtifact)
          nydus = true;
        else
          plain = true;
      }
    }
    if (!nydus || !plain)
      problem(fmt::format("--multi-platform: {} is not an index with both an OCI and a Nydus manifest for {}", o.target,
                          o.platform));
  }
  NYDUS_ASSIGN_OR_RETURN(FetchedManifest fm, resolve_manifest(*dst, tref.reference(), want, /*nydus=*/true));
  NYDUS_ASSIGN_OR_RETURN(Manifest m, parse_manifest(fm.bytes));
  if (m.layers.size() < 1) return errorf(Errc::kCorrupt, "{}: a manifest with no layers", o.target);
  const Descriptor& boot_layer = m.layers.back();
  if (!boot_layer.annotations.count(std::string(annotation::kNydusBootstrap)))
    problem("the last layer has no nydus-bootstrap annotation");
  if (boot_layer.annotations.count(std::string(annotation::kNydusFsVersion)) == 0)
    problem("the bootstrap layer has no nydus-fs-version annotation");
  std::set<std::string> manifest_blobs;
  std::map<std::string, std::string> ref_of;  // --oci-ref: meta blob hex -> source layer digest
  for (size_t i = 0; i + 1 < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    if (auto r = l.annotations.find(std::string(annotation::kNydusRef)); r != l.annotations.end())
      ref_of[l.digest.substr(7)] = r->second;
    if (l.media_type != media::kNydusBlob) problem(fmt::format("layer {}: media type {}", l.digest, l.media_type));
    if (l.annotations.count(std::string(annotation::kNydusBlob)) == 0)
      problem(fmt::format("layer {}: no nydus-blob annotation", l.digest));
    manifest_blobs.insert(l.digest.substr(7));
  }
  NYDUS_ASSIGN_OR_RETURN(std::string cfg_bytes, dst->get_blob(m.config));
  json cfg = json::parse(cfg_bytes, nullptr, false);
  if (!cfg.is_object() || !cfg.contains("rootfs") || !cfg["rootfs"].contains("diff_ids") ||
      !cfg["rootfs"]["diff_ids"].is_array() || cfg["rootfs"]["diff_ids"].size() != m.layers.size())
    problem("config rootfs.diff_ids do not match the layers");

  // Bootstrap and blobs: everything downloaded, every chunk checked.
  for (size_t i = 0; i + 1 < m.layers.size(); ++i) {
    NYDUS_ASSIGN_OR_RETURN(fs::path f, dst->blob_file(m.layers[i], blob_dir));
    const fs::path named = blob_dir / m.layers[i].digest.substr(7);
    if (f != named) {
      if (f.parent_path() == blob_dir) fs::rename(f, named, ec);
      else fs::create_symlink(fs::absolute(f), named, ec);
      if (ec) return sys_error(fmt::format("place blob {}", named.string()), ec.value());
    }
    rep.blobs++;
  }
  NYDUS_ASSIGN_OR_RETURN(fs::path bl, dst->blob_file(boot_layer, o.work_dir));
  const fs::path boot_path = o.work_dir / "image.boot";
  NYDUS_TRY(extract_bootstrap(bl, boot_path));
  // What upstream's checker.Output leaves in the work dir for users to read:
  // target/nydus_manifest.json, nydus_config.json and the bootstrap layer
  // unpacked in nydus_bootstrap/ (image/image.boot).
  NYDUS_TRY(dump_pretty_json(o.work_dir / "target" / "nydus_manifest.json", fm.bytes));
  NYDUS_TRY(dump_pretty_json(o.work_dir / "target" / "nydus_config.json", cfg_bytes));
  fs::create_directories(o.work_dir / "target" / "nydus_bootstrap" / "image", ec);
  fs::copy_file(boot_path, o.work_dir / "target" / "nydus_bootstrap" / "image" / "image.boot",
                fs::copy_options::overwrite_existing, ec);
  if (ec) return sys_error("write target/nydus_bootstrap", ec.value());
  NYDUS_ASSIGN_OR_RETURN(auto reader, format::ImageReader::open(boot_path, format::BlobLocation{blob_dir, {}}));
  for (const auto& b : reader->bootstrap().blobs()) {
    if (!(b.features & format::blob_features::kZran)) {
      if (!manifest_blobs.count(b.blob_id)) problem(fmt::format("the bootstrap names blob {}, not in the manifest", b.blob_id));
      continue;
    }
    // A zran blob: the manifest lists its meta blob, annotated with the
    // source layer it reads, which the repository must hold (fetched here
    // to check every chunk against it).
    const std::string meta = format::to_hex(b.blob_meta_digest);
    auto r = ref_of.find(meta);
    if (r == ref_of.end()) {
      problem(fmt::format("zran blob {}: its meta blob {} is not an annotated layer of the manifest", b.blob_id, meta));
      continue;
    }
    if (r->second != "sha256:" + b.blob_id)
      problem(fmt::format("zran blob {}: the manifest's nydus-ref annotation says {}", b.blob_id, r->second));
    Descriptor d;
    d.digest = "sha256:" + b.blob_id;
    d.size = b.compressed_size;
    d.media_type = std::string(media::kOciLayerGzip);
    auto f = dst->blob_file(d, blob_dir);
    if (!f) {
      problem(fmt::format("zran blob {}: the source layer cannot be read from the target: {}", b.blob_id, f.error().message));
      continue;
    }
    const fs::path named = blob_dir / b.blob_id;
    if (*f != named) {
      if (f->parent_path() == blob_dir) fs::rename(*f, named, ec);
      else fs::create_symlink(fs::absolute(*f), named, ec);
      if (ec) return sys_error(fmt::format("place blob {}", named.string()), ec.value());
    }
  }
  // An --oci-ref layer without file data has a blob layer but no blob.
  if (ref_of.empty() ? reader->bootstrap().blobs().size() != manifest_blobs.size()
                     : reader->bootstrap().blobs().size() > manifest_blobs.size())
    problem(fmt::format("{} blobs in the bootstrap, {} blob layers", reader->bootstrap().blobs().size(), manifest_blobs.size()));
  format::CheckOptions co;
  auto chk = format::check_image(*reader, co);
  rep.chunks_verified = chk.chunks_verified;
  rep.entries = chk.inodes;
  for (auto& e : chk.errors) problem("bootstrap: " + e);

  // Filesystem: against the source's layers applied in order.
  if (!o.source.empty()) {
    NYDUS_ASSIGN_OR_RETURN(ImageRef sref, parse_image_ref(o.source));
    NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> src, open_store(sref, o.source_store));
    NYDUS_ASSIGN_OR_RETURN(FetchedManifest sm, resolve_manifest(*src, sref.reference(), want, /*nydus=*/false));
    NYDUS_ASSIGN_OR_RETURN(Manifest smf, parse_manifest(sm.bytes));
    NYDUS_TRY(dump_pretty_json(o.work_dir / "source" / "oci_manifest.json", sm.bytes));
    NYDUS_ASSIGN_OR_RETURN(std::string scfg, src->get_blob(smf.config));
    NYDUS_TRY(dump_pretty_json(o.work_dir / "source" / "oci_config.json", scfg));
    const fs::path layers = o.work_dir / "source";
    fs::create_directories(layers, ec);
    RefTree want_tree;
    for (const auto& l : smf.layers) {
      NYDUS_ASSIGN_OR_RETURN(fs::path f, src->blob_file(l, layers));
      NYDUS_TRY(apply_layer(want_tree, f));
      if (f.parent_path() == layers) fs::remove(f, ec);
    }
    NYDUS_ASSIGN_OR_RETURN(RefTree got, nydus_tree(*reader, rep.problems));
    compare_trees(want_tree, got, rep.problems, rep.entries_compared);
  }
  return rep;
}

}  // namespace nydus::convert
