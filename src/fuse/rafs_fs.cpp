#define FUSE_USE_VERSION 312
#include "fuse/rafs_fs.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/scratch_pool.h"
#include "fuse/fuse_channel.h"
#include "fuse/page_pusher.h"
#include "fuse/read_plan.h"
#include "fuse/vfs.h"

namespace nydus::fuse {

// ---- RafsFs --------------------------------------------------------------------------

RafsFs::RafsFs(std::shared_ptr<const format::Bootstrap> boot, std::vector<std::shared_ptr<storage::BlobCache>> blobs,
               FsOptions opts)
    : boot_(std::move(boot)), blobs_(std::move(blobs)), opts_(opts), root_nid_(boot_->root_nid()) {
  // A blob without a cache (nullptr) cannot be read: size 0 makes every plan
  // touching it fail as corrupt -> EIO rather than crash.
  for (size_t i = 0; i < boot_->blobs().size(); ++i)
    blob_sizes_.push_back(i < blobs_.size() && blobs_[i] ? boot_->blobs()[i].uncompressed_size : 0);
}

uint64_t RafsFs::to_nid(uint64_t ino) const {
  if (ino == FUSE_ROOT_ID) return root_nid_;
  if (ino == root_nid_) return FUSE_ROOT_ID;
  return ino;
}

uint64_t RafsFs::to_ino(uint64_t nid) const { return to_nid(nid); }  // the swap is its own inverse

Result<struct stat> RafsFs::stat_of(const format::InodeView& ino) const {
  struct stat st{};
  st.st_ino = to_ino(ino.nid);
  st.st_mode = ino.mode;
  st.st_nlink = ino.nlink;
  st.st_uid = ino.uid;
  st.st_gid = ino.gid;
  st.st_size = static_cast<off_t>(std::min<uint64_t>(ino.size, INT64_MAX));
  st.st_blksize = format::kBlockSize;
  st.st_blocks = static_cast<blkcnt_t>(ino.size / 512 + (ino.size % 512 != 0));
  st.st_mtim.tv_sec = static_cast<time_t>(ino.mtime);
  st.st_mtim.tv_nsec = ino.mtime_nsec;
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
  const uint32_t fmt = ino.mode & S_IFMT;
  if (fmt == S_IFCHR || fmt == S_IFBLK)
    st.st_rdev = makedev(format::rdev_major(ino.rdev()), format::rdev_minor(ino.rdev()));
  return st;
}

Result<struct stat> RafsFs::getattr(uint64_t ino) {
  getattrs_.fetch_add(1, std::memory_order_relaxed);
  return entry_attr(ino);
}

void RafsFs::touched_metadata(uint64_t n) const {
  const uint64_t before = metadata_touched_.fetch_add(n, std::memory_order_relaxed);
  if (before / kReleaseEvery == (before + n) / kReleaseEvery) return;
  boot_->release_resident_pages();
  bootstrap_releases_.fetch_add(1, std::memory_order_relaxed);
}

Result<struct stat> RafsFs::entry_attr(uint64_t ino) const {
  touched_metadata(1);
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot_->inode(to_nid(ino)));
  return stat_of(iv);
}

Result<std::optional<struct stat>> RafsFs::lookup(uint64_t parent, std::string_view name) {
  lookups_.fetch_add(1, std::memory_order_relaxed);
  if (name.size() > 255) return fs_answer(ENAMETOOLONG, "name too long");
  touched_metadata(1);
  NYDUS_ASSIGN_OR_RETURN(format::InodeView dir, boot_->inode(to_nid(parent)));
  if (!dir.is_dir()) return fs_answer(ENOTDIR, fmt::format("nid {} is not a directory", dir.nid));
  NYDUS_ASSIGN_OR_RETURN(std::optional<format::DirEntryView> de, boot_->lookup(dir, name));
  if (!de) return std::optional<struct stat>{};
  NYDUS_ASSIGN_OR_RETURN(format::InodeView child, boot_->inode(de->nid));
  NYDUS_ASSIGN_OR_RETURN(struct stat st, stat_of(child));
  return std::optional<struct stat>{st};
}

Status RafsFs::readdir(uint64_t ino, uint64_t off, const std::function<bool(const DirEntry&)>& fn) {
  readdirs_.fetch_add(1, std::memory_order_relaxed);
  return walk_dir(ino, off, fn);
}

