// The fscache (cachefiles on-demand) request loop of nydusd: one poll thread
// reads the kernel's messages and answers OPEN and CLOSE itself (from
// metadata only: OPEN never waits on a backend), and a bounded pool of
// workers serves READs: fetch the range through the blob cache, pwrite the
// uncompressed bytes into the object's anon fd at page-aligned offsets, then
// complete the request — on every path, errors included, so no reader is
// left waiting. A bad message or a failing backend costs that request only.
//
// Objects are held by shared handles: a CLOSE (or the daemon stopping) drops
// the table's reference, and the anon fd is closed only when the last READ
// or prefetch using it is done, so an fd number is never reused under a
// request in flight.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/work_queue.h"
#include "fscache/blob_registry.h"
#include "fscache/cache_device.h"
#include "fscache/message.h"
#include "runtime/prefetch.h"

namespace nydus::fscache {

struct ServiceStats {
  uint64_t opens = 0;
  uint64_t open_failures = 0;  // unknown key, bad fd, refused copen
  uint64_t closes = 0;
  uint64_t reads = 0;
  uint64_t read_bytes = 0;     // written into anon fds for READs
  uint64_t read_failures = 0;  // completed without the data
  uint64_t unknown_objects = 0;
  uint64_t complete_failures = 0;  // READ_COMPLETE refused (request cancelled or killed)
  uint64_t malformed = 0;
  uint64_t prefetch_bytes = 0;
  uint64_t amplified_bytes = 0;  // written past READs (amplify_io)
  uint64_t objects = 0;          // open now
};

// One open cachefiles object: its anon fd and what it holds.
struct CacheObject {
  CacheObject(uint32_t id, int fd, std::string key, ObjectLookup what)
      : object_id(id), fd(fd), key(std::move(key)), what(std::move(what)) {}
  ~CacheObject();
  CacheObject(const CacheObject&) = delete;

  const uint32_t object_id;
  const int fd;           // closed with the last reference
  const std::string key;  // "<volume id>/<cookie key>", for logs
  const ObjectLookup what;
  std::atomic<bool> closed{false};
};

// Write [off, off+len) of `obj` into its anon fd: offsets aligned down and
// lengths up to pages, the tail past the object's size zero-filled (the
// kernel sized the cache file to round_up(size, 4096)). Handles the three
// return conventions of anon-fd writes across kernels. Returns the bytes
// written.
Result<uint64_t> write_object_range(CacheObject& obj, uint64_t off, uint64_t len);

class FscacheService {
 public:
  FscacheService(CacheDevice dev, BlobRegistry& registry, unsigned workers);
  ~FscacheService();

  // Start the loop and the workers. With `restore`, first tell the kernel to
  // resend what a previous daemon left unanswered (after a handover).
  Status start(bool restore);
  // Stop reading, serve what was already read, close every object. Idempotent.
  void stop();
  bool running() const { return running_; }

  const CacheDevice& device() const { return dev_; }
  CacheDevice& device() { return dev_; }
  ServiceStats stats() const;
  nlohmann::json stats_json() const;

  // Handle one message as read (exposed for tests that feed raw bytes).
  void handle_buffer(std::span<const uint8_t> buf);

 private:
  struct ReadJob {
    ReadMsg msg;
    std::shared_ptr<CacheObject> obj;  // null: unknown object
  };

  void poll_loop();
  void worker_loop();
  void handle_open(OpenMsg& m);
  void handle_close(const CloseMsg& m);
  void handle_read(const ReadMsg& m);
  void serve_read(ReadJob& job);
  void amplify(CacheObject& obj, uint64_t from);
  void reply_open(uint32_t msg_id, int64_t size_or_errno);
  void start_prefetch(const std::shared_ptr<CacheObject>& obj);
  void reap_prefetchers(bool all);

  CacheDevice dev_;
  BlobRegistry& registry_;
  unsigned nworkers_;
  int wake_fd_ = -1;  // eventfd: stops the poll thread

  mutable std::mutex objects_mu_;
  std::map<uint32_t, std::shared_ptr<CacheObject>> objects_;

  WorkQueue<ReadJob> queue_;

  std::mutex prefetch_mu_;
  std::map<uint32_t, std::unique_ptr<runtime::Prefetcher>> prefetchers_;
  std::vector<std::unique_ptr<runtime::Prefetcher>> stopping_prefetchers_;

  std::thread poller_;
  std::vector<std::thread> workers_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_polling_{false};
  bool stopped_ = false;

  std::atomic<uint64_t> opens_{0}, open_failures_{0}, closes_{0}, reads_{0}, read_bytes_{0}, read_failures_{0},
      unknown_objects_{0}, complete_failures_{0}, malformed_{0}, amplified_bytes_{0};
  std::shared_ptr<std::atomic<uint64_t>> prefetch_bytes_ = std::make_shared<std::atomic<uint64_t>>(0);
};

}  // namespace nydus::fscache
