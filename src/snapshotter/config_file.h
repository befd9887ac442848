// nydus-snapshotter's config.toml, the keys this snapshotter uses:
//   root, address, daemon_mode, [daemon] nydusd_path, nydusimage_path,
//   nydusd_config, fs_driver, recover_policy, threads_number,
//   [log] level, log_to_stdout, [experimental] enable_stargz, [remote.auth]
//   credential_renewal_interval, enable_kubelet_credential_providers,
//   credential_provider_config, credential_provider_bin_dir, enable_cri_keychain,
//   image_service_address. Other keys are
//   accepted and ignored.
// A TOML subset: [section] / [a.b] headers, key = "string" | 'string' | int | bool, # comments.
#pragma once

#include <map>
#include <string>

#include "common/result.h"

namespace nydus::snapshotter {

// "section.key" -> raw scalar text (strings unquoted); top-level keys have no section.
using ConfigValues = std::map<std::string, std::string>;

Result<ConfigValues> parse_config_toml(std::string_view text);

}  // namespace nydus::snapshotter