Status RafsFs::walk_dir(uint64_t ino, uint64_t off, const std::function<bool(const DirEntry&)>& fn) const {
  NYDUS_ASSIGN_OR_RETURN(format::InodeView dir, boot_->inode(to_nid(ino)));
  if (!dir.is_dir()) return fs_answer(ENOTDIR, "not a directory");
  // The cookie is the entry's index in on-disk order: stable across calls
  // because the image never changes.
  uint64_t index = 0;
  DirEntry e;
  return boot_->for_each_dirent(dir, [&](const format::DirEntryView& d) {
    const uint64_t i = index++;
    if (i < off) return true;
    touched_metadata(1);
    e.name.assign(d.name);
    e.ino = to_ino(d.nid);
    e.mode = 0;
    switch (d.type) {
      case format::FileType::kRegular: e.mode = S_IFREG; break;
      case format::FileType::kDirectory: e.mode = S_IFDIR; break;
      case format::FileType::kCharDev: e.mode = S_IFCHR; break;
      case format::FileType::kBlockDev: e.mode = S_IFBLK; break;
      case format::FileType::kFifo: e.mode = S_IFIFO; break;
      case format::FileType::kSocket: e.mode = S_IFSOCK; break;
      case format::FileType::kSymlink: e.mode = S_IFLNK; break;
      default: break;
    }
    e.next_off = i + 1;
    return fn(e);
  });
}

Result<std::unique_ptr<OpenFile>> RafsFs::open(uint64_t ino, int flags) {
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) return fs_answer(EROFS, "read-only filesystem");
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot_->inode(to_nid(ino)));
  if (iv.is_dir()) return fs_answer(EISDIR, "is a directory");
  touched_metadata(1);
  auto f = std::make_unique<OpenFile>();
  f->nid = iv.nid;
  f->size = iv.size;
  if (iv.is_reg()) {
    NYDUS_ASSIGN_OR_RETURN(f->chunks, boot_->chunks(iv));
  }
  return f;
}

Result<std::shared_ptr<OpenFile>> RafsFs::file(uint64_t ino) {
  if (auto f = files_.get(to_nid(ino))) return f;
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<OpenFile> f, open(ino, O_RDONLY));
  return std::shared_ptr<OpenFile>(std::move(f));
}

Result<size_t> RafsFs::read_ino(uint64_t ino, uint64_t off, std::span<uint8_t> out) {
  NYDUS_ASSIGN_OR_RETURN(std::shared_ptr<OpenFile> f, file(ino));
  const uint64_t want = bytes_left(*f, off, out.size());
  // A file with more to read keeps its decoded chunks and read-ahead window;
  // one read whole at once (most small files) is not worth keeping.
  if (off + want < f->size) {
    const uint64_t nid = f->nid;  // read before f is moved into the argument
    f = files_.put(nid, std::move(f));
  }
  return read(*f, off, out.first(want));
}

Result<size_t> RafsFs::read(OpenFile& f, uint64_t off, std::span<uint8_t> out) {
  reads_.fetch_add(1, std::memory_order_relaxed);
  auto r = read_bytes(f, off, out, true);
  if (!r) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return r;
  }
  read_bytes_.fetch_add(*r, std::memory_order_relaxed);
  if (opts_.iostats_files) record_read(f.nid, *r);
  return r;
}

Result<size_t> RafsFs::read_bytes(OpenFile& f, uint64_t off, std::span<uint8_t> out, bool demand) {
  auto plan = plan_read(f.chunks, boot_->chunk_size(), f.size, off, out.size(), blob_sizes_,
                        boot_->super_block().blkszbits);
  if (!plan) return std::unexpected(std::move(plan).error().context(fmt::format("nid {}", f.nid)));
  // Submitted before our own fetch so both round trips overlap.
  if (demand && plan->total > 0)
    if (auto ra = f.read_ahead.on_read(off, plan->total, f.size); ra.len > 0) read_ahead(f, ra);
  for (const ReadSegment& s : plan->segments) {
    auto st = blobs_[s.blob_index]->read(s.blob_offset, out.subspan(s.buf_offset, s.len));
    if (!st)
      return std::unexpected(std::move(st).error().context(
          fmt::format("nid {}: blob {} [{:#x}, +{:#x})", f.nid, s.blob_index, s.blob_offset, s.len)));
  }
  return size_t(plan->total);
}

void RafsFs::listed(uint64_t dir, uint64_t index, uint64_t ino, bool first) {
  dir_read_ahead_.listed(dir, index, ino, first);
}

