#include "fuse/page_pusher.h"

#include <fcntl.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "fuse/rafs_fs.h"

namespace nydus::fuse {

PagePusher::PagePusher(Store store, unsigned threads) : st_(std::make_shared<State>()) {
  st_->store = std::move(store);
  for (unsigned i = 0; i < std::max(1u, threads); ++i) {
    try {
      {
        std::lock_guard lk(st_->done_mu);
        st_->running++;
      }
      std::thread([st = st_] {
        sigset_t all;  // signals belong to the daemon's main thread
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
        run(st);
      }).detach();
      started_ = true;
    } catch (const std::system_error& e) {
      std::lock_guard lk(st_->done_mu);
      st_->running--;
      // Without threads, readers READ every file themselves: slower, not wrong.
      spdlog::warn("read-ahead across files: cannot start a thread: {}", e.what());
      break;
    }
  }
  if (!started_) st_->stopping = true;
}

PagePusher::~PagePusher() { stop(); }

bool PagePusher::push(std::shared_ptr<RafsFs> fs, uint64_t ino, uint64_t kernel_ino) {
  if (st_->stopping.load(std::memory_order_relaxed)) return false;
  return st_->queue.try_push(Job{std::move(fs), ino, kernel_ino}, kMaxQueued);
}

void PagePusher::stop(std::chrono::milliseconds wait) {
  st_->stopping.store(true);
  st_->queue.close();
  {
    std::unique_lock lk(st_->store_mu);  // stores in progress finish first
  }
  if (!started_) return;
  started_ = false;
  std::unique_lock lk(st_->done_mu);
  if (!st_->done_cv.wait_for(lk, wait, [&] { return st_->running == 0; }))
    spdlog::warn("read-ahead across files: a read is still running; it ends on its own");
}

void PagePusher::run(const std::shared_ptr<State>& st) {
  std::vector<uint8_t> buf(kPiece);  // one piece at a time: a small, steady footprint
  while (auto job = st->queue.pop()) {
    if (st->stopping.load(std::memory_order_relaxed)) continue;  // drain without work
    if (push_file(*st, *job, buf)) {
      st->files.fetch_add(1, std::memory_order_relaxed);
    }
  }
  std::lock_guard lk(st->done_mu);
  st->running--;
  st->done_cv.notify_all();
}

bool PagePusher::push_file(State& st, const Job& job, std::span<uint8_t> buf) {
  auto f = job.fs->open(job.ino, O_RDONLY);
  if (!f) {
    spdlog::debug("page push of ino {}: {}", job.ino, f.error().message);
    return false;
  }
  for (uint64_t off = 0; off < (*f)->size;) {
    auto n = job.fs->read_for_push(**f, off, buf);
    if (!n || *n == 0) {
      if (!n) spdlog::debug("page push of ino {}: {}", job.ino, n.error().message);
      return false;
    }
    int rc;
    {
      std::shared_lock lk(st.store_mu);
      if (st.stopping.load()) return false;
      rc = st.store(job.kernel_ino, off, std::span<const uint8_t>(buf.data(), *n));
    }
    if (rc != 0) {
      // ENOENT: the kernel forgot the inode meanwhile.
      if (rc != -ENOENT) spdlog::debug("page push of ino {}: {}", job.ino, std::strerror(-rc));
      return false;
    }
    st.bytes.fetch_add(*n, std::memory_order_relaxed);
    off += *n;
  }
  return true;
}

}  // namespace nydus::fuse
