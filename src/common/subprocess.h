// Running a short-lived helper program (docker credential helpers, kubelet
// credential provider plugins): its input on stdin, its stdout (and stderr)
// captured up to a bound, under a deadline after which it is killed. The
// caller's environment is passed on, plus any extra variables.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace nydus {

struct ProcessOptions {
  bool search_path = false;       // argv[0] looked up on PATH (else a path)
  bool merge_stderr = false;      // stderr into the same capture as stdout
  std::vector<std::string> env;   // "NAME=value" added to (and overriding) the inherited environment
  std::chrono::milliseconds timeout{30'000};
  size_t max_output = 64 << 10;   // each stream keeps at most this much; the rest is read and dropped
};

struct ProcessOutput {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;
  std::string err;     // empty when merge_stderr
};

// Runs argv with `input` on stdin. Errors: the program could not be started
// (kNotFound, with the OS's reason), or it did not exit before the deadline
// (kIo; it is killed). A non-zero exit is not an error: see exit_code.
Result<ProcessOutput> run_process(const std::vector<std::string>& argv, std::string_view input,
                                  const ProcessOptions& opts = {});

}  // namespace nydus