std::vector<uint64_t> RafsFs::files_to_push(uint64_t ino, uint64_t off) {
  if (off != 0) return {};
  return dir_read_ahead_.on_first_read(ino, [&](uint64_t dir, uint64_t from, const auto& fn) {
    (void)walk_dir(dir, from, [&](const DirEntry& e) {
      DirReadAhead::Entry en{e.ino, e.mode == S_IFREG, 0};
      if (en.regular) {
        auto iv = boot_->inode(to_nid(e.ino));
        if (!iv) return true;  // a damaged entry is left to its own READ
        en.size = iv->size;
      }
      return fn(e.next_off - 1, en);
    });
  });
}
Result<size_t> RafsFs::read_for_push(OpenFile& f, uint64_t off, std::span<uint8_t> out) {
  const uint64_t want = bytes_left(f, off, out.size());
  NYDUS_ASSIGN_OR_RETURN(size_t n, read_bytes(f, off, out.first(want), false));
  if (n != want) return fs_answer(EIO, "short read");
  return n;
}

void RafsFs::read_ahead(const OpenFile& f, ReadAheadWindow::Range r) {
  auto plan = plan_read(f.chunks, boot_->chunk_size(), f.size, r.off, r.len, blob_sizes_,
                        boot_->super_block().blkszbits);
  if (!plan) return;  // the demand read reports a bad image
  for (const ReadSegment& s : plan->segments) blobs_[s.blob_index]->read_ahead(s.blob_offset, s.len);
}

void RafsFs::record_read(uint64_t nid, uint64_t bytes) {
  Shard& sh = shards_[nid % kShards];
  Counter* c;
  {
    std::lock_guard lk(sh.mu);
    auto& slot = sh.files[nid];
    if (!slot) slot = std::make_unique<Counter>();
    c = slot.get();  // stable: entries are never erased
  }
  c->reads.fetch_add(1, std::memory_order_relaxed);
  c->bytes.fetch_add(bytes, std::memory_order_relaxed);
}

std::vector<FileStats> RafsFs::file_stats() const {
  std::vector<FileStats> out;
  for (const Shard& sh : shards_) {
    std::lock_guard lk(sh.mu);
    for (const auto& [nid, c] : sh.files)
      out.push_back({nid, c->reads.load(std::memory_order_relaxed), c->bytes.load(std::memory_order_relaxed)});
  }
  std::sort(out.begin(), out.end(), [](const FileStats& a, const FileStats& b) { return a.nid < b.nid; });
  return out;
}

Result<std::string> RafsFs::readlink(uint64_t ino) {
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot_->inode(to_nid(ino)));
  if (!iv.is_symlink()) return fs_answer(EINVAL, "not a symlink");
  return boot_->read_link(iv);
}

Result<std::vector<uint8_t>> RafsFs::getxattr(uint64_t ino, std::string_view name) {
  if (!opts_.enable_xattr) return fs_answer(ENOSYS, "xattrs disabled");
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot_->inode(to_nid(ino)));
  if (iv.xattr_size == 0) return fs_answer(ENODATA, "no xattrs");
  NYDUS_ASSIGN_OR_RETURN(std::vector<format::XattrView> xs, boot_->xattrs(iv));
  for (const auto& x : xs)
    if (x.name == name) return std::vector<uint8_t>(x.value.begin(), x.value.end());
  return fs_answer(ENODATA, "no such xattr");
}

Result<std::string> RafsFs::listxattr(uint64_t ino) {
  if (!opts_.enable_xattr) return fs_answer(ENOSYS, "xattrs disabled");
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot_->inode(to_nid(ino)));
  std::string names;
  if (iv.xattr_size == 0) return names;
  NYDUS_ASSIGN_OR_RETURN(std::vector<format::XattrView> xs, boot_->xattrs(iv));
  for (const auto& x : xs) {
    names += x.name;
    names.push_back('\0');
  }
  return names;
}

struct statvfs RafsFs::statfs() {
  // Block usage needs a tree walk: do it once (the image never changes). A
  // corrupt tree just stops the count early; statfs itself never fails.
  std::call_once(statfs_once_, [&] {
    uint64_t blocks = 0;
    std::unordered_map<uint64_t, bool> seen;
    (void)boot_->walk([&](const std::string&, const format::InodeView& iv) -> Status {
      if (iv.is_reg() && seen.emplace(iv.nid, true).second)
        blocks += iv.size / format::kBlockSize + (iv.size % format::kBlockSize != 0);
      return ok();
    });
    total_blocks_ = blocks;
  });
  struct statvfs sv{};
  sv.f_bsize = format::kBlockSize;
  sv.f_frsize = format::kBlockSize;
  sv.f_blocks = total_blocks_;
  sv.f_files = boot_->super_block().inos;
  sv.f_namemax = 255;
  sv.f_flag = ST_RDONLY;
  return sv;
}

