#include "fscache/message.h"

#include <cstring>

namespace nydus::fscache {

namespace {

template <class T>
T load(std::span<const uint8_t> buf, size_t off) {
  T v;
  std::memcpy(&v, buf.data() + off, sizeof(T));
  return v;
}

BadMessage bad(uint32_t msg_id, std::string why) {
  return BadMessage{Error{Errc::kCorrupt, 0, std::move(why)}, msg_id, false, -1};
}

std::string header_bytes(uint32_t msg_id, Opcode op, uint32_t len, uint32_t object_id) {
  MsgHeader h{msg_id, uint32_t(op), len, object_id};
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
}

}  // namespace

std::variant<Message, BadMessage> parse_message(std::span<const uint8_t> buf) {
  if (buf.size() < sizeof(MsgHeader))
    return bad(0, fmt::format("message of {} bytes is shorter than its header", buf.size()));
  const auto h = load<MsgHeader>(buf, 0);
  const size_t body = buf.size() - sizeof(MsgHeader);
  const bool open = h.opcode == uint32_t(Opcode::kOpen);

  if (open && body >= sizeof(OpenBody)) {
    // Whatever else is wrong, the fd is ours now: report it so it gets closed.
    const auto o = load<OpenBody>(buf, sizeof(MsgHeader));
    BadMessage err{Error{Errc::kCorrupt, 0, ""}, h.msg_id, true, int(o.fd)};
    if (o.fd > uint32_t(INT32_MAX)) err.open_fd = -1;
    auto fail = [&](std::string why) {
      err.error.message = std::move(why);
      return err;
    };
    if (h.len != buf.size()) return fail(fmt::format("OPEN length field {} != {} bytes read", h.len, buf.size()));
    if (err.open_fd < 0) return fail(fmt::format("OPEN fd {} is not a valid descriptor", o.fd));
    const size_t keys = body - sizeof(OpenBody);
    if (o.volume_key_size == 0 || o.volume_key_size > kMaxVolumeKey || o.cookie_key_size > kMaxCookieKey ||
        size_t(o.volume_key_size) + o.cookie_key_size != keys)
      return fail(fmt::format("OPEN key sizes {}+{} do not fit its {} key bytes", o.volume_key_size,
                              o.cookie_key_size, keys));
    const char* vk = reinterpret_cast<const char*>(buf.data() + sizeof(MsgHeader) + sizeof(OpenBody));
    // The volume key carries its NUL; nothing after the first NUL belongs to it.
    if (vk[o.volume_key_size - 1] != '\0') return fail("OPEN volume key is not NUL-terminated");
    OpenMsg m;
    m.msg_id = h.msg_id;
    m.object_id = h.object_id;
    m.volume_key.assign(vk, ::strnlen(vk, o.volume_key_size));
    m.cookie_key.assign(vk + o.volume_key_size, o.cookie_key_size);
    m.fd = err.open_fd;
    m.flags = o.flags;
    return Message{std::move(m)};
  }
  if (open) {
    BadMessage err = bad(h.msg_id, fmt::format("OPEN message of {} bytes has no room for its body", buf.size()));
    err.is_open = true;
    return err;
  }
  if (h.len != buf.size())
    return bad(h.msg_id, fmt::format("length field {} != {} bytes read", h.len, buf.size()));
  switch (Opcode(h.opcode)) {
    case Opcode::kClose:
      if (body != 0) return bad(h.msg_id, fmt::format("CLOSE with {} body bytes", body));
      return Message{CloseMsg{h.msg_id, h.object_id}};
    case Opcode::kRead: {
      if (body != sizeof(ReadBody)) return bad(h.msg_id, fmt::format("READ with {} body bytes", body));
      const auto r = load<ReadBody>(buf, sizeof(MsgHeader));
      return Message{ReadMsg{h.msg_id, h.object_id, r.off, r.len}};
    }
    default:
      return bad(h.msg_id, fmt::format("unknown opcode {}", h.opcode));
  }
}

std::string_view volume_id(std::string_view volume_key) {
  constexpr std::string_view kPrefix = "erofs,";
  if (volume_key.starts_with(kPrefix)) volume_key.remove_prefix(kPrefix.size());
  return volume_key;
}

std::string encode_open(uint32_t msg_id, uint32_t object_id, std::string_view volume_key,
                        std::string_view cookie_key, int fd) {
  const uint32_t vks = uint32_t(volume_key.size() + 1), cks = uint32_t(cookie_key.size());
  std::string out = header_bytes(msg_id, Opcode::kOpen, uint32_t(sizeof(MsgHeader) + sizeof(OpenBody) + vks + cks),
                                 object_id);
  OpenBody b{vks, cks, uint32_t(fd), 0};
  out.append(reinterpret_cast<const char*>(&b), sizeof(b));
  out.append(volume_key);
  out.push_back('\0');
  out.append(cookie_key);
  return out;
}

std::string encode_close(uint32_t msg_id, uint32_t object_id) {
  return header_bytes(msg_id, Opcode::kClose, sizeof(MsgHeader), object_id);
}

std::string encode_read(uint32_t msg_id, uint32_t object_id, uint64_t off, uint64_t len) {
  std::string out = header_bytes(msg_id, Opcode::kRead, sizeof(MsgHeader) + sizeof(ReadBody), object_id);
  ReadBody b{off, len};
  out.append(reinterpret_cast<const char*>(&b), sizeof(b));
  return out;
}

}  // namespace nydus::fscache
