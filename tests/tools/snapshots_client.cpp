// A tiny containerd snapshots v1 client for tests where containerd itself is
// too heavy (the QEMU guest): each call is what containerd sends.
//   snapshots-client SOCKET prepare KEY PARENT [LABEL=VALUE]...
//   snapshots-client SOCKET commit NAME KEY [LABEL=VALUE]...
//   snapshots-client SOCKET mounts KEY
//   snapshots-client SOCKET remove KEY
// prepare/mounts print one mount per line: "TYPE SOURCE OPTION,OPTION,...".
// A gRPC error prints "ERROR <code name> <message>" to stderr; exit 1.
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <string>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

namespace snap = containerd::services::snapshots::v1;

namespace {

constexpr const char* kSnapshotter = "nydus";

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::OK: return "OK";
    case grpc::INVALID_ARGUMENT: return "InvalidArgument";
    case grpc::NOT_FOUND: return "NotFound";
    case grpc::ALREADY_EXISTS: return "AlreadyExists";
    case grpc::FAILED_PRECONDITION: return "FailedPrecondition";
    case grpc::UNAVAILABLE: return "Unavailable";
    case grpc::INTERNAL: return "Internal";
    default: return "Unknown";
  }
}

int fail(const grpc::Status& st) {
  std::cerr << "ERROR " << code_name(st.error_code()) << " " << st.error_message() << "\n";
  return 1;
}

template <class Map>
bool put_labels(Map* labels, int argc, char** argv, int from) {
  for (int i = from; i < argc; ++i) {
    std::string kv = argv[i];
    auto eq = kv.find('=');
    if (eq == std::string::npos) return false;
    (*labels)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return true;
}

template <class Mounts>
void print_mounts(const Mounts& mounts) {
  for (const auto& m : mounts) {
    std::cout << m.type() << " " << m.source() << " ";
    for (int i = 0; i < m.options_size(); ++i) std::cout << (i ? "," : "") << m.options(i);
    std::cout << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: snapshots-client SOCKET prepare|commit|mounts|remove ARGS...\n";
    return 2;
  }
  auto stub = snap::Snapshots::NewStub(grpc::CreateChannel(std::string("unix://") + argv[1],
                                                           grpc::InsecureChannelCredentials()));
  const std::string cmd = argv[2];
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  ctx.AddMetadata("containerd-namespace", "default");
  if (cmd == "prepare" && argc >= 5) {
    snap::PrepareSnapshotRequest req;
    req.set_snapshotter(kSnapshotter);
    req.set_key(argv[3]);
    req.set_parent(argv[4]);
    if (!put_labels(req.mutable_labels(), argc, argv, 5)) return 2;
    snap::PrepareSnapshotResponse resp;
    auto st = stub->Prepare(&ctx, req, &resp);
    if (!st.ok()) return fail(st);
    print_mounts(resp.mounts());
    return 0;
  }
  if (cmd == "commit" && argc >= 5) {
    snap::CommitSnapshotRequest req;
    req.set_snapshotter(kSnapshotter);
    req.set_name(argv[3]);
    req.set_key(argv[4]);
    if (!put_labels(req.mutable_labels(), argc, argv, 5)) return 2;
    google::protobuf::Empty resp;
    auto st = stub->Commit(&ctx, req, &resp);
    return st.ok() ? 0 : fail(st);
  }
  if (cmd == "mounts") {
    snap::MountsRequest req;
    req.set_snapshotter(kSnapshotter);
    req.set_key(argv[3]);
    snap::MountsResponse resp;
    auto st = stub->Mounts(&ctx, req, &resp);
    if (!st.ok()) return fail(st);
    print_mounts(resp.mounts());
    return 0;
  }
  if (cmd == "remove") {
    snap::RemoveSnapshotRequest req;
    req.set_snapshotter(kSnapshotter);
    req.set_key(argv[3]);
    google::protobuf::Empty resp;
    auto st = stub->Remove(&ctx, req, &resp);
    return st.ok() ? 0 : fail(st);
  }
  std::cerr << "unknown command or missing arguments: " << cmd << "\n";
  return 2;
}
