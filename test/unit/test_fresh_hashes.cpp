// Unit tests for core/fresh_hashes: a write's hashes equal what the sweep would read, the
// edges of a write and every forgotten range lose their entries, and the bound holds.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include "core/chunk_check.hpp"
#include "core/fresh_hashes.hpp"
#include "test_helpers.hpp"
#include "utils/fd.hpp"

using namespace fusemirror;

namespace {
constexpr std::uint64_t kCs = 4096;
}

TEST_CASE("fresh hashes: a write's hashes are the chunks' checksums, read back from a file") {
  core::FreshHashes fh(kCs, 100);
  const auto data = fmtest::pattern(5 * kCs, 3);
  std::vector<std::uint64_t> h;
  // [kCs + 100, 6 kCs + 100): chunks 2..5 whole, 1 and 6 in part.
  CHECK(fh.hash_whole(data, kCs + 100, h) == 2);
  REQUIRE(h.size() == 4);
  fmtest::TempDir dir;
  const std::string path = dir / "f";
  std::vector<std::byte> file(kCs + 100);  // zeros, then the write's bytes
  file.insert(file.end(), data.begin(), data.end());
  fmtest::write_bytes(path, file, 0600);
  utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.valid());
  std::vector<std::byte> buf(1000);  // pieces smaller than a chunk: the same streamed hash
  for (std::uint64_t i = 0; i < 4; ++i) {
    auto r = core::hash_chunk(fd.get(), 2 + i, kCs, buf);
    REQUIRE(r);
    CHECK(*r == h[i]);
  }
  // A write inside one chunk covers none.
  CHECK(fh.hash_whole(std::span(data).first(100), 5, h) == 1);
  CHECK(h.empty());
}

TEST_CASE("fresh hashes: put replaces and forgets its edges, forget and take remove") {
  core::FreshHashes fh(kCs, 100);
  fh.put(0, 8 * kCs, 0, {10, 11, 12, 13, 14, 15, 16, 17});
  CHECK(fh.size() == 8);
  // A write over [2 kCs + 1, 5 kCs + 1): chunk 2 and 5 in part (forgotten), 3 and 4 new.
  fh.put(2 * kCs + 1, 3 * kCs, 3, {23, 24});
  CHECK(fh.size() == 6);
  CHECK_FALSE(fh.take(2));
  CHECK_FALSE(fh.take(5));
  CHECK(fh.take(3) == 23);
  CHECK(fh.take(4) == 24);
  CHECK_FALSE(fh.take(3));  // taken once
  CHECK(fh.used() == 2);
  // One byte forgets its chunk; a range to the end of every file forgets the rest.
  fh.forget(kCs + 7, 1);
  CHECK_FALSE(fh.take(1));
  fh.forget(7 * kCs - 1, ~std::uint64_t{0});
  CHECK_FALSE(fh.take(6));
  CHECK_FALSE(fh.take(7));
  CHECK(fh.take(0) == 10);
  CHECK(fh.size() == 0);
}

TEST_CASE("fresh hashes: bounded; a write past the bound still forgets what it overwrote") {
  core::FreshHashes fh(kCs, 4);
  fh.put(0, 4 * kCs, 0, {1, 2, 3, 4});
  fh.put(10 * kCs, 2 * kCs, 10, {5, 6});  // no room: not kept
  CHECK(fh.size() == 4);
  CHECK_FALSE(fh.take(10));
  fh.put(kCs, 2 * kCs, 1, {7, 8});  // replaces 1 and 2 (room again once they go)
  CHECK(fh.take(1) == 7);
  CHECK(fh.take(2) == 8);
  CHECK(core::FreshHashes::default_bound(65536) == 65536);
  CHECK(core::FreshHashes::default_bound(1ull << 30) == 4096);
  CHECK(core::FreshHashes::default_bound(4096) == (1u << 20));
}
