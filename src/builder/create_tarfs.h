// `nydus-image create --type tar-tarfs`: upstream's tarfs mode, the
// snapshotter's block-device path. The data blob is the layer tar itself:
// nothing is copied, each chunk points at its file's bytes inside the tar
// (512-byte aligned, uncompressed), so the bootstrap uses 512-byte EROFS
// blocks. As upstream (builder/src/tarball.rs, core/node.rs, core/v6.rs):
// blob id = --blob-id (else sha256 of the tar), features CAP_TAR_TOC|TARFS,
// compressor none, digester sha256, the TARFS_MODE super flag, no chunk
// deduplication, no blob meta and no data blob written.
#pragma once

#include "builder/create_image.h"

namespace nydus::builder {

Result<CreateReport> create_tarfs_image(const CreateOptions& opts);

}  // namespace nydus::builder
