// eStargz images run lazily, as nydus-snapshotter's `[experimental]
// enable_stargz` (snapshot/process.go, pkg/filesystem/stargz_adaptor.go):
//  - a layer being pulled (containerd.io/snapshot.ref) whose blob ends in an
//    eStargz footer: its TOC (stargz.index.json) is read from the registry
//    with two ranged GETs (footer, then the TOC's gzip'd tar), `nydus-image
//    create --type estargztoc-ref` builds the layer's bootstrap pointing at
//    the layer blob itself, and the layer is answered "already exists"
//    (labelled containerd.io/snapshot/stargz) so containerd never downloads it;
//  - the container's snapshot on top: the layers' bootstraps are merged
//    (`nydus-image merge`) into <top layer>/fs/image.boot and one nydusd serves
//    it, reading gzip members straight from the eStargz blobs.
// Registry data is untrusted: the footer is parsed by format/stargz_toc.h,
// the compressed TOC region and the inflated JSON are size-bounded.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace nydus::snapshotter {

// The gzip'd tar between the TOC offset and the footer (upstream does not
// bound it; a TOC entry is ~200 bytes, so 64 MiB covers a few hundred
// thousand files) and the JSON inflated from it (format's own TOC limit).
inline constexpr uint64_t kMaxEstargzTocRegion = 64u << 20;

// The bytes of the tar member stargz.index.json in the gzip stream `gz`
// (one gzip member holding a tar), at most `max_json` bytes.
Result<std::string> toc_json_from_gzip_tar(std::span<const uint8_t> gz, size_t max_json);

struct EstargzLayerRequest {
  std::string backend_json;  // the image's nydusd config (its device.backend is used)
  std::string blob_id;       // the layer digest's hex
  std::string nydus_image;   // the nydus-image binary
  std::string out_dir;       // receives stargz.index.json, <blob_id> (the bootstrap), nydus-image.log
  std::string toc_digest;    // "sha256:<hex>" the TOC JSON must hash to (the layer's annotation); empty: unchecked
  // The bootstrap of the eStargz layer below (empty for the bottom layer):
  // a merged image has one chunk size, so a layer cut with another is left
  // to containerd (kUnsupported) rather than fail the container's merge.
  std::string below_bootstrap;
};

// Reads the layer's TOC from its backend and builds its bootstrap at
// out_dir/<blob_id>. kNotFound: the blob has no eStargz footer (a plain layer);
// kCorrupt: a TOC that is malformed, too large, or not the annotated digest;
// kUnsupported: a chunk size other than the layers' below.
Status prepare_estargz_layer(const EstargzLayerRequest& req);

// One bootstrap for the whole image: `layer_boots` lowest layer first;
// written to a temporary file and renamed to `out` (a single layer is copied).
Status merge_estargz_bootstraps(const std::string& nydus_image, const std::vector<std::string>& layer_boots,
                                const std::string& out);

}  // namespace nydus::snapshotter
