// What the HTTP backends (registry, s3) share: the retry policy (exponential
// backoff with jitter, Retry-After), response checks for ranged GETs
// (status, Content-Range, exact body length), single-flight dedup of
// identical concurrent reads, and metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "storage/backend.h"
#include "storage/http_client.h"

namespace nydus::storage {

using Millis = std::chrono::milliseconds;

struct RetryPolicy {
  int retry_limit = 3;              // extra attempts after the first
  Millis base{100};                 // first backoff
  Millis cap{5000};                 // longest backoff
  Millis retry_after_cap{10000};    // longest Retry-After honoured

  // Wait before retry number `attempt` (1-based): full jitter in
  // [base*2^(attempt-1) / 2, base*2^(attempt-1)], capped; a server's
  // Retry-After (capped) wins when longer.
  Millis backoff(int attempt, std::optional<Millis> retry_after = std::nullopt) const;
};

// Why one attempt failed and whether trying again may help.
struct AttemptError {
  Error error;
  bool retryable = false;
  std::optional<Millis> retry_after;
};
template <class T = void>
using Attempt = std::expected<T, AttemptError>;

inline std::unexpected<AttemptError> retryable(Error e, std::optional<Millis> ra = std::nullopt) {
  return std::unexpected(AttemptError{std::move(e), true, ra});
}
inline std::unexpected<AttemptError> fatal(Error e) { return std::unexpected(AttemptError{std::move(e), false, {}}); }

// 5xx, 429 and 408 are worth retrying; other statuses are not.
bool retryable_status(long status);
// Retry-After in delta-seconds (an HTTP-date or garbage gives nullopt).
std::optional<Millis> parse_retry_after(const std::string& v);
// "bytes a-b/total" or "bytes a-b/*" → {a, b, total or nullopt}.
struct ContentRange {
  uint64_t first = 0, last = 0;
  std::optional<uint64_t> total;
};
std::optional<ContentRange> parse_content_range(const std::string& v);

// `accept` check for a ranged GET of [offset, offset+len): a 206 must carry
// exactly that Content-Range; a 200 is the whole object, only acceptable
// when the range starts at 0 and the object is exactly `len` bytes.
Status check_range_response(const HttpResponse& r, uint64_t offset, uint64_t len);
// The error for a non-2xx response (retryable per retryable_status).
AttemptError status_error(const HttpResponse& r, const std::string& what);
// Classify a finished ranged GET into the caller's span: transport errors
// and wrong lengths are retryable; statuses per status_error.
Attempt<> finish_ranged_get(Result<HttpResponse>& r, uint64_t len, const std::string& what);

class RemoteBackend : public Backend {
 public:
  ~RemoteBackend() override = default;

  // Dedup + retry around fetch(); errors end as kIo/kCorrupt/kNotFound.
  Status read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) final;
  // Retry around head_size(); cached per blob (blobs are immutable).
  Result<uint64_t> blob_size(const std::string& blob_id) final;
  BackendMetrics metrics() const override;

 protected:
  explicit RemoteBackend(RetryPolicy policy) : policy_(policy) {}

  // One attempt at reading exactly out.size() bytes at offset.
  virtual Attempt<> fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Attempt<uint64_t> head_size(const std::string& blob_id) = 0;
  // Call once per HTTP request sent.
  void note_request() { requests_.fetch_add(1, std::memory_order_relaxed); }

  RetryPolicy policy_;

 private:
  template <class T, class F>
  Result<T> with_retry(const std::string& what, F&& attempt);
  Status read_uncached(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out);

  struct Flight {
    bool done = false;
    Status result;
    std::vector<std::span<uint8_t>> waiters;
    std::condition_variable cv;
  };
  std::mutex flights_mu_;
  std::map<std::tuple<std::string, uint64_t, uint64_t>, std::shared_ptr<Flight>> flights_;

  std::mutex sizes_mu_;
  std::unordered_map<std::string, uint64_t> sizes_;

  std::atomic<uint64_t> read_count_{0}, read_bytes_{0}, read_errors_{0}, requests_{0}, retries_{0},
      dedup_waits_{0}, latency_us_{0};
};

// Blob ids name URL path segments: only [A-Za-z0-9._-], 1..255 bytes.
Status validate_remote_blob_id(const std::string& id);

}  // namespace nydus::storage