Status RafsFs::access(uint64_t ino, int mask) {
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot_->inode(to_nid(ino)));
  (void)iv;
  if (mask & W_OK) return fs_answer(EROFS, "read-only filesystem");
  return ok();
}

FsMetrics RafsFs::metrics() const {
  auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return FsMetrics{ld(lookups_),     ld(getattrs_),  ld(reads_), ld(read_bytes_),
                   ld(read_errors_), ld(readdirs_), ld(errors_), ld(bootstrap_releases_)};
}

// ---- fuse_lowlevel_ops adapters ------------------------------------------------------

namespace {

Vfs& vfs_of(fuse_req_t req) { return *static_cast<Vfs*>(fuse_req_userdata(req)); }

// `fs`: the image the request went to (null for a pseudo directory).
void reply_error(fuse_req_t req, const Error& e, const char* op, uint64_t ino, RafsFs* fs) {
  // Reader and cache failures are EIO; only a filesystem answer keeps its errno.
  const int err = e.to_errno();
  if (err == EIO) {
    if (fs) fs->count_error();
    spdlog::warn("{} ino {}: {}", op, ino, e.message);
  } else {
    spdlog::debug("{} ino {}: {}", op, ino, e.message);
  }
  fuse_reply_err(req, err);
}

// The image (or pseudo directory) a request's inode belongs to; replies
// with the error itself when there is none.
std::optional<Vfs::Route> route_or_reply(fuse_req_t req, uint64_t ino, const char* op) {
  auto r = vfs_of(req).route(ino);
  if (!r) {
    reply_error(req, r.error(), op, ino, nullptr);
    return std::nullopt;
  }
  return std::move(*r);
}

void op_init(void*, struct fuse_conn_info* conn) { negotiate_connection(conn); }

// Pseudo directories (a shared daemon's mount points) are cached briefly: an
// image mounted or unmounted there shows within a second even if the
// kernel missed the invalidation.
constexpr double kPseudoTimeout = 1.0;

void fill_entry(const FsOptions* opts, const struct stat& st, fuse_entry_param& e) {
  std::memset(&e, 0, sizeof(e));
  e.ino = st.st_ino;
  e.generation = 1;
  e.attr = st;
  e.attr_timeout = opts ? opts->attr_timeout : kPseudoTimeout;
  e.entry_timeout = opts ? opts->entry_timeout : kPseudoTimeout;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto rt = route_or_reply(req, parent, "lookup");
  if (!rt) return;
  RafsFs* fs = rt->fs.get();
  auto r = fs ? fs->lookup(rt->ino, name) : vfs_of(req).pseudo_lookup(rt->ino, name);
  if (!r) return reply_error(req, r.error(), "lookup", parent, fs);
  const FsOptions* opts = fs ? &fs->options() : nullptr;
  fuse_entry_param e;
  if (!*r) {
    // A negative entry the kernel may cache as long as a positive one.
    std::memset(&e, 0, sizeof(e));
    e.entry_timeout = opts ? opts->entry_timeout : kPseudoTimeout;
    fuse_reply_entry(req, &e);
    return;
  }
  struct stat st = **r;
  if (fs) st.st_ino = Vfs::outer(rt->slot, st.st_ino);
  fill_entry(opts, st, e);
  fuse_reply_entry(req, &e);
}

void op_forget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
void op_forget_multi(fuse_req_t req, size_t, struct fuse_forget_data*) { fuse_reply_none(req); }

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  auto rt = route_or_reply(req, ino, "getattr");
  if (!rt) return;
  RafsFs* fs = rt->fs.get();
  auto r = fs ? fs->getattr(rt->ino) : vfs_of(req).pseudo_getattr(rt->ino);
  if (!r) return reply_error(req, r.error(), "getattr", ino, fs);
  r->st_ino = ino;
  fuse_reply_attr(req, &*r, fs ? fs->options().attr_timeout : kPseudoTimeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  auto rt = route_or_reply(req, ino, "readlink");
  if (!rt) return;
  if (!rt->fs) return (void)fuse_reply_err(req, EINVAL);
  auto r = rt->fs->readlink(rt->ino);
  if (!r) return reply_error(req, r.error(), "readlink", ino, rt->fs.get());
  fuse_reply_readlink(req, r->c_str());
}

// No OPEN: ENOSYS makes the kernel stop sending OPEN (and FLUSH and RELEASE)
// for this connection and keep each file's page cache across opens, as
// FOPEN_KEEP_CACHE would. The mount is read-only, so the VFS refuses write
// opens before they reach us. Reads name the inode (RafsFs::read_ino).
void op_open(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, ENOSYS); }

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  auto rt = route_or_reply(req, ino, "read");
  if (!rt) return;
  if (!rt->fs) return (void)fuse_reply_err(req, EISDIR);
  PagePusher* pusher = vfs_of(req).pusher();  // req is gone once answered
  {
    // A request from an io_uring entry is read straight into the entry's
    // reply payload (no copy there afterwards); else into a buffer leased
    // from the process's pool until the reply is sent.
    std::span<uint8_t> out = FuseUring::reply_buffer();
    Scratch lease;
    if (out.size() < size) out = lease.get(size);
    auto r = rt->fs->read_ino(rt->ino, uint64_t(off), out.first(size));
    if (!r) return reply_error(req, r.error(), "read", ino, rt->fs.get());
    fuse_reply_buf(req, reinterpret_cast<const char*>(out.data()), *r);
  }
  // After the reply: the next files of a directory read in order.
  if (PagePusher* p = pusher)
    for (uint64_t next : rt->fs->files_to_push(rt->ino, uint64_t(off)))
      if (!p->push(rt->fs, next, Vfs::outer(rt->slot, next))) break;
}

