// Fuzz target: a hostile RAFS v6 bootstrap. Opens it, then walks the whole tree
// and reads everything an accessor can reach: inode, dirents (and a lookup of
// each name), xattrs, symlink targets, chunk indexes, inline data, the chunk
// table and the prefetch table.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "format/bootstrap.h"

using namespace nydus;
using namespace nydus::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bs = Bootstrap::from_bytes(std::vector<uint8_t>(data, data + size));
  if (!bs) return 0;
  const Bootstrap& b = **bs;
  (void)b.compressor();
  (void)b.digester();
  (void)b.chunk_table();
  for (uint32_t nid : b.prefetch_nids()) (void)b.inode(nid);
  (void)b.resolve("/");
  (void)b.resolve("/a/b/../c");

  size_t visited = 0;
  (void)b.walk([&](const std::string& path, const InodeView& ino) -> Status {
    if (++visited > 10000) return make_error(Errc::kCorrupt, "fuzz: enough");
    (void)b.inode(ino.nid);
    (void)b.xattrs(ino);
    (void)b.resolve(path);
    if (ino.is_symlink()) (void)b.read_link(ino);
    if (ino.is_reg()) (void)b.chunks(ino);
    (void)b.data_range(ino, 0, ino.size);
    (void)b.data_range(ino, ino.size / 2, ino.size);
    if (ino.is_dir()) {
      std::vector<std::string> names;
      (void)b.for_each_dirent(ino, [&](const DirEntryView& d) {
        names.emplace_back(d.name);
        return names.size() < 4096;
      });
      for (const auto& n : names) (void)b.lookup(ino, n);
      (void)b.lookup(ino, "");
      (void)b.lookup(ino, "zzzz-not-there");
    }
    return ok();
  });
  // Inodes the walk did not reach (bogus nids) must fail cleanly too.
  (void)b.inode(0);
  (void)b.inode(b.root_nid() + 1);
  (void)b.inode(~uint64_t(0));
  return 0;
}
