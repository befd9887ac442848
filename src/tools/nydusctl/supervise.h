// `nydusctl supervise`: a stand-in for nydus-snapshotter's supervisor. It
// keeps the last state and fd a daemon sent (PUT .../sendfd) and hands them
// to the next daemon that connects to receive them (PUT .../takeover), so a
// daemon can be upgraded or restarted after a crash without losing its
// kernel connection (the fd outlives every daemon while we hold it).
#pragma once

#include <string>

int run_supervisor(const std::string& path);