// Likewise no OPENDIR: the kernel then caches directory entries
// (FOPEN_CACHE_DIR) and sends no RELEASEDIR. FLUSH and FSYNC have no handler
// (libfuse answers ENOSYS, and the kernel stops asking).
void op_opendir(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, ENOSYS); }

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  auto rt = route_or_reply(req, ino, plus ? "readdirplus" : "readdir");
  if (!rt) return;
  RafsFs* fs = rt->fs.get();
  Vfs& vfs = vfs_of(req);
  Scratch lease;  // a pooled reply buffer: no allocation and zeroing per request
  const std::span<uint8_t> raw = lease.get(size);
  char* const buf = reinterpret_cast<char*>(raw.data());
  size_t used = 0;
  bool first_file = off <= 0;  // no regular file listed before this one
  auto add = [&](const DirEntry& e) {
    size_t n;
    const uint64_t kino = fs ? Vfs::outer(rt->slot, e.ino) : e.ino;
    if (plus) {
      fuse_entry_param ep;
      std::optional<struct stat> attr;
      if (e.name != "." && e.name != "..") {
        if (fs) {
          if (auto a = fs->entry_attr(e.ino)) attr = *a;
        } else if (auto a = vfs.pseudo_lookup(rt->ino, e.name); a && *a) {
          attr = **a;
        }
      }
      if (attr) {
        attr->st_ino = kino;
        fill_entry(fs ? &fs->options() : nullptr, *attr, ep);
      } else {
        // Nodeid 0: the kernel lists the name but links no inode (it does
        // not for . and .. anyway). An entry whose inode is damaged then
        // fails its own LOOKUP with EIO instead of the whole listing.
        std::memset(&ep, 0, sizeof(ep));
        ep.attr.st_ino = kino;
        ep.attr.st_mode = e.mode;
      }
      n = fuse_add_direntry_plus(req, buf + used, size - used, e.name.c_str(), &ep, off_t(e.next_off));
    } else {
      struct stat st{};
      st.st_ino = kino;
      st.st_mode = e.mode;
      n = fuse_add_direntry(req, buf + used, size - used, e.name.c_str(), &st, off_t(e.next_off));
    }
    if (n > size - used) return false;  // did not fit: the kernel asks again from this cookie
    used += n;
    if (fs && e.mode == S_IFREG) {
      fs->listed(rt->ino, e.next_off - 1, e.ino, first_file);
      first_file = false;
    }
    return true;
  };
  const uint64_t from = off < 0 ? 0 : uint64_t(off);
  auto st = fs ? fs->readdir(rt->ino, from, add) : vfs.pseudo_readdir(rt->ino, from, add);
  if (!st) return reply_error(req, st.error(), plus ? "readdirplus" : "readdir", ino, fs);
  fuse_reply_buf(req, buf, used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  do_readdir(req, ino, size, off, false);
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  do_readdir(req, ino, size, off, true);
}

void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  auto rt = route_or_reply(req, ino, "statfs");
  if (!rt) return;
  struct statvfs sv{};
  if (rt->fs) {
    sv = rt->fs->statfs();
  } else {
    sv.f_bsize = sv.f_frsize = 4096;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
  }
  fuse_reply_statfs(req, &sv);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto rt = route_or_reply(req, ino, "getxattr");
  if (!rt) return;
  if (!rt->fs) return (void)fuse_reply_err(req, ENODATA);
  auto r = rt->fs->getxattr(rt->ino, name);
  if (!r) return reply_error(req, r.error(), "getxattr", ino, rt->fs.get());
  if (size == 0) return (void)fuse_reply_xattr(req, r->size());  // size probe
  if (size < r->size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, reinterpret_cast<const char*>(r->data()), r->size());
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto rt = route_or_reply(req, ino, "listxattr");
  if (!rt) return;
  Result<std::string> r = std::string();
  if (rt->fs) r = rt->fs->listxattr(rt->ino);
  if (!r) return reply_error(req, r.error(), "listxattr", ino, rt->fs.get());
  if (size == 0) return (void)fuse_reply_xattr(req, r->size());
  if (size < r->size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, r->data(), r->size());
}

