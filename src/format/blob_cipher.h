// AES-128-XTS as upstream Nydus encrypts blobs (`nydus-image create
// --encrypt`, utils/src/crypt.rs): one key and IV per blob, kept in the
// blob table entry (the 32-byte key in blob_meta_digest, the IV as
// blob_meta_size little-endian || cipher_iv), every chunk, the ci array and
// the blob meta header each encrypted as one XTS data unit with that IV.
// Inputs shorter than one AES block are padded to 18 bytes first
// (pad value = 16 - len, then 0x78 0x90), and the decryptor strips that
// padding again.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"

namespace nydus::format {

inline constexpr uint32_t kCipherNone = 0;
inline constexpr uint32_t kCipherAes128Xts = 1;

struct XtsKey {
  std::array<uint8_t, 32> key{};  // two AES-128 keys (data key || tweak key)
  std::array<uint8_t, 16> iv{};
};

// The blob's key, or nullopt for an unencrypted blob. Unknown algorithms and
// a key whose two halves are equal (OpenSSL refuses those for XTS, upstream
// rejects them when loading the blob table) are corruption.
Result<std::optional<XtsKey>> blob_xts_key(const BlobInfo& blob);

// Store `k` in the blob-table fields upstream uses (cipher_algo = 1).
void set_blob_xts_key(BlobInfo& blob, const XtsKey& k);

// A fresh random key (halves differ) and IV from OpenSSL's RNG.
Result<XtsKey> random_xts_key();

// Encrypt/decrypt one data unit. Inputs are bounded by the callers (chunks
// ≤ 16 MiB, ci arrays ≤ 384 MiB); decrypt needs at least 16 bytes.
Result<std::vector<uint8_t>> xts_encrypt(const XtsKey& k, std::span<const uint8_t> plain);
Result<std::vector<uint8_t>> xts_decrypt(const XtsKey& k, std::span<const uint8_t> cipher);

// The ciphertext size for `n` plaintext bytes (18 for n < 16).
inline uint64_t xts_encrypted_size(uint64_t n) { return n < 16 ? 18 : n; }

}  // namespace nydus::format
