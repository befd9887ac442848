// A userspace model of the kernel side of cachefiles on-demand mode and of
// EROFS mounting through it, for testing nydusd's fscache mode on machines
// without /dev/cachefiles (../shared/docs/fscache-protocol.md §6).
//
// The device is a SOCK_SEQPACKET unix socket carrying the kernel's exact
// message bytes; OPEN fds travel as SCM_RIGHTS and are real sparse files in
// a store directory (the "cache disk"), so what the daemon writes can be
// checked and later mounted with the host's file-backed EROFS. Modelled:
//  - one message per read, delivered one at a time, so "read by the daemon"
//    is exact (the socket's send queue is empty) and `restore` replays just
//    what was read and not answered;
//  - msg_id policies (lowest-free reuse of 5.19-6.9, cyclic of 6.10+),
//    object ids cyclic from 1, a new id on every (re)open;
//  - `copen` parsed as the kernel does (base-0 numbers, no spaces, size
//    range), negative sizes fail the OPEN, cache files reused across mounts
//    only when the size matches;
//  - READ completion on the object's own fd (6.10+), coverage re-checked with
//    SEEK_DATA/SEEK_HOLE (full: done; prefix: a follow-up READ for the rest;
//    nothing: EIO for the reader);
//  - an anon fd closed by the daemon (seen through inotify IN_CLOSE_WRITE):
//    6.8+ reopens it with a new OPEN before the next READ, older kernels fail
//    its reads; the device closed with no one else holding it kills the cache;
//  - EROFS mounts: OPEN of the fsid cookie, the superblock read, OPEN of each
//    device-table tag, shared blob cookies in a domain, CLOSE at umount.
// What the daemon did wrong is recorded as violations, never hidden.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"

namespace nydus::fscache::emu {

struct Profile {
  std::string name;
  bool cyclic_msg_ids = true;   // 6.10+; false: the lowest free id is reused
  bool strict_complete = true;  // 6.10+: cread only for a READ, on that object's fd
  bool reopen = true;           // 6.8+: `restore`, and reopen after an early fd close
  static Profile linux_6_12() { return {"6.12", true, true, true}; }
  static Profile linux_6_8() { return {"6.8", false, false, true}; }
  static Profile linux_5_19() { return {"5.19", false, false, false}; }
};

struct Counters {
  uint64_t opens_sent = 0, reads_sent = 0, closes_sent = 0;
  uint64_t copen_ok = 0, copen_failed = 0;  // failed: negative size answered
  uint64_t completions = 0, late_completions = 0;
  uint64_t reopens = 0, restores = 0, follow_ups = 0;
  uint64_t reader_eio = 0;
};

class Emulator {
 public:
  using ms = std::chrono::milliseconds;

  Emulator(Profile profile, std::filesystem::path store);
  ~Emulator();
  Emulator(const Emulator&) = delete;

  // The device, in-process: returns the daemon's end of a socket pair.
  int open_pair();
  // The device, for a daemon in another process: it connects to `sock`
  // (nydusd --fscache-device). A second connection while one is live is
  // refused (only one opener, as /dev/cachefiles).
  Status listen(const std::filesystem::path& sock);
  // Wait for "bind ondemand" (or "restore" on a bound cache).
  bool wait_bound(ms timeout);
  bool wait_restored(uint64_t count, ms timeout);
  // Drop the device connection as the kernel sees a closed device fd.
  void close_device();
  // Send up to `n` messages before waiting for the daemon to read them
  // (benchmarks). With n > 1 "read by the daemon" is no longer exact, so a
  // `restore` may deliver a message twice: keep 1 for failover tests.
  void set_pipeline(unsigned n);

  // EROFS side. Returns a mount id. `devices` replaces the device-table tags
  // (the device= mount options).
  Result<int> mount(const std::string& fsid, const std::string& domain = "",
                    const std::vector<std::string>& devices = {});
  Status umount(int mount_id);
  // Object ids of the emulator (stable across kernel reopens): the
  // bootstrap object and the data blob objects of a mount.
  int boot_object(int mount_id) const;
  std::vector<int> blob_objects(int mount_id) const;
  std::vector<std::string> blob_tags(int mount_id) const;

