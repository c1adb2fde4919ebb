// fuzz_header — libFuzzer target for core::decode_header (the bitmap header parser).
//
// Every input is decoded twice: as it is (almost always refused by the CRC), and with the
// CRC32C at offset 4092 recomputed over the (zero-padded) first 4092 bytes, so the fuzzer
// reaches the field checks behind the checksum. Properties:
//   * decode_header never crashes, hangs or throws, whatever the bytes;
//   * a refused header comes with a non-empty error message (a clear error);
//   * an accepted header is sane (chunk size a power of two in [4 KiB, 1 GiB], version
//     not from the future) and round-trips: encode(decode(x)) decodes to the same header.
// Build: cmake -DFUSEMIRROR_FUZZ=ON with clang (test/fuzz/CMakeLists.txt); run:
//   build-fuzz/test/fuzz/fuzz_header -max_total_time=60 test/fuzz/corpus/header
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "core/bitmap_format.hpp"
#include "utils/crc32c.hpp"

namespace fc = fusemirror::core;

static void check(std::span<const std::byte> in) {
  auto r = fc::decode_header(in);
  if (!r) {
    if (r.error().message().empty()) std::abort();  // every refusal names its reason
    return;
  }
  const fc::BitmapHeader& h = *r;
  if (in.size() < fc::kHeaderSize) std::abort();  // accepted a truncated header
  if (h.chunk_size < fc::kMinChunkSize || h.chunk_size > fc::kMaxChunkSize ||
      (h.chunk_size & (h.chunk_size - 1)) != 0)
    std::abort();
  if (h.version_major > fc::kVersionMajor || h.version_major == 0) std::abort();
  (void)h.bit_count();
  (void)fc::bits_bytes(h.bit_count());
  (void)fc::state_string(h.state);
  auto again = fc::encode_header(h);
  auto r2 = fc::decode_header(again);
  if (!r2 || !(*r2 == h)) std::abort();  // encode/decode must round-trip
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto in = std::as_bytes(std::span(data, size));
  check(in);
  // Same bytes with a valid CRC, to get past the checksum.
  std::vector<std::byte> fixed(std::max(size, fc::kHeaderSize));
  if (size) std::memcpy(fixed.data(), data, size);
  const std::uint32_t crc = fusemirror::utils::crc32c(std::span<const std::byte>(fixed.data(), fc::kCrcOffset));
  std::memcpy(fixed.data() + fc::kCrcOffset, &crc, 4);  // the format is little-endian
  check(fixed);
  return 0;
}