void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  auto rt = route_or_reply(req, ino, "access");
  if (!rt) return;
  if (!rt->fs) return (void)fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
  auto r = rt->fs->access(rt->ino, mask);
  if (!r) return reply_error(req, r.error(), "access", ino, rt->fs.get());
  fuse_reply_err(req, 0);
}

// Everything that would change the image.
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, struct fuse_file_info*) { fuse_reply_err(req, EROFS); }
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, EROFS);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { fuse_reply_err(req, EROFS); }
void op_removexattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) { fuse_reply_err(req, EROFS); }
void op_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}

const fuse_lowlevel_ops& lowlevel_ops() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = op_init;
    o.lookup = op_lookup;
    o.forget = op_forget;
    o.forget_multi = op_forget_multi;
    o.getattr = op_getattr;
    o.readlink = op_readlink;
    o.open = op_open;
    o.read = op_read;
    o.opendir = op_opendir;
    o.readdir = op_readdir;
    o.readdirplus = op_readdirplus;
    o.statfs = op_statfs;
    o.getxattr = op_getxattr;
    o.listxattr = op_listxattr;
    o.access = op_access;
    o.setattr = op_setattr;
    o.mknod = op_mknod;
    o.mkdir = op_mkdir;
    o.unlink = op_unlink;
    o.rmdir = op_unlink;
    o.symlink = op_symlink;
    o.rename = op_rename;
    o.link = op_link;
    o.write = op_write;
    o.setxattr = op_setxattr;
    o.removexattr = op_removexattr;
    o.create = op_create;
    o.fallocate = op_fallocate;
    return o;
  }();
  return ops;
}

// mountinfo escapes space, tab, newline and backslash as octal.
std::string mountinfo_escape(const std::string& p) {
  std::string out;
  for (char c : p) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\')
      out += fmt::format("\\{:03o}", static_cast<unsigned char>(c));
    else
      out.push_back(c);
  }
  return out;
}

// The FUSE connection id (minor of the mount's st_dev) of the newest mount at
// `mountpoint`, read from mountinfo: stat() on the mount would block until the
// loop answers INIT.
std::optional<unsigned> fuse_conn_id(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  const std::string want = mountinfo_escape(mountpoint);
  std::string line;
  std::optional<unsigned> id;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string mid, parent, devno, root, mp;
    if (!(ls >> mid >> parent >> devno >> root >> mp) || mp != want) continue;
    const auto sep = line.find(" - ");
    if (sep == std::string::npos || line.compare(sep + 3, 4, "fuse") != 0) continue;
    const auto colon = devno.find(':');
    if (colon == std::string::npos) continue;
    id = static_cast<unsigned>(std::stoul(devno.substr(colon + 1)));
  }
  return id;
}

}  // namespace

void negotiate_connection(struct fuse_conn_info* conn) {
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_PARALLEL_DIROPS);  // lookups in one directory need no kernel serialisation
  // Always READDIRPLUS: a listing brings every entry's attributes, so a walk
  // that stats what it lists sends no LOOKUP per entry (find over 50,000
  // files: 2.3 s with the kernel's adaptive choice, 0.3 s without).
  want(FUSE_CAP_READDIRPLUS);
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_CACHE_SYMLINKS);   // immutable image: symlink targets can stay cached
  // Nothing changes under the kernel's page cache, so no invalidation on mtime.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
}

// ---- FuseSession -----------------------------------------------------------------------

