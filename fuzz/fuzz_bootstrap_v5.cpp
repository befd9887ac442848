// Fuzz target: a hostile RAFS v5 bootstrap. The parser alone first (tables,
// tree, chunk infos, xattrs), then, when it accepts the input, the whole
// open path (v6 translation, validation) and a walk over the result reading
// everything an accessor can reach.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "format/bootstrap.h"
#include "format/bootstrap_v5.h"

using namespace nydus;
using namespace nydus::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto parsed = parse_rafs_v5(in);
  if (!parsed) return 0;
  auto bs = Bootstrap::from_bytes(std::vector<uint8_t>(data, data + size));
  if (!bs) return 0;
  const Bootstrap& b = **bs;
  (void)b.chunk_table();
  size_t visited = 0;
  (void)b.walk([&](const std::string& path, const InodeView& ino) -> Status {
    if (++visited > 10000) return make_error(Errc::kCorrupt, "fuzz: enough");
    (void)b.xattrs(ino);
    (void)b.resolve(path);
    if (ino.is_symlink()) (void)b.read_link(ino);
    if (ino.is_reg()) (void)b.chunks(ino);
    return ok();
  });
  return 0;
}
