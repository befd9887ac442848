// cri-client: one CRI v1 ImageService call, for the tests of the CRI keychain
// (the snapshotter's image service proxy in front of containerd's CRI plugin).
//   cri-client SOCKET pull IMAGE [USER PASSWORD [SERVER_ADDRESS]]   prints the image ref
//   cri-client SOCKET pull-auth IMAGE BASE64_AUTH                    AuthConfig.auth instead
//   cri-client SOCKET list | status IMAGE | rm IMAGE | fsinfo         the response, text format
// The reply's fields the reduced .proto does not name print by number
// (protobuf's text format of unknown fields). Exit 1 on a gRPC error.
#include <google/protobuf/text_format.h>
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <string>

#include "cri/cri_image_service.grpc.pb.h"

namespace v1 = runtime::v1;

template <class M>
int print(const grpc::Status& st, const M& m) {
  if (!st.ok()) {
    std::cerr << "cri-client: " << st.error_code() << " " << st.error_message() << "\n";
    return 1;
  }
  std::string text;
  google::protobuf::TextFormat::PrintToString(m, &text);
  std::cout << text;
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: cri-client SOCKET pull|pull-auth|list|status|rm|fsinfo [ARGS]\n";
    return 2;
  }
  auto stub = v1::ImageService::NewStub(
      grpc::CreateChannel(std::string("unix://") + argv[1], grpc::InsecureChannelCredentials()));
  const std::string op = argv[2];
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  if ((op == "pull" || op == "pull-auth") && argc >= 4) {
    v1::PullImageRequest req;
    req.mutable_image()->set_image(argv[3]);
    if (op == "pull-auth" && argc >= 5) req.mutable_auth()->set_auth(argv[4]);
    if (op == "pull" && argc >= 6) {
      req.mutable_auth()->set_username(argv[4]);
      req.mutable_auth()->set_password(argv[5]);
      if (argc >= 7) req.mutable_auth()->set_server_address(argv[6]);
    }
    v1::PullImageResponse resp;
    auto st = stub->PullImage(&ctx, req, &resp);
    if (!st.ok()) return print(st, resp);
    std::cout << resp.image_ref() << "\n";
    return 0;
  }
  if (op == "list") {
    v1::ListImagesResponse resp;
    return print(stub->ListImages(&ctx, v1::ListImagesRequest(), &resp), resp);
  }
  if (op == "fsinfo") {
    v1::ImageFsInfoResponse resp;
    return print(stub->ImageFsInfo(&ctx, v1::ImageFsInfoRequest(), &resp), resp);
  }
  if ((op == "status" || op == "rm") && argc >= 4) {
    if (op == "status") {
      v1::ImageStatusRequest req;
      req.mutable_image()->set_image(argv[3]);
      v1::ImageStatusResponse resp;
      return print(stub->ImageStatus(&ctx, req, &resp), resp);
    }
    v1::RemoveImageRequest req;
    req.mutable_image()->set_image(argv[3]);
    v1::RemoveImageResponse resp;
    return print(stub->RemoveImage(&ctx, req, &resp), resp);
  }
  std::cerr << "cri-client: bad arguments\n";
  return 2;
}
