#include "format/gzip_random.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>

namespace nydus::format {

namespace {

constexpr uint32_t kWindow = 32 * 1024;
constexpr int kRawBits = -15;   // raw deflate, 32 KiB window
constexpr int kGzipBits = 31;   // gzip wrapper, 32 KiB window

// Owns one z_stream; inflateEnd on every path.
struct Inflater {
  z_stream s{};
  bool live = false;
  Status init(int bits) {
    if (inflateInit2(&s, bits) != Z_OK) return make_error(Errc::kInternal, "inflateInit2 failed");
    live = true;
    return ok();
  }
  ~Inflater() {
    if (live) inflateEnd(&s);
  }
};

std::string zmsg(const z_stream& s, int ret) {
  return s.msg ? std::string(s.msg) : fmt::format("zlib error {}", ret);
}

// After a member's last block: drop its 8-byte trailer, read the next
// member's header in gzip mode, and continue raw at its first block.
Status skip_to_next_member(z_stream& s) {
  if (s.avail_in < 8) return corrupt("gzip input ends inside a member trailer");
  s.next_in += 8;
  s.avail_in -= 8;
  if (s.avail_in == 0) return corrupt("gzip stream ends before the requested bytes");
  if (inflateReset2(&s, kGzipBits) != Z_OK) return make_error(Errc::kInternal, "inflateReset2 failed");
  uint8_t none[1];
  for (;;) {
    s.next_out = none;
    s.avail_out = 0;  // a header produces no output
    const int ret = inflate(&s, Z_BLOCK);
    if (ret != Z_OK) return corrupt("bad gzip member header: {}", zmsg(s, ret));
    if (s.data_type & 0x80) break;  // just past the header
    if (s.avail_in == 0) return corrupt("gzip input ends inside a member header");
  }
  if (inflateReset2(&s, kRawBits) != Z_OK) return make_error(Errc::kInternal, "inflateReset2 failed");
  return ok();
}

// Whether the deflate block starting at a block boundary is stored (BTYPE
// 00): its 3 header bits are the unused high bits of the last byte inflate
// took, then the next input byte. False when that byte is not in `s` yet
// (unknown counts as not stored).
bool next_block_stored(const z_stream& s, const uint8_t* in0, uint8_t last_byte) {
  const unsigned bits = unsigned(s.data_type) & 7;
  unsigned v = 0;
  if (bits) v = unsigned(s.next_in > in0 ? s.next_in[-1] : last_byte) >> (8 - bits);
  if (bits < 3) {
    if (s.avail_in == 0) return false;
    v |= unsigned(s.next_in[0]) << bits;
  }
  return ((v >> 1) & 3) == 0;
}

}  // namespace

struct InflateCursor::State {
  Inflater z;
  std::vector<uint8_t> in;  // unconsumed input; z.s.next_in points into it
};

InflateCursor::InflateCursor() : st_(std::make_unique<State>()) {}
InflateCursor::~InflateCursor() = default;

Result<std::unique_ptr<InflateCursor>> InflateCursor::start(const InflatePoint& at) {
  if (at.bits > 7) return corrupt("checkpoint with {} pending bits", at.bits);
  if (at.window.size() > kWindow) return corrupt("checkpoint window of {} bytes", at.window.size());
  std::unique_ptr<InflateCursor> c(new InflateCursor());
  NYDUS_TRY(c->st_->z.init(kRawBits));
  z_stream& s = c->st_->z.s;
  if (at.bits && inflatePrime(&s, at.bits, at.prev_byte >> (8 - at.bits)) != Z_OK)
    return corrupt("inflatePrime refused the checkpoint");
  if (!at.window.empty() && inflateSetDictionary(&s, at.window.data(), uInt(at.window.size())) != Z_OK)
    return corrupt("inflateSetDictionary refused the checkpoint window");
  return c;
}

void InflateCursor::feed(std::span<const uint8_t> more) {
  z_stream& s = st_->z.s;
  std::vector<uint8_t>& in = st_->in;
  const size_t used = s.next_in ? size_t(s.next_in - in.data()) : 0;
  in.erase(in.begin(), in.begin() + int64_t(std::min(used, in.size())));
  in.insert(in.end(), more.begin(), more.end());
  s.next_in = in.data();
  s.avail_in = uInt(in.size());
}

void InflateCursor::feed(std::vector<uint8_t>&& more) {
  z_stream& s = st_->z.s;
  if (s.avail_in != 0) return feed(std::span<const uint8_t>(more));
  st_->in = std::move(more);
  s.next_in = st_->in.data();
  s.avail_in = uInt(st_->in.size());
}

Status InflateCursor::take(uint64_t pos, std::span<uint8_t> out) {
  if (failed_) return corrupt("inflate cursor used after an error");
  if (pos < pos_) return make_error(Errc::kInternal, "inflate cursor cannot go back");
  if (st_->in.size() > std::numeric_limits<uInt>::max() || out.size() > std::numeric_limits<uInt>::max())
    return errorf(Errc::kInvalidArgument, "inflate span too large");
  z_stream& s = st_->z.s;
  failed_ = true;  // until this take completes
  if (member_ended_ && (pos > pos_ || !out.empty())) {
    NYDUS_TRY(skip_to_next_member(s));
    member_ended_ = false;
  }
  thread_local std::vector<uint8_t> discard(64 * 1024);
  uint64_t skip = pos - pos_;
  size_t done = 0;
  while (done < out.size() || skip > 0) {
    const bool skipping = skip > 0;
    if (skipping) {
      s.next_out = discard.data();
      s.avail_out = uInt(std::min<uint64_t>(skip, discard.size()));
    } else {
      s.next_out = out.data() + done;
      s.avail_out = uInt(out.size() - done);
    }
    const uInt room = s.avail_out;
    const int ret = inflate(&s, Z_NO_FLUSH);
    const size_t got = room - s.avail_out;
    pos_ += got;
    if (skipping) skip -= got;
    else done += got;
    if (ret == Z_STREAM_END) {
      if (done == out.size() && skip == 0) {
        member_ended_ = true;
        break;
      }
      NYDUS_TRY(skip_to_next_member(s));
      continue;
    }
    if (ret == Z_BUF_ERROR || (ret == Z_OK && got == 0 && s.avail_in == 0))
      return corrupt("compressed input ends {} bytes short of the requested range", out.size() - done + skip);
    if (ret != Z_OK) return corrupt("inflate from checkpoint: {}", zmsg(s, ret));
  }
  failed_ = false;
  return ok();
}

Status inflate_from_checkpoint(const InflatePoint& at, std::span<const uint8_t> input, uint64_t skip,
                               std::span<uint8_t> out) {
  if (input.size() > std::numeric_limits<uInt>::max() || out.size() > std::numeric_limits<uInt>::max())
    return errorf(Errc::kInvalidArgument, "inflate span too large");
  NYDUS_ASSIGN_OR_RETURN(auto c, InflateCursor::start(at));
  c->feed(input);
  return c->take(skip, out);
}

Result<GzipIndex> index_gzip(const GzipReadFn& read, const GzipSinkFn& sink, uint64_t span,
                             std::span<const uint64_t> wanted) {
  Inflater z;
  NYDUS_TRY(z.init(kGzipBits));
  z_stream& s = z.s;
  std::vector<uint8_t> in(64 * 1024), out(256 * 1024);
  GzipIndex idx;
  uint64_t total_in = 0, total_out = 0, last_cp_out = 0;
  uint8_t last_byte = 0;     // the byte before in[0], for a checkpoint right after a refill
  bool member_start = true;  // next block boundary is right after a header
  bool between_members = true;  // the input may end here
  bool any = false;
  // With `wanted`: the last block boundary seen, window included, taken as a
  // checkpoint once the block after it turns out to hold a wanted offset.
  std::optional<GzipCheckpoint> tentative;
  size_t next_wanted = 0;
  const uint64_t aligned_span = span - span / 8;  // chunk starts 1 span apart still each get one
  // Checkpoints without a window. Stored blocks hold no back-references,
  // and none can reach more than 32 KiB back, so inflate may start with an
  // empty window at a boundary followed by at least 32 KiB of stored output
  // (or by the member's end): what incompressible data (media, archives,
  // anything compressed already) becomes in a gzip layer. Such a checkpoint
  // costs a context record and no window, so one is taken right before
  // every wanted offset in that data, up to one per `windowless_gap`. A
  // stored block's boundary waits in `pending` until the 32 KiB after it
  // are known to be stored; a block of another type drops the younger ones.
  struct Candidate {
    GzipCheckpoint cp;          // window empty
    bool holds_wanted = false;  // the block after it holds a wanted offset
  };
  std::deque<Candidate> pending;
  const uint64_t windowless_gap = std::max<uint64_t>(span / 16, kWindow);

  auto here = [&] {  // the current boundary, without its window
    GzipCheckpoint cp;
    cp.in_offset = total_in;
    cp.out_offset = total_out;
    cp.bits = uint8_t(s.data_type & 7);
    if (cp.bits) cp.prev_byte = s.next_in > in.data() ? s.next_in[-1] : last_byte;
    return cp;
  };
  auto take = [&](bool at_member_start) -> Result<GzipCheckpoint> {
    GzipCheckpoint cp = here();
    cp.window.resize(kWindow);
    uInt len = 0;
    if (inflateGetDictionary(&s, cp.window.data(), &len) != Z_OK)
      return make_error(Errc::kInternal, "inflateGetDictionary failed");
    cp.window.resize(at_member_start ? 0 : len);
    return cp;
  };
  auto commit = [&](GzipCheckpoint cp) {
    last_cp_out = cp.out_offset;
    idx.checkpoints.push_back(std::move(cp));
    tentative.reset();
    pending.clear();  // all at or before this one
  };
  // A pending boundary known to need no window: a checkpoint if a wanted
  // offset follows in its block and the last checkpoint is far enough back.
  auto settle = [&](Candidate& c) {
    if (!c.holds_wanted || c.cp.out_offset < last_cp_out + windowless_gap) return;
    last_cp_out = c.cp.out_offset;
    if (tentative && tentative->out_offset <= last_cp_out) tentative.reset();
    idx.checkpoints.push_back(std::move(c.cp));
  };
  auto wanted_before = [&](uint64_t end) {
    bool any_wanted = false;
    while (next_wanted < wanted.size() && wanted[next_wanted] < end) {
      any_wanted = true;
      next_wanted++;
    }
    return any_wanted;
  };

  for (;;) {
    if (s.avail_in == 0) {
      if (s.next_in && s.next_in > in.data()) last_byte = s.next_in[-1];
      NYDUS_ASSIGN_OR_RETURN(size_t n, read(in));
      if (n == 0) {
        if (!between_members || !any) return corrupt("gzip stream truncated at {} bytes", total_in);
        break;
      }
      s.next_in = in.data();
      s.avail_in = uInt(n);
    }
    s.next_out = out.data();
    s.avail_out = uInt(out.size());
    const uInt in_before = s.avail_in;
    const int ret = inflate(&s, Z_BLOCK);
    const uint64_t used = in_before - s.avail_in, got = out.size() - s.avail_out;
    total_in += used;
    total_out += got;
    if (used) {
      between_members = false;
      any = true;
    }
    if (got) NYDUS_TRY(sink(std::span<const uint8_t>(out.data(), got)));
    if (ret == Z_STREAM_END) {
      // Nothing after a member's end refers back into it.
      if (!pending.empty()) pending.back().holds_wanted = wanted_before(total_out);
      for (Candidate& c : pending) settle(c);
      pending.clear();
      idx.boundaries.push_back({total_in, total_out});
      if (inflateReset(&s) != Z_OK) return make_error(Errc::kInternal, "inflateReset failed");
      member_start = true;
      between_members = true;
      tentative.reset();  // a boundary of the ended member: the next one starts afresh
      continue;
    }
    if (ret == Z_BUF_ERROR && s.avail_in == 0) continue;  // needs input
    if (ret != Z_OK) return corrupt("gzip stream at byte {}: {}", total_in, zmsg(s, ret));
    // At a block boundary (or right after a member header), unless the block
    // just ended was the member's last.
    if (!(s.data_type & 0x80) || (s.data_type & 0x40)) continue;
    idx.boundaries.push_back({total_in, total_out});
    if (member_start) {
      NYDUS_ASSIGN_OR_RETURN(auto cp, take(true));
      commit(std::move(cp));
      member_start = false;
      while (next_wanted < wanted.size() && wanted[next_wanted] < total_out) next_wanted++;
      continue;
    }
    if (wanted.empty()) {
      if (total_out - last_cp_out >= span) {
        NYDUS_ASSIGN_OR_RETURN(auto cp, take(false));
        commit(std::move(cp));
      }
      continue;
    }
    // The block that just ended holds a wanted offset: the boundary before it
    // is the closest a checkpoint can be, so the wanted bytes' fetch starts
    // at most one block early.
    const bool block_holds_wanted = wanted_before(total_out);
    // Every pending boundary is the start of a stored block, the newest one
    // of the block that just ended.
    if (!pending.empty()) pending.back().holds_wanted = block_holds_wanted;
    const bool stored = next_block_stored(s, in.data(), last_byte);
    while (!pending.empty() && pending.front().cp.out_offset + kWindow <= total_out) {
      settle(pending.front());
      pending.pop_front();
    }
    if (!stored) pending.clear();
    if (block_holds_wanted && tentative && tentative->out_offset - last_cp_out >= aligned_span)
      commit(std::move(*tentative));
    if (total_out - last_cp_out >= 2 * span) {  // no wanted offset for long: fall back to every span
      NYDUS_ASSIGN_OR_RETURN(auto cp, take(false));
      commit(std::move(cp));
      continue;
    }
    if (total_out - last_cp_out >= aligned_span) {
      NYDUS_ASSIGN_OR_RETURN(auto cp, take(false));
      tentative = std::move(cp);
    }
    if (stored && last_cp_out != total_out) pending.push_back(Candidate{here(), false});
  }
  idx.in_size = total_in;
  idx.out_size = total_out;
  return idx;
}

}  // namespace nydus::format
