// A read-only FUSE filesystem over one RAFS v6 image, on libfuse3's low-level
// API. RafsFs holds the filesystem logic as plain methods returning Results
// (unit-testable without /dev/fuse); the fuse_lowlevel_ops callbacks in
// rafs_fs.cpp are thin adapters that route each inode to its image through a
// Vfs (fuse/vfs.h). FuseSession mounts a Vfs and runs the multi-threaded
// session loop on its own thread.
//
// Inode numbers: FUSE ino == nid, except that the root nid and FUSE_ROOT_ID (1)
// swap places (a bijection, so a real inode at nid 1 still works).
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "format/bootstrap.h"
#include "fuse/dir_read_ahead.h"
#include "fuse/fuse_uring.h"
#include "fuse/open_file_cache.h"
#include "fuse/read_ahead_window.h"
#include "runtime/fs_io_stats.h"
#include "storage/blob_cache.h"

struct fuse_session;
struct fuse_conn_info;

namespace nydus::fuse {

class FuseChannel;
class PagePusher;
class Vfs;

// What nydusd asks of a FUSE connection at INIT (READDIRPLUS always,
// parallel dirops, cached symlinks, no splicing); bench/fuse_floor.cpp
// negotiates the same.
void negotiate_connection(struct fuse_conn_info* conn);

struct FsOptions {
  double entry_timeout = 3600;  // the image is immutable: let the kernel cache
  double attr_timeout = 3600;
  bool enable_xattr = true;
  bool iostats_files = false;   // per-file read counters
};

// Counters of the whole filesystem (upstream's "fs metrics", simplified).
struct FsMetrics {
  uint64_t lookups = 0;
  uint64_t getattrs = 0;
  uint64_t reads = 0;
  uint64_t read_bytes = 0;
  uint64_t read_errors = 0;
  uint64_t readdirs = 0;
  uint64_t errors = 0;  // any op answered EIO
  uint64_t bootstrap_releases = 0;  // times the mapped bootstrap's pages were released
};

struct FileStats {
  uint64_t nid = 0;
  uint64_t reads = 0;
  uint64_t bytes = 0;
};

// A regular file being read: its chunk list, decoded from the bootstrap at
// its first read, and its sequential read-ahead state (see RafsFs::file).
struct OpenFile {
  uint64_t nid = 0;
  uint64_t size = 0;
  std::vector<format::ChunkRef> chunks;
  ReadAheadWindow read_ahead;
};

struct DirEntry {
  std::string name;
  uint64_t ino = 0;  // FUSE ino
  uint32_t mode = 0; // S_IFMT bits
  uint64_t next_off = 0;
};

class RafsFs {
 public:
  // `blobs[i]` serves blob table entry i.
  RafsFs(std::shared_ptr<const format::Bootstrap> boot, std::vector<std::shared_ptr<storage::BlobCache>> blobs,
         FsOptions opts);

  const format::Bootstrap& bootstrap() const { return *boot_; }
  const FsOptions& options() const { return opts_; }

  uint64_t to_nid(uint64_t ino) const;
  uint64_t to_ino(uint64_t nid) const;

  // The operations, by FUSE ino. Errors carry the errno to reply with.
  Result<struct stat> getattr(uint64_t ino);
  // nullopt: no such name.
  Result<std::optional<struct stat>> lookup(uint64_t parent, std::string_view name);
  // Entries of a directory from cookie `off` (index in on-disk order), while
  // `fn` accepts them (returns false when the reply buffer is full).
  Status readdir(uint64_t ino, uint64_t off, const std::function<bool(const DirEntry&)>& fn);
  Result<std::unique_ptr<OpenFile>> open(uint64_t ino, int flags);
  // Read into `out` (at most out.size() bytes); returns the byte count (0 at EOF).
  Result<size_t> read(OpenFile& f, uint64_t off, std::span<uint8_t> out);
  Result<std::string> readlink(uint64_t ino);
  // Value of xattr `name`; kNotFound if absent.
  Result<std::vector<uint8_t>> getxattr(uint64_t ino, std::string_view name);
  // All names, each NUL-terminated.
  Result<std::string> listxattr(uint64_t ino);
  struct statvfs statfs();
  Status access(uint64_t ino, int mask);

