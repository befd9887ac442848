#include "builder/chunk_pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "format/compress.h"

namespace nydus::builder {

namespace {

struct Slot {
  std::vector<uint8_t> raw;
  std::vector<uint8_t> packed;
  ChunkResult result;
  std::optional<Error> error;
  bool ready = false;
};

Status read_chunk(const ChunkJob& job, std::vector<uint8_t>& buf) {
  buf.resize(job.length);
  int fd = ::open(job.path->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return sys_error("open " + *job.path);
  size_t done = 0;
  while (done < job.length) {
    ssize_t n = ::pread(fd, buf.data() + done, job.length - done, off_t(job.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return sys_error("read " + *job.path, e);
    }
    if (n == 0) {
      ::close(fd);
      return errorf(Errc::kIo, "{}: file shrank while building (short read at {})", *job.path, job.offset + done);
    }
    done += size_t(n);
  }
  ::close(fd);
  return ok();
}

Status process(const ChunkJob& job, const PipelineOptions& o, Slot& s) {
  NYDUS_TRY(read_chunk(job, s.raw));
  s.result.job = &job;
  s.result.digest = format::compute_digest(o.digester, s.raw);
  s.result.crc32 = format::crc32c(s.raw);
  s.result.raw = s.raw;
  NYDUS_ASSIGN_OR_RETURN(bool shrunk, format::compress(o.compressor, s.raw, s.packed));
  s.result.compressed = shrunk;
  s.result.stored = shrunk ? std::span<const uint8_t>(s.packed) : std::span<const uint8_t>(s.raw);
  return ok();
}

}  // namespace

Status run_chunk_pipeline(const std::vector<ChunkJob>& jobs, const PipelineOptions& opts,
                          const std::function<Status(const ChunkResult&)>& commit) {
  unsigned threads = opts.threads ? opts.threads : std::max(1u, std::thread::hardware_concurrency());
  const size_t window = size_t(threads) * 4;
  std::vector<Slot> slots(window);

  std::mutex mu;
  std::condition_variable cv_work, cv_done;
  size_t next_job = 0;   // next job a worker may take
  size_t committed = 0;  // jobs handed to commit (their slots are free again)
  bool stop = false;

  auto worker = [&] {
    for (;;) {
      size_t j;
      {
        std::unique_lock lk(mu);
        cv_work.wait(lk, [&] { return stop || next_job >= jobs.size() || next_job < committed + window; });
        if (stop || next_job >= jobs.size()) return;
        j = next_job++;
      }
      Slot& s = slots[j % window];
      auto st = process(jobs[j], opts, s);
      {
        std::lock_guard lk(mu);
        if (!st) s.error = std::move(st).error();
        s.ready = true;
      }
      cv_done.notify_all();
    }
  };

  std::vector<std::thread> pool;
  for (unsigned i = 0; i < threads; i++) pool.emplace_back(worker);

  Status result = ok();
  for (size_t j = 0; j < jobs.size(); j++) {
    Slot& s = slots[j % window];
    {
      std::unique_lock lk(mu);
      cv_done.wait(lk, [&] { return s.ready; });
    }
    // The slot is ours until `committed` moves past it: no lock needed.
    if (s.error) {
      result = std::unexpected(std::move(*s.error));
    } else {
      result = commit(s.result);
    }
    {
      std::lock_guard lk(mu);
      s.ready = false;
      s.error.reset();
      committed = j + 1;
      if (!result) stop = true;
    }
    cv_work.notify_all();
    if (!result) break;
  }
  {
    std::lock_guard lk(mu);
    stop = true;
  }
  cv_work.notify_all();
  for (auto& t : pool) t.join();
  return result;
}

}  // namespace nydus::builder
