#include "snapshotter/snapshotter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "api/api_client.h"
#include "snapshotter/blob_cache_gc.h"
#include "snapshotter/estargz_layer.h"
#include "snapshotter/filter.h"
#include "snapshotter/labels.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;
namespace {

bool has(const Labels& l, std::string_view k) { return l.count(std::string(k)) > 0; }

std::string get(const Labels& l, std::string_view k) {
  auto it = l.find(std::string(k));
  return it == l.end() ? "" : it->second;
}

// continuity's fs.DiskUsage: allocated bytes and distinct inodes under a tree.
Usage disk_usage(const std::string& root) {
  Usage u;
  std::set<std::pair<dev_t, ino_t>> seen;
  auto account = [&](const std::string& p) {
    struct stat st{};
    if (::lstat(p.c_str(), &st) != 0) return;
    if (!seen.insert({st.st_dev, st.st_ino}).second) return;
    ++u.inodes;
    u.size += static_cast<int64_t>(st.st_blocks) * 512;
  };
  account(root);
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec))
    account(it->path().string());
  return u;
}

// containerd's overlayutils.NeedsUserXAttr, simplified: only inside a user namespace.
bool in_user_namespace() {
  std::ifstream in("/proc/self/uid_map");
  long a = -1, b = -1, c = -1;
  in >> a >> b >> c;
  return !(a == 0 && b == 0 && c == 4294967295L);
}

}  // namespace

SResult<void> validate_labels(const Labels& labels) {
  if (labels.size() > label::kMaxLabels)
    return snap_error(Code::kInvalidArgument, "too many labels ({} > {})", labels.size(), label::kMaxLabels);
  for (const auto& [k, v] : labels) {
    if (k.empty()) return snap_error(Code::kInvalidArgument, "label key must not be empty");
    if (k.size() + v.size() > label::kMaxLabelSize)
      return snap_error(Code::kInvalidArgument, "label key and value greater than maximum size ({} bytes), key: {}",
                        label::kMaxLabelSize, k.substr(0, 64));
  }
  return {};
}

Snapshotter::Snapshotter(SnapshotterOptions opts, std::unique_ptr<MetadataStore> ms)
    : root_(opts.root), ms_(std::move(ms)), daemons_(opts.daemon) {
  index_off_ = opts.index_off.value_or(::access("/sys/module/overlay/parameters/index", F_OK) == 0);
  userxattr_ = opts.userxattr.value_or(in_user_namespace());
  enable_stargz_ = opts.enable_stargz;
  nydus_image_ = opts.nydus_image_path;
}

SResult<std::unique_ptr<Snapshotter>> Snapshotter::open(SnapshotterOptions opts) {
  std::error_code ec;
  fs::create_directories(opts.root + "/snapshots", ec);
  if (ec) return snap_error(Code::kInternal, "mkdir {}/snapshots: {}", opts.root, ec.message());
  fs::permissions(opts.root, fs::perms::owner_all, ec);
  opts.daemon.root = opts.root;
  // eStargz layers being prepared when a previous process died: never committed.
  fs::remove_all(opts.root + "/estargz-tmp", ec);
  auto ms = MetadataStore::open(opts.root + "/metadata.db");
  if (!ms) return std::unexpected(ms.error());
  std::unique_ptr<Snapshotter> sn(new Snapshotter(std::move(opts), std::move(*ms)));
  // Daemons of a previous run (kill -9, restart) keep serving their containers:
  // take them over, and stop those no snapshot uses any more.
  auto adopted = sn->daemons_.adopt_running();
  if (!adopted) return std::unexpected(adopted.error());
  sn->adopted_ = std::move(*adopted);
  std::vector<DaemonInstance> unused;
  {
    std::lock_guard lk(sn->mu_);
    unused = sn->detach_unused_daemons();
  }
  sn->stop_detached(std::move(unused));
  // The daemons of active snapshots are NOT started here: after a reboot each
  // comes back with the Mounts/Prepare of the container that needs it (lazily:
  // no daemon, registry traffic or memory for containers nobody starts again).
  sn->daemons_.start_monitor();
  return sn;
}

