// hostile-image BOOTSTRAP BLOB_DIR OUT_DIR: from a good image of the tree
// tests/integration/hostile_images.sh builds, write one hand-made malicious
// image per case into OUT_DIR/<NN-case>/{image.boot,blobs/<id>}: the
// bootstrap and blob copied, then patched at offsets found through the
// format's own layout (so a case keeps hitting its structure when the builder
// lays things out differently). Prints "NN-case<TAB>path it targets" per case.
//
// Expected tree: /dir/{file.txt,sub/inner}, /big.bin (>= 3 chunks of 64 KiB
// that zstd compresses to no less than ~16 KiB each: room for a bomb),
// /xattrs.txt (with user xattrs), /link -> dir/file.txt.
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "format/bootstrap.h"
#include "format/compress.h"
#include "format/layout.h"

namespace fs = std::filesystem;
using namespace nydus;
using namespace nydus::format;

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "hostile-image: %s\n", msg.c_str());
  std::exit(1);
}

template <class T>
T must(Result<T> r, const char* what) {
  if (!r) die(std::string(what) + ": " + r.error().to_string());
  return std::move(*r);
}

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) die("cannot read " + p.string());
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_all(const fs::path& p, const std::vector<uint8_t>& b) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  if (!f) die("cannot write " + p.string());
}

template <class T>
void put(std::vector<uint8_t>& b, uint64_t off, T v) {
  if (off + sizeof(T) > b.size()) die("patch beyond the file");
  std::memcpy(b.data() + off, &v, sizeof(T));
}

