// Random access into gzip through inflate checkpoints, checked against
// `gzip -dc` (the oracle) on upstream's vendored zran inputs and on larger
// generated layers, single and multi-member.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "common/test_util.h"
#include "format/gzip_random.h"

namespace nydus::format {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using nydus::test::read_file;
using nydus::test::TempDir;

Bytes run(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr) << cmd;
  Bytes out;
  uint8_t buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.insert(out.end(), buf, buf + n);
  EXPECT_EQ(pclose(p), 0) << cmd;
  return out;
}

// index_gzip's input: `gz` from the start, in the pieces asked for.
GzipReadFn read_from(const Bytes& gz) {
  return [&gz, pos = size_t(0)](std::span<uint8_t> buf) mutable -> Result<size_t> {
    const size_t n = std::min(buf.size(), gz.size() - pos);
    if (n) std::memcpy(buf.data(), gz.data() + pos, n);  // gz.data() may be null when empty
    pos += n;
    return n;
  };
}

// index_gzip's sink: appends to `*sunk`.
GzipSinkFn append_to(Bytes* sunk) {
  return [sunk](std::span<const uint8_t> piece) -> Status {
    sunk->insert(sunk->end(), piece.begin(), piece.end());
    return ok();
  };
}

Result<GzipIndex> index_bytes(const Bytes& gz, Bytes* sunk, uint64_t span, std::span<const uint64_t> wanted = {}) {
  return index_gzip(read_from(gz), append_to(sunk), span, wanted);
}

// The smallest input end that lets output reach `end` (a boundary at or past it).
uint64_t input_end_for(const GzipIndex& idx, uint64_t end) {
  for (const auto& b : idx.boundaries)
    if (b.out >= end) return b.in;
  return idx.in_size;
}

// Read [a, b) through the last checkpoint at or before a, feeding only the
// compressed span the index says is needed.
Result<Bytes> read_range(const GzipIndex& idx, const Bytes& gz, uint64_t a, uint64_t b) {
  auto it = std::upper_bound(idx.checkpoints.begin(), idx.checkpoints.end(), a,
                             [](uint64_t v, const GzipCheckpoint& c) { return v < c.out_offset; });
  const GzipCheckpoint& cp = *(it - 1);
  const uint64_t in_end = input_end_for(idx, b);
  Bytes out(b - a);
  InflatePoint at{cp.bits, cp.prev_byte, cp.window};
  NYDUS_TRY(inflate_from_checkpoint(
      at, std::span<const uint8_t>(gz).subspan(cp.in_offset, in_end - cp.in_offset), a - cp.out_offset, out));
  return out;
}

void check_random_reads(const fs::path& gzpath, uint64_t span, int reads, size_t min_checkpoints) {
  const Bytes gz = read_file(gzpath);
  const Bytes plain = run("gzip -dc '" + gzpath.string() + "'");
  Bytes sunk;
  auto idx = index_bytes(gz, &sunk, span);
  ASSERT_TRUE(idx) << idx.error().to_string();
  ASSERT_EQ(sunk, plain) << "the scan's output is not gzip -dc's";
  EXPECT_EQ(idx->out_size, plain.size());
  EXPECT_EQ(idx->in_size, gz.size());
  EXPECT_GE(idx->checkpoints.size(), min_checkpoints);
  std::mt19937_64 rng(gzpath.string().size());
  for (int i = 0; i < reads; i++) {
    uint64_t a = rng() % plain.size();
    uint64_t len = 1 + rng() % std::min<uint64_t>(plain.size() - a, (i % 4 == 0) ? 3 << 20 : 9000);
    if (i == 0) a = 0, len = plain.size();  // the whole stream from the first checkpoint
    auto got = read_range(*idx, gz, a, a + len);
    ASSERT_TRUE(got) << "[" << a << ", +" << len << "): " << got.error().to_string();
    ASSERT_TRUE(std::equal(got->begin(), got->end(), plain.begin() + a)) << "[" << a << ", +" << len << ")";
  }
  // Every checkpoint, read from exactly its own offset.
  for (const auto& cp : idx->checkpoints) {
    if (cp.out_offset >= plain.size()) continue;
    const uint64_t b = std::min<uint64_t>(plain.size(), cp.out_offset + 4096);
    auto got = read_range(*idx, gz, cp.out_offset, b);
    ASSERT_TRUE(got) << got.error().to_string();
    ASSERT_TRUE(std::equal(got->begin(), got->end(), plain.begin() + cp.out_offset));
  }
}