std::vector<std::string> Snapshotter::overlay_options(const Snapshot& s, const std::vector<std::string>& lowers) const {
  std::vector<std::string> options;
  if (index_off_) options.push_back("index=off");
  if (userxattr_) options.push_back("userxattr");
  if (s.kind == Kind::kActive) {
    options.push_back("workdir=" + work_path(s.id));
    options.push_back("upperdir=" + upper_path(s.id));
  }
  std::string lowerdir = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) lowerdir += (i ? ":" : "") + lowers[i];
  options.push_back(std::move(lowerdir));
  return options;
}

std::vector<Mount> Snapshotter::overlay_mounts(const Snapshot& s) const {
  if (s.parent_ids.empty())
    return {{"bind", upper_path(s.id), "", {s.kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  if (s.kind != Kind::kActive && s.parent_ids.size() == 1)
    return {{"bind", upper_path(s.parent_ids[0]), "", {"ro", "rbind"}}};
  std::vector<std::string> lowers;
  for (const auto& id : s.parent_ids) lowers.push_back(upper_path(id));
  return {{"overlay", "overlay", "", overlay_options(s, lowers)}};
}

std::vector<Mount> Snapshotter::nydus_mounts(const Snapshot& s, const std::string& meta_id,
                                             const std::string& lower) const {
  // As nydus-snapshotter's mountRemote: layers committed above the bootstrap
  // (nearest first), then the nydusd mount, which holds every layer below it.
  std::vector<std::string> lowers;
  for (const auto& id : s.parent_ids) {
    if (id == meta_id) break;
    lowers.push_back(upper_path(id));
  }
  lowers.push_back(lower);
  // A view: its own empty fs dir as a second lower dir (overlayfs wants two without an upper dir).
  if (s.kind != Kind::kActive) lowers.push_back(upper_path(s.id));
  return {{"overlay", "overlay", "", overlay_options(s, lowers)}};
}

SResult<std::optional<Snapshotter::Meta>> Snapshotter::find_meta(const std::string& parent) {
  std::string p = parent;
  std::string data_layer;
  std::optional<Meta> stargz;
  for (int depth = 0; !p.empty(); ++depth) {
    if (depth > 4096) return snap_error(Code::kInternal, "parent chain too long");
    auto r = ms_->get_info(p);
    if (!r) return std::unexpected(r.error());
    bool is_stargz = has(r->info.labels, label::kStargzLayer);
    if (stargz) {
      // Every layer below an eStargz top must be one too: the merged
      // bootstrap is the whole image.
      if (!is_stargz)
        return snap_error(Code::kFailedPrecondition,
                          "eStargz image {}: layer {} below eStargz layers was unpacked, not prepared from its TOC",
                          parent, p);
      stargz->chain.push_back(r->id);
    } else if (is_stargz) {
      // The top eStargz layer: layers above it (downloaded by containerd) are
      // overlay lower dirs over its nydusd mount, as those above a Nydus bootstrap.
      stargz = Meta{r->id, r->info.labels, true, {r->id}};
    } else {
      if (has(r->info.labels, label::kNydusMetaLayer)) return Meta{r->id, r->info.labels, false, {}};
      if (data_layer.empty() && has(r->info.labels, label::kNydusDataLayer)) data_layer = p;
    }
    p = r->info.parent;
  }
  if (stargz) return stargz;
  // Nydus data layers are empty directories: without the bootstrap above
  // them a rootfs would be empty (a manifest that lost its bootstrap layer).
  if (!data_layer.empty())
    return snap_error(Code::kFailedPrecondition,
                      "parent {} is a chain of Nydus data layers ({}, e.g. {}) with no {} layer above them: the "
                      "image's bootstrap layer is missing",
                      parent, label::kNydusDataLayer, data_layer, label::kNydusMetaLayer);
  return std::nullopt;
}

SResult<Snapshotter::DaemonRequest> Snapshotter::daemon_request(const Meta& meta) const {
  std::string ref = get(meta.labels, label::kCriImageRef);
  if (ref.empty()) ref = get(meta.labels, label::kStargzReference);
  if (ref.empty())
    return snap_error(Code::kInvalidArgument,
                      "nydus bootstrap snapshot {} has no image reference label ({} or {})", meta.id,
                      label::kCriImageRef, label::kStargzReference);
  // The bootstrap layer's tar holds image/image.boot (older images: image.boot).
  std::string boot = upper_path(meta.id) + "/image/image.boot";
  if (::access(boot.c_str(), R_OK) != 0) {
    std::string legacy = upper_path(meta.id) + "/image.boot";
    if (::access(legacy.c_str(), R_OK) == 0) boot = legacy;
  }
  return DaemonRequest{meta.id, boot, ref, meta.labels};
}

// Each eStargz layer's fs dir holds its bootstrap named by the layer's sha256 hex.
std::string Snapshotter::estargz_layer_bootstrap(const std::string& id) const {
  std::string found;
  std::error_code ec;
  for (fs::directory_iterator d(upper_path(id), ec), end; !ec && d != end; d.increment(ec)) {
    std::string n = d->path().filename().string();
    if (n.size() == 64 && n.find_first_not_of("0123456789abcdef") == std::string::npos) found = d->path().string();
  }
  return found;
}

SResult<void> Snapshotter::ensure_estargz_bootstrap(const Meta& meta) {
  const std::string out = upper_path(meta.id) + "/image.boot";
  if (::access(out.c_str(), R_OK) == 0) return {};
  std::vector<std::string> boots;
  for (auto it = meta.chain.rbegin(); it != meta.chain.rend(); ++it) {
    std::string found = estargz_layer_bootstrap(*it);
    if (found.empty())
      return snap_error(Code::kFailedPrecondition, "eStargz layer snapshot {} has no bootstrap", *it);
    boots.push_back(found);
  }
  if (auto st = merge_estargz_bootstraps(nydus_image_, boots, out); !st)
    return from_error(st.error(), "merge eStargz layer bootstraps");
  spdlog::info("eStargz: merged {} layer bootstraps into {}", boots.size(), out);
  return {};
}

SResult<bool> Snapshotter::try_commit_estargz_layer(std::unique_lock<std::mutex>& lk, const std::string& key,
                                                    const std::string& parent, const std::string& target,
                                                    const Labels& labels) {
  std::string ref = get(labels, label::kCriImageRef);
  if (ref.empty()) ref = get(labels, label::kStargzReference);
  std::string digest = get(labels, label::kCriLayerDigest);
  if (digest.empty()) digest = get(labels, label::kStargzDigest);
  const std::string hex = digest.starts_with("sha256:") ? digest.substr(7) : "";
  if (ref.empty() || hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    return false;
  // eStargz layers must be the bottom of the chain (one nydusd serves them
  // merged): above a layer containerd downloaded, download this one too.
  std::string below;
  if (!parent.empty()) {
    auto p = ms_->get_info(parent);
    if (!p) return std::unexpected(p.error());
    if (!has(p->info.labels, label::kStargzLayer)) {
      spdlog::info("layer {} of {}: a layer below it was downloaded, so is this one", digest, ref);
      return false;
    }
    below = estargz_layer_bootstrap(p->id);
  }
  auto cfg = daemons_.config_for_image(ref, labels);
  if (!cfg) {
    spdlog::warn("eStargz check of {} {}: {}", ref, digest, cfg.error().message);
    return false;
  }
  // Outside snapshots/: a concurrent Remove cleans up directories no snapshot owns there.
  std::error_code ec;
  fs::create_directories(root_ + "/estargz-tmp", ec);
  std::string tmp = root_ + "/estargz-tmp/" + hex.substr(0, 12) + "-XXXXXX";
  if (!::mkdtemp(tmp.data())) return snap_error(Code::kInternal, "mkdtemp {}: {}", tmp, std::strerror(errno));
  ::chmod(tmp.c_str(), 0755);
  lk.unlock();  // registry round trips and nydus-image: not under the main lock
  const std::string toc_digest = get(labels, label::kStargzTocDigest);
  auto st = prepare_estargz_layer({*cfg, hex, nydus_image_, tmp, toc_digest, below});
  lk.lock();
  if (!st) {
    fs::remove_all(tmp, ec);
    if (st.error().code == Errc::kNotFound)
      spdlog::debug("layer {} of {}: {}", digest, ref, st.error().message);
    else
      spdlog::warn("eStargz layer {} of {}: {}; containerd will download it", digest, ref, st.error().message);
    return false;
  }
  Labels marked = labels;
  marked[std::string(label::kStargzLayer)] = "true";
  if (auto c = commit_nydus_data_layer(key, parent, target, marked, tmp); !c) {
    fs::remove_all(tmp, ec);
    return std::unexpected(c.error());
  }
  spdlog::info("eStargz layer {} of {}: bootstrap built from its TOC{}, not downloaded", digest, ref,
               toc_digest.empty() ? " (no toc.digest label to check it against)" : " (sha256 == toc.digest label)");
  return true;
}

SResult<std::string> Snapshotter::start_daemon_unlocked(std::unique_lock<std::mutex>& lk, const DaemonRequest& req) {
  // Pinned while unlocked: a concurrent Remove must not stop the daemon this
  // call is about to hand out (its snapshot record does not exist yet).
  ++pinned_[req.meta_id];
  lk.unlock();
  auto mp = daemons_.ensure(req.meta_id, req.bootstrap, req.image_ref, req.labels);
  lk.lock();
  if (--pinned_[req.meta_id] == 0) pinned_.erase(req.meta_id);
  return mp;
}

SResult<void> Snapshotter::commit_nydus_data_layer(const std::string& key, const std::string& parent,
                                                   const std::string& target, const Labels& labels,
                                                   const std::string& content) {
  auto tx = ms_->begin();
  if (!tx) return std::unexpected(tx.error());
  auto s = ms_->create_snapshot(Kind::kActive, key, parent, labels);
  if (!s) return std::unexpected(s.error());
  auto id = ms_->commit_active(key, target, Usage{}, labels);
  if (!id) return std::unexpected(id.error());
  // An empty fs directory: the next layers' overlay lowerdir chain names it.
  std::error_code ec;
  std::string dir = root_ + "/snapshots/" + *id;
  fs::create_directories(content.empty() ? dir + "/fs" : dir, ec);
  if (ec) return snap_error(Code::kInternal, "mkdir {}: {}", dir, ec.message());
  if (!content.empty() && ::rename(content.c_str(), (dir + "/fs").c_str()) != 0) {
    int e = errno;
    fs::remove_all(dir, ec);
    return snap_error(Code::kInternal, "rename {}: {}", content, std::strerror(e));
  }
  if (auto c = tx->commit(); !c) {
    fs::remove_all(dir, ec);
    return c;
  }
  return {};
}

SResult<std::vector<Mount>> Snapshotter::create(Kind kind, const std::string& key, const std::string& parent,
                                                const Labels& client_labels) {
  SNAP_TRY(validate_labels(client_labels));
  // The eStargz mark is ours alone: an image annotation inherited as a label
  // must not make an unpacked layer look like one.
  Labels labels = client_labels;
  labels.erase(std::string(label::kStargzLayer));
  std::unique_lock lk(mu_);
  std::string target = get(labels, label::kTargetSnapshotRef);
  if (kind == Kind::kActive && !target.empty() && has(labels, label::kNydusDataLayer)) {
    // As nydus-snapshotter: record the layer as committed under its chain ID
    // and tell containerd it exists, so it never fetches the blob.
    SNAP_TRY(commit_nydus_data_layer(key, parent, target, labels));
    ++metrics_.nydus_layers_skipped;
    return snap_error(Code::kAlreadyExists, "target snapshot {:?}: already exists", target);
  }
  if (kind == Kind::kActive && !target.empty() && enable_stargz_ && !has(labels, label::kNydusMetaLayer)) {
    auto done = try_commit_estargz_layer(lk, key, parent, target, labels);
    if (!done) return std::unexpected(done.error());
    if (*done) return snap_error(Code::kAlreadyExists, "target snapshot {:?}: already exists", target);
  }
  std::optional<Meta> meta;
  if (target.empty() && !parent.empty()) {
    auto m = find_meta(parent);
    if (!m && m.error().code != Code::kNotFound) return std::unexpected(m.error());
    if (m) meta = *m;
  }
  std::string lower;
  if (meta) {
    if (meta->stargz) SNAP_TRY(ensure_estargz_bootstrap(*meta));
    auto req = daemon_request(*meta);
    if (!req) return std::unexpected(req.error());
    // The slow part (spawn, wait for RUNNING) without the main lock.
    auto mp = start_daemon_unlocked(lk, *req);
    if (!mp) return std::unexpected(mp.error());
    lower = *mp;
  }
  auto fail = [&](SnapError e) -> SResult<std::vector<Mount>> {
    if (meta) {
      auto unused = detach_unused_daemons();
      lk.unlock();
      stop_detached(std::move(unused));
    }
    return std::unexpected(std::move(e));
  };

  std::string tmpl = root_ + "/snapshots/new-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return fail({Code::kInternal, "create temp snapshot dir: " + std::string(std::strerror(errno))});
  std::string td = tmpl;
  std::error_code ec;
  auto drop_td = [&] { fs::remove_all(td, ec); };
  if (::mkdir((td + "/fs").c_str(), 0755) != 0 || (kind == Kind::kActive && ::mkdir((td + "/work").c_str(), 0711) != 0)) {
    drop_td();
    return fail({Code::kInternal, "failed to create prepare snapshot dir"});
  }
  auto tx = ms_->begin();
  if (!tx) {
    drop_td();
    return fail(tx.error());
  }
  auto s = ms_->create_snapshot(kind, key, parent, labels);
  if (!s) {
    drop_td();
    return fail(s.error());
  }
  if (!s->parent_ids.empty()) {
    struct stat st{};
    if (::stat(upper_path(s->parent_ids[0]).c_str(), &st) != 0 ||
        ::lchown((td + "/fs").c_str(), st.st_uid, st.st_gid) != 0) {
      drop_td();
      return fail({Code::kInternal, "failed to stat or chown to parent " + upper_path(s->parent_ids[0])});
    }
  }
  std::string path = root_ + "/snapshots/" + s->id;
  if (::rename(td.c_str(), path.c_str()) != 0) {
    drop_td();
    return fail({Code::kInternal, "failed to rename " + td + ": " + std::strerror(errno)});
  }
  if (auto c = tx->commit(); !c) {
    fs::remove_all(path, ec);
    return fail(c.error());
  }
  return meta ? nydus_mounts(*s, meta->id, lower) : overlay_mounts(*s);
}

SResult<std::vector<Mount>> Snapshotter::prepare(const std::string& key, const std::string& parent,
                                                 const Labels& labels) {
  OpTimer t(metrics_, SnapshotOp::kPrepare);
  return create(Kind::kActive, key, parent, labels);
}

SResult<std::vector<Mount>> Snapshotter::view(const std::string& key, const std::string& parent,
                                              const Labels& labels) {
  return create(Kind::kView, key, parent, labels);
}

SResult<std::vector<Mount>> Snapshotter::mounts(const std::string& key) {
  OpTimer t(metrics_, SnapshotOp::kMounts);
  std::unique_lock lk(mu_);
  auto s = ms_->get_snapshot(key);
  if (!s) return std::unexpected(SnapError{s.error().code, "failed to get active mount: " + s.error().message});
  auto rec = ms_->get_info(key);
  if (!rec) return std::unexpected(rec.error());
  if (get(rec->info.labels, label::kTargetSnapshotRef).empty() && !rec->info.parent.empty()) {
    auto meta = find_meta(rec->info.parent);
    if (!meta) return std::unexpected(meta.error());
    if (*meta) {
      // The daemon may be gone (stopped, crashed): bring it back before answering.
      if ((*meta)->stargz) SNAP_TRY(ensure_estargz_bootstrap(**meta));
      auto req = daemon_request(**meta);
      if (!req) return std::unexpected(req.error());
      auto lower = start_daemon_unlocked(lk, *req);
      if (!lower) return std::unexpected(lower.error());
      return nydus_mounts(*s, (*meta)->id, *lower);
    }
  }
  return overlay_mounts(*s);
}

SResult<void> Snapshotter::commit(const std::string& name, const std::string& key, const Labels& client_labels) {
  SNAP_TRY(validate_labels(client_labels));
  Labels labels = client_labels;
  labels.erase(std::string(label::kStargzLayer));  // ours alone (see create)
  std::lock_guard lk(mu_);
  auto tx = ms_->begin();
  if (!tx) return std::unexpected(tx.error());
  auto rec = ms_->get_info(key);
  if (!rec) return std::unexpected(rec.error());
  Usage u = disk_usage(upper_path(rec->id));
  auto id = ms_->commit_active(key, name, u, labels);
  if (!id) return std::unexpected(SnapError{id.error().code, "failed to commit snapshot: " + id.error().message});
  return tx->commit();
}

std::vector<std::string> Snapshotter::cleanup_directories(const std::set<std::string>& ids) const {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(root_ + "/snapshots", ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!ids.count(name)) out.push_back(it->path().string());
  }
  return out;
}

std::vector<DaemonInstance> Snapshotter::detach_unused_daemons() {
  std::vector<DaemonInstance> out;
  auto running = daemons_.running();
  if (running.empty()) return out;
  std::unordered_set<std::string> used;
  for (const auto& [id, _] : pinned_) used.insert(id);
  (void)ms_->walk([&](const MetadataStore::Record& r) -> SResult<void> {
    if (r.info.kind == Kind::kCommitted || r.info.parent.empty()) return {};
    if (!get(r.info.labels, label::kTargetSnapshotRef).empty()) return {};
    if (auto m = find_meta(r.info.parent); m && *m) used.insert((*m)->id);
    return {};
  });
  for (const auto& id : running)
    if (!used.count(id))
      if (auto d = daemons_.detach(id)) out.push_back(std::move(*d));
  return out;
}

void Snapshotter::stop_detached(std::vector<DaemonInstance> daemons) {
  for (auto& d : daemons) daemons_.finish_stop(std::move(d));
}

std::set<std::string> Snapshotter::open_cache_files() const {
  std::set<std::string> ids;
  const fs::path cache = fs::path(root_) / "cache";
  for (const auto& id : daemons_.running()) {
    auto d = daemons_.find(id);
    if (!d || d->pid <= 0) continue;
    std::error_code ec;
    for (fs::directory_iterator it("/proc/" + std::to_string(d->pid) + "/fd", ec), end; !ec && it != end;
         it.increment(ec)) {
      std::error_code rl;
      fs::path target = fs::read_symlink(it->path(), rl);
      if (rl || target.parent_path() != cache) continue;
      if (auto b = blob_id_of_cache_file(target.filename().string()); !b.empty()) ids.insert(b);
    }
  }
  return ids;
}

void Snapshotter::gc_blob_cache() {
  // In use: the blob of every Nydus data layer snapshot still here (an image
  // still pulled keeps its warm cache), and whatever a running nydusd has open
  // (blobs no layer names, e.g. an image whose manifest lists the bootstrap only).
  std::set<std::string> used = open_cache_files();
  bool unknown = false;
  (void)ms_->walk([&](const MetadataStore::Record& r) -> SResult<void> {
    if (!has(r.info.labels, label::kNydusDataLayer) && !has(r.info.labels, label::kStargzLayer)) return {};
    std::string digest = get(r.info.labels, label::kCriLayerDigest);
    if (digest.empty()) digest = get(r.info.labels, label::kStargzDigest);
    if (!digest.starts_with("sha256:")) {
      unknown = true;  // cannot tell which blob it is: keep every file
      return {};
    }
    used.insert(digest.substr(7));
    return {};
  });
  if (unknown) {
    spdlog::debug("blob cache GC skipped: a nydus-blob snapshot has no layer digest label");
    return;
  }
  auto r = remove_unused_cache_files(root_ + "/cache", used);
  for (const auto& f : r.removed) spdlog::info("blob cache GC: removed {}", f);
  if (r.errors) spdlog::warn("blob cache GC: {} files could not be removed", r.errors);
  metrics_.blobs_deleted += r.removed_ids.size();
  metrics_.blob_deletion_errors += r.errors;
  metrics_.blobs_in_use = r.kept_ids.size();
}

std::string Snapshotter::image_ref_of(const std::string& meta_id) {
  std::string ref;
  std::lock_guard lk(mu_);
  (void)ms_->walk([&](const MetadataStore::Record& r) -> SResult<void> {
    if (r.id != meta_id) return {};
    ref = get(r.info.labels, label::kCriImageRef);
    if (ref.empty()) ref = get(r.info.labels, label::kStargzReference);
    return {};
  });
  return ref;
}

Metrics::Gauges Snapshotter::metric_gauges() {
  Metrics::Gauges g;
  {
    std::lock_guard lk(mu_);
    (void)ms_->walk([&](const MetadataStore::Record& r) -> SResult<void> {
      switch (r.info.kind) {
        case Kind::kActive: ++g.snapshots_by_kind["active"]; break;
        case Kind::kView: ++g.snapshots_by_kind["view"]; break;
        case Kind::kCommitted: ++g.snapshots_by_kind["committed"]; break;
        default: break;
      }
      return {};
    });
  }
  // Outside the lock: each daemon is asked its version over its API socket
  // (the shared daemon once, however many images it serves).
  std::vector<DaemonInstance> procs;
  std::set<std::string> socks;
  if (auto sd = daemons_.shared_daemon(); sd.pid > 0 && socks.insert(sd.apisock).second) procs.push_back(sd);
  for (const auto& id : daemons_.running())
    if (auto d = daemons_.find(id); d && socks.insert(d->apisock).second) procs.push_back(*d);
  for (const auto& d : procs) {
    std::string version = "unknown";
    api::ApiClient c(d.apisock, std::chrono::seconds(2));
    if (auto info = c.daemon_info(); info && info->contains("version") && (*info)["version"].is_object())
      version = (*info)["version"].value("package_ver", "unknown");
    ++g.daemons_by_version[version];
  }
  g.cache_usage_bytes = static_cast<uint64_t>(disk_usage(root_ + "/cache").size);
  return g;
}

SResult<void> Snapshotter::remove(const std::string& key) {
  OpTimer t(metrics_, SnapshotOp::kRemove);
  std::unique_lock lk(mu_);
  bool data_layer = false;
  {
    auto tx = ms_->begin();
    if (!tx) return std::unexpected(tx.error());
    if (auto info = ms_->get_info(key); info) data_layer = has(info->info.labels, label::kNydusDataLayer) || has(info->info.labels, label::kStargzLayer);
    auto r = ms_->remove(key);
    if (!r) return std::unexpected(SnapError{r.error().code, "failed to remove: " + r.error().message});
    SNAP_TRY(tx->commit());
  }
  // Daemons first: a removed image's mount must be gone before its files.
  // Stopping one waits for it to exit: done without the main lock.
  auto unused = detach_unused_daemons();
  if (!unused.empty()) {
    lk.unlock();
    stop_detached(std::move(unused));
    lk.lock();
  }
  // The directories no snapshot owns, decided now (under the lock, as a
  // create() renames its new directory in under it).
  auto ids = ms_->ids();
  if (!ids) return std::unexpected(ids.error());
  std::error_code ec;
  for (const auto& d : cleanup_directories(*ids)) fs::remove_all(d, ec);
  if (data_layer) gc_blob_cache();  // the last image using its blob may be gone
  return {};
}

SResult<Info> Snapshotter::stat(const std::string& key) {
  std::lock_guard lk(mu_);
  auto r = ms_->get_info(key);
  if (!r) return std::unexpected(r.error());
  return r->info;
}

SResult<Info> Snapshotter::update(const Info& info, const std::vector<std::string>& fieldpaths) {
  SNAP_TRY(validate_labels(info.labels));
  if (fieldpaths.size() > label::kMaxLabels)
    return snap_error(Code::kInvalidArgument, "too many update paths");
  std::lock_guard lk(mu_);
  auto tx = ms_->begin();
  if (!tx) return std::unexpected(tx.error());
  auto updated = ms_->update_info(info, fieldpaths);
  if (!updated) return updated;
  if (updated->labels.size() > label::kMaxLabels)
    return snap_error(Code::kInvalidArgument, "too many labels");
  SNAP_TRY(tx->commit());
  return updated;
}

SResult<Usage> Snapshotter::usage(const std::string& key) {
  std::lock_guard lk(mu_);
  auto r = ms_->get_info(key);
  if (!r) return std::unexpected(r.error());
  if (r->info.kind == Kind::kActive) return disk_usage(upper_path(r->id));
  return r->usage;
}

SResult<void> Snapshotter::walk(const std::vector<std::string>& filters, const std::function<void(const Info&)>& fn) {
  auto f = Filter::parse_any(filters);
  if (!f) return from_error(f.error(), "filters");
  std::vector<Info> out;
  {
    std::lock_guard lk(mu_);
    SNAP_TRY(ms_->walk([&](const MetadataStore::Record& r) -> SResult<void> {
      const Info& info = r.info;
      auto adaptor = [&info](const std::vector<std::string>& path) -> std::optional<std::string> {
        if (path.empty()) return std::nullopt;
        if (path[0] == "kind") {
          switch (info.kind) {
            case Kind::kActive: return "active";
            case Kind::kView: return "view";
            case Kind::kCommitted: return "committed";
            default: return std::nullopt;
          }
        }
        if (path[0] == "name") return info.name;
        if (path[0] == "parent") return info.parent;
        if (path[0] == "labels") {
          if (info.labels.empty()) return std::nullopt;
          std::string k;
          for (size_t i = 1; i < path.size(); ++i) k += (i > 1 ? "." : "") + path[i];
          auto it = info.labels.find(k);
          if (it == info.labels.end()) return std::nullopt;
          return it->second;
        }
        return std::nullopt;
      };
      if (f->match(adaptor)) out.push_back(info);
      return {};
    }));
  }
  for (const auto& i : out) fn(i);
  return {};
}

SResult<void> Snapshotter::cleanup() {
  OpTimer t(metrics_, SnapshotOp::kCleanup);
  std::lock_guard lk(mu_);
  auto ids = ms_->ids();
  if (!ids) return std::unexpected(ids.error());
  std::error_code ec;
  for (const auto& d : cleanup_directories(*ids)) fs::remove_all(d, ec);
  gc_blob_cache();  // as nydus-snapshotter's Cleanup (getUnusedCacheBlobs)
  return {};
}

}  // namespace nydus::snapshotter
