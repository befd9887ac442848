// OCI / Docker image structures the converter reads and writes: descriptors,
// manifests, indexes, image references, and the media types and annotations
// by which nydus-snapshotter recognises a Nydus image (upstream's
// nydus-snapshotter pkg/converter/constant.go).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace nydus::convert {

namespace media {
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar";
inline constexpr std::string_view kNydusBlob = "application/vnd.oci.image.layer.nydus.blob.v1";
// A Nydus manifest's config and artifact type in a merged (OCI + Nydus) index,
// so containerd without the snapshotter picks the OCI manifest.
inline constexpr std::string_view kNydusConfig = "application/vnd.nydus.image.config.v1+json";
inline constexpr std::string_view kNydusArtifact = "application/vnd.nydus.image.manifest.v1+json";
}  // namespace media

namespace annotation {
inline constexpr std::string_view kNydusBlob = "containerd.io/snapshot/nydus-blob";
inline constexpr std::string_view kNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap";
// On an --oci-ref (zran) blob layer: the digest of the source gzip layer it
// references (nydus-snapshotter pkg/label NydusRefLayer).
inline constexpr std::string_view kNydusRef = "containerd.io/snapshot/nydus-ref";
inline constexpr std::string_view kNydusFsVersion = "containerd.io/snapshot/nydus-fs-version";
inline constexpr std::string_view kUncompressed = "containerd.io/uncompressed";
inline constexpr std::string_view kRefName = "org.opencontainers.image.ref.name";
// On a converted manifest (acceleration-service's nydus driver).
inline constexpr std::string_view kNydusSourceDigest = "containerd.io/snapshot/nydus-source-digest";
inline constexpr std::string_view kNydusSourceReference = "containerd.io/snapshot/nydus-source-reference";
}  // namespace annotation

// The platform feature marking a Nydus manifest in an index.
inline constexpr std::string_view kNydusOsFeature = "nydus.remoteimage.v1";
// Where the bootstrap lives inside the bootstrap layer's tar.
inline constexpr std::string_view kBootstrapInLayer = "image/image.boot";

struct Platform {
  std::string os = "linux";
  std::string architecture = "amd64";
  std::string variant;
  std::vector<std::string> os_features;
};

struct Descriptor {
  std::string media_type;
  std::string artifact_type;  // OCI 1.1 "artifactType" (a merged index marks Nydus manifests with it)
  std::string digest;  // "sha256:<64 hex>"
  uint64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;
};

// Untrusted JSON in, checked fields out (digest syntax, sizes, types).
Result<Descriptor> parse_descriptor(const nlohmann::json& j);
nlohmann::json to_json(const Descriptor& d);

struct Manifest {
  std::string media_type;  // OCI or Docker schema 2
  Descriptor config;
  std::vector<Descriptor> layers;
};
Result<Manifest> parse_manifest(std::string_view bytes);

// An index / manifest list: the manifests it names.
Result<std::vector<Descriptor>> parse_index(std::string_view bytes);

bool is_index_type(std::string_view media_type);
bool is_manifest_type(std::string_view media_type);
bool is_layer_type(std::string_view media_type);

// The media type a manifest document declares (its "mediaType", or guessed
// from its shape when absent, as OCI allows).
std::string sniff_media_type(std::string_view bytes);

// "os/arch[/variant]".
Result<Platform> parse_platform(std::string_view s);
// "linux/amd64,linux/arm64" (upstream's --platform list).
Result<std::vector<Platform>> parse_platforms(std::string_view s);
// "linux/" + this machine's architecture in Go's names (amd64, arm64, ...).
std::string host_platform();
bool platform_matches(const Platform& want, const Platform& have);

// "sha256:" + hex of sha256(data).
std::string sha256_digest(std::string_view data);
bool valid_digest(std::string_view d);

// Where an image lives: a registry repository, or an OCI image layout dir.
struct ImageRef {
  enum class Kind { kRegistry, kOciLayout } kind = Kind::kRegistry;
  std::string host;        // registry: "host[:port]" as Docker names it ("docker.io")
  std::string repository;  // registry: "library/ubuntu"
  std::string tag;         // or empty when `digest` is set
  std::string digest;      // "sha256:..."
  std::string layout_dir;  // OCI layout
  std::string to_string() const;
  // The tag or digest to ask for.
  std::string reference() const { return digest.empty() ? tag : digest; }
  // Where the registry API is: docker.io's is registry-1.docker.io.
  std::string api_host() const { return host == "docker.io" ? "registry-1.docker.io" : host; }
};

// A reference normalised as Docker does (distribution/reference's
// ParseDockerRef): "ubuntu" -> docker.io/library/ubuntu:latest, "user/app"
// -> docker.io/user/app:latest, "index.docker.io/x" -> docker.io/x; the first
// component is a host when it has a '.' or ':' or is "localhost". A tag and a
// digest together keep the digest. Also "oci:<dir>[:<tag>]" (an OCI layout).
Result<ImageRef> parse_image_ref(std::string_view s);

}  // namespace nydus::convert
