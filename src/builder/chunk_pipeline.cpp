#include "builder/chunk_pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "format/compress.h"
#include "common/io.h"

namespace nydus::builder {

namespace {

// Buffers are allocated once per slot and never zero-filled: resizing a
// std::vector per chunk cost a memset of up to a chunk each time.
struct Slot {
  std::unique_ptr<uint8_t[]> raw;
  std::unique_ptr<uint8_t[]> packed;
  size_t packed_cap = 0;
  ChunkResult result;
  std::optional<Error> error;
  bool ready = false;
};

Status read_chunk(const ChunkJob& job, uint8_t* buf) {
  int fd = ::open(job.path->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return sys_error("open " + *job.path);
  Status s = read_full_at(fd, job.offset, std::span(buf, job.length), "read " + *job.path);
  ::close(fd);
  // End of file here means the source changed under us, not a corrupt image.
  if (!s && s.error().code == Errc::kCorrupt)
    return errorf(Errc::kIo, "{}: file shrank while building ({})", *job.path, s.error().message);
  return s;
}

Status process(const ChunkJob& job, const PipelineOptions& o, Slot& s) {
  const size_t cap = format::compress_bound(o.compressor, job.length);
  if (!s.raw) s.raw.reset(new uint8_t[o.max_chunk]);
  if (s.packed_cap < cap) {
    s.packed.reset(new uint8_t[cap]);
    s.packed_cap = cap;
  }
  if (job.length > o.max_chunk) return make_error(Errc::kInternal, "chunk larger than the pipeline's buffers");
  std::span<const uint8_t> raw;
  if (job.path) {
    NYDUS_TRY(read_chunk(job, s.raw.get()));
    raw = {s.raw.get(), job.length};
  } else {
    if (job.data.size() != job.length) return make_error(Errc::kInternal, "chunk job data/length mismatch");
    raw = job.data;
  }
  s.result.job = &job;
  s.result.digest = format::compute_digest(o.digester, raw);
  s.result.crc32 = format::crc32c(raw);
  s.result.raw = raw;
  NYDUS_ASSIGN_OR_RETURN(auto packed, format::compress_into(o.compressor, raw, {s.packed.get(), s.packed_cap}));
  s.result.compressed = packed.has_value();
  s.result.stored = packed ? std::span<const uint8_t>(s.packed.get(), *packed) : raw;
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
