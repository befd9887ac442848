// A queue of jobs for a fixed set of worker threads: push from a producer,
// pop (waiting) in each worker, close() to let the workers drain what is
// queued and then return.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace nydus {

template <class Job>
class WorkQueue {
 public:
  void push(Job job) {
    {
      std::lock_guard lk(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

  // push() unless `limit` jobs wait already (a producer that must not pile
  // up work no worker keeps pace with); false if dropped.
  bool try_push(Job job, size_t limit) {
    {
      std::lock_guard lk(mu_);
      if (closed_ || jobs_.size() >= limit) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

  // The next job; nullopt once closed and drained.
  std::optional<Job> pop() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return closed_ || !jobs_.empty(); });
    if (jobs_.empty()) return std::nullopt;
    Job j = std::move(jobs_.front());
    jobs_.pop_front();
    return j;
  }

  void close() {
    {
      std::lock_guard lk(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

  // close() without the drain: jobs still queued are dropped (optional
  // work at a process's exit). Returns how many.
  size_t abandon() {
    std::deque<Job> dropped;
    {
      std::lock_guard lk(mu_);
      closed_ = true;
      dropped.swap(jobs_);
    }
    cv_.notify_all();
    return dropped.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool closed_ = false;
};

}  // namespace nydus