Result<std::unique_ptr<FuseSession>> FuseSession::mount(std::shared_ptr<Vfs> vfs, const std::string& mountpoint,
                                                        const SessionOptions& opts) {
  std::error_code ec;
  auto canon = std::filesystem::canonical(mountpoint, ec);
  if (ec)
    return std::unexpected(
        Error{Errc::kInvalidArgument, ec.value(), fmt::format("mountpoint {}: {}", mountpoint, ec.message())});
  if (!std::filesystem::is_directory(canon, ec))
    return std::unexpected(
        Error{Errc::kInvalidArgument, ENOTDIR, fmt::format("mountpoint {} is not a directory", mountpoint)});

  std::unique_ptr<FuseSession> s(new FuseSession());
  s->vfs_ = std::move(vfs);
  s->mountpoint_ = canon.string();
  s->opts_ = opts;

  // fsname is a comma-separated mount option: keep it to safe characters.
  std::string fsname = opts.fsname;
  std::replace(fsname.begin(), fsname.end(), ',', '_');
  std::string mopts = "ro,default_permissions,fsname=" + fsname;
  if (opts.allow_other) mopts += ",allow_other";
  std::vector<std::string> argv_s = {"nydusd", "-o", mopts};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(int(argv.size()), argv.data());
  s->se_ = fuse_session_new(&args, &lowlevel_ops(), sizeof(fuse_lowlevel_ops), s->vfs_.get());
  fuse_opt_free_args(&args);  // libfuse may have added arguments of its own (found by LSan)
  if (!s->se_) return make_error(Errc::kIo, "fuse_session_new failed (bad mount options?)");
  if (fuse_session_mount(s->se_, s->mountpoint_.c_str()) != 0) {
    fuse_session_destroy(s->se_);
    s->se_ = nullptr;
    return make_error(Errc::kIo, fmt::format("cannot mount FUSE at {} (is /dev/fuse available?)", s->mountpoint_));
  }
  NYDUS_ASSIGN_OR_RETURN(s->channel_, FuseChannel::create(fuse_session_fd(s->se_), {}, opts.uring, opts.max_threads,
                                                                  opts.failover));
  NYDUS_TRY(s->channel_->install(s->se_));
  s->conn_id_ = fuse_conn_id(s->mountpoint_);
  s->watch_unmounts();
  s->start_pusher();
  return s;
}

Result<std::unique_ptr<FuseSession>> FuseSession::adopt(std::shared_ptr<Vfs> vfs, const std::string& mountpoint,
                                                        int fd, std::vector<uint8_t> init,
                                                        const SessionOptions& opts) {
  std::unique_ptr<FuseSession> s(new FuseSession());
  s->vfs_ = std::move(vfs);
  s->mountpoint_ = mountpoint;
  s->opts_ = opts;
  std::vector<std::string> argv_s = {"nydusd"};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(int(argv.size()), argv.data());
  s->se_ = fuse_session_new(&args, &lowlevel_ops(), sizeof(fuse_lowlevel_ops), s->vfs_.get());
  fuse_opt_free_args(&args);
  if (!s->se_) {
    ::close(fd);
    return make_error(Errc::kIo, "fuse_session_new failed");
  }
  auto ch = FuseChannel::create(fd, std::move(init), opts.uring, opts.max_threads, opts.failover);
  if (!ch) {
    ::close(fd);
    return std::unexpected(std::move(ch).error());
  }
  s->channel_ = std::move(*ch);
  s->adopted_ = true;
  s->channel_->set_poke_path(s->mountpoint_);
  // From here the session owns fd (fuse_session_destroy closes it).
  NYDUS_TRY(s->channel_->install(s->se_));
  s->conn_id_ = fuse_conn_id(s->mountpoint_);
  s->watch_unmounts();
  s->start_pusher();
  return s;
}

// An image unmounted from a shared connection: the kernel forgets its name
// at once rather than when its entry times out.
void FuseSession::watch_unmounts() {
  vfs_->set_invalidator([se = se_](uint64_t parent, const std::string& name) {
    // The entry (the kernel only acts on one it holds), and the parent's
    // cached listing, which the kernel keeps when no dentry was looked up.
    int rc = fuse_lowlevel_notify_inval_entry(se, parent, name.c_str(), name.size());
    if (rc != 0 && rc != -ENOENT) spdlog::debug("invalidate {}: {}", name, std::strerror(-rc));
    rc = fuse_lowlevel_notify_inval_inode(se, parent, 0, 0);
    if (rc != 0 && rc != -ENOENT) spdlog::debug("invalidate directory {}: {}", parent, std::strerror(-rc));
  });
}

bool dir_read_ahead_from_env() {
  const char* e = std::getenv("NYDUS_DIR_READ_AHEAD");
  return !(e && std::string_view(e) == "0");
}

