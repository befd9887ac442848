#include "snapshotter/grpc_service.h"

#include <spdlog/spdlog.h>

namespace nydus::snapshotter {
namespace {

grpc::Status to_status(const SnapError& e, std::string_view method) {
  auto level = (e.code == Code::kNotFound || e.code == Code::kAlreadyExists) ? spdlog::level::debug
                                                                              : spdlog::level::warn;
  spdlog::log(level, "{}: {} ({})", method, e.message, code_name(e.code));
  return grpc::Status(grpc_code(e.code), e.message);
}

Labels to_labels(const google::protobuf::Map<std::string, std::string>& m) { return Labels(m.begin(), m.end()); }

template <class Resp>
void put_mounts(const std::vector<Mount>& mounts, Resp* resp) {
  for (const auto& m : mounts) {
    auto* pm = resp->add_mounts();
    pm->set_type(m.type);
    pm->set_source(m.source);
    pm->set_target(m.target);
    for (const auto& o : m.options) pm->add_options(o);
  }
}

void put_time(int64_t ns, google::protobuf::Timestamp* t) {
  t->set_seconds(ns / 1000000000);
  t->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

void put_info(const Info& i, pb::Info* out) {
  out->set_name(i.name);
  out->set_parent(i.parent);
  out->set_kind(static_cast<pb::Kind>(static_cast<int>(i.kind)));
  put_time(i.created_ns, out->mutable_created_at());
  put_time(i.updated_ns, out->mutable_updated_at());
  for (const auto& [k, v] : i.labels) (*out->mutable_labels())[k] = v;
}

}  // namespace

grpc::StatusCode grpc_code(Code c) {
  switch (c) {
    case Code::kInvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case Code::kAlreadyExists: return grpc::StatusCode::ALREADY_EXISTS;
    case Code::kFailedPrecondition: return grpc::StatusCode::FAILED_PRECONDITION;
    case Code::kUnavailable: return grpc::StatusCode::UNAVAILABLE;
    case Code::kInternal: return grpc::StatusCode::INTERNAL;
    default: return grpc::StatusCode::UNKNOWN;
  }
}

grpc::Status SnapshotsService::Prepare(grpc::ServerContext*, const pb::PrepareSnapshotRequest* req,
                                       pb::PrepareSnapshotResponse* resp) {
  spdlog::debug("Prepare key={} parent={}", req->key(), req->parent());
  auto r = sn_.prepare(req->key(), req->parent(), to_labels(req->labels()));
  if (!r) return to_status(r.error(), "Prepare");
  put_mounts(*r, resp);
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::View(grpc::ServerContext*, const pb::ViewSnapshotRequest* req,
                                    pb::ViewSnapshotResponse* resp) {
  spdlog::debug("View key={} parent={}", req->key(), req->parent());
  auto r = sn_.view(req->key(), req->parent(), to_labels(req->labels()));
  if (!r) return to_status(r.error(), "View");
  put_mounts(*r, resp);
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::Mounts(grpc::ServerContext*, const pb::MountsRequest* req, pb::MountsResponse* resp) {
  auto r = sn_.mounts(req->key());
  if (!r) return to_status(r.error(), "Mounts");
  put_mounts(*r, resp);
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::Commit(grpc::ServerContext*, const pb::CommitSnapshotRequest* req,
                                      google::protobuf::Empty*) {
  spdlog::debug("Commit name={} key={}", req->name(), req->key());
  auto r = sn_.commit(req->name(), req->key(), to_labels(req->labels()));
  if (!r) return to_status(r.error(), "Commit");
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::Remove(grpc::ServerContext*, const pb::RemoveSnapshotRequest* req,
                                      google::protobuf::Empty*) {
  spdlog::debug("Remove key={}", req->key());
  auto r = sn_.remove(req->key());
  if (!r) return to_status(r.error(), "Remove");
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::Stat(grpc::ServerContext*, const pb::StatSnapshotRequest* req,
                                    pb::StatSnapshotResponse* resp) {
  auto r = sn_.stat(req->key());
  if (!r) return to_status(r.error(), "Stat");
  put_info(*r, resp->mutable_info());
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::Update(grpc::ServerContext*, const pb::UpdateSnapshotRequest* req,
                                      pb::UpdateSnapshotResponse* resp) {
  Info info;
  info.name = req->info().name();
  info.labels = to_labels(req->info().labels());
  std::vector<std::string> paths(req->update_mask().paths().begin(), req->update_mask().paths().end());
  auto r = sn_.update(info, paths);
  if (!r) return to_status(r.error(), "Update");
  put_info(*r, resp->mutable_info());
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::List(grpc::ServerContext*, const pb::ListSnapshotsRequest* req,
                                    grpc::ServerWriter<pb::ListSnapshotsResponse>* writer) {
  std::vector<std::string> filters(req->filters().begin(), req->filters().end());
  // Batches as containerd's own service sends them (100 infos per message).
  pb::ListSnapshotsResponse batch;
  bool ok = true;
  auto r = sn_.walk(filters, [&](const Info& i) {
    put_info(i, batch.add_info());
    if (batch.info_size() >= 100) {
      ok = ok && writer->Write(batch);
      batch.Clear();
    }
  });
  if (!r) return to_status(r.error(), "List");
  if (batch.info_size() > 0) ok = ok && writer->Write(batch);
  return ok ? grpc::Status::OK : grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
}

grpc::Status SnapshotsService::Usage(grpc::ServerContext*, const pb::UsageRequest* req, pb::UsageResponse* resp) {
  auto r = sn_.usage(req->key());
  if (!r) return to_status(r.error(), "Usage");
  resp->set_size(r->size);
  resp->set_inodes(r->inodes);
  return grpc::Status::OK;
}

grpc::Status SnapshotsService::Cleanup(grpc::ServerContext*, const pb::CleanupRequest*, google::protobuf::Empty*) {
  auto r = sn_.cleanup();
  if (!r) return to_status(r.error(), "Cleanup");
  return grpc::Status::OK;
}

}  // namespace nydus::snapshotter
