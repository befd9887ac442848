#include "convert/chunk_dict.h"

#include <array>

#include "convert/bootstrap_layer.h"

namespace nydus::convert {

namespace fs = std::filesystem;

Result<std::string> parse_chunk_dict_arg(std::string_view arg) {
  // format:source:ref, the ref keeping its own colons (host:port, tag).
  const size_t a = arg.find(':');
  const size_t b = a == std::string_view::npos ? a : arg.find(':', a + 1);
  if (b == std::string_view::npos) return errorf(Errc::kInvalidArgument, "parse chunk dict arguments: invalid args");
  const std::string_view format = arg.substr(0, a), source = arg.substr(a + 1, b - a - 1), ref = arg.substr(b + 1);
  if (format != "bootstrap")
    return errorf(Errc::kInvalidArgument, "parse chunk dict arguments: invalid chunk dict format {}, should be [bootstrap]",
                  format);
  if (source != "registry" && source != "local")
    return errorf(Errc::kInvalidArgument,
                  "parse chunk dict arguments: invalid chunk dict source {}, should be [registry local]", source);
  return std::string(ref);
}

Result<ChunkDict> load_chunk_dict(const std::string& reference, const StoreOptions& store, const Platform& platform,
                                  const fs::path& dir) {
  ChunkDict d;
  d.reference = reference;
  NYDUS_ASSIGN_OR_RETURN(ImageRef ref, parse_image_ref(reference));
  NYDUS_ASSIGN_OR_RETURN(d.store, open_store(ref, store));
  auto fetched = resolve_manifest(*d.store, ref.reference(), platform, true);
  if (!fetched) return std::unexpected(std::move(fetched).error().context("chunk dict image " + reference));
  NYDUS_ASSIGN_OR_RETURN(Manifest m, parse_manifest(fetched->bytes));
  const Descriptor* boot = nullptr;
  for (const auto& l : m.layers) {
    if (l.annotations.count(std::string(annotation::kNydusBootstrap))) boot = &l;
    else if (l.media_type == media::kNydusBlob || l.annotations.count(std::string(annotation::kNydusBlob)))
      d.blobs.emplace(l.digest, l);
  }
  if (!boot) return errorf(Errc::kInvalidArgument, "chunk dict image {} is not a Nydus image (no bootstrap layer)", reference);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return sys_error(fmt::format("create {}", dir.string()), ec.value());
  NYDUS_ASSIGN_OR_RETURN(fs::path layer, d.store->blob_file(*boot, dir));
  d.bootstrap = dir / "chunk-dict.boot";
  NYDUS_TRY(extract_bootstrap(layer, d.bootstrap));
  if (layer.parent_path() == dir) fs::remove(layer, ec);
  return d;
}

}  // namespace nydus::convert