fs::path zran_fixture(const char* name) { return nydus::test::fixtures_dir() / "zran" / name; }

TEST(GzipRandom, UpstreamZranInputs) {
  for (const char* n : {"zran-single-stream.tar.gz", "zran-two-streams.tar.gz", "zran-zero-file.tar.gz"}) {
    SCOPED_TRACE(n);
    check_random_reads(zran_fixture(n), 512, 200, 1);
  }
}

TEST(GzipRandom, TwoStreamsHasACheckpointPerMember) {
  Bytes sunk;
  auto idx = index_bytes(read_file(zran_fixture("zran-two-streams.tar.gz")), &sunk, 1 << 20);
  ASSERT_TRUE(idx);
  EXPECT_EQ(idx->checkpoints.size(), 2u);
  EXPECT_TRUE(idx->checkpoints[1].window.empty());
  EXPECT_EQ(idx->checkpoints[1].bits, 0);
}

// A generated layer of ~12 MB text-like and random data, in three gzip members.
class GzipRandomLarge : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::mt19937 rng(7);
    std::string text;
    static const char* words[] = {"usr/", "lib/", "python3 ", "import ", "def ", "self", "\n", "    ", "return "};
    for (int part = 0; part < 3; part++) {
      Bytes data;
      while (data.size() < (4u << 20)) {
        if (rng() % 16 == 0) {
          for (int i = 0; i < 3000; i++) data.push_back(uint8_t(rng()));  // incompressible stretch: stored blocks
        } else {
          const char* w = words[rng() % 9];
          data.insert(data.end(), w, w + std::strlen(w));
        }
      }
      nydus::test::write_file(dir_->path() / ("p" + std::to_string(part)), data);
      const std::string lvl = part == 1 ? "-1" : "-9";
      ASSERT_EQ(std::system(("gzip -n " + lvl + " -c " + (dir_->path() / ("p" + std::to_string(part))).string() +
                             (part ? " >> " : " > ") + path().string())
                                .c_str()),
                0);
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path path() { return dir_->path() / "layer.gz"; }
  static TempDir* dir_;
};
TempDir* GzipRandomLarge::dir_ = nullptr;

TEST_F(GzipRandomLarge, RandomReadsMatchGzip) { check_random_reads(path(), 1 << 20, 300, 12); }

TEST_F(GzipRandomLarge, SmallSpans) { check_random_reads(path(), 64 << 10, 100, 150); }

// Chunk starts 1 MiB apart (a big file's chunks): each gets a checkpoint at
// the block boundary right before it, so its fetch does not start inside the
// chunk before (which a checkpoint "every 1 MiB" puts it anywhere in).
TEST_F(GzipRandomLarge, CheckpointsSitRightBeforeWantedOffsets) {
  const Bytes gz = read_file(path());
  Bytes plain;
  auto plain_idx = index_bytes(gz, &plain, 1 << 20);
  ASSERT_TRUE(plain_idx);
  std::vector<uint64_t> wanted;
  for (uint64_t w = 12345; w < plain.size(); w += 1 << 20) wanted.push_back(w);
  Bytes sunk;
  auto idx = index_bytes(gz, &sunk, 1 << 20, wanted);
  ASSERT_TRUE(idx);
  ASSERT_EQ(sunk, plain);
  // Bytes inflated and thrown away before each wanted offset.
  auto lead = [](const GzipIndex& x, uint64_t w) {
    auto it = std::upper_bound(x.checkpoints.begin(), x.checkpoints.end(), w,
                               [](uint64_t v, const GzipCheckpoint& c) { return v < c.out_offset; });
    return w - (it - 1)->out_offset;
  };
  uint64_t close = 0, close_plain = 0;
  for (uint64_t w : wanted) {
    close += lead(*idx, w) < (128u << 10);
    close_plain += lead(*plain_idx, w) < (128u << 10);
  }
  EXPECT_GE(close * 10, wanted.size() * 9) << close << " of " << wanted.size();
  EXPECT_LT(close_plain * 2, wanted.size()) << "the test does not tell the layouts apart";
  // No denser than every 7/8 span (the dictionary table's size), no sparser than 2 spans.
  EXPECT_LE(idx->checkpoints.size(), plain_idx->checkpoints.size() + 3);
  for (size_t i = 1; i < idx->checkpoints.size(); i++) {
    const auto& a = idx->checkpoints[i - 1];
    const auto& b = idx->checkpoints[i];
    if (b.window.empty()) continue;  // a member start
    EXPECT_GE(b.out_offset - a.out_offset, (1u << 20) - (1u << 17)) << i;
    EXPECT_LE(b.out_offset - a.out_offset, (2u << 20) + (256u << 10)) << i;
  }
  // Every checkpoint still resumes right (windows taken one block early).
  for (const auto& cp : idx->checkpoints) {
    const uint64_t b = std::min<uint64_t>(plain.size(), cp.out_offset + 100000);
    auto got = read_range(*idx, gz, cp.out_offset, b);
    ASSERT_TRUE(got) << got.error().to_string();
    ASSERT_TRUE(std::equal(got->begin(), got->end(), plain.begin() + cp.out_offset));
  }
}

