// fuse-floor: the least a FUSE daemon can cost, as a yardstick for nydusd.
//
// Serves a copy of a directory tree that it reads into memory at start-up
// (attributes, symlink targets and file bytes), through libfuse's low-level
// API, with nydusd's connection settings (negotiate_connection: READDIRPLUS
// always, cached symlinks, parallel dirops), no OPEN/OPENDIR (ENOSYS, as
// nydusd) and nydusd's entry and attribute timeouts. Every request is
// answered from memory: no image to parse, no cache to look up, no disk.
// What a workload still costs over kernel EROFS on this mount is what the
// FUSE protocol and the transport cost, which no daemon can take away
// (bench/rootfs.sh, setups fuse-floor*).
//
//   fuse-floor [--nydus-channel | --nydus-uring] SOURCE_DIR MOUNTPOINT
//
// Transports:
// - default: libfuse's own multi-threaded loop (workers sleep in read()
//   until the kernel has a request), as a typical libfuse daemon;
// - --nydus-channel, --nydus-uring: nydusd's own FUSE channel
//   (src/fuse/fuse_channel.h: its polling on /dev/fuse, or FUSE over
//   io_uring) with nydusd's 4 workers, so that nydusd's rows minus these
//   are what its own request handling costs.
// Stops on SIGINT/SIGTERM or unmount. Not part of the product.
#define FUSE_USE_VERSION 312
#include <dirent.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "fuse/fuse_channel.h"
#include "fuse/rafs_fs.h"