template <class T>
T get(const std::vector<uint8_t>& b, uint64_t off) {
  if (off + sizeof(T) > b.size()) die("read beyond the file");
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

// A zstd stream grown to exactly `size` bytes with a skippable frame after
// it, so it fits a slot whose offset and size the tables already record.
std::vector<uint8_t> pad_zstd(std::vector<uint8_t> stream, size_t size) {
  if (stream.size() + 8 > size) die("zstd stream does not fit its slot");
  const uint32_t magic = 0x184D2A50, pad = uint32_t(size - stream.size() - 8);
  stream.insert(stream.end(), reinterpret_cast<const uint8_t*>(&magic), reinterpret_cast<const uint8_t*>(&magic) + 4);
  stream.insert(stream.end(), reinterpret_cast<const uint8_t*>(&pad), reinterpret_cast<const uint8_t*>(&pad) + 4);
  stream.resize(size, 0);
  return stream;
}

// The image under attack: bootstrap and its (single) blob, plus a reader of
// the unpatched bootstrap to find where things are.
struct Image {
  std::vector<uint8_t> boot, blob;
  std::shared_ptr<Bootstrap> reader;
  BlobInfo info;

  InodeView inode(const std::string& path) const {
    return must(reader->inode(must(reader->resolve(path), path.c_str())), path.c_str());
  }
  // Absolute offset of the dirent naming `name` in directory `dir`: the
  // entry of the name's block whose nameoff points at the name.
  uint64_t dirent(const std::string& dir, const std::string& name) const {
    const InodeView d = inode(dir);
    auto data = must(reader->data_range(d, 0, d.size), "directory data");
    const uint8_t* base = reader->bytes().data();
    uint64_t found = 0;
    auto st = reader->for_each_dirent(d, [&](const DirEntryView& e) {
      if (e.name != name) return true;
      const uint64_t in_dir = uint64_t(reinterpret_cast<const uint8_t*>(e.name.data()) - data.data());
      const uint64_t block = uint64_t(data.data() - base) + in_dir / kBlockSize * kBlockSize;
      const uint64_t count = get<uint16_t>(boot, block + offsetof(Dirent, nameoff)) / sizeof(Dirent);
      for (uint64_t i = 0; i < count; i++)
        if (get<uint16_t>(boot, block + i * sizeof(Dirent) + offsetof(Dirent, nameoff)) == in_dir % kBlockSize)
          found = block + i * sizeof(Dirent);
      return false;
    });
    if (!st || found == 0) die("no dirent " + name + " in " + dir);
    return found;
  }
  // Absolute offset of chunk index `n` of a chunk-based file.
  uint64_t chunk_index(const std::string& path, uint32_t n) const {
    const InodeView v = inode(path);
    return align_up(v.offset + v.inode_size + v.xattr_size, sizeof(ChunkIndex)) + n * sizeof(ChunkIndex);
  }
  // The decoded ci entries of the blob, and a way to write them back (same
  // compressor; a shorter zstd stream is padded with a skippable frame so
  // every offset and size in the tables stays right).
  std::vector<uint8_t> ci() const {
    std::vector<uint8_t> raw(info.ci_uncompressed_size);
    auto st = decompress(info.ci_compressor, std::span(blob).subspan(info.ci_offset, info.ci_compressed_size), raw);
    if (!st) die("ci: " + st.error().to_string());
    return raw;
  }
  // ci entries are V1 (16 bytes) or V2 (24); both start with the 8-byte
  // uncompressed word (offset and size).
  size_t ci_entry_size() const {
    return info.features & blob_features::kChunkInfoV2 ? sizeof(ChunkInfoV2) : sizeof(ChunkInfoV1);
  }
  DecodedChunkInfo ci_decoded(const std::vector<uint8_t>& raw, uint32_t i) const {
    return ci_entry_size() == sizeof(ChunkInfoV2) ? decode_ci_v2(get<ChunkInfoV2>(raw, i * sizeof(ChunkInfoV2)))
                                                  : decode_ci_v1(get<ChunkInfoV1>(raw, i * sizeof(ChunkInfoV1)));
  }
  void set_ci(const std::vector<uint8_t>& raw) {
    std::vector<uint8_t> enc = raw;
    if (info.ci_compressor != Compressor::kNone) {
      if (info.ci_compressor != Compressor::kZstd) die("ci rewrite needs a zstd or uncompressed ci array");
      // The smallest encoding any level gives (the builder used level 3).
      std::vector<uint8_t> best;
      for (int level = 1; level <= ZSTD_maxCLevel(); level++) {
        std::vector<uint8_t> e(ZSTD_compressBound(raw.size()));
        const size_t n = ZSTD_compress(e.data(), e.size(), raw.data(), raw.size(), level);
        if (!ZSTD_isError(n) && (best.empty() || n < best.size())) best.assign(e.begin(), e.begin() + long(n));
      }
      if (best.empty() || best.size() + 8 > info.ci_compressed_size) die("re-encoded ci array does not fit");
      enc = pad_zstd(std::move(best), info.ci_compressed_size);
    }
    std::memcpy(blob.data() + info.ci_offset, enc.data(), enc.size());
  }
  // ci index of chunk `n` of a file.
  uint32_t ci_of(const std::string& path, uint32_t n) const {
    auto refs = must(reader->chunks(inode(path)), "chunks");
    if (n >= refs.size()) die(path + " has too few chunks");
    return refs[n].ci_index;
  }
};

struct Case {
  const char* name;
  const char* target;  // the path whose access must fail
  std::function<void(Image&)> patch;
};

std::vector<Case> cases() {
  return {
      {"dir-loop", "/dir/sub",
       [](Image& im) {  // /dir/sub names its own parent: /dir/sub/sub/... forever
         put<uint64_t>(im.boot, im.dirent("/dir", "sub") + offsetof(Dirent, nid), im.inode("/dir").nid);
       }},
      {"nid-out-of-range", "/dir/file.txt",
       [](Image& im) { put<uint64_t>(im.boot, im.dirent("/dir", "file.txt"), 0xFFFFFFFFFFull); }},
      {"name-past-block", "/dir",
       [](Image& im) {  // the last name starts past the end of its block
         const uint64_t at = im.dirent("/dir", "sub");
         put<uint16_t>(im.boot, at + offsetof(Dirent, nameoff), uint16_t(kBlockSize + 8));
       }},
      {"dir-size-past-block", "/dir",
       [](Image& im) {  // the inline tail runs over its block: names overflow it
         const InodeView d = im.inode("/dir");
         if (d.extended)
           put<uint64_t>(im.boot, d.offset + offsetof(InodeExtended, size), kBlockSize + kBlockSize / 2);
         else
           put<uint32_t>(im.boot, d.offset + offsetof(InodeCompact, size), kBlockSize + kBlockSize / 2);
       }},
      {"chunk-blob-past-table", "/big.bin",
       [](Image& im) {  // chunk 1 names blob 0x7e of a one-blob table
         const uint64_t at = im.chunk_index("/big.bin", 1) + offsetof(ChunkIndex, device_id);
         put<uint16_t>(im.boot, at, uint16_t((get<uint16_t>(im.boot, at) & 0xFF00) | 0x7F));
       }},
      {"chunk-ci-past-blob", "/big.bin",
       [](Image& im) {  // chunk 1's ci index is past the blob's chunk count
         put<uint16_t>(im.boot, im.chunk_index("/big.bin", 1) + offsetof(ChunkIndex, ci_index_lo), 0xFFF0);
       }},
      {"size-near-2^64", "/big.bin",
       [](Image& im) {
         const InodeView v = im.inode("/big.bin");
         if (!v.extended) die("/big.bin is a compact inode");
         put<uint64_t>(im.boot, v.offset + offsetof(InodeExtended, size), ~uint64_t(0) - kBlockSize + 1);
       }},
      {"overlapping-chunks", "/big.bin",
       [](Image& im) {  // chunk 1's bytes land on chunk 0's in the uncompressed layout
         auto ci = im.ci();
         const uint32_t c0 = im.ci_of("/big.bin", 0), c1 = im.ci_of("/big.bin", 1);
         // (the whole uncompressed word copied: it keeps the re-encoded ci
         // array as small as the original, so it fits in its place)
         const size_t es = im.ci_entry_size();
         put(ci, c1 * es, get<uint64_t>(ci, c0 * es));
         im.set_ci(ci);
       }},
      {"xattr-count-past-inode", "/xattrs.txt",
       [](Image& im) {
         put<uint16_t>(im.boot, im.inode("/xattrs.txt").offset + offsetof(InodeCompact, xattr_icount), 0xFFFF);
       }},
      {"decompression-bomb", "/big.bin",
       [](Image& im) {  // chunk 0's bytes become a zstd frame of 256 MiB of zeros (~8 KiB)
         const auto ci = im.ci();
         const DecodedChunkInfo c = im.ci_decoded(ci, im.ci_of("/big.bin", 0));
         if (!c.compressed) die("chunk 0 of /big.bin is not compressed");
         const size_t big = size_t(256) << 20, step = size_t(1) << 20;
         ZSTD_CCtx* z = ZSTD_createCCtx();
         ZSTD_CCtx_setPledgedSrcSize(z, big);
         std::vector<uint8_t> zeros(step, 0), frame(ZSTD_compressBound(big) / 64 + (1 << 16));
         ZSTD_outBuffer out{frame.data(), frame.size(), 0};
         for (size_t done = 0; done < big; done += step) {
           ZSTD_inBuffer in{zeros.data(), step, 0};
           const auto mode = done + step == big ? ZSTD_e_end : ZSTD_e_continue;
           size_t left;
           do left = ZSTD_compressStream2(z, &out, &in, mode);
           while (!ZSTD_isError(left) && (in.pos < in.size || (mode == ZSTD_e_end && left != 0)));
           if (ZSTD_isError(left)) die("zstd bomb");
         }
         ZSTD_freeCCtx(z);
         if (out.pos + 8 > c.compressed_size) die("bomb does not fit chunk 0");
         const auto bytes = pad_zstd({frame.begin(), frame.begin() + long(out.pos)}, c.compressed_size);
         std::memcpy(im.blob.data() + c.compressed_offset, bytes.data(), bytes.size());
       }},
      {"truncated-bootstrap", "/",
       [](Image& im) { im.boot.resize(im.reader->meta_offset() + kBlockSize / 2); }},
  };
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: hostile-image BOOTSTRAP BLOB_DIR OUT_DIR\n");
    return 2;
  }
  const fs::path boot_path = argv[1], blob_dir = argv[2], out_dir = argv[3];
  Image base;
  base.boot = read_all(boot_path);
  base.reader = must(Bootstrap::from_bytes(base.boot), "bootstrap");
  if (base.reader->blobs().size() != 1) die("the base image must have exactly one blob");
  base.info = base.reader->blobs()[0];
  base.blob = read_all(blob_dir / base.info.blob_id);

  int n = 0;
  for (const Case& c : cases()) {
    char dir[64];
    std::snprintf(dir, sizeof dir, "%02d-%s", ++n, c.name);
    Image im = base;
    c.patch(im);
    write_all(out_dir / dir / "image.boot", im.boot);
    write_all(out_dir / dir / "blobs" / base.info.blob_id, im.blob);
    std::printf("%s\t%s\n", dir, c.target);
  }
  return 0;
}
