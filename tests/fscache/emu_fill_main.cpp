// fscache-emu-fill: fill cache files through the real nydusd and the kernel
// emulator, for the host check (tests/integration/fscache_emulator.sh): the
// files it leaves are what the kernel's cachefiles would hold, so mounting
// them with the host's file-backed EROFS must give the source tree.
//
//   fscache-emu-fill --nydusd BIN --bootstrap B --blob-dir D --store DIR [--fsid F]
//                    [--threads N] [--piece BYTES] [--profile 6.12|6.8|5.19]
//   fscache-emu-fill --nydusd BIN --entry FILE --store DIR ...
//       registers FILE as the PUT /api/v2/blobs body as written (a client's own,
//       e.g. nydus-snapshotter's BindBlob) and mounts its id in its domain_id
// Prints "bootstrap <path>" and "blob <path>" lines (device-table order).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "api/api_client.h"
#include "fscache/kernel_emulator.h"
#include <gtest/gtest.h>  // fake_http_server.h reports through gtest

#include "storage/fake_http_server.h"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nydus::fscache::emu::Emulator;
using nydus::fscache::emu::Profile;

int main(int argc, char** argv) {
  CLI::App app{"fill cache files through nydusd and the cachefiles emulator"};
  std::string nydusd, boot, blob_dir, store, fsid = "img", profile = "6.12", entry_file;
  unsigned threads = 4;
  uint64_t piece = 128 << 10;
  app.add_option("--nydusd", nydusd)->required();
  auto* boot_opt = app.add_option("--bootstrap", boot);
  auto* dir_opt = app.add_option("--blob-dir", blob_dir);
  app.add_option("--entry", entry_file)->excludes(boot_opt)->excludes(dir_opt);
  app.add_option("--store", store)->required();
  app.add_option("--fsid", fsid);
  app.add_option("--threads", threads);
  app.add_option("--piece", piece);
  app.add_option("--profile", profile)->check(CLI::IsMember({"6.12", "6.8", "5.19"}));
  CLI11_PARSE(app, argc, argv);

  const Profile p = profile == "6.12" ? Profile::linux_6_12() : profile == "6.8" ? Profile::linux_6_8() : Profile::linux_5_19();
  fs::create_directories(store);
  const fs::path dir = fs::absolute(store);
  Emulator emu(p, dir / "cache");
  if (auto st = emu.listen(dir / "dev.sock"); !st) {
    std::fprintf(stderr, "emulator: %s\n", st.error().message.c_str());
    return 1;
  }
  nydus::storage::test::PeerProcess daemon(
      {nydusd, "singleton", "--fscache", (dir / "fscache").string(), "--fscache-device", (dir / "dev.sock").string(),
       "--apisock", (dir / "api.sock").string(), "--fscache-threads", std::to_string(threads)},
      (dir / "nydusd.log").string());
  nydus::api::ApiClient api((dir / "api.sock").string(), 10s);
  bool up = false;
  for (int i = 0; i < 200 && !(up = api.daemon_info().has_value()); ++i) std::this_thread::sleep_for(25ms);
  if (!up || !emu.wait_bound(5s)) {
    std::fprintf(stderr, "nydusd did not come up (see %s)\n", (dir / "nydusd.log").c_str());
    return 1;
  }
  std::string domain;
  std::string body;
  if (!entry_file.empty()) {
    std::ifstream in(entry_file);
    body.assign(std::istreambuf_iterator<char>(in), {});
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!in || j.is_discarded() || !j.is_object() || !j.value("id", nlohmann::json()).is_string()) {
      std::fprintf(stderr, "--entry %s: not a blob entry with an \"id\"\n", entry_file.c_str());
      return 1;
    }
    fsid = j["id"].get<std::string>();
    if (j.contains("domain_id") && j["domain_id"].is_string()) domain = j["domain_id"].get<std::string>();
  } else if (boot.empty() || blob_dir.empty()) {
    std::fprintf(stderr, "--bootstrap and --blob-dir (or --entry) are required\n");
    return 1;
  }
  if (body.empty())
    body = nlohmann::json{
        {"type", "bootstrap"},
        {"id", fsid},
        {"config_v2",
         {{"version", 2},
          {"backend", {{"type", "localfs"}, {"localfs", {{"dir", fs::absolute(blob_dir).string()}}}}},
          {"cache", {{"type", "fscache"}, {"fscache", {{"work_dir", (dir / "work").string()}}}}},
          {"metadata_path", fs::absolute(boot).string()}}}}.dump();
  if (auto st = api.create_blob(body); !st) {
    std::fprintf(stderr, "register: %s\n", st.error().message.c_str());
    return 1;
  }
  auto m = emu.mount(fsid, domain);
  if (!m) {
    std::fprintf(stderr, "mount: %s\n", m.error().message.c_str());
    return 1;
  }
  int rc = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int> objs{emu.boot_object(*m)};
  for (int b : emu.blob_objects(*m)) objs.push_back(b);
  for (int o : objs)
    if (auto st = emu.read_all(o, threads, piece); !st) {
      std::fprintf(stderr, "read: %s\n", st.error().message.c_str());
      rc = 1;
    }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)emu.umount(*m);
  if (auto st = emu.check_no_leaks(5s); !st) {
    std::fprintf(stderr, "%s\n", st.error().message.c_str());
    rc = 1;
  }
  for (const auto& v : emu.violations()) {
    std::fprintf(stderr, "violation: %s\n", v.c_str());
    rc = 1;
  }
  const auto c = emu.counters();
  std::fprintf(stderr, "filled in %.3f s: %llu READs, %llu OPENs, %llu follow-ups\n", secs,
               (unsigned long long)c.reads_sent, (unsigned long long)c.opens_sent, (unsigned long long)c.follow_ups);
  std::printf("bootstrap %s\n", emu.backing_path(objs[0]).c_str());
  for (size_t i = 1; i < objs.size(); ++i) std::printf("blob %s\n", emu.backing_path(objs[i]).c_str());
  return rc;
}