  FsMetrics metrics() const;
  std::vector<FileStats> file_stats() const;

  // Every this many inodes or entries decoded, the mapped bootstrap's
  // resident pages are released (format::Bootstrap::release_resident_pages).
  static constexpr uint64_t kReleaseEvery = 16384;

  // Counters the callbacks bump.
  void count_error() { errors_.fetch_add(1, std::memory_order_relaxed); }
  // The decoded file to read inode `ino` through: kept while it is being
  // read (open_file_cache.h), else decoded from the bootstrap.
  Result<std::shared_ptr<OpenFile>> file(uint64_t ino);
  // Read through file(): what a FUSE READ does (no OPEN comes before it).
  Result<size_t> read_ino(uint64_t ino, uint64_t off, std::span<uint8_t> out);
  // An entry's attributes for READDIRPLUS (not counted as a getattr).
  Result<struct stat> entry_attr(uint64_t ino) const;

  // Read-ahead across a directory's files (dir_read_ahead.h): a listing of
  // `dir` returned regular file `ino` at `index` (`first`: the first regular
  // file in it); a READ of `ino` at `off` asks which files to push into the
  // page cache now.
  void listed(uint64_t dir, uint64_t index, uint64_t ino, bool first);
  std::vector<uint64_t> files_to_push(uint64_t ino, uint64_t off);
  // The pusher reads a file's bytes at `off` into `out` (not counted as a
  // READ); short only at the end of the file.
  Result<size_t> read_for_push(OpenFile& f, uint64_t off, std::span<uint8_t> out);

 private:
  Result<struct stat> stat_of(const format::InodeView& ino) const;
  // readdir() without counting it: what the read-ahead across files walks.
  Status walk_dir(uint64_t ino, uint64_t off, const std::function<bool(const DirEntry&)>& fn) const;
  // How much of `len` bytes from `off` the file holds.
  static uint64_t bytes_left(const OpenFile& f, uint64_t off, uint64_t len) {
    return off >= f.size ? 0 : std::min<uint64_t>(len, f.size - off);
  }
  // The bytes of [off, off + out.size()) from the blobs; `demand`: a
  // reader waits for them (moves the file's read-ahead window).
  Result<size_t> read_bytes(OpenFile& f, uint64_t off, std::span<uint8_t> out, bool demand);
  void record_read(uint64_t nid, uint64_t bytes);
  // `n` more inodes or entries were decoded from the bootstrap; every
  // kReleaseEvery of them its mapped pages are released, so a walk of a big
  // image does not keep the whole file resident in the daemon.
  void touched_metadata(uint64_t n) const;
  // Ask the caches to fetch a file range in the background.
  void read_ahead(const OpenFile& f, ReadAheadWindow::Range r);

  std::shared_ptr<const format::Bootstrap> boot_;
  std::vector<std::shared_ptr<storage::BlobCache>> blobs_;
  std::vector<uint64_t> blob_sizes_;
  FsOptions opts_;
  uint64_t root_nid_;

  std::once_flag statfs_once_;
  uint64_t total_blocks_ = 0;
  OpenFileCache<OpenFile> files_;
  DirReadAhead dir_read_ahead_;

  std::atomic<uint64_t> lookups_{0}, getattrs_{0}, reads_{0}, read_bytes_{0}, read_errors_{0},
      readdirs_{0}, errors_{0};
  mutable std::atomic<uint64_t> metadata_touched_{0}, bootstrap_releases_{0};

