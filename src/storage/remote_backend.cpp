#include "storage/remote_backend.h"

#include <cctype>
#include <cstring>
#include <random>
#include <thread>
#include <variant>

namespace nydus::storage {

namespace {

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    v = v * 10 + uint64_t(c - '0');
  }
  out = v;
  return true;
}

// splitmix64 over an 8-byte per-thread state: a thread_local mt19937_64 (2.5
// KB) would sit in every thread's TLS block, retrying or not.
uint64_t jitter(uint64_t lo, uint64_t hi) {
  thread_local uint64_t state = 0;
  if (hi <= lo) return lo;
  if (state == 0) state = (uint64_t(std::random_device{}()) << 32 | std::random_device{}()) | 1;
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  const uint64_t range = hi - lo;
  return range == UINT64_MAX ? z : lo + z % (range + 1);
}

}  // namespace

Millis RetryPolicy::backoff(int attempt, std::optional<Millis> retry_after) const {
  uint64_t ceil = uint64_t(base.count());
  for (int i = 1; i < attempt && ceil < uint64_t(cap.count()); i++) ceil *= 2;
  ceil = std::min<uint64_t>(ceil, uint64_t(cap.count()));
  Millis wait(jitter(ceil / 2, ceil));
  if (retry_after) wait = std::max(wait, std::min(*retry_after, retry_after_cap));
  return wait;
}

bool retryable_status(long status) { return status >= 500 || status == 429 || status == 408; }

std::optional<Millis> parse_retry_after(const std::string& v) {
  uint64_t s = 0;
  std::string_view t(v);
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  if (!parse_u64(t, s)) return std::nullopt;
  return Millis(std::min<uint64_t>(s, 86400) * 1000);
}

std::optional<ContentRange> parse_content_range(const std::string& v) {
  std::string_view s(v);
  if (!s.starts_with("bytes ")) return std::nullopt;
  s.remove_prefix(6);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  auto dash = s.find('-'), slash = s.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) return std::nullopt;
  ContentRange r;
  if (!parse_u64(s.substr(0, dash), r.first) || !parse_u64(s.substr(dash + 1, slash - dash - 1), r.last))
    return std::nullopt;
  if (r.last < r.first) return std::nullopt;
  auto tot = s.substr(slash + 1);
  if (tot != "*") {
    uint64_t t = 0;
    if (!parse_u64(tot, t) || t <= r.last) return std::nullopt;
    r.total = t;
  }
  return r;
}

Status check_range_response(const HttpResponse& r, uint64_t offset, uint64_t len) {
  if (len == 0) return ok();
  const uint64_t last = offset + len - 1;
  if (r.status == 206) {
    const auto& cr = r.header("content-range");
    auto p = parse_content_range(cr);
    if (!p) return corrupt("206 response with a bad Content-Range '{}'", cr);
    if (p->first != offset || p->last != last)
      return corrupt("206 response for bytes {}-{} instead of {}-{}", p->first, p->last, offset, last);
    if (auto cl = r.content_length(); cl && *cl != len)
      return corrupt("206 response with Content-Length {} for {} bytes", *cl, len);
    return ok();
  }
  if (r.status == 200) {
    // The whole object: only the right bytes when we asked from 0 for all of it.
    if (offset != 0) return corrupt("200 (whole object) response to a range request at offset {}", offset);
    auto cl = r.content_length();
    if (cl && *cl != len) return corrupt("200 (whole object) response of {} bytes to a {} byte range", *cl, len);
    return ok();
  }
  return corrupt("unexpected status {} for a range request", r.status);
}

AttemptError status_error(const HttpResponse& r, const std::string& what) {
  std::string body = r.body.substr(0, 200);
  for (auto& c : body)
    if (c == '\n' || c == '\r') c = ' ';
  Errc code = r.status == 404 ? Errc::kNotFound : r.status == 416 ? Errc::kCorrupt : Errc::kIo;
  Error e{code, 0, fmt::format("{}: HTTP {}{}{}", what, r.status, body.empty() ? "" : ": ", body)};
  if (retryable_status(r.status)) return AttemptError{std::move(e), true, parse_retry_after(r.header("retry-after"))};
  return AttemptError{std::move(e), false, {}};
}

Attempt<> finish_ranged_get(Result<HttpResponse>& r, uint64_t len, const std::string& what) {
  if (!r) return retryable(std::move(r).error().context(what));
  if (r->status != 200 && r->status != 206) return std::unexpected(status_error(*r, what));
  if (!r->wrote_body_out && len != 0) return retryable(Error{Errc::kCorrupt, 0, what + ": empty body"});
  if (r->body_bytes != len)
    return retryable(
        Error{Errc::kCorrupt, 0, fmt::format("{}: short body: {} of {} bytes", what, r->body_bytes, len)});
  return {};
}

