// The CRI image service proxy of the CRI keychain ([remote.auth]
// enable_cri_keychain, image_service_address; default
// /run/containerd/containerd.sock): the snapshotter's gRPC socket also
// serves runtime.v1.ImageService, the kubelet's --image-service-endpoint
// points at it, and every call is forwarded to the real CRI image service.
// PullImage's AuthConfig is kept in CriCredentials for the image's
// snapshots; RemoveImage drops it. Messages pass through whole (fields the
// reduced .proto does not name are forwarded as unknown fields).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "cri/cri_image_service.grpc.pb.h"
#include "snapshotter/cri_credentials.h"

namespace nydus::snapshotter {

class CriImageProxy final : public runtime::v1::ImageService::Service {
 public:
  // `backend`: the real CRI image service's unix socket path (or a gRPC target with a scheme).
  CriImageProxy(std::shared_ptr<CriCredentials> credentials, const std::string& backend);

  grpc::Status ListImages(grpc::ServerContext* ctx, const runtime::v1::ListImagesRequest* req,
                          runtime::v1::ListImagesResponse* resp) override;
  grpc::Status ImageStatus(grpc::ServerContext* ctx, const runtime::v1::ImageStatusRequest* req,
                           runtime::v1::ImageStatusResponse* resp) override;
  grpc::Status PullImage(grpc::ServerContext* ctx, const runtime::v1::PullImageRequest* req,
                         runtime::v1::PullImageResponse* resp) override;
  grpc::Status RemoveImage(grpc::ServerContext* ctx, const runtime::v1::RemoveImageRequest* req,
                           runtime::v1::RemoveImageResponse* resp) override;
  grpc::Status ImageFsInfo(grpc::ServerContext* ctx, const runtime::v1::ImageFsInfoRequest* req,
                           runtime::v1::ImageFsInfoResponse* resp) override;

 private:
  std::shared_ptr<CriCredentials> credentials_;
  std::unique_ptr<runtime::v1::ImageService::Stub> backend_;
};

}  // namespace nydus::snapshotter
