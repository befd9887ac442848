// Snapshot label names the snapshotter reads, as containerd, its CRI plugin,
// stargz-snapshotter's `ctr-remote image rpull` and nydus-snapshotter spell them.
#pragma once

#include <cstddef>
#include <string_view>

namespace nydus::snapshotter::label {

// Set by containerd's unpacker on every layer snapshot: the chain ID it commits to.
inline constexpr std::string_view kTargetSnapshotRef = "containerd.io/snapshot.ref";
// Layer annotations of a Nydus manifest (inherited as labels: containerd keeps
// every annotation under "containerd.io/snapshot/").
inline constexpr std::string_view kNydusDataLayer = "containerd.io/snapshot/nydus-blob";
inline constexpr std::string_view kNydusMetaLayer = "containerd.io/snapshot/nydus-bootstrap";
// containerd's CRI plugin (pkg/snapshotters.AppendInfoHandlerWrapper).
inline constexpr std::string_view kCriImageRef = "containerd.io/snapshot/cri.image-ref";
inline constexpr std::string_view kCriLayerDigest = "containerd.io/snapshot/cri.layer-digest";
// stargz-snapshotter's ctr-remote (source.AppendDefaultLabelsHandlerWrapper).
inline constexpr std::string_view kStargzReference = "containerd.io/snapshot/remote/stargz.reference";
inline constexpr std::string_view kStargzDigest = "containerd.io/snapshot/remote/stargz.digest";
// nydus-snapshotter's mark on an eStargz layer it answered "already exists"
// (its bootstrap is in the snapshot's fs dir); set by the snapshotter.
inline constexpr std::string_view kStargzLayer = "containerd.io/snapshot/stargz";
// The sha256 of a layer's TOC JSON: an annotation ctr-remote's --estargz
// conversion writes, inherited as a label by containerd's unpacker.
inline constexpr std::string_view kStargzTocDigest = "containerd.io/snapshot/stargz/toc.digest";

// containerd refuses a label whose key plus value exceeds 4096 bytes
// (labels.Validate); we refuse the same, and bound the count per snapshot.
inline constexpr std::size_t kMaxLabelSize = 4096;
inline constexpr std::size_t kMaxLabels = 512;

}  // namespace nydus::snapshotter::label