// The input fed in pieces, the output taken in consecutive ranges that cross
// the members' boundaries: the same bytes as gzip -dc.
TEST_F(GzipRandomLarge, CursorTakesRangesFromPiecesOfInput) {
  const Bytes gz = read_file(path());
  Bytes plain;
  auto idx = index_bytes(gz, &plain, 1 << 20);
  ASSERT_TRUE(idx);
  const GzipCheckpoint& cp = idx->checkpoints[2];
  auto c = InflateCursor::start({cp.bits, cp.prev_byte, cp.window});
  ASSERT_TRUE(c);
  std::mt19937_64 rng(5);
  uint64_t fed = cp.in_offset, pos = 0;
  while (cp.out_offset + pos < plain.size()) {
    const uint64_t left = plain.size() - cp.out_offset - pos;
    const uint64_t skip = std::min<uint64_t>(left, rng() % 3 == 0 ? rng() % 70000 : 0);
    const uint64_t want = std::min<uint64_t>(1 + rng() % 900000, left - skip);
    if (want == 0) break;
    const uint64_t end = cp.out_offset + pos + skip + want;
    const uint64_t need_in = input_end_for(*idx, end);
    if (need_in > fed) {  // only what this range needs: the next take must make do with the rest later
      const auto piece = std::span<const uint8_t>(gz).subspan(fed, need_in - fed);
      if (rng() % 2) (*c)->feed(piece);
      else (*c)->feed(Bytes(piece.begin(), piece.end()));  // taken over, or appended to what is left
      fed = need_in;
    }
    Bytes out(want);
    ASSERT_TRUE((*c)->take(pos + skip, out)) << pos;
    ASSERT_TRUE(std::equal(out.begin(), out.end(), plain.begin() + int64_t(cp.out_offset + pos + skip))) << pos;
    pos += skip + want;
    EXPECT_EQ((*c)->position(), pos);
  }
  EXPECT_EQ(cp.out_offset + pos, plain.size());
}

TEST_F(GzipRandomLarge, ShortInputIsAnErrorNotShortOutput) {
  const Bytes gz = read_file(path());
  Bytes sunk;
  auto idx = index_bytes(gz, &sunk, 1 << 20);
  ASSERT_TRUE(idx);
  const GzipCheckpoint& cp = idx->checkpoints[3];
  Bytes out(2 << 20);
  InflatePoint at{cp.bits, cp.prev_byte, cp.window};
  auto r = inflate_from_checkpoint(at, std::span<const uint8_t>(gz).subspan(cp.in_offset, 1000), 0, out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
  // Past the end of the stream.
  const GzipCheckpoint& last = idx->checkpoints.back();
  Bytes tail(idx->out_size - last.out_offset + 1);
  InflatePoint at2{last.bits, last.prev_byte, last.window};
  EXPECT_FALSE(inflate_from_checkpoint(at2, std::span<const uint8_t>(gz).subspan(last.in_offset), 0, tail));
  // Garbage instead of deflate data.
  Bytes junk(4096, 0xff);
  EXPECT_FALSE(inflate_from_checkpoint(at, junk, 0, std::span<uint8_t>(out).first(1000)));
  EXPECT_FALSE(inflate_from_checkpoint(InflatePoint{9, 0, {}}, junk, 0, std::span<uint8_t>(out).first(10)));
}

// One gzip member made with zlib; a sync flush after each piece ends the
// deflate block there (an empty stored block follows) and keeps the window,
// so later blocks still refer back across it.
Bytes gzip_pieces(const std::vector<Bytes>& pieces, int level) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out;
  uint8_t buf[65536];
  for (size_t i = 0; i <= pieces.size(); i++) {
    const bool last = i == pieces.size();
    z.next_in = last ? nullptr : const_cast<uint8_t*>(pieces[i].data());
    z.avail_in = last ? 0 : uInt(pieces[i].size());
    int ret;
    do {
      z.next_out = buf;
      z.avail_out = sizeof(buf);
      ret = deflate(&z, last ? Z_FINISH : Z_SYNC_FLUSH);
      out.insert(out.end(), buf, buf + (sizeof(buf) - z.avail_out));
    } while (last ? ret != Z_STREAM_END : z.avail_out == 0);
  }
  deflateEnd(&z);
  return out;
}

