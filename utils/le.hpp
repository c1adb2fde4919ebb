// utils/le.hpp — explicit little-endian stores and loads for on-disk formats: a format never
// depends on the host's byte order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace fusemirror::utils {

// Stores the low sizeof(T) bytes of `v` at b[off...], least significant first.
template <typename T>
void put_le(std::span<std::byte> b, std::size_t off, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    b[off + i] = static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xFF);
}

template <typename T>
T get_le(std::span<const std::byte> b, std::size_t off) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(b[off + i])) << (8 * i);
  return static_cast<T>(v);
}

}  // namespace fusemirror::utils
