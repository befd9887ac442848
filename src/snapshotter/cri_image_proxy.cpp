#include "snapshotter/cri_image_proxy.h"

#include <spdlog/spdlog.h>

namespace nydus::snapshotter {

namespace {

namespace v1 = runtime::v1;

// What the CRI client may send and receive (containerd's own defaults are 16 MiB).
constexpr int kMaxMessage = 16 << 20;

// The caller's deadline (the kubelet's runtime request timeout) and its
// cancellation carry over to the forwarded call.
std::unique_ptr<grpc::ClientContext> forward_context(grpc::ServerContext* server) {
  return grpc::ClientContext::FromServerContext(*server);
}

CriAuthConfig auth_of(const v1::AuthConfig& a) {
  return CriAuthConfig{a.username(), a.password(), a.auth(), a.server_address(), a.identity_token(),
                       a.registry_token()};
}

}  // namespace

CriImageProxy::CriImageProxy(std::shared_ptr<CriCredentials> credentials, const std::string& backend)
    : credentials_(std::move(credentials)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessage);
  args.SetMaxSendMessageSize(kMaxMessage);
  const std::string target = backend.find("://") == std::string::npos ? "unix://" + backend : backend;
  backend_ = v1::ImageService::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
}

grpc::Status CriImageProxy::ListImages(grpc::ServerContext* ctx, const v1::ListImagesRequest* req,
                                       v1::ListImagesResponse* resp) {
  return backend_->ListImages(forward_context(ctx).get(), *req, resp);
}

grpc::Status CriImageProxy::ImageStatus(grpc::ServerContext* ctx, const v1::ImageStatusRequest* req,
                                        v1::ImageStatusResponse* resp) {
  return backend_->ImageStatus(forward_context(ctx).get(), *req, resp);
}

grpc::Status CriImageProxy::PullImage(grpc::ServerContext* ctx, const v1::PullImageRequest* req,
                                      v1::PullImageResponse* resp) {
  // Kept before the pull: the CRI plugin prepares the image's snapshots
  // (and this snapshotter asks for the credential) while the call runs.
  const std::string& image = req->image().image();
  if (req->has_auth()) {
    credentials_->remember(image, auth_of(req->auth()));
    spdlog::info("CRI keychain: credentials for {} kept from PullImage", image);
  }
  return backend_->PullImage(forward_context(ctx).get(), *req, resp);
}

grpc::Status CriImageProxy::RemoveImage(grpc::ServerContext* ctx, const v1::RemoveImageRequest* req,
                                        v1::RemoveImageResponse* resp) {
  credentials_->forget(req->image().image());
  spdlog::info("CRI keychain: credentials for {} forgotten (RemoveImage)", req->image().image());
  return backend_->RemoveImage(forward_context(ctx).get(), *req, resp);
}

grpc::Status CriImageProxy::ImageFsInfo(grpc::ServerContext* ctx, const v1::ImageFsInfoRequest* req,
                                        v1::ImageFsInfoResponse* resp) {
  return backend_->ImageFsInfo(forward_context(ctx).get(), *req, resp);
}

}  // namespace nydus::snapshotter
