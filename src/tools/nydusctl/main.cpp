// nydusctl: query and drive a running nydusd through its API socket.
//
//   nydusctl --sock /run/nydusd/api.sock info
//   nydusctl --sock S mount --source /x/bootstrap --mountpoint /sub --config cfg.json
//   nydusctl --sock S metrics [backend|cache|fsstats] [-I secs] [--id /sub] [--raw]   (upstream's form)
//   nydusctl --sock S set log-level debug | umount -m /sub
//   nydusctl --sock S blob add entry.json | blob list --domain D | blob rm --domain D [--blob B]
//   nydusctl --sock S sendfd | takeover | start      (live upgrade / failover)
//   nydusctl supervise --path P                       (hold a daemon's state and fd across restarts)
#include <cstdio>
#include <fstream>
#include <thread>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "api/api_client.h"
#include "supervise.h"

namespace {

using nydus::api::ApiClient;
using nlohmann::json;

int fail(const nydus::Error& e) {
  fmt::print(stderr, "nydusctl: {}\n", e.message);
  return 1;
}

std::string scalar(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Human form: nested objects become indented "key: value" lines.
void print_tree(const json& j, int indent) {
  std::string pad(static_cast<size_t>(indent) * 2, ' ');
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      if (v.is_object() && !v.empty()) {
        fmt::print("{}{}:\n", pad, k);
        print_tree(v, indent + 1);
      } else if (v.is_array() && !v.empty() && (v.front().is_object() || v.front().is_array())) {
        fmt::print("{}{}:\n", pad, k);
        for (const auto& e : v) {
          print_tree(e, indent + 1);
          fmt::print("{}  -\n", pad);
        }
      } else {
        fmt::print("{}{}: {}\n", pad, k, scalar(v));
      }
    }
  } else {
    fmt::print("{}{}\n", pad, scalar(j));
  }
}

void print_json(const json& j, bool raw) {
  if (raw) {
    fmt::print("{}\n", j.dump(-1, ' ', false, json::error_handler_t::replace));
  } else {
    print_tree(j, 0);
  }
}

// How the daemon serves its filesystems: a fanotify mount says so in its
// backend (fs_type), an fscache daemon has an "fscache" section, and the
// rest is FUSE. A singleton may mix FUSE and fanotify mounts: both are named.
std::string driver_of(const json& info) {
  bool fuse = info.contains("fuse_transport"), fanotify = false;
  if (auto b = info.find("backend_collection"); b != info.end() && b->is_object())
    for (const auto& [mp, backend] : b->items()) {
      const bool fan = backend.is_object() && backend.value("fs_type", "") == "fanotify";
      (fan ? fanotify : fuse) = true;
    }
  std::vector<std::string> parts;
  if (auto f = info.find("fscache"); f != info.end() && f->is_object()) parts.push_back("fscache (kernel EROFS)");
  if (fuse) parts.push_back("fusedev");
  if (fanotify) parts.push_back("fanotify (kernel EROFS)");
  if (parts.empty()) return "-";
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) out += ", " + parts[i];
  return out;
}