using nydus::test::random_bytes;
using nydus::test::text_bytes;

// Incompressible data is stored blocks, which refer to nothing: checkpoints
// there need no window, so small files in it each get one close before them
// (a reader fetches little more than its file), at no window's cost.
TEST(GzipRandom, StoredDataGetsCheckpointsWithoutWindows) {
  for (int level : {1, 6, 9}) {
    SCOPED_TRACE(level);
    const Bytes plain_in = [&] {
      Bytes b = text_bytes(300 << 10, 1);  // compressible: windowed checkpoints only
      Bytes r = random_bytes(3 << 20, 2);
      b.insert(b.end(), r.begin(), r.end());
      Bytes t = text_bytes(200 << 10, 3);
      b.insert(b.end(), t.begin(), t.end());
      return b;
    }();
    const Bytes gz = gzip_pieces({plain_in}, level);
    std::vector<uint64_t> wanted;  // 10 KB "files"
    for (uint64_t w = 0; w < plain_in.size(); w += 10000) wanted.push_back(w);
    Bytes sunk;
    auto idx = index_bytes(gz, &sunk, 1 << 20, wanted);
    ASSERT_TRUE(idx) << idx.error().to_string();
    ASSERT_EQ(sunk, plain_in);
    size_t windowless = 0;
    for (size_t i = 1; i < idx->checkpoints.size(); i++) {
      const auto& cp = idx->checkpoints[i];
      ASSERT_GT(cp.out_offset, idx->checkpoints[i - 1].out_offset);
      if (!cp.window.empty()) continue;
      windowless++;
      EXPECT_GE(cp.out_offset, 300u << 10) << "a checkpoint without a window in compressed data";
      EXPECT_LT(cp.out_offset, (300u << 10) + (3u << 20));
      EXPECT_GE(cp.out_offset - idx->checkpoints[i - 1].out_offset, 64u << 10);
    }
    EXPECT_GE(windowless, 30u);  // ~one per 64 KiB of the 3 MiB
    // Wanted offsets in the stored stretch sit close after a checkpoint.
    for (uint64_t w : wanted) {
      if (w < (400u << 10) || w >= (3u << 20)) continue;
      auto it = std::upper_bound(idx->checkpoints.begin(), idx->checkpoints.end(), w,
                                 [](uint64_t v, const GzipCheckpoint& c) { return v < c.out_offset; });
      EXPECT_LT(w - (it - 1)->out_offset, 160u << 10) << w;
    }
    // Every checkpoint resumes right, all the way to the end of the stream
    // (across the change back to compressed blocks).
    for (const auto& cp : idx->checkpoints) {
      auto got = read_range(*idx, gz, cp.out_offset, plain_in.size());
      ASSERT_TRUE(got) << cp.out_offset << ": " << got.error().to_string();
      ASSERT_TRUE(std::equal(got->begin(), got->end(), plain_in.begin() + int64_t(cp.out_offset))) << cp.out_offset;
    }
  }
}

