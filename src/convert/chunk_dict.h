// `nydusify convert --chunk-dict`: a Nydus image whose bootstrap is the
// chunk dictionary. Its layers are built with `--chunk-dict bootstrap=PATH`,
// so chunks the dictionary has point into the dictionary's blobs instead of
// being stored again, and the converted manifest then lists those blobs too
// (as the snapshotter converter's MergeLayers does).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "convert/image_store.h"
#include "convert/oci.h"

namespace nydus::convert {

// Upstream's ParseChunkDictArgs: "bootstrap:registry:REF" or
// "bootstrap:local:REF" -> REF. Upstream pulls REF as an image reference
// whichever the source says, and so does this one (a registry reference or
// oci:DIR:TAG).
Result<std::string> parse_chunk_dict_arg(std::string_view arg);

struct ChunkDict {
  std::string reference;
  std::filesystem::path bootstrap;            // the dictionary image's merged bootstrap
  std::map<std::string, Descriptor> blobs;    // its Nydus blob layers by digest
  std::unique_ptr<ImageStore> store;          // where those blobs are read from
};

// The dictionary image's Nydus manifest for `platform` (through an index if
// it is one), its bootstrap unpacked into `dir`.
Result<ChunkDict> load_chunk_dict(const std::string& reference, const StoreOptions& store, const Platform& platform,
                                  const std::filesystem::path& dir);

}  // namespace nydus::convert
