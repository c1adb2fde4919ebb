#include "utils/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace fusemirror::utils {
namespace {

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kTable = make_table();

std::uint32_t update_table(std::uint32_t c, std::span<const std::byte> data) {
  for (std::byte b : data) c = kTable[(c ^ static_cast<std::uint8_t>(b)) & 0xFF] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes this very CRC (Castagnoli, reflected), 8 bytes a
// step: about 20x the table's speed on a 4 KiB block (a record page, a bitmap header).
__attribute__((target("sse4.2"))) std::uint32_t update_sse42(std::uint32_t c, std::span<const std::byte> data) {
  const std::byte* p = data.data();
  std::size_t n = data.size();
  std::uint64_t c64 = c;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
  }
  c = static_cast<std::uint32_t>(c64);
  for (; n > 0; ++p, --n) c = _mm_crc32_u8(c, static_cast<std::uint8_t>(*p));
  return c;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t seed) {
#if defined(__x86_64__)
  if (kHaveSse42) return ~update_sse42(~seed, data);
#endif
  return ~update_table(~seed, data);
}

std::uint32_t crc32c_portable(std::span<const std::byte> data, std::uint32_t seed) {
  return ~update_table(~seed, data);
}

}  // namespace fusemirror::utils