// A stored block followed within 32 KiB by a compressed block that refers
// back past it: a checkpoint there without a window would fail to inflate,
// so the wanted offset in it gets none (the next windowed one comes later).
TEST(GzipRandom, StoredBlockBeforeBackReferencesKeepsItsWindow) {
  const Bytes text = text_bytes(100 << 10, 4);
  const Bytes gz = gzip_pieces({text, random_bytes(5000, 5), text}, 6);
  Bytes plain = text;
  const Bytes r = random_bytes(5000, 5);
  plain.insert(plain.end(), r.begin(), r.end());
  plain.insert(plain.end(), text.begin(), text.end());
  const std::vector<uint64_t> wanted{text.size() + 100};
  Bytes sunk;
  auto idx = index_bytes(gz, &sunk, 1 << 20, wanted);
  ASSERT_TRUE(idx) << idx.error().to_string();
  ASSERT_EQ(sunk, plain);
  for (const auto& cp : idx->checkpoints) {
    auto got = read_range(*idx, gz, cp.out_offset, plain.size());
    ASSERT_TRUE(got) << cp.out_offset << ": " << got.error().to_string();
    ASSERT_TRUE(std::equal(got->begin(), got->end(), plain.begin() + int64_t(cp.out_offset)));
  }
  ASSERT_EQ(idx->checkpoints.size(), 1u) << "a windowless checkpoint at " << idx->checkpoints.back().out_offset;
  // The random piece is a stored block, or the test shows nothing: resuming
  // at its start without a window fails on the second copy of the text.
  // (The last boundary there: after the sync flush's empty stored block,
  // byte-aligned, so no pending bits.)
  auto stored_start = std::find_if(idx->boundaries.rbegin(), idx->boundaries.rend(),
                                   [&](const GzipBoundary& b) { return b.out == text.size(); });
  ASSERT_NE(stored_start, idx->boundaries.rend());
  GzipIndex fake = *idx;
  GzipCheckpoint cp;
  cp.in_offset = stored_start->in;
  cp.out_offset = text.size();
  fake.checkpoints.push_back(cp);
  auto got = read_range(fake, gz, text.size(), plain.size());
  EXPECT_FALSE(got) << "inflate resumed without the window it needed";
}

// A tar of small incompressible files, as `tar | gzip` makes it (the layout
// of bench/remote.sh's layer): every deflate block mixes random file bytes
// with a tar header, so none is stored, yet the only window bytes inflate
// refers to are a few in earlier headers and chance matches. Windows keep
// just those, so checkpoints can sit close before each file at little cost.
TEST(GzipRandom, SparseWindowsLetCheckpointsSitCloseBeforeSmallFiles) {
  TempDir dir;
  const fs::path root = dir.path() / "root";
  fs::create_directories(root);
  std::mt19937 rng(11);
  for (int i = 0; i < 600; i++) nydus::test::write_file(root / ("f" + std::to_string(i)), random_bytes(rng() % 16384, i));
  const fs::path layer = dir.path() / "layer.tar.gz";
  ASSERT_EQ(std::system(("tar -C " + root.string() + " -cf - . | gzip -6 -n > " + layer.string()).c_str()), 0);
  const Bytes gz = read_file(layer);
  const Bytes plain = run("gzip -dc '" + layer.string() + "'");
  // Where each file's bytes start in the tar stream (ustar headers).
  std::vector<uint64_t> wanted;
  for (uint64_t at = 0; at + 512 <= plain.size() && plain[at] != 0;) {
    const uint64_t size = std::strtoull(std::string(reinterpret_cast<const char*>(&plain[at + 124]), 11).c_str(), nullptr, 8);
    if (plain[at + 156] == '0' && size > 0) wanted.push_back(at + 512);
    at += 512 + (size + 511) / 512 * 512;
  }
  ASSERT_GT(wanted.size(), 500u);
  Bytes sunk;
  auto idx = index_bytes(gz, &sunk, 1 << 20, wanted);
  ASSERT_TRUE(idx) << idx.error().to_string();
  ASSERT_EQ(sunk, plain);
  // The budgets: kept window bytes within 1/16 of the layer, window lengths
  // within 1/8 of the output (what a reader inflating the ci buffer whole
  // holds), each far below a full 32 KiB window per checkpoint.
  uint64_t kept = 0, length = 0;
  for (const auto& cp : idx->checkpoints) {
    kept += cp.window.size() - uint64_t(std::count(cp.window.begin(), cp.window.end(), uint8_t(0)));
    length += cp.window.size();
  }
  EXPECT_GE(idx->checkpoints.size(), plain.size() / (256u << 10)) << "checkpoints no denser than one per MiB";
  EXPECT_LE(kept * 16, gz.size()) << kept << " window bytes kept";
  EXPECT_LE(length * 8, plain.size()) << length << " bytes of window length";
  EXPECT_LT(kept * 8, idx->checkpoints.size() * 32768) << "windows are not sparse";
  size_t close = 0;
  for (uint64_t w : wanted) {
    auto it = std::upper_bound(idx->checkpoints.begin(), idx->checkpoints.end(), w,
                               [](uint64_t v, const GzipCheckpoint& c) { return v < c.out_offset; });
    close += w - (it - 1)->out_offset < (256u << 10);
  }
  EXPECT_GE(close * 10, wanted.size() * 9) << close << " of " << wanted.size();
  // Every checkpoint resumes right with its sparse window, 100 KB on.
  for (const auto& cp : idx->checkpoints) {
    const uint64_t b = std::min<uint64_t>(plain.size(), cp.out_offset + 100000);
    auto got = read_range(*idx, gz, cp.out_offset, b);
    ASSERT_TRUE(got) << cp.out_offset << ": " << got.error().to_string();
    ASSERT_TRUE(std::equal(got->begin(), got->end(), plain.begin() + int64_t(cp.out_offset))) << cp.out_offset;
  }
}