void FuseSession::start_pusher() {
  if (!opts_.dir_read_ahead) return;
  // One thread: a second pushed no faster on 2 CPUs, warm or cold
  // (bench/rootfs.sh, tar 2.21 vs 2.10 s warm, 3.10 vs 3.19 s cold).
  constexpr unsigned kThreads = 1;
  pusher_ = std::make_unique<PagePusher>(
      [se = se_](uint64_t kernel_ino, uint64_t off, std::span<const uint8_t> bytes) {
        fuse_bufvec bv = FUSE_BUFVEC_INIT(bytes.size());
        bv.buf[0].mem = const_cast<uint8_t*>(bytes.data());
        return fuse_lowlevel_notify_store(se, kernel_ino, off_t(off), &bv, fuse_buf_copy_flags(0));
      },
      kThreads);
  vfs_->set_pusher(pusher_.get());
}

// Before the loop ends: a push may wait in the kernel for a page that a
// READ being served has locked, and only a running loop answers that READ.
void FuseSession::stop_pusher() {
  if (!pusher_) return;
  vfs_->set_pusher(nullptr);
  pusher_->stop();
}

int FuseSession::fd() const { return channel_ ? channel_->fd() : -1; }
uint64_t FuseSession::resent_requests() const { return channel_ ? channel_->resent_requests() : 0; }
std::string FuseSession::transport() const { return channel_ ? channel_->transport() : "classic"; }
uint64_t FuseSession::uring_requests() const { return channel_ ? channel_->uring_requests() : 0; }
uint64_t FuseSession::pushed_files() const { return pusher_ ? pusher_->pushed_files() : 0; }
uint64_t FuseSession::pushed_bytes() const { return pusher_ ? pusher_->pushed_bytes() : 0; }
std::shared_ptr<runtime::FsIoStats> FuseSession::io_stats() const { return channel_ ? channel_->io_stats() : nullptr; }
std::vector<uint8_t> FuseSession::init_message() const {
  return channel_ ? channel_->init_message() : std::vector<uint8_t>{};
}

void FuseSession::leave() {
  {
    std::lock_guard lk(stop_mu_);
    leaving_ = true;
  }
  stop();
}

Status FuseSession::start() {
  if (loop_.joinable() || !se_) return make_error(Errc::kInternal, "session already started or not mounted");
  running_ = true;
  started_ = true;
  loop_ = std::thread([this] {
    // Signals belong to the daemon's main thread; libfuse's workers inherit this mask.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, std::max(1u, opts_.max_threads));
    // Every worker may stay idle: with fewer, libfuse ends a worker each time
    // a burst is over and starts a new one for the next (3,000 thread starts,
    // each with a fresh stack and read buffer, in a cold tar of a rootfs).
    fuse_loop_cfg_set_idle_threads(cfg, std::max(1u, opts_.max_threads));
    const int rc = fuse_session_loop_mt(se_, cfg);
    fuse_loop_cfg_destroy(cfg);
    if (rc != 0) spdlog::info("FUSE loop at {} ended: {}", mountpoint_, rc);
    // Ended by itself (external umount, connection abort): let libfuse tidy
    // up the mount. After stop() we detached it already; destroy closes the fd.
    if (!stopping_) fuse_session_unmount(se_);
    running_ = false;
  });
  return ok();
}

void FuseSession::stop() {
  std::lock_guard lk(stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (!se_) return;
  stop_pusher();
  stopping_ = true;
  fuse_session_exit(se_);
  // Workers wait for requests in poll(): wake them all; each answers the
  // request it holds, sees the exit flag and ends.
  if (channel_) channel_->wake();
  if (loop_.joinable()) {
    // Ring threads (FUSE over io_uring) serve requests too: wait for both.
    auto busy = [&] { return running_ || (channel_ && channel_->uring_running()); };
    for (int i = 0; i < 300 && busy(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (busy() && conn_id_ && !leaving_) {
      // A worker stuck in a slow read (a backend that does not answer): abort.
      spdlog::warn("mount {}: a request is still running, aborting FUSE connection {}", mountpoint_, *conn_id_);
      std::ofstream(fmt::format("/sys/fs/fuse/connections/{}/abort", *conn_id_)) << "1";
    }
    loop_.join();
  }
  if (channel_) channel_->join_uring();  // woken above; before the session they use goes
  // Lazily, so a busy mount (an open file, a cwd inside) goes too; libfuse
  // also frees what it kept of the mount. A mount handed over stays.
  if (!leaving_ && adopted_) {
    // libfuse did not mount this one (another daemon did): unmount it ourselves.
    if (::umount2(mountpoint_.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
      spdlog::warn("umount {}: {}", mountpoint_, std::strerror(errno));
  } else if (!leaving_) {
    fuse_session_unmount(se_);
  }
  vfs_->set_invalidator(nullptr);  // before se_ goes
  fuse_session_destroy(se_);  // closes our fd; a successor holds its own
  se_ = nullptr;
}

FuseSession::~FuseSession() { stop(); }

}  // namespace nydus::fuse
