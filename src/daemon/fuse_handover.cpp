#include "daemon/fuse_handover.h"

#include <nlohmann/json.hpp>

namespace nydus::daemon {

namespace {
constexpr std::string_view kKind = "nydusd-fuse-v1";
constexpr size_t kMaxInit = 4096;
}  // namespace

std::string encode_fuse_handover(const FuseHandover& h) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t b : h.init) {
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  return nlohmann::json{{"kind", kKind}, {"mountpoint", h.mountpoint}, {"bootstrap", h.bootstrap}, {"fuse_init", hex}}
      .dump();
}

Result<FuseHandover> decode_fuse_handover(std::string_view data) {
  auto j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return errorf(Errc::kInvalidArgument, "handed-over state is not JSON");
  auto str = [&](const char* k) -> const std::string* {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
  };
  const std::string* kind = str("kind");
  if (!kind || *kind != kKind)
    return errorf(Errc::kInvalidArgument, "handed-over state is not from a FUSE-mode nydusd (kind {})",
                  kind ? *kind : "missing");
  const std::string *mp = str("mountpoint"), *boot = str("bootstrap"), *hex = str("fuse_init");
  if (!mp || !boot || !hex || mp->empty())
    return errorf(Errc::kInvalidArgument, "handed-over state lacks mountpoint, bootstrap or fuse_init");
  if (hex->size() % 2 || hex->size() / 2 > kMaxInit)
    return errorf(Errc::kInvalidArgument, "handed-over fuse_init has a bad length {}", hex->size());
  FuseHandover h{*mp, *boot, {}};
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex->size(); i += 2) {
    const int hi = nibble((*hex)[i]), lo = nibble((*hex)[i + 1]);
    if (hi < 0 || lo < 0) return errorf(Errc::kInvalidArgument, "handed-over fuse_init is not lowercase hex");
    h.init.push_back(uint8_t(hi << 4 | lo));
  }
  return h;
}

}  // namespace nydus::daemon