  // An application read of [off, off+len) of an object: returns once the
  // kernel would (data present, or EIO), or an error naming the request the
  // daemon left unanswered after `timeout`.
  Status read(int obj, uint64_t off, uint64_t len, ms timeout = ms(20000));
  // Read the whole object in pieces of 4 KiB..max_piece from `threads` threads.
  Status read_all(int obj, unsigned threads, uint64_t max_piece, uint32_t seed = 1, ms timeout = ms(60000));
  // Start a read that the caller waits for later (crash tests).
  std::shared_ptr<std::thread> read_async(int obj, uint64_t off, uint64_t len, Status* result, ms timeout);

  std::filesystem::path backing_path(int obj) const;
  uint64_t object_size(int obj) const;

  // Every object closed by CLOSE or a failed OPEN has had its fd closed by
  // the daemon within `timeout` (no leaked anon fds).
  Status check_no_leaks(ms timeout);
  std::vector<std::string> violations() const;
  std::vector<std::string> commands() const;  // every command received, in order
  Counters counters() const;
  // Requests read by the daemon and not answered yet.
  size_t delivered_pending() const;

 private:
  enum class ObjState { kIdle, kOpening, kOpen, kFdClosed, kFailed, kClosing };
  struct Object {
    int id = 0;  // emulator id
    std::string volume, cookie;
    std::filesystem::path path;
    uint64_t size = 0;
    bool sized = false;
    ObjState state = ObjState::kIdle;
    uint32_t kernel_id = 0;   // current object_id
    int live_fds = 0;         // open descriptions handed to the daemon
    int users = 0;            // mounts using it (shared blobs in a domain)
    int rfd = -1;             // our read-only view
    dev_t dev = 0;
    ino_t ino = 0;
    int wd = -1;              // inotify watch
    int open_error = 0;       // errno of a failed OPEN
  };
  enum class ReqState { kNew, kDelivered, kDone, kFailed };
  struct Request {
    uint32_t msg_id = 0;
    uint32_t opcode = 0;
    int obj = 0;
    uint64_t off = 0, len = 0;
    ReqState state = ReqState::kNew;
  };
  struct Volume {
    std::set<std::string> fsids;
    std::map<std::string, int> blob_users;  // cookie -> mounts
  };
  struct MountRec {
    std::string volume, fsid;
    int boot = 0;
    std::vector<int> blobs;
    std::vector<std::string> tags;
    bool domain = false;
  };

  void io_loop();
  void handle_command(std::string cmd, int fd);
  void on_copen(const std::string& args);
  void on_cread(const std::string& args, int fd);
  void on_restore();
  void on_fd_closed(int wd);
  void on_device_closed();
  void pump_locked();  // send NEW requests once the daemon read the previous ones
  bool pump_one_locked();
  bool send_locked(Request& r);
  uint32_t new_msg_id_locked();
  uint32_t queue_locked(uint32_t opcode, int obj, uint64_t off = 0, uint64_t len = 0);
  int object_locked(const std::string& volume, const std::string& cookie);
  Status open_object_locked(std::unique_lock<std::mutex>& lk, int obj, ms timeout);
  bool covered_locked(const Object& o, uint64_t off, uint64_t end, uint64_t* first_hole) const;
  void violation_locked(std::string v);
  void kick();

  Profile profile_;
  std::filesystem::path store_;
  int listen_fd_ = -1, conn_ = -1, wake_ = -1, inotify_ = -1;
  std::thread io_;
  bool stop_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool bound_ = false, dead_ = false, in_flight_ = false;
  uint32_t in_flight_id_ = 0;
  unsigned pipeline_ = 1, sent_unconfirmed_ = 0;
  uint32_t next_msg_id_ = 0, next_object_id_ = 1;
  std::map<uint32_t, Request> requests_;  // live (new or delivered)
  std::deque<uint32_t> new_queue_;        // msg ids in delivery order
  std::set<uint32_t> finished_;           // completed or cancelled ids, for late completions
  std::map<int, Object> objects_;
  std::map<std::string, int> object_by_key_;
  std::map<std::string, Volume> volumes_;
  std::map<int, MountRec> mounts_;
  int next_mount_ = 1, next_obj_ = 1;
  std::vector<std::string> violations_, commands_;
  Counters counters_;
};

}  // namespace nydus::fscache::emu
