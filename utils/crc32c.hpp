// utils/crc32c.hpp — CRC32C (Castagnoli, reflected, init and final xor 0xFFFFFFFF).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace fusemirror::utils {

// crc32c("123456789") == 0xE3069283.
// Uses the CPU's crc32 instruction where there is one (x86-64 with SSE4.2).
std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t seed = 0);
// The same CRC by table, whatever the CPU (the reference the tests hold crc32c to).
std::uint32_t crc32c_portable(std::span<const std::byte> data, std::uint32_t seed = 0);

}  // namespace fusemirror::utils
