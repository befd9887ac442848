#include "format/digest.h"

#include <blake3.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>

namespace nydus::format {

namespace {
// OpenSSL frees its tables at exit (an atexit handler) unless told not to,
// while read-ahead threads may still be checking a chunk digest: nydusd
// crashed in SHA256 after "bye" that way (zran.sh's truncated layer). This
// runs before main, so before anything else initialises OpenSSL (libcurl
// does it later, from curl_global_init), and the first initialisation
// decides.
[[maybe_unused]] const int kOpensslNoAtexit = OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
}  // namespace

Result<Digester> parse_digester(std::string_view name) {
  if (name == "blake3") return Digester::kBlake3;
  if (name == "sha256") return Digester::kSha256;
  return errorf(Errc::kInvalidArgument, "unknown digester '{}' (blake3, sha256)", name);
}

const char* digester_name(Digester d) {
  switch (d) {
    case Digester::kBlake3: return "blake3";
    case Digester::kSha256: return "sha256";
  }
  return "unknown";
}

Digest sha256(std::span<const uint8_t> data) {
  Digest out;
  SHA256(data.data(), data.size(), out.data());
  return out;
}

namespace {
// BLAKE3's C code detects CPU features lazily into an unsynchronised global
// on its first multi-chunk hash: two threads hashing at once race on it
// (found by TSan). Hashing once here, before main() starts any thread,
// settles it for good.
const bool g_blake3_ready = [] {
  static const uint8_t zeros[4096] = {};
  uint8_t out[32];
  blake3_hasher h;
  blake3_hasher_init(&h);
  blake3_hasher_update(&h, zeros, sizeof zeros);
  blake3_hasher_finalize(&h, out, sizeof out);
  return true;
}();
}  // namespace

Digest compute_digest(Digester d, std::span<const uint8_t> data) {
  if (d == Digester::kSha256) return sha256(data);
  Digest out;
  blake3_hasher h;
  blake3_hasher_init(&h);
  blake3_hasher_update(&h, data.data(), data.size());
  blake3_hasher_finalize(&h, out.data(), out.size());
  return out;
}

namespace {
struct Crc32cTable {
  uint32_t t[256];
  constexpr Crc32cTable() : t{} {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
  }
};
constexpr Crc32cTable kCrcTable;

uint32_t crc32c_table(const uint8_t* p, size_t n, uint32_t crc) {
  for (size_t i = 0; i < n; i++) crc = kCrcTable.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// SSE4.2's crc32 instruction computes CRC-32C 8 bytes at a time: every chunk
// of every build is checksummed, so the table loop would cost seconds per GB.
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = uint32_t(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
#endif

}  // namespace

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) {
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return ~crc32c_sse42(data.data(), data.size(), ~crc);
#endif
  return ~crc32c_table(data.data(), data.size(), ~crc);
}

std::string fscache_id(std::string_view snapshot_id) {
  const std::string s = "nydus-snapshot-" + std::string(snapshot_id);
  return to_hex(sha256(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size())));
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static const char* k = "0123456789abcdef";
  std::string s(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); i++) {
    s[2 * i] = k[bytes[i] >> 4];
    s[2 * i + 1] = k[bytes[i] & 0xF];
  }
  return s;
}

Result<Digest> digest_from_hex(std::string_view hex) {
  if (hex.size() != 64) return errorf(Errc::kInvalidArgument, "digest '{}' is not 64 hex chars", hex);
  Digest d;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; i++) {
    int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return errorf(Errc::kInvalidArgument, "digest '{}' is not hex", hex);
    d[i] = uint8_t(hi << 4 | lo);
  }
  return d;
}

struct Sha256Stream::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256Stream::Sha256Stream() : impl_(std::make_unique<Impl>()) {
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}
Sha256Stream::~Sha256Stream() = default;
void Sha256Stream::update(std::span<const uint8_t> data) {
  EVP_DigestUpdate(impl_->ctx, data.data(), data.size());
}
Digest Sha256Stream::finish() {
  Digest out;
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, out.data(), &n);
  return out;
}

}  // namespace nydus::format