namespace {

struct Node {
  struct stat st{};
  std::string name;
  std::string bytes;  // file contents or symlink target
  std::vector<uint32_t> children;  // indexes, sorted by name (EROFS's order)
};
// nodes[i] has FUSE node id i + 1; nodes[0] is the root (FUSE_ROOT_ID).
std::vector<Node> nodes;
const nydus::fuse::FsOptions kNydusFs;  // nydusd's entry and attribute timeouts for an image

bool load(const std::string& path, uint32_t self) {
  Node& n = nodes[self];
  n.st.st_ino = self + 1;
  if (S_ISLNK(n.st.st_mode)) {
    std::string t(4096, '\0');
    ssize_t r = readlink(path.c_str(), t.data(), t.size());
    if (r < 0) return false;
    t.resize(size_t(r));
    nodes[self].bytes = std::move(t);
    return true;
  }
  if (S_ISREG(n.st.st_mode)) {
    auto bytes = nydus::read_file_bounded(path, size_t(n.st.st_size));
    if (!bytes) return false;
    nodes[self].bytes = std::move(*bytes);
    return true;
  }
  if (!S_ISDIR(n.st.st_mode)) return true;
  DIR* d = opendir(path.c_str());
  if (!d) return false;
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (auto& name : names) {
    std::string p = path + "/" + name;
    Node c;
    if (lstat(p.c_str(), &c.st) != 0) return false;
    c.name = name;
    nodes.push_back(std::move(c));  // invalidates `n`
    uint32_t idx = uint32_t(nodes.size() - 1);
    nodes[self].children.push_back(idx);
    if (!load(p, idx)) return false;
  }
  return true;
}

Node* node(fuse_ino_t ino) { return ino >= 1 && ino <= nodes.size() ? &nodes[ino - 1] : nullptr; }

fuse_entry_param entry_of(const Node& n) {
  fuse_entry_param e{};
  e.ino = n.st.st_ino;
  e.attr = n.st;
  e.attr_timeout = kNydusFs.attr_timeout;
  e.entry_timeout = kNydusFs.entry_timeout;
  return e;
}

void op_init(void*, fuse_conn_info* conn) { nydus::fuse::negotiate_connection(conn); }

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Node* p = node(parent);
  if (!p) return void(fuse_reply_err(req, ENOENT));
  auto it = std::lower_bound(p->children.begin(), p->children.end(), name,
                             [](uint32_t i, const char* s) { return nodes[i].name < s; });
  if (it == p->children.end() || nodes[*it].name != name) return void(fuse_reply_err(req, ENOENT));
  fuse_entry_param e = entry_of(nodes[*it]);
  fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Node* n = node(ino);
  if (!n) return void(fuse_reply_err(req, ENOENT));
  fuse_reply_attr(req, &n->st, kNydusFs.attr_timeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  Node* n = node(ino);
  if (!n || !S_ISLNK(n->st.st_mode)) return void(fuse_reply_err(req, EINVAL));
  fuse_reply_readlink(req, n->bytes.c_str());
}

// Offsets: entry i of a listing carries offset i + 1 (where the next read starts).
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Node* n = node(ino);
  if (!n || !S_ISDIR(n->st.st_mode)) return void(fuse_reply_err(req, ENOTDIR));
  std::string buf(size, '\0');
  size_t used = 0;
  for (size_t i = size_t(std::max<off_t>(off, 0)); i < n->children.size(); ++i) {
    const Node& c = nodes[n->children[i]];
    fuse_entry_param e = entry_of(c);
    size_t len = fuse_add_direntry_plus(req, buf.data() + used, size - used, c.name.c_str(), &e, off_t(i + 1));
    if (len > size - used) break;
    used += len;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Node* n = node(ino);
  if (!n || !S_ISREG(n->st.st_mode)) return void(fuse_reply_err(req, EISDIR));
  size_t len = n->bytes.size();
  size_t from = std::min(size_t(std::max<off_t>(off, 0)), len);
  fuse_reply_buf(req, n->bytes.data() + from, std::min(size, len - from));
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc == 4 ? argv[1] : "";
  bool known = mode.empty() || mode == "--nydus-channel" || mode == "--nydus-uring";
  if (argc != 3 + int(!mode.empty()) || !known) {
    fprintf(stderr, "usage: fuse-floor [--nydus-channel | --nydus-uring] SOURCE_DIR MOUNTPOINT\n");
    return 2;
  }
  std::string src = argv[argc - 2];
  const char* mnt = argv[argc - 1];
  nodes.emplace_back();
  if (lstat(src.c_str(), &nodes[0].st) != 0 || !S_ISDIR(nodes[0].st.st_mode) || !load(src, 0)) {
    fprintf(stderr, "fuse-floor: cannot read %s: %s\n", src.c_str(), strerror(errno));
    return 1;
  }
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.readlink = op_readlink;
  ops.readdirplus = op_readdirplus;
  ops.read = op_read;
  char prog[] = "fuse-floor", o[] = "-o", opts[] = "ro,default_permissions,allow_other,fsname=fuse-floor";
  char* args_v[] = {prog, o, opts, nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, args_v);
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), nullptr);
  if (!se || fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, mnt) != 0) {
    fprintf(stderr, "fuse-floor: cannot mount %s\n", mnt);
    return 1;
  }
  const unsigned nydus_threads = nydus::fuse::SessionOptions{}.max_threads;  // nydusd's default (--threads)
  std::unique_ptr<nydus::fuse::FuseChannel> channel;
  if (mode == "--nydus-channel" || mode == "--nydus-uring") {
    auto uring = mode == "--nydus-uring" ? nydus::fuse::UringMode::kOn : nydus::fuse::UringMode::kOff;
    auto ch = nydus::fuse::FuseChannel::create(fuse_session_fd(se), {}, uring, nydus_threads);
    if (!ch || !(*ch)->install(se)) {
      fprintf(stderr, "fuse-floor: nydusd's channel failed\n");
      return 1;
    }
    channel = std::move(*ch);
  }
  fprintf(stderr, "fuse-floor: %zu entries in memory, serving %s %s\n", nodes.size(), mnt,
          mode.empty() ? "(libfuse loop)" : mode.c_str());
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  if (channel) {  // as nydusd's FuseSession::start
    fuse_loop_cfg_set_max_threads(cfg, nydus_threads);
    fuse_loop_cfg_set_idle_threads(cfg, nydus_threads);
  }
  int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  if (channel) {
    channel->wake();
    channel->join_uring();
  }
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  return rc ? 1 : 0;
}