Status validate_remote_blob_id(const std::string& id) {
  if (id.empty() || id.size() > 255) return errorf(Errc::kInvalidArgument, "invalid blob id '{}'", id);
  for (unsigned char c : id)
    if (!std::isalnum(c) && c != '.' && c != '_' && c != '-')
      return errorf(Errc::kInvalidArgument, "invalid blob id '{}'", id);
  if (id == "." || id == "..") return errorf(Errc::kInvalidArgument, "invalid blob id '{}'", id);
  return ok();
}

template <class T, class F>
Result<T> RemoteBackend::with_retry(const std::string& what, F&& attempt) {
  for (int n = 0;; n++) {
    auto r = attempt();
    if (r) return std::move(r).value();
    AttemptError& e = r.error();
    if (!e.retryable || n >= policy_.retry_limit) {
      Error err = std::move(e.error);
      // Anything we could not get right after retrying is an I/O failure
      // (EIO) to the reader; kCorrupt (wrong bytes/ranges) stays kCorrupt.
      if (err.code != Errc::kCorrupt && err.code != Errc::kNotFound && err.code != Errc::kInvalidArgument)
        err.code = Errc::kIo;
      if (n > 0) err.message += fmt::format(" (after {} attempts)", n + 1);
      return std::unexpected(std::move(err).context(what));
    }
    retries_.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(policy_.backoff(n + 1, e.retry_after));
  }
}

Status RemoteBackend::read_uncached(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  NYDUS_TRY(validate_remote_blob_id(blob_id));
  if (out.empty()) return ok();
  if (offset > uint64_t(INT64_MAX) || out.size() > uint64_t(INT64_MAX) - offset)
    return errorf(Errc::kInvalidArgument, "read {:#x}+{} out of range", offset, out.size());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = with_retry<std::monostate>(fmt::format("reading blob {} at {:#x}+{}", blob_id, offset, out.size()),
                                      [&]() -> Attempt<std::monostate> {
                                        auto a = fetch(blob_id, offset, out);
                                        if (!a) return std::unexpected(std::move(a).error());
                                        return std::monostate{};
                                      });
  if (!r) return std::unexpected(std::move(r).error());
  latency_us_.fetch_add(
      uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count()),
      std::memory_order_relaxed);
  return ok();
}

Status RemoteBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  const auto key = std::make_tuple(blob_id, offset, uint64_t(out.size()));
  std::shared_ptr<Flight> flight;
  {
    std::unique_lock lk(flights_mu_);
    if (auto it = flights_.find(key); it != flights_.end()) {
      // Join the identical read in flight; its leader copies into our span.
      auto f = it->second;
      f->waiters.push_back(out);
      dedup_waits_.fetch_add(1, std::memory_order_relaxed);
      f->cv.wait(lk, [&] { return f->done; });
      if (!f->result) {
        read_errors_.fetch_add(1, std::memory_order_relaxed);
        return f->result;
      }
      read_count_.fetch_add(1, std::memory_order_relaxed);
      read_bytes_.fetch_add(out.size(), std::memory_order_relaxed);
      return ok();
    }
    flight = std::make_shared<Flight>();
    flights_.emplace(key, flight);
  }
  Status st = read_uncached(blob_id, offset, out);
  {
    std::lock_guard lk(flights_mu_);
    flights_.erase(key);
    if (st)
      for (auto w : flight->waiters) std::memcpy(w.data(), out.data(), out.size());
    flight->result = st;
    flight->done = true;
  }
  flight->cv.notify_all();
  if (!st) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }
  read_count_.fetch_add(1, std::memory_order_relaxed);
  read_bytes_.fetch_add(out.size(), std::memory_order_relaxed);
  return ok();
}

Result<uint64_t> RemoteBackend::blob_size(const std::string& blob_id) {
  NYDUS_TRY(validate_remote_blob_id(blob_id));
  {
    std::lock_guard lk(sizes_mu_);
    if (auto it = sizes_.find(blob_id); it != sizes_.end()) return it->second;
  }
  NYDUS_ASSIGN_OR_RETURN(uint64_t size, with_retry<uint64_t>(fmt::format("size of blob {}", blob_id),
                                                             [&] { return head_size(blob_id); }));
  std::lock_guard lk(sizes_mu_);
  sizes_[blob_id] = size;
  return size;
}

BackendMetrics RemoteBackend::metrics() const {
  BackendMetrics m;
  auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  m.read_count = ld(read_count_);
  m.read_bytes = ld(read_bytes_);
  m.read_errors = ld(read_errors_);
  m.requests = ld(requests_);
  m.retries = ld(retries_);
  m.dedup_waits = ld(dedup_waits_);
  m.latency_us_total = ld(latency_us_);
  return m;
}

}  // namespace nydus::storage
