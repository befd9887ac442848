#include "format/gzip_random.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>

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

// The window bytes a checkpoint's inflate refers to. Only output within
// 32 KiB after the checkpoint can reach back into the window, and which
// window byte each output byte copies does not depend on the window's
// contents (the bit stream alone says literal or copy, and from where). So
// inflate that output three times over made-up windows: window byte q holds
// q's low 8 bits, then their complement, then q's high bits. Output bytes
// that differ between the first two were copied from the window, from the
// position the first and third spell out; the others are literals. Returns
// the window with every byte nothing refers to zeroed and the unused head cut
// (the window ends at the checkpoint, so the cut keeps every distance);
// empty when nothing refers to it. `input`: the layer from the checkpoint's
// in_offset, reaching at least 32 KiB of output past it or the member's end.
Result<std::vector<uint8_t>> used_window(const GzipCheckpoint& cp, std::span<const uint8_t> input) {
  const size_t wl = cp.window.size();
  if (wl == 0) return std::vector<uint8_t>{};
  static const auto fakes = [] {  // the made-up windows, by pass
    std::vector<std::vector<uint8_t>> f(3, std::vector<uint8_t>(kWindow));
    for (size_t q = 0; q < kWindow; q++) {
      f[0][q] = uint8_t(q);
      f[1][q] = uint8_t(~q);
      f[2][q] = uint8_t(q >> 8);
    }
    return f;
  }();
  thread_local std::vector<uint8_t> outs[3] = {std::vector<uint8_t>(kWindow), std::vector<uint8_t>(kWindow),
                                               std::vector<uint8_t>(kWindow)};
  size_t produced[3] = {};
  bool ended = false;  // the member ended within the 32 KiB
  for (int pass = 0; pass < 3; pass++) {
    Inflater z;
    NYDUS_TRY(z.init(kRawBits));
    z_stream& s = z.s;
    if (cp.bits && inflatePrime(&s, cp.bits, cp.prev_byte >> (8 - cp.bits)) != Z_OK)
      return make_error(Errc::kInternal, "inflatePrime failed");
    if (inflateSetDictionary(&s, fakes[pass].data(), uInt(wl)) != Z_OK)
      return make_error(Errc::kInternal, "inflateSetDictionary failed");
    s.next_in = const_cast<uint8_t*>(input.data());
    s.avail_in = uInt(input.size());
    s.next_out = outs[pass].data();
    s.avail_out = kWindow;
    int ret = Z_OK;
    while (s.avail_out && ret == Z_OK) {
      const uInt before = s.avail_out + s.avail_in;
      ret = inflate(&s, Z_NO_FLUSH);
      if (s.avail_out + s.avail_in == before) break;  // no progress: the input ends here
    }
    if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR)
      return corrupt("probing a checkpoint's window: {}", zmsg(s, ret));
    produced[pass] = kWindow - s.avail_out;
    ended = ret == Z_STREAM_END;
  }
  if (produced[0] != produced[1] || produced[0] != produced[2])
    return make_error(Errc::kInternal, "probing a checkpoint's window: passes disagree");
  // A reference past what was probed would find a zeroed byte.
  if (produced[0] < kWindow && !ended)
    return errorf(Errc::kInternal, "probing a checkpoint's window: input ends after {} bytes", produced[0]);
  std::vector<uint8_t> used(wl, 0);
  size_t first = wl;
  for (size_t p = 0; p < produced[0]; p++) {
    if (outs[0][p] == outs[1][p]) continue;  // a literal
    const size_t q = size_t(outs[2][p]) << 8 | outs[0][p];
    if (q >= wl) return make_error(Errc::kInternal, "probing a checkpoint's window: copy from outside it");
    used[q] = 1;
    first = std::min(first, q);
  }
  std::vector<uint8_t> w;
  if (first == wl) return w;
  w.assign(cp.window.begin() + int64_t(first), cp.window.end());
  for (size_t q = first; q < wl; q++)
    if (!used[q]) w[q - first] = 0;
  return w;
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
  if (wanted.empty()) return index_gzip(read, sink, span, GzipWantedFn{});
  size_t next = 0;
  return index_gzip(read, sink, span, GzipWantedFn([&](uint64_t end) -> Result<bool> {
                      const size_t first = next;
                      while (next < wanted.size() && wanted[next] < end) next++;
                      return next > first;
                    }));
}

