#include "builder/chunk_dict.h"

namespace nydus::builder {

Result<ChunkDict> ChunkDict::open(const std::filesystem::path& bootstrap, format::Digester digester) {
  auto boot = format::Bootstrap::open(bootstrap);
  if (!boot) return std::unexpected(std::move(boot).error().context("chunk dict " + bootstrap.string()));
  if ((*boot)->digester() != digester)
    return errorf(Errc::kInvalidArgument, "chunk dict {}: its chunk digester differs from this build's ({})",
                  bootstrap.string(), format::digester_name(digester));
  ChunkDict d;
  d.blobs_ = (*boot)->blobs();
  NYDUS_ASSIGN_OR_RETURN(auto table, (*boot)->chunk_table());
  for (auto c : table) {
    if (c.blob_index >= d.blobs_.size()) continue;
    c.blob_index += kTag;
    d.chunks_.try_emplace({c.digest, c.uncompressed_size}, c);
  }
  return d;
}

const format::ChunkRecord* ChunkDict::find(const format::Digest& digest, uint32_t size) const {
  auto it = chunks_.find({digest, size});
  return it == chunks_.end() ? nullptr : &it->second;
}

std::vector<format::BlobInfo> ChunkDict::assign_blobs(std::vector<std::vector<format::ChunkRecord>>& files,
                                                      uint32_t own_blobs) const {
  std::map<uint32_t, uint32_t> index;  // dict blob -> table index
  std::vector<format::BlobInfo> used;
  for (auto& chunks : files)
    for (auto& c : chunks)
      if (c.blob_index >= kTag) {
        auto [it, fresh] = index.try_emplace(c.blob_index - kTag, own_blobs + uint32_t(used.size()));
        if (fresh) used.push_back(blobs_[c.blob_index - kTag]);
        c.blob_index = it->second;
      }
  return used;
}

}  // namespace nydus::builder
