// A hash table keyed by nonzero 64-bit numbers (inode numbers, FUSE request
// uniques) for records kept on a request path: open addressing with linear
// probing, never more than half full, erase by backward shift (no
// tombstones). It allocates only when it grows, up to a fixed bound, so an
// insert costs no malloc, where a node map costs one per insert and a free
// per erase (the FUSE daemon did both for every request and every listed
// file). Storage comes from calloc: pages no record reached are not resident.
// Not thread-safe: callers hold their own lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

namespace nydus {

template <class V>
class U64Table {
  static_assert(std::is_trivially_copyable_v<V>, "records are copied and zeroed as bytes");

 public:
  // Holds up to `max_count` records; starts with room for `initial_count`.
  explicit U64Table(size_t max_count, size_t initial_count = 8) : max_count_(max_count) {
    allocate(slots_for(std::min(std::max<size_t>(initial_count, 1), std::max<size_t>(max_count, 1))));
  }
  U64Table(U64Table&&) noexcept = default;
  U64Table& operator=(U64Table&&) noexcept = default;

  size_t size() const { return count_; }
  size_t max_size() const { return max_count_; }

  V* find(uint64_t key) const {
    if (!slots_ || key == 0) return nullptr;
    for (size_t i = home(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == 0) return nullptr;  // never full: an empty slot ends every probe
    }
  }

  // Adds or replaces `key`'s record. False when it cannot: key 0, the bound
  // reached, or no memory to grow.
  bool put(uint64_t key, const V& value) {
    if (key == 0) return false;
    if (V* v = find(key)) {
      *v = value;
      return true;
    }
    if (count_ >= max_count_) return false;
    if (!slots_ || (count_ + 1) * 2 > mask_ + 1) {
      if (!grow()) return false;
    }
    size_t i = home(key);
    while (slots_[i].key != 0) i = (i + 1) & mask_;
    slots_[i].key = key;
    slots_[i].value = value;
    count_++;
    return true;
  }

  // Removes `key`'s record, copying it to `out` first if given: one probe
  // where a find and an erase would take two.
  bool erase(uint64_t key, V* out = nullptr) {
    if (!slots_ || key == 0) return false;
    size_t i = home(key);
    while (slots_[i].key != key) {
      if (slots_[i].key == 0) return false;
      i = (i + 1) & mask_;
    }
    if (out) *out = slots_[i].value;
    // Move back each later record of the run whose home is not between the
    // hole and it, so that no probe meets an empty slot before its key.
    for (size_t j = (i + 1) & mask_; slots_[j].key != 0; j = (j + 1) & mask_) {
      const size_t k = home(slots_[j].key);
      const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    std::memset(static_cast<void*>(&slots_[i]), 0, sizeof(Slot));
    count_--;
    return true;
  }

  void clear() {
    if (slots_ && count_) std::memset(static_cast<void*>(slots_.get()), 0, (mask_ + 1) * sizeof(Slot));
    count_ = 0;
  }

  template <class F>
  void for_each(F&& f) const {
    if (!slots_) return;
    for (size_t i = 0; i <= mask_; i++)
      if (slots_[i].key != 0) f(slots_[i].key, slots_[i].value);
  }

 private:
  struct Slot {
    uint64_t key;  // 0: empty
    V value;
  };
  struct Free {
    void operator()(Slot* p) const { std::free(p); }
  };

  static size_t slots_for(size_t count) {
    size_t n = 2;
    while (n < 2 * count) n *= 2;
    return n;
  }
  // Keys run in sequence: a multiplicative hash spreads them.
  size_t home(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 32) & mask_; }

  bool allocate(size_t slots) {
    std::unique_ptr<Slot[], Free> s(static_cast<Slot*>(std::calloc(slots, sizeof(Slot))));
    if (!s) return false;
    slots_ = std::move(s);
    mask_ = slots - 1;
    return true;
  }

  bool grow() {
    const size_t want = slots_ ? (mask_ + 1) * 2 : slots_for(1);
    if (slots_ && want > slots_for(max_count_)) return false;
    std::unique_ptr<Slot[], Free> old = std::move(slots_);
    const size_t old_slots = mask_ + 1;
    if (!allocate(want)) {
      slots_ = std::move(old);
      return false;
    }
    count_ = 0;
    if (old)
      for (size_t i = 0; i < old_slots; i++)
        if (old[i].key != 0) {
          size_t j = home(old[i].key);
          while (slots_[j].key != 0) j = (j + 1) & mask_;
          slots_[j] = old[i];
          count_++;
        }
    return true;
  }

  size_t max_count_;
  std::unique_ptr<Slot[], Free> slots_;
  size_t mask_ = 0;
  size_t count_ = 0;
};

}  // namespace nydus
