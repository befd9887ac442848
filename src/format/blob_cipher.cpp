#include "format/blob_cipher.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <memory>

namespace nydus::format {

namespace {

constexpr size_t kUnit = 16;                          // AES block / minimum XTS unit
constexpr size_t kPaddedLen = 18;                     // short input: 16 bytes + 2 magic
constexpr uint8_t kPadMagic[2] = {0x78, 0x90};

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

bool halves_equal(const XtsKey& k) { return std::memcmp(k.key.data(), k.key.data() + 16, 16) == 0; }

Result<std::vector<uint8_t>> run(const XtsKey& k, std::span<const uint8_t> in, bool enc) {
  if (in.size() < kUnit) return corrupt("AES-XTS data unit of {} bytes is shorter than 16", in.size());
  if (in.size() > (size_t(1) << 30)) return corrupt("AES-XTS data unit of {} bytes is too large", in.size());
  if (halves_equal(k)) return corrupt("AES-128-XTS key has two equal halves");
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return make_error(Errc::kIo, "EVP_CIPHER_CTX_new failed");
  if (EVP_CipherInit_ex(ctx.get(), EVP_aes_128_xts(), nullptr, k.key.data(), k.iv.data(), enc ? 1 : 0) != 1)
    return make_error(Errc::kIo, "AES-128-XTS init failed");
  std::vector<uint8_t> out(in.size() + kUnit);
  int n = 0, m = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &n, in.data(), int(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), out.data() + n, &m) != 1)
    return corrupt("AES-128-XTS {} of {} bytes failed", enc ? "encryption" : "decryption", in.size());
  out.resize(size_t(n) + size_t(m));
  return out;
}

}  // namespace

Result<std::optional<XtsKey>> blob_xts_key(const BlobInfo& blob) {
  if (blob.cipher_algo == kCipherNone) return std::optional<XtsKey>{};
  if (blob.cipher_algo != kCipherAes128Xts)
    return errorf(Errc::kUnsupported, "blob {}: cipher algorithm {} is not supported", blob.blob_id,
                  blob.cipher_algo);
  XtsKey k;
  std::memcpy(k.key.data(), blob.blob_meta_digest.data(), 32);
  for (int i = 0; i < 8; i++) {
    k.iv[i] = uint8_t(blob.blob_meta_size >> (8 * i));
    k.iv[8 + i] = uint8_t(blob.cipher_iv_tail >> (8 * i));
  }
  if (halves_equal(k)) return corrupt("blob {}: encryption key has two equal halves", blob.blob_id);
  return std::optional<XtsKey>(k);
}

void set_blob_xts_key(BlobInfo& blob, const XtsKey& k) {
  blob.cipher_algo = kCipherAes128Xts;
  std::memcpy(blob.blob_meta_digest.data(), k.key.data(), 32);
  blob.blob_meta_size = 0;
  blob.cipher_iv_tail = 0;
  for (int i = 0; i < 8; i++) {
    blob.blob_meta_size |= uint64_t(k.iv[i]) << (8 * i);
    blob.cipher_iv_tail |= uint64_t(k.iv[8 + i]) << (8 * i);
  }
}

Result<XtsKey> random_xts_key() {
  XtsKey k;
  do {
    if (RAND_bytes(k.key.data(), int(k.key.size())) != 1 || RAND_bytes(k.iv.data(), int(k.iv.size())) != 1)
      return make_error(Errc::kIo, "OpenSSL RAND_bytes failed");
  } while (halves_equal(k));
  return k;
}

Result<std::vector<uint8_t>> xts_encrypt(const XtsKey& k, std::span<const uint8_t> plain) {
  if (plain.size() >= kUnit) return run(k, plain, true);
  uint8_t buf[kPaddedLen];
  std::memset(buf, int(kUnit - plain.size()), sizeof(buf));
  if (!plain.empty()) std::memcpy(buf, plain.data(), plain.size());
  buf[16] = kPadMagic[0];
  buf[17] = kPadMagic[1];
  return run(k, buf, true);
}

Result<std::vector<uint8_t>> xts_decrypt(const XtsKey& k, std::span<const uint8_t> cipher) {
  NYDUS_ASSIGN_OR_RETURN(auto out, run(k, cipher, false));
  // Upstream strips the padding whenever an 18-byte unit ends in the magic.
  if (out.size() == kPaddedLen && out[16] == kPadMagic[0] && out[17] == kPadMagic[1]) {
    const size_t pad = out[kUnit - 1];
    if (pad >= kUnit) return corrupt("AES-XTS padding value {} invalid", pad);
    out.resize(kUnit - pad);
  }
  return out;
}

}  // namespace nydus::format