Result<GzipIndex> index_gzip(const GzipReadFn& read, const GzipSinkFn& sink, uint64_t span,
                             const GzipWantedFn& wanted) {
  Inflater z;
  NYDUS_TRY(z.init(kGzipBits));
  z_stream& s = z.s;
  std::vector<uint8_t> in(64 * 1024), out(256 * 1024);
  GzipIndex idx;
  uint64_t total_in = 0, total_out = 0, last_cp_out = 0, last_cp_in = 0;
  uint8_t last_byte = 0;     // the byte before in[0], for a checkpoint right after a refill
  bool member_start = true;  // next block boundary is right after a header
  bool between_members = true;  // the input may end here
  bool any = false;

  // With `wanted`, a checkpoint costs its window, and only the window bytes
  // its inflate refers to need keeping (used_window): in a layer of
  // incompressible files a few hundred bytes (tar headers referring to
  // earlier ones), in stored blocks none, in text most. Kept bytes cost
  // transfer (the others are zeros, which compress away); the window's
  // length from its first kept byte costs memory where it is inflated
  // whole (upstream's reader caches the uncompressed ci buffer). So every
  // block boundary before a wanted offset, `min_gap` past the last
  // checkpoint, is a candidate; once the 32 KiB after it are known, it
  // becomes a checkpoint if the compressed bytes since the last one are at
  // least kKeptRatio times its kept bytes and the output since then at least
  // kLengthRatio times its window's length, or about a `span` has passed. A
  // candidate holds its full window and the input from its offset on until
  // then.
  constexpr uint64_t kKeptRatio = 16, kLengthRatio = 8;
  const uint64_t min_gap = std::max<uint64_t>(span / 16, kWindow);
  struct Candidate {
    GzipCheckpoint cp;
    std::vector<uint8_t> input;  // the layer from cp.in_offset on, as far as read
    bool closed = false;         // the block after it has ended...
    bool holds_wanted = false;   // ...holding a wanted offset
  };
  std::deque<Candidate> pending;
  // The last rejected candidate's needs, less a quarter: no probe below them.
  uint64_t in_hint = 0, out_hint = 0;

  auto take = [&](bool at_member_start) -> Result<GzipCheckpoint> {
    GzipCheckpoint cp;
    cp.in_offset = total_in;
    cp.out_offset = total_out;
    cp.bits = uint8_t(s.data_type & 7);
    if (cp.bits) cp.prev_byte = s.next_in > in.data() ? s.next_in[-1] : last_byte;
    cp.window.resize(kWindow);
    uInt len = 0;
    if (inflateGetDictionary(&s, cp.window.data(), &len) != Z_OK)
      return make_error(Errc::kInternal, "inflateGetDictionary failed");
    cp.window.resize(at_member_start ? 0 : len);
    return cp;
  };
  auto commit = [&](GzipCheckpoint cp) {
    last_cp_out = cp.out_offset;
    last_cp_in = cp.in_offset;
    idx.checkpoints.push_back(std::move(cp));
  };
  auto settle = [&](Candidate& c) {
    const uint64_t out_gap = c.cp.out_offset - last_cp_out, in_gap = c.cp.in_offset - last_cp_in;
    if (!c.holds_wanted || c.cp.out_offset < last_cp_out + min_gap) return;
    const bool overdue = out_gap >= span - span / 8;  // chunk starts 1 span apart each get one
    if (!overdue && (in_gap < in_hint || out_gap < out_hint)) return;
    // A probe that cannot finish leaves the window whole (never wrong bytes).
    auto probed = used_window(c.cp, c.input);
    std::vector<uint8_t> w = probed ? std::move(*probed) : c.cp.window;
    const uint64_t kept = w.size() - uint64_t(std::count(w.begin(), w.end(), uint8_t(0)));
    const uint64_t in_need = kKeptRatio * kept, out_need = kLengthRatio * w.size();
    if (!overdue && (in_gap < in_need || out_gap < out_need)) {
      in_hint = in_need - in_need / 4;
      out_hint = out_need - out_need / 4;
      return;
    }
    c.cp.window = std::move(w);
    commit(std::move(c.cp));
    in_hint = out_hint = 0;
  };
  auto wanted_before = [&](uint64_t end) -> Result<bool> { return wanted ? wanted(end) : false; };

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
    const uint8_t* const taken = s.next_in;
    const int ret = inflate(&s, Z_BLOCK);
    const uint64_t used = in_before - s.avail_in, got = out.size() - s.avail_out;
    total_in += used;
    total_out += got;
    if (used) {
      between_members = false;
      any = true;
    }
    if (got) NYDUS_TRY(sink(std::span<const uint8_t>(out.data(), got)));
    for (Candidate& c : pending) c.input.insert(c.input.end(), taken, taken + used);
    if (ret == Z_STREAM_END) {
      // Nothing after a member's end refers back into it: every candidate
      // has all the input its probe needs.
      if (!pending.empty() && !pending.back().closed) {
        NYDUS_ASSIGN_OR_RETURN(pending.back().holds_wanted, wanted_before(total_out));
      }
      for (Candidate& c : pending) {
        c.closed = true;
        settle(c);
      }
      pending.clear();
      idx.boundaries.push_back({total_in, total_out});
      if (inflateReset(&s) != Z_OK) return make_error(Errc::kInternal, "inflateReset failed");
      member_start = true;
      between_members = true;
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
      NYDUS_TRY(wanted_before(total_out));
      continue;
    }
    if (!wanted) {
      if (total_out - last_cp_out >= span) {
        NYDUS_ASSIGN_OR_RETURN(auto cp, take(false));
        commit(std::move(cp));
      }
      continue;
    }
    // The block that just ended holds a wanted offset: the boundary before it
    // is the closest a checkpoint can be, so the wanted bytes' fetch starts
    // at most one block early.
    NYDUS_ASSIGN_OR_RETURN(const bool holds, wanted_before(total_out));
    if (!pending.empty() && !pending.back().closed) {
      pending.back().closed = true;
      pending.back().holds_wanted = holds;
    }
    while (!pending.empty() && pending.front().closed && pending.front().cp.out_offset + kWindow <= total_out) {
      settle(pending.front());
      pending.pop_front();
    }
    if (total_out - last_cp_out >= 2 * span) {  // no wanted offset for long: fall back to every span
      NYDUS_ASSIGN_OR_RETURN(auto cp, take(false));
      commit(std::move(cp));
      pending.clear();  // all before this one
      continue;
    }
    if (total_out >= last_cp_out + min_gap) {
      NYDUS_ASSIGN_OR_RETURN(auto cp, take(false));
      pending.push_back(Candidate{std::move(cp), {}, false, false});
    }
  }
  idx.in_size = total_in;
  idx.out_size = total_out;
  return idx;
}

}  // namespace nydus::format
