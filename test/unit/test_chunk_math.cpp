// Unit tests for chunk arithmetic: core::chunks_for and BitmapHeader::bit_count.
#include <doctest/doctest.h>

#include "core/bitmap.hpp"
#include "core/bitmap_format.hpp"

using namespace fusemirror;
using core::ChunkRange;

namespace {
constexpr std::uint64_t kCs = 65536;

void check_range(ChunkRange r, std::uint64_t first, std::uint64_t end) {
  CHECK(r.first == first);
  CHECK(r.end == end);
}
}  // namespace

TEST_SUITE("chunk_math") {

TEST_CASE("chunks_for at the edges") {
  SUBCASE("offset 0, one byte") { check_range(core::chunks_for(kCs, 0, 1), 0, 1); }
  SUBCASE("a whole first chunk") { check_range(core::chunks_for(kCs, 0, kCs), 0, 1); }
  SUBCASE("the last byte of a chunk") {
    check_range(core::chunks_for(kCs, kCs - 1, 1), 0, 1);
    check_range(core::chunks_for(kCs, 3 * kCs - 1, 1), 2, 3);
  }
  SUBCASE("the first byte of the next chunk") { check_range(core::chunks_for(kCs, kCs, 1), 1, 2); }
  SUBCASE("spanning two chunks") {
    check_range(core::chunks_for(kCs, kCs - 1, 2), 0, 2);
    check_range(core::chunks_for(kCs, kCs / 2, kCs), 0, 2);
  }
  SUBCASE("exactly two chunks, aligned") { check_range(core::chunks_for(kCs, kCs, 2 * kCs), 1, 3); }
  SUBCASE("one byte more than a chunk") { check_range(core::chunks_for(kCs, 0, kCs + 1), 0, 2); }
  SUBCASE("len 0 is empty") {
    auto r = core::chunks_for(kCs, 5 * kCs + 7, 0);
    CHECK(r.empty());
    CHECK(r.first == r.end);
    CHECK_FALSE(core::chunks_for(kCs, 0, 1).empty());
  }
  SUBCASE("huge offsets near 2^63") {
    const std::uint64_t off = 1ull << 63;
    check_range(core::chunks_for(kCs, off, 1), off / kCs, off / kCs + 1);
    check_range(core::chunks_for(kCs, off - 1, 2), off / kCs - 1, off / kCs + 1);
    // The largest off_t a kernel can hand us, with a one-byte and a one-chunk write.
    const std::uint64_t max_off = (1ull << 63) - 1;
    check_range(core::chunks_for(kCs, max_off, 1), max_off / kCs, max_off / kCs + 1);
    check_range(core::chunks_for(kCs, max_off - kCs + 1, kCs), max_off / kCs, max_off / kCs + 1);
    // A range ending exactly at 2^64 (off + len does not wrap).
    const std::uint64_t top = ~0ull - kCs + 1;  // 2^64 - kCs
    check_range(core::chunks_for(kCs, top, kCs), top / kCs, top / kCs + 1);
  }
  SUBCASE("smallest and largest chunk sizes") {
    check_range(core::chunks_for(core::kMinChunkSize, 4095, 2), 0, 2);
    check_range(core::chunks_for(core::kMaxChunkSize, core::kMaxChunkSize - 1, 2), 0, 2);
    check_range(core::chunks_for(core::kMaxChunkSize, 0, core::kMaxChunkSize), 0, 1);
  }
}

TEST_CASE("BitmapHeader::bit_count") {
  core::BitmapHeader h;
  h.chunk_size = kCs;
  auto bits = [&](std::uint64_t size) {
    h.sync_size = size;
    return h.bit_count();
  };
  CHECK(bits(0) == 0);
  CHECK(bits(1) == 1);
  CHECK(bits(kCs - 1) == 1);
  CHECK(bits(kCs) == 1);
  CHECK(bits(kCs + 1) == 2);
  CHECK(bits(10 * kCs) == 10);
  CHECK(bits(10 * kCs + 1) == 11);
  // Agrees with chunks_for over [0, size).
  for (std::uint64_t size : {std::uint64_t{1}, kCs - 1, kCs, kCs + 1, 7 * kCs + 3}) {
    INFO("size " << size);
    CHECK(bits(size) == core::chunks_for(kCs, 0, size).end);
  }
  h.chunk_size = 0;  // never divides by zero
  h.sync_size = 100;
  CHECK(h.bit_count() == 0);
}

}  // TEST_SUITE
