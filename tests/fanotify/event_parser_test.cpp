#include "fanotify/event_parser.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "fanotify/fanotify_abi.h"
#include "fanotify/listener.h"

namespace nydus::fanotify {
namespace {

// Builds event buffers the way the kernel lays them out.
struct Buf {
  std::vector<uint8_t> bytes;
  template <class T>
  void put(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  // An event with the given info records (already serialized).
  void event(uint64_t mask, int fd, int pid, const std::vector<uint8_t>& info = {}) {
    fanotify_event_metadata m{};
    m.event_len = uint32_t(sizeof(m) + info.size());
    m.vers = FANOTIFY_METADATA_VERSION;
    m.metadata_len = sizeof(m);
    m.mask = mask;
    m.fd = fd;
    m.pid = pid;
    put(m);
    bytes.insert(bytes.end(), info.begin(), info.end());
  }
};

std::vector<uint8_t> range_rec(uint64_t off, uint64_t cnt, uint16_t len = sizeof(EventInfoRange)) {
  EventInfoRange r{};
  r.hdr.info_type = FAN_EVENT_INFO_TYPE_RANGE;
  r.hdr.len = len;
  r.offset = off;
  r.count = cnt;
  std::vector<uint8_t> v(sizeof(r));
  std::memcpy(v.data(), &r, sizeof(r));
  v.resize(std::max<size_t>(len, 4), 0);
  return v;
}

std::vector<uint8_t> unknown_rec(uint8_t type, uint16_t len) {
  std::vector<uint8_t> v(len, 0xab);
  fanotify_event_info_header h{type, 0, len};
  std::memcpy(v.data(), &h, sizeof(h));
  return v;
}

std::vector<uint8_t> cat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(EventParser, ValidPreAccessWithRange) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 123, range_rec(4096, 16384));
  b.event(FAN_PRE_ACCESS, 8, 124, range_rec(0, 131072));
  Batch r = parse_events(b.bytes);
  EXPECT_FALSE(r.truncated);
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[0].kind, EventKind::kPreAccess);
  EXPECT_EQ(r.events[0].fd, 7);
  EXPECT_EQ(r.events[0].pid, 123);
  EXPECT_TRUE(r.events[0].has_range);
  EXPECT_EQ(r.events[0].offset, 4096u);
  EXPECT_EQ(r.events[0].count, 16384u);
  EXPECT_EQ(r.events[1].fd, 8);
  EXPECT_EQ(r.events[1].count, 131072u);
}

TEST(EventParser, UnknownInfoTypesAreSkipped) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1, cat(unknown_rec(99, 12), cat(range_rec(8192, 4096), unknown_rec(FAN_EVENT_INFO_TYPE_PIDFD, 8))));
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kPreAccess);
  EXPECT_EQ(r.events[0].offset, 8192u);
}

TEST(EventParser, NoRangeRecord) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1);
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kPreAccess);
  EXPECT_FALSE(r.events[0].has_range);
}

TEST(EventParser, RangeRecordWithWrongLengthIsMalformed) {
  for (uint16_t len : {uint16_t(20), uint16_t(28)}) {
    Buf b;
    b.event(FAN_PRE_ACCESS, 7, 1, range_rec(0, 4096, len));
    b.event(FAN_PRE_ACCESS, 9, 1, range_rec(0, 4096));
    Batch r = parse_events(b.bytes);
    ASSERT_EQ(r.events.size(), 2u) << len;
    EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
    EXPECT_EQ(r.events[0].fd, 7);  // still known, so it can be denied
    EXPECT_EQ(r.events[1].kind, EventKind::kPreAccess);  // the batch goes on
    EXPECT_FALSE(r.truncated);
  }
}

TEST(EventParser, InfoHeaderLongerThanEventIsMalformed) {
  Buf b;
  auto rec = range_rec(0, 4096);
  rec[2] = 200;  // hdr.len low byte: past the event's end
  b.event(FAN_PRE_ACCESS, 7, 1, rec);
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
}

TEST(EventParser, ZeroLengthInfoHeaderDoesNotLoop) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1, unknown_rec(3, 4));
  b.bytes[sizeof(fanotify_event_metadata) + 2] = 0;  // len = 0
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
}

