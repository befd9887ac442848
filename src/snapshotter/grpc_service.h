// containerd.services.snapshots.v1.Snapshots over gRPC, answering from a
// Snapshotter; errors become the gRPC codes containerd's errdefs maps back.
#pragma once

#include <memory>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "snapshotter/snapshotter.h"

namespace nydus::snapshotter {

namespace pb = ::containerd::services::snapshots::v1;

class SnapshotsService final : public pb::Snapshots::Service {
 public:
  explicit SnapshotsService(Snapshotter& sn) : sn_(sn) {}

  grpc::Status Prepare(grpc::ServerContext*, const pb::PrepareSnapshotRequest*, pb::PrepareSnapshotResponse*) override;
  grpc::Status View(grpc::ServerContext*, const pb::ViewSnapshotRequest*, pb::ViewSnapshotResponse*) override;
  grpc::Status Mounts(grpc::ServerContext*, const pb::MountsRequest*, pb::MountsResponse*) override;
  grpc::Status Commit(grpc::ServerContext*, const pb::CommitSnapshotRequest*, google::protobuf::Empty*) override;
  grpc::Status Remove(grpc::ServerContext*, const pb::RemoveSnapshotRequest*, google::protobuf::Empty*) override;
  grpc::Status Stat(grpc::ServerContext*, const pb::StatSnapshotRequest*, pb::StatSnapshotResponse*) override;
  grpc::Status Update(grpc::ServerContext*, const pb::UpdateSnapshotRequest*, pb::UpdateSnapshotResponse*) override;
  grpc::Status List(grpc::ServerContext*, const pb::ListSnapshotsRequest*,
                    grpc::ServerWriter<pb::ListSnapshotsResponse>*) override;
  grpc::Status Usage(grpc::ServerContext*, const pb::UsageRequest*, pb::UsageResponse*) override;
  grpc::Status Cleanup(grpc::ServerContext*, const pb::CleanupRequest*, google::protobuf::Empty*) override;

 private:
  Snapshotter& sn_;
};

grpc::StatusCode grpc_code(Code c);

}  // namespace nydus::snapshotter
