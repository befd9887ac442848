// The snapshotter: containerd's overlay snapshotter semantics for ordinary
// layers (snapshots/<id>/fs and work, overlay mounts with the parent chain as
// lowerdir, a bind mount without parents) plus nydus-snapshotter's handling of
// Nydus images: data layers (label containerd.io/snapshot/nydus-blob) are
// committed empty and answered AlreadyExists so containerd never downloads
// them; the bootstrap layer is unpacked as usual; a container rootfs on top
// of a bootstrap starts a nydusd and gets an overlay over its mountpoint.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "snapshotter/daemon_manager.h"
#include "snapshotter/errors.h"
#include "snapshotter/metadata_store.h"
#include "snapshotter/metrics.h"

namespace nydus::snapshotter {

struct Mount {
  std::string type;
  std::string source;
  std::string target;
  std::vector<std::string> options;
};

struct SnapshotterOptions {
  std::string root = "/var/lib/containerd-nydus";
  DaemonSettings daemon;  // daemon.root is set from root
  // Overlay options decided from the kernel as containerd does; overridable for tests.
  std::optional<bool> index_off;
  std::optional<bool> userxattr;
  // nydus-snapshotter's [experimental] enable_stargz: eStargz layers run lazily (estargz_layer.h).
  bool enable_stargz = false;
  std::string nydus_image_path = "nydus-image";
};

class Snapshotter {
 public:
  static SResult<std::unique_ptr<Snapshotter>> open(SnapshotterOptions opts);

  SResult<std::vector<Mount>> prepare(const std::string& key, const std::string& parent, const Labels& labels);
  SResult<std::vector<Mount>> view(const std::string& key, const std::string& parent, const Labels& labels);
  SResult<std::vector<Mount>> mounts(const std::string& key);
  SResult<void> commit(const std::string& name, const std::string& key, const Labels& labels);
  SResult<void> remove(const std::string& key);
  SResult<Info> stat(const std::string& key);
  SResult<Info> update(const Info& info, const std::vector<std::string>& fieldpaths);
  SResult<Usage> usage(const std::string& key);
  // Walk with containerd filters (OR of the strings; none: everything).
  SResult<void> walk(const std::vector<std::string>& filters, const std::function<void(const Info&)>& fn);
  SResult<void> cleanup();

  DaemonManager& daemons() { return daemons_; }
  Metrics& metrics() { return metrics_; }
  // The gauges of a metrics scrape: snapshots by kind, daemons by version, cache usage.
  Metrics::Gauges metric_gauges();
  // The image reference of the bootstrap snapshot `meta_id` (its CRI or
  // stargz reference label); "" when there is none (credential renewal).
  std::string image_ref_of(const std::string& meta_id);
  // Meta snapshot IDs whose daemons were taken over from a previous process at open().
  const std::vector<std::string>& adopted() const { return adopted_; }
  const std::string& root() const { return root_; }
  std::string upper_path(const std::string& id) const { return root_ + "/snapshots/" + id + "/fs"; }
  std::string work_path(const std::string& id) const { return root_ + "/snapshots/" + id + "/work"; }

 private:
  Snapshotter(SnapshotterOptions opts, std::unique_ptr<MetadataStore> ms);
  SResult<std::vector<Mount>> create(Kind kind, const std::string& key, const std::string& parent,
                                     const Labels& labels);
  // `content`: a directory to become the layer's fs dir (else an empty one).
  SResult<void> commit_nydus_data_layer(const std::string& key, const std::string& parent,
                                        const std::string& target, const Labels& labels,
                                        const std::string& content = "");
  // The Nydus bootstrap snapshot (id, labels) under `parent`, if the chain has one.
  struct Meta {
    std::string id;
    Labels labels;
    bool stargz = false;  // the top eStargz layer: its image.boot is merged from the layers below
    std::vector<std::string> chain;  // stargz: every layer's snapshot ID, top first
  };
  SResult<std::optional<Meta>> find_meta(const std::string& parent);
  // What a daemon start needs, read from the bootstrap snapshot (under mu_).
  struct DaemonRequest {
    std::string meta_id;
    std::string bootstrap;
    std::string image_ref;
    Labels labels;  // the bootstrap snapshot's (pull credentials, registry_auth.h)
  };
  SResult<DaemonRequest> daemon_request(const Meta& meta) const;
  // A pulled layer that is eStargz: its bootstrap built from the registry's TOC
  // and the layer committed as `target` (then AlreadyExists). False: not eStargz
  // (or it failed: logged), containerd downloads it as usual. Takes `lk` off meanwhile.
  SResult<bool> try_commit_estargz_layer(std::unique_lock<std::mutex>& lk, const std::string& key,
                                         const std::string& parent, const std::string& target, const Labels& labels);
  // The merged bootstrap of an eStargz chain topped by `meta` (under mu_; made once).
  SResult<void> ensure_estargz_bootstrap(const Meta& meta);
  std::string estargz_layer_bootstrap(const std::string& id) const;
  // Ensures the image's daemon runs, with `lk` (on mu_) released meanwhile and
  // the image pinned so no concurrent Remove stops it. Returns its mountpoint.
  SResult<std::string> start_daemon_unlocked(std::unique_lock<std::mutex>& lk, const DaemonRequest& req);
  // Overlay options for `s` over `lowers` (nearest first): workdir/upperdir when active.
  std::vector<std::string> overlay_options(const Snapshot& s, const std::vector<std::string>& lowers) const;
  std::vector<Mount> overlay_mounts(const Snapshot& s) const;
  std::vector<Mount> nydus_mounts(const Snapshot& s, const std::string& meta_id, const std::string& lower) const;
  std::vector<std::string> cleanup_directories(const std::set<std::string>& ids) const;
  // Blob IDs of the cache files our running nydusd processes hold open (/proc/<pid>/fd).
  std::set<std::string> open_cache_files() const;
  // Removes <root>/cache files of blobs no remaining image uses (under mu_).
  void gc_blob_cache();
  // Unpublishes the daemons no active/view snapshot (nor a pending start) uses (under mu_) ...
  std::vector<DaemonInstance> detach_unused_daemons();
  // ... and stops them (without mu_: each waits for its process to exit).
  void stop_detached(std::vector<DaemonInstance> daemons);

  std::string root_;
  bool index_off_ = false;
  bool userxattr_ = false;
  bool enable_stargz_ = false;
  std::string nydus_image_;
  std::unique_ptr<MetadataStore> ms_;
  DaemonManager daemons_;
  std::vector<std::string> adopted_;
  std::mutex mu_;  // one metadata operation at a time (SQLite has one writer anyway)
  Metrics metrics_;
  std::map<std::string, int> pinned_;  // meta id -> calls starting its daemon without mu_
};

// Validates untrusted labels: containerd's 4096-byte key+value limit, a bounded count.
SResult<void> validate_labels(const Labels& labels);

}  // namespace nydus::snapshotter