TEST(EventParser, TruncatedInfoHeader) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1, std::vector<uint8_t>{6, 0});  // 2 bytes of a header
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
}

TEST(EventParser, DuplicateRangeIsMalformed) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1, cat(range_rec(0, 4096), range_rec(4096, 4096)));
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
}

TEST(EventParser, OverflowingRangeIsMalformed) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1, range_rec(UINT64_MAX - 10, 4096));
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
}

TEST(EventParser, TruncatedBatchStops) {
  Buf b;
  b.event(FAN_PRE_ACCESS, 7, 1, range_rec(0, 4096));
  b.event(FAN_PRE_ACCESS, 8, 1, range_rec(0, 4096));
  // Cut in the middle of the second event's header.
  std::vector<uint8_t> cut(b.bytes.begin(), b.bytes.begin() + 48 + 10);
  Batch r = parse_events(cut);
  EXPECT_TRUE(r.truncated);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].fd, 7);
  // Cut inside the second event's range record: its header is readable, so
  // its fd is reported (to be denied), and the batch stops.
  std::vector<uint8_t> cut2(b.bytes.begin(), b.bytes.end() - 4);
  r = parse_events(cut2);
  EXPECT_TRUE(r.truncated);
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[1].kind, EventKind::kMalformed);
  EXPECT_EQ(r.events[1].fd, 8);
}

TEST(EventParser, BadHeaderLengthsStopBatch) {
  struct Case {
    uint32_t event_len;
    uint16_t metadata_len;
    uint8_t vers;
  };
  for (Case c : {Case{10, 24, FANOTIFY_METADATA_VERSION}, Case{48, 16, FANOTIFY_METADATA_VERSION},
                 Case{1000, 24, FANOTIFY_METADATA_VERSION}, Case{24, 24, 2}, Case{0, 0, FANOTIFY_METADATA_VERSION}}) {
    Buf b;
    b.event(FAN_PRE_ACCESS, 7, 1, range_rec(0, 4096));
    b.event(FAN_PRE_ACCESS, 8, 1);
    fanotify_event_metadata m{};
    std::memcpy(&m, b.bytes.data(), sizeof(m));
    m.event_len = c.event_len;
    m.metadata_len = c.metadata_len;
    m.vers = c.vers;
    std::memcpy(b.bytes.data(), &m, sizeof(m));
    Batch r = parse_events(b.bytes);
    EXPECT_TRUE(r.truncated) << c.event_len;
    ASSERT_EQ(r.events.size(), 1u) << c.event_len;
    EXPECT_EQ(r.events[0].kind, EventKind::kMalformed);
    EXPECT_EQ(r.events[0].fd, 7);
  }
}

TEST(EventParser, OverflowAndOtherEvents) {
  Buf b;
  b.event(FAN_Q_OVERFLOW, FAN_NOFD, 0);
  b.event(FAN_ACCESS_PERM, 9, 5);
  b.event(FAN_PRE_ACCESS, FAN_NOFD, 5);
  Batch r = parse_events(b.bytes);
  ASSERT_EQ(r.events.size(), 3u);
  EXPECT_EQ(r.events[0].kind, EventKind::kOverflow);
  EXPECT_EQ(r.events[1].kind, EventKind::kOther);
  EXPECT_EQ(r.events[1].fd, 9);
  EXPECT_EQ(r.events[2].kind, EventKind::kMalformed);
}

TEST(EventParser, EmptyBuffer) {
  Batch r = parse_events({});
  EXPECT_TRUE(r.events.empty());
  EXPECT_FALSE(r.truncated);
}