void print_info(const json& info, bool raw) {
  if (raw || !info.is_object()) return print_json(info, raw);
  auto field = [&](const char* k) { return info.contains(k) ? scalar(info[k]) : std::string("-"); };
  fmt::print("Process ID: {}\n", field("id"));
  fmt::print("State:      {}\n", field("state"));
  if (auto v = info.find("version"); v != info.end() && v->is_object()) {
    auto vf = [&](const char* k) { return v->contains(k) ? scalar((*v)[k]) : std::string("-"); };
    fmt::print("Version:    {} ({}, {}, built {})\n", vf("package_ver"), vf("git_commit"),
               vf("profile"), vf("build_time"));
  }
  if (auto s = info.find("supervisor"); s != info.end() && !s->is_null())
    fmt::print("Supervisor: {}\n", scalar(*s));
  fmt::print("Driver:     {}\n", driver_of(info));
  if (auto t = info.find("fuse_transport"); t != info.end() && t->is_string())
    fmt::print("FUSE:       {}\n", t->get<std::string>());
  if (auto b = info.find("backend_collection"); b != info.end() && b->is_object()) {
    fmt::print("Mounts:\n");
    for (const auto& [mp, backend] : b->items()) {
      fmt::print("  {}\n", mp);
      if (backend.is_object()) print_tree(backend, 2);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Query and control a running nydusd through its HTTP API socket"};
  app.require_subcommand(1);
  std::string sock;
  bool raw = false;
  app.add_option("-S,--sock", sock, "nydusd API socket path");
  app.add_flag("-r,--raw", raw, "print the reply JSON as is");

  auto* info = app.add_subcommand("info", "show daemon information");
  std::string id;
  bool latest = false;
  // Upstream's form: `metrics backend|cache|fsstats [-I seconds]`; without a
  // category, the filesystem metrics.
  std::string category;
  unsigned interval = 0;
  auto* metrics = app.add_subcommand("metrics", "metrics: backend, cache or fsstats (default)");
  metrics->add_option("category", category, "backend | cache | fsstats")
      ->check(CLI::IsMember({"backend", "cache", "fsstats"}));
  metrics->add_option("-I,--interval", interval, "print again every this many seconds");
  metrics->add_option("-i,--id", id, "mountpoint (filesystem id)");
  auto* backend = app.add_subcommand("backend", "storage backend metrics");
  backend->add_option("-i,--id", id, "backend id");
  auto* blobcache = app.add_subcommand("blobcache", "blob cache metrics");
  blobcache->add_option("-i,--id", id, "blob cache id");
  auto* files = app.add_subcommand("files", "per-file access metrics");
  files->add_option("-i,--id", id, "mountpoint (filesystem id)");
  files->add_flag("--latest", latest, "only files read since the last query");
  auto* inflight = app.add_subcommand("inflight", "requests in flight");

  std::string source, mountpoint, config_file, fs_type = "rafs";
  auto* mount = app.add_subcommand("mount", "mount a filesystem instance");
  mount->add_option("-s,--source", source, "bootstrap path")->required();
  mount->add_option("-m,--mountpoint", mountpoint, "mountpoint inside the daemon")->required();
  mount->add_option("-c,--config", config_file, "storage config JSON file")->check(CLI::ExistingFile);
  mount->add_option("-t,--type", fs_type, "filesystem type")->capture_default_str();
  auto* umount = app.add_subcommand("umount", "unmount a filesystem instance");
  auto* umount_m = umount->add_option("-m,--mountpoint", mountpoint, "mountpoint inside the daemon (upstream form)");
  umount->add_option("mountpoint", mountpoint, "mountpoint inside the daemon")->excludes(umount_m);
  std::string set_kind, set_value;
  auto* set = app.add_subcommand("set", "configure the daemon: set log-level trace|debug|info|warn|error");
  set->add_option("KIND", set_kind, "log-level")->required()->check(CLI::IsMember({"log-level"}));
  set->add_option("VALUE", set_value, "the value")->required();

  // fscache mode: blob objects.
  auto* blob = app.add_subcommand("blob", "fscache blob objects (/api/v2/blobs)");
  blob->require_subcommand(1);
  std::string entry_file, domain, blob_id;
  auto* blob_add = blob->add_subcommand("add", "register a bootstrap entry (upstream BlobCacheEntry JSON)");
  blob_add->add_option("entry", entry_file, "JSON file")->required()->check(CLI::ExistingFile);
  auto* blob_list = blob->add_subcommand("list", "list the objects of a domain");
  blob_list->add_option("-d,--domain", domain, "domain id (empty: images registered without one)");
  blob_list->add_option("-b,--blob", blob_id, "one object");
  auto* blob_rm = blob->add_subcommand("rm", "remove objects of a domain, or a blob's cached files");
  blob_rm->add_option("-d,--domain", domain, "domain id");
  blob_rm->add_option("-b,--blob", blob_id, "bootstrap or blob id");

  auto* sendfd = app.add_subcommand("sendfd", "send the daemon's state and kernel fd to its supervisor");
  auto* takeover = app.add_subcommand("takeover", "make an --upgrade daemon take over from the supervisor");
  auto* start = app.add_subcommand("start", "start serving after a takeover");
  std::string sup_path;
  auto* supervise = app.add_subcommand("supervise", "hold a daemon's state and fd across restarts");
  supervise->add_option("-p,--path", sup_path, "supervisor socket (nydusd --supervisor)")->required();

  // -r/--raw may follow the subcommand, as upstream's global flag.
  for (auto* sub : app.get_subcommands({})) sub->fallthrough();
  CLI11_PARSE(app, argc, argv);

  if (*supervise) return run_supervisor(sup_path);
  if (sock.empty()) {
    fmt::print(stderr, "nydusctl: --sock is required\n");
    return 1;
  }
  ApiClient client(sock);
  auto done = [&](const nydus::Status& s, const std::string& what) {
    if (!s) return fail(s.error());
    fmt::print("{}\n", what);
    return 0;
  };
  auto show = [&](const nydus::Result<json>& r) {
    if (!r) return fail(r.error());
    print_json(*r, raw);
    return 0;
  };

  if (*info) {
    auto r = client.daemon_info();
    if (!r) return fail(r.error());
    print_info(*r, raw);
    return 0;
  }
  if (*metrics) {
    const std::string kind = category == "backend" ? "backend" : category == "cache" ? "blobcache" : "";
    for (;;) {
      if (int rc = show(client.metrics(kind, id)); rc != 0 || interval == 0) return rc;
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::seconds(interval));
    }
  }
  if (*set) return done(client.set_log_level(set_value), "log level set to " + set_value);
  if (*backend) return show(client.metrics("backend", id));
  if (*blobcache) return show(client.metrics("blobcache", id));
  if (*files) return show(client.metrics("files", id, latest));
  if (*inflight) return show(client.metrics("inflight"));
  if (*mount) {
    std::string config = "{}";
    if (!config_file.empty()) {
      std::ifstream in(config_file, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      if (!in) {
        fmt::print(stderr, "nydusctl: cannot read {}\n", config_file);
        return 1;
      }
      config = ss.str();
    }
    auto r = client.mount(mountpoint, source, config, fs_type);
    if (!r) return fail(r.error());
    fmt::print("mounted {} at {}\n", source, mountpoint);
    return 0;
  }
  if (*blob_add) {
    std::ifstream in(entry_file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return done(client.create_blob(ss.str()), "registered " + entry_file);
  }
  if (*blob_list) return show(client.list_blobs(domain, blob_id));
  if (*blob_rm) {
    if (domain.empty() && blob_id.empty()) {
      fmt::print(stderr, "nydusctl: blob rm needs --domain and/or --blob\n");
      return 1;
    }
    return done(client.delete_blobs(domain, blob_id), "removed");
  }
  if (*sendfd) return done(client.send_fd(), "state sent to the supervisor");
  if (*takeover) return done(client.takeover(), "taken over");
  if (*start) return done(client.start(), "started");
  if (*umount) {
    if (mountpoint.empty()) {
      fmt::print(stderr, "nydusctl: umount needs -m MOUNTPOINT\n");
      return 1;
    }
    auto r = client.umount(mountpoint);
    if (!r) return fail(r.error());
    fmt::print("unmounted {}\n", mountpoint);
    return 0;
  }
  return 0;
}
