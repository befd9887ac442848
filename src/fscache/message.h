// Decoding of the messages read from /dev/cachefiles (or the emulator): every
// size is checked against the bytes actually read, so a malformed message is
// an error value, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "common/result.h"
#include "fscache/cachefiles_abi.h"

namespace nydus::fscache {

struct OpenMsg {
  uint32_t msg_id = 0;
  uint32_t object_id = 0;
  std::string volume_key;  // without its NUL, e.g. "erofs,<domain_id or fsid>"
  std::string cookie_key;  // fsid (bootstrap) or device tag / blob id
  int fd = -1;             // anon fd of the object, ours to close
  uint32_t flags = 0;
};

struct CloseMsg {
  uint32_t msg_id = 0;
  uint32_t object_id = 0;
};

struct ReadMsg {
  uint32_t msg_id = 0;
  uint32_t object_id = 0;
  uint64_t off = 0;
  uint64_t len = 0;
};

using Message = std::variant<OpenMsg, CloseMsg, ReadMsg>;

// A message that failed validation still names what the daemon must clean
// up: an OPEN's fd (to close, after a negative copen) when it could be found.
struct BadMessage {
  Error error;
  uint32_t msg_id = 0;
  bool is_open = false;  // the header said OPEN: answer it with a negative copen
  int open_fd = -1;      // the anon fd, if the OPEN body was long enough to hold it
};

// `buf` is exactly what one read(2) returned.
std::variant<Message, BadMessage> parse_message(std::span<const uint8_t> buf);

// The volume key's id part: "erofs,<x>" -> "<x>" (anything else unchanged).
std::string_view volume_id(std::string_view volume_key);

// Encodes a message as the kernel lays it out (for the emulator and tests).
std::string encode_open(uint32_t msg_id, uint32_t object_id, std::string_view volume_key,
                        std::string_view cookie_key, int fd);
std::string encode_close(uint32_t msg_id, uint32_t object_id);
std::string encode_read(uint32_t msg_id, uint32_t object_id, uint64_t off, uint64_t len);

}  // namespace nydus::fscache
