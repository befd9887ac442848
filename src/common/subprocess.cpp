#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

extern char** environ;

namespace nydus {

namespace {

struct Pipe {
  int r = -1, w = -1;
  ~Pipe() { close_both(); }
  void close_r() {
    if (r >= 0) ::close(r), r = -1;
  }
  void close_w() {
    if (w >= 0) ::close(w), w = -1;
  }
  void close_both() { close_r(), close_w(); }
};

Result<void> open_pipe(Pipe& p) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return sys_error("pipe");
  p.r = fds[0], p.w = fds[1];
  return {};
}

// The inherited environment with `extra` added; an extra NAME replaces the inherited one.
std::vector<std::string> merged_env(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  auto name_of = [](std::string_view kv) { return kv.substr(0, kv.find('=')); };
  for (char** e = environ; e && *e; ++e) {
    const std::string_view kv(*e);
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || name_of(x) == name_of(kv);
    if (!replaced) env.emplace_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// write() with SIGPIPE blocked, so a child that exits without reading its
// stdin gives EPIPE here rather than killing the caller.
ssize_t write_no_sigpipe(int fd, const char* data, size_t len) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  const ssize_t n = ::write(fd, data, len);
  const int err = errno;
  if (n < 0 && err == EPIPE && !was_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return n;
}

}  // namespace

Result<ProcessOutput> run_process(const std::vector<std::string>& argv, std::string_view input,
                                  const ProcessOptions& opts) {
  if (argv.empty() || argv[0].empty()) return make_error(Errc::kInvalidArgument, "run_process: no program");
  Pipe in, out, err;
  NYDUS_TRY(open_pipe(in));
  NYDUS_TRY(open_pipe(out));
  if (!opts.merge_stderr) NYDUS_TRY(open_pipe(err));

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in.r, 0);
  posix_spawn_file_actions_adddup2(&fa, out.w, 1);
  posix_spawn_file_actions_adddup2(&fa, opts.merge_stderr ? out.w : err.w, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::vector<std::string> env_strings = merged_env(opts.env);
  std::vector<char*> envp;
  for (const auto& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = opts.search_path ? posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), envp.data())
                                  : posix_spawn(&pid, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  in.close_r(), out.close_w(), err.close_w();
  if (rc != 0) return errorf(Errc::kNotFound, "{}: {}", argv[0], std::strerror(rc));

  for (int fd : {in.w, out.r, err.r})
    if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (input.empty()) in.close_w();
  ProcessOutput result;
  const auto deadline = std::chrono::steady_clock::now() + opts.timeout;
  bool timed_out = false;
  char buf[4096];
  while (in.w >= 0 || out.r >= 0 || err.r >= 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p[3];
    nfds_t n = 0;
    if (in.w >= 0) p[n++] = {in.w, POLLOUT, 0};
    if (out.r >= 0) p[n++] = {out.r, POLLIN, 0};
    if (err.r >= 0) p[n++] = {err.r, POLLIN, 0};
    const int ready = ::poll(p, n, int(std::min<int64_t>(left, 1 << 30)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    for (nfds_t i = 0; i < n; ++i) {
      if (p[i].revents == 0) continue;
      if (p[i].fd == in.w) {
        const ssize_t w = write_no_sigpipe(in.w, input.data(), input.size());
        if (w > 0) input.remove_prefix(size_t(w));
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || input.empty()) in.close_w();
        continue;
      }
      Pipe& src = p[i].fd == out.r ? out : err;
      std::string& dst = p[i].fd == out.r ? result.out : result.err;
      const ssize_t r = ::read(src.r, buf, sizeof buf);
      if (r > 0) {
        if (dst.size() < opts.max_output) dst.append(buf, std::min(size_t(r), opts.max_output - dst.size()));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        src.close_r();
      }
    }
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return errorf(Errc::kIo, "{} did not finish in {} ms (killed)", argv[0], opts.timeout.count());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace nydus