// The builder learns chunk starts from a tar scan running beside the inflate
// scan (create_zran.cpp): offsets revealed one call at a time must give the
// checkpoints the whole list gives (the same image from either), and the
// scan asks about ever later ends only.
TEST(GzipRandom, WantedOffsetsRevealedAsTheScanGoesGiveTheSameCheckpoints) {
  TempDir dir;
  const fs::path root = dir.path() / "root";
  fs::create_directories(root);
  std::mt19937 rng(5);
  for (int i = 0; i < 300; i++)
    nydus::test::write_file(root / ("f" + std::to_string(i)), i % 3 ? random_bytes(rng() % 20000, i) : text_bytes(rng() % 40000, i));
  const fs::path layer = dir.path() / "layer.tar.gz";
  ASSERT_EQ(std::system(("tar -C " + root.string() + " -cf - . | gzip -6 -n > " + layer.string()).c_str()), 0);
  const Bytes gz = read_file(layer);
  std::vector<uint64_t> wanted;
  for (uint64_t w = 700; w < 4u << 20; w += 1000 + (w * 7919) % 30000) wanted.push_back(w);
  Bytes sunk_a, sunk_b;
  auto whole = index_bytes(gz, &sunk_a, 1 << 20, wanted);
  ASSERT_TRUE(whole) << whole.error().to_string();
  size_t next = 0;
  uint64_t last_end = 0;
  bool backwards = false;
  auto streamed = index_gzip(
      read_from(gz), append_to(&sunk_b), 1 << 20, GzipWantedFn([&](uint64_t end) -> Result<bool> {
        backwards |= end < last_end;
        last_end = end;
        const size_t first = next;
        while (next < wanted.size() && wanted[next] < end) next++;
        return next > first;
      }));
  ASSERT_TRUE(streamed) << streamed.error().to_string();
  EXPECT_FALSE(backwards);
  EXPECT_EQ(sunk_a, sunk_b);
  ASSERT_GT(whole->checkpoints.size(), 4u);
  ASSERT_EQ(whole->checkpoints.size(), streamed->checkpoints.size());
  for (size_t i = 0; i < whole->checkpoints.size(); i++) {
    const GzipCheckpoint &a = whole->checkpoints[i], &b = streamed->checkpoints[i];
    EXPECT_EQ(a.in_offset, b.in_offset) << i;
    EXPECT_EQ(a.out_offset, b.out_offset) << i;
    EXPECT_EQ(a.bits, b.bits) << i;
    EXPECT_EQ(a.window, b.window) << i;
  }
  // An error from the source stops the scan with it.
  Bytes sunk_c;
  auto failed = index_gzip(
      read_from(gz), append_to(&sunk_c), 1 << 20, GzipWantedFn([&](uint64_t end) -> Result<bool> {
        if (end > (1u << 20)) return make_error(Errc::kIo, "tar scan failed");
        return true;
      }));
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("tar scan failed"), std::string::npos);
}

TEST(GzipRandom, NotGzipOrTruncated) {
  Bytes sunk;
  EXPECT_FALSE(index_bytes(Bytes(100, 'x'), &sunk, 1 << 20));
  Bytes gz = read_file(zran_fixture("zran-two-streams.tar.gz"));
  ASSERT_GT(gz.size(), 20u);
  gz.resize(gz.size() - 20);
  EXPECT_FALSE(index_bytes(gz, &sunk, 1 << 20));
  EXPECT_FALSE(index_bytes(Bytes{}, &sunk, 1 << 20));
}

}  // namespace
}  // namespace nydus::format
