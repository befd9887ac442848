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
  nlohmann::json mounts = nlohmann::json::array();
  for (const auto& m : h.mounts) mounts.push_back({{"path", m.path}, {"source", m.source}, {"config", m.config}});
  return nlohmann::json{{"kind", kKind},      {"mountpoint", h.mountpoint}, {"bootstrap", h.bootstrap},
                        {"fuse_init", hex},   {"mounts", mounts}}
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
  FuseHandover h{*mp, *boot, {}, {}};
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
  if (auto ms = j.find("mounts"); ms != j.end()) {
    if (!ms->is_array() || ms->size() > 4096) return errorf(Errc::kInvalidArgument, "handed-over mounts is not a list");
    for (const auto& m : *ms) {
      auto field = [&](const char* k) -> const std::string* {
        if (!m.is_object()) return nullptr;
        auto it = m.find(k);
        return it != m.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
      };
      const std::string *path = field("path"), *src = field("source"), *cfg = field("config");
      if (!path || !src || !cfg) return errorf(Errc::kInvalidArgument, "a handed-over mount lacks path, source or config");
      h.mounts.push_back(HandedMount{*path, *src, *cfg});
    }
  }
  return h;
}

}  // namespace nydus::daemon
