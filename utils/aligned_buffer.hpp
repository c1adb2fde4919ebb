// utils/aligned_buffer.hpp — a byte buffer aligned for O_DIRECT, grown on demand.
#pragma once
#include <cstddef>
#include <cstdlib>

namespace fusemirror::utils {

// 4 KiB-aligned bytes: every device's logical block divides 4 KiB, so a buffer, offset and
// length aligned to it are accepted by O_DIRECT on any file system that supports it.
// get(n) returns at least n bytes (kept and reused; the old contents are not kept when it
// grows), or nullptr when there is no memory.
class AlignedBuffer {
 public:
  static constexpr std::size_t kAlign = 4096;
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) { get(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(p_); }
  std::byte* get(std::size_t want) {
    if (want > n_) {
      void* q = nullptr;
      if (::posix_memalign(&q, kAlign, want) != 0) return nullptr;
      std::free(p_);
      p_ = q;
      n_ = want;
    }
    return static_cast<std::byte*>(p_);
  }
  std::size_t size() const { return n_; }

 private:
  void* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace fusemirror::utils