  // Per-file counters, sharded by nid so concurrent readers rarely contend;
  // the shard lock is held only to find the entry, never across I/O.
  struct Counter {
    std::atomic<uint64_t> reads{0};
    std::atomic<uint64_t> bytes{0};
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, std::unique_ptr<Counter>> files;
  };
  static constexpr size_t kShards = 32;
  std::array<Shard, kShards> shards_;
};

// NYDUS_DIR_READ_AHEAD: "0" turns the read-ahead across files off.
bool dir_read_ahead_from_env();

struct SessionOptions {
  unsigned max_threads = 4;     // worker threads of the session loop (and io_uring entries)
  UringMode uring = uring_mode_from_env();  // FUSE over io_uring: auto|on|off (fuse_uring.h)
  bool failover = false;        // a supervisor may replace this daemon after a crash (FuseChannel::create)
  std::string fsname = "rafs";  // mount source shown in mountinfo
  bool allow_other = true;
  // Push the next files of a directory read in listing order into the page
  // cache (dir_read_ahead.h); NYDUS_DIR_READ_AHEAD=0 turns it off.
  bool dir_read_ahead = dir_read_ahead_from_env();
};

// One mounted FUSE connection serving a Vfs: one image, or a shared
// daemon's images at virtual paths (fuse/vfs.h).
class FuseSession {
 public:
  // Create the session and mount it (the kernel's INIT is answered once the
  // loop runs, so call start() right after).
  static Result<std::unique_ptr<FuseSession>> mount(std::shared_ptr<Vfs> vfs, const std::string& mountpoint,
                                                    const SessionOptions& opts);
  // Serve a connection that is already mounted at `mountpoint` and was
  // served by another daemon (live upgrade, failover): `fd` is its
  // /dev/fuse fd (owned from now on), `init` the INIT request it began with.
  static Result<std::unique_ptr<FuseSession>> adopt(std::shared_ptr<Vfs> vfs, const std::string& mountpoint,
                                                    int fd, std::vector<uint8_t> init, const SessionOptions& opts);
  ~FuseSession();
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;

  // Run the multi-threaded loop on a background thread.
  Status start();
  // End the loop and unmount (lazily, aborting the connection if the mount
  // stays busy); returns when the loop thread has finished. Idempotent.
  void stop();
  // End the loop but leave the mount and the connection to the daemon that
  // took them over: every request read is answered first. Idempotent.
  void leave();
  // Whether the loop is still serving (false after an external umount).
  bool running() const { return running_.load(); }
  // The loop ran and ended (an external umount or stop()): false before start().
  bool ended() const { return started_.load() && !running_.load(); }
  // What a successor needs: the /dev/fuse fd and the INIT request.
  int fd() const;
  std::vector<uint8_t> init_message() const;
  uint64_t resent_requests() const;
  // "io_uring" or "classic": how requests reach this daemon.
  std::string transport() const;
  // Requests served through io_uring entries.
  uint64_t uring_requests() const;
  // Files (and their bytes) put into the page cache ahead of a reader
  // going through a directory (dir_read_ahead.h).
  uint64_t pushed_files() const;
  uint64_t pushed_bytes() const;
  // Upstream's FsIoStats of this connection and its requests in progress
  // (null before the channel exists).
  std::shared_ptr<runtime::FsIoStats> io_stats() const;
  const std::string& mountpoint() const { return mountpoint_; }
  Vfs& vfs() { return *vfs_; }

 private:
  FuseSession() = default;
  void watch_unmounts();
  void start_pusher();
  void stop_pusher();

  std::shared_ptr<Vfs> vfs_;
  std::string mountpoint_;
  SessionOptions opts_;
  struct fuse_session* se_ = nullptr;
  std::unique_ptr<FuseChannel> channel_;
  std::unique_ptr<PagePusher> pusher_;
  bool leaving_ = false;  // stop() keeps the mount (leave())
  bool adopted_ = false;  // mounted by another daemon (adopt())
  std::optional<unsigned> conn_id_;  // /sys/fs/fuse/connections/<id>
  std::thread loop_;
  std::atomic<bool> running_{false};
  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  bool stopped_ = false;
};

}  // namespace nydus::fuse