TEST(FillRange, AlignsOutwardAndClamps) {
  const uint64_t size = 10 * 4096;
  auto r = fill_range(5000, 100, size);
  EXPECT_EQ(r.offset, 4096u);
  EXPECT_EQ(r.len, 4096u);
  r = fill_range(4096, 8192, size);
  EXPECT_EQ(r.offset, 4096u);
  EXPECT_EQ(r.len, 8192u);
  r = fill_range(36000, 131072, size);  // readahead past EOF
  EXPECT_EQ(r.offset, 32768u);
  EXPECT_EQ(r.len, size - 32768);
  r = fill_range(size, 4096, size);  // at EOF: nothing to fill
  EXPECT_EQ(r.len, 0u);
  r = fill_range(UINT64_MAX - 5, 5, size);
  EXPECT_EQ(r.len, 0u);
  r = fill_range(0, UINT64_MAX, size);
  EXPECT_EQ(r.offset, 0u);
  EXPECT_EQ(r.len, size);
  // A size that is not block aligned still clamps to the size.
  r = fill_range(4000, 200, 4100);
  EXPECT_EQ(r.offset, 0u);
  EXPECT_EQ(r.len, 4100u);
}

// The listener's answers for events that need no fetch, observed through a
// pipe standing in for the fanotify fd.
class ListenerAnswers : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::pipe(p_), 0); }
  void TearDown() override {
    ::close(p_[0]);
    ::close(p_[1]);
  }
  std::vector<fanotify_response> responses() {
    std::vector<fanotify_response> out;
    ::fcntl(p_[0], F_SETFL, O_NONBLOCK);
    fanotify_response r;
    while (::read(p_[0], &r, sizeof(r)) == ssize_t(sizeof(r))) out.push_back(r);
    return out;
  }
  int open_fd() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }
  static bool is_closed(int fd) { return ::fcntl(fd, F_GETFD) < 0 && errno == EBADF; }
  int p_[2];
};

TEST_F(ListenerAnswers, MalformedDeniedOtherAllowedUnknownFileDeniedFdsClosed) {
  Listener l(p_[1], false, 1);
  const int a = open_fd(), c = open_fd(), d = open_fd();
  Buf b;
  b.event(FAN_PRE_ACCESS, a, 99999, range_rec(0, 4096, 20));  // malformed
  b.event(FAN_Q_OVERFLOW, FAN_NOFD, 0);
  b.event(FAN_ACCESS_PERM, c, 99999);                          // not ours: allow
  b.event(FAN_PRE_ACCESS, d, 99999, range_rec(0, 4096));       // /dev/null is no blob: deny
  l.handle_buffer(b.bytes);
  auto rs = responses();
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].fd, a);
  EXPECT_EQ(rs[0].response & 0xff, uint32_t(FAN_DENY));
  EXPECT_EQ(rs[0].response >> FAN_ERRNO_SHIFT, uint32_t(EIO));
  EXPECT_EQ(rs[1].fd, c);
  EXPECT_EQ(rs[1].response, uint32_t(FAN_ALLOW));
  EXPECT_EQ(rs[2].fd, d);
  EXPECT_EQ(rs[2].response & 0xff, uint32_t(FAN_DENY));
  EXPECT_TRUE(is_closed(a));
  EXPECT_TRUE(is_closed(c));
  EXPECT_TRUE(is_closed(d));
  auto s = l.stats();
  EXPECT_EQ(s.overflows, 1u);
  EXPECT_EQ(s.malformed, 1u);
  EXPECT_EQ(s.denied, 2u);
}

TEST_F(ListenerAnswers, OwnPidAllowedAtOnce) {
  Listener l(p_[1], false, 1);
  const int a = open_fd();
  Buf b;
  b.event(FAN_PRE_ACCESS, a, ::getpid(), range_rec(0, 4096));
  l.handle_buffer(b.bytes);
  auto rs = responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].response, uint32_t(FAN_ALLOW));
  EXPECT_TRUE(is_closed(a));
  EXPECT_EQ(l.stats().self_events, 1u);
}

TEST_F(ListenerAnswers, BadBatchDeniesKnownFdAndStops) {
  Listener l(p_[1], false, 1);
  const int a = open_fd();
  Buf b;
  b.event(FAN_PRE_ACCESS, a, 99999, range_rec(0, 4096));
  b.bytes.resize(b.bytes.size() - 3);
  l.handle_buffer(b.bytes);
  auto rs = responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].fd, a);
  EXPECT_EQ(rs[0].response & 0xff, uint32_t(FAN_DENY));
  EXPECT_TRUE(is_closed(a));
  EXPECT_EQ(l.stats().bad_batches, 1u);
}

}  // namespace
}  // namespace nydus::fanotify
