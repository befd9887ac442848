// Credential renewal (nydus-snapshotter's [remote.auth] credential_renewal_interval,
// snapshot/renewal.go): every interval, for each image served by a running
// nydusd, the renewable providers (the docker config) are read again; when
// they give credentials other than those in the image's daemon config, the
// config file is rewritten (a restarted daemon reads them) and the running
// daemon is told through PUT /api/v1/config?id=<id> {"registry_auth": base64},
// id "/" for a dedicated daemon, "/<snapshot id>" for an image in the shared
// one (upstream's Daemon.UpdateAuthConfig). A bearer token is written to the
// file only (nydusd takes no token through the API), as upstream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "snapshotter/daemon_manager.h"
#include "snapshotter/registry_auth.h"

namespace nydus::snapshotter {

// Writes `kc` into the daemon config of `d` and, unless token-based, sends it to the daemon.
SResult<void> update_daemon_auth(const DaemonInstance& d, const PassKeyChain& kc);

class CredentialRenewal {
 public:
  // `image_ref_of`: an image's full reference from its bootstrap snapshot's
  // ID (kubelet plugins are asked for the image, tag included); without it,
  // or when it knows none, the daemon config's registry host/repo is used.
  using ImageRefOf = std::function<std::string(const std::string& meta_id)>;
  CredentialRenewal(DaemonManager& daemons, std::shared_ptr<const Keychain> keychain,
                    std::chrono::milliseconds interval, ImageRefOf image_ref_of = nullptr)
      : daemons_(daemons), keychain_(std::move(keychain)), interval_(interval), image_ref_of_(std::move(image_ref_of)) {}
  ~CredentialRenewal();
  // Starts the thread (nothing when the interval is 0).
  void start();
  // One pass over the running daemons; returns how many images got new credentials.
  int renew_once();

 private:
  void loop();
  DaemonManager& daemons_;
  std::shared_ptr<const Keychain> keychain_;
  std::chrono::milliseconds interval_;
  ImageRefOf image_ref_of_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace nydus::snapshotter
