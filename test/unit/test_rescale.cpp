// test/unit/test_rescale.cpp — the collapse/expand rule of rescale-bitmap on planted bit
// patterns, and the atomic file rewrite (header, CRC, events, refusal of bad files).
#include <set>

#include "core/rescale.hpp"
#include "test_helpers.hpp"
#include "utils/error.hpp"

using namespace fusemirror::core;
using fmtest::TempDir;

namespace {

std::vector<std::byte> pack(std::uint64_t nbits, const std::set<std::uint64_t>& set) {
  std::vector<std::byte> v((nbits + 7) / 8, std::byte{0});
  for (auto i : set) v[i / 8] |= std::byte(1u << (i % 8));
  return v;
}

std::set<std::uint64_t> unpack(const std::vector<std::byte>& v, std::uint64_t nbits) {
  std::set<std::uint64_t> s;
  for (std::uint64_t i = 0; i < nbits; ++i)
    if ((static_cast<unsigned>(v[i / 8]) >> (i % 8)) & 1u) s.insert(i);
  return s;
}

// The rule, bit by bit, straight from docs/on-disk-format.md §2.2: a new chunk is dirty iff some old chunk
// overlapping it was dirty.
std::set<std::uint64_t> reference(const std::set<std::uint64_t>& old, std::uint64_t sync_size,
                                  std::uint64_t oc, std::uint64_t nc) {
  std::set<std::uint64_t> s;
  const std::uint64_t nn = (sync_size + nc - 1) / nc;
  for (std::uint64_t j = 0; j < nn; ++j) {
    const std::uint64_t lo = j * nc, hi = std::min(sync_size, (j + 1) * nc);
    for (auto i : old)
      if (i * oc < hi && (i + 1) * oc > lo) {
        s.insert(j);
        break;
      }
  }
  return s;
}

const fusemirror::utils::Uuid kSet{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

}  // namespace

TEST_CASE("rescale: collapse 4K -> 64K ORs each group of 16 bits") {
  const std::uint64_t size = 4ull << 20;  // 1024 x 4K, 64 x 64K
  const std::set<std::uint64_t> old = {0, 1, 15, 16, 100, 1023};
  auto out = rescale_bits(pack(1024, old), size, 4096, 65536);
  CHECK(out.size() == 8);
  CHECK(unpack(out, 64) == std::set<std::uint64_t>{0, 1, 6, 63});
  CHECK(count_bits(out, 64) == 4);
  CHECK(unpack(out, 64) == reference(old, size, 4096, 65536));
}

TEST_CASE("rescale: expand 64K -> 4K copies each bit to its 16 children") {
  const std::uint64_t size = 4ull << 20;
  const std::set<std::uint64_t> old = {0, 5, 63};
  auto out = rescale_bits(pack(64, old), size, 65536, 4096);
  CHECK(out.size() == 128);
  auto got = unpack(out, 1024);
  CHECK(got.size() == 48);
  CHECK(got.count(0));
  CHECK(got.count(15));
  CHECK_FALSE(got.count(16));
  CHECK(got.count(80));
  CHECK(got.count(95));
  CHECK_FALSE(got.count(96));
  CHECK(got.count(1023));
  CHECK(got == reference(old, size, 65536, 4096));
}

TEST_CASE("rescale: image sizes that are not a multiple of either chunk") {
  for (std::uint64_t size : {1ull, 4095ull, 4097ull, 65537ull, (1ull << 20) + 12345, (3ull << 20) - 1}) {
    for (auto chunks : {std::pair<std::uint64_t, std::uint64_t>{4096, 65536}, {65536, 4096},
                        {4096, 1 << 20}, {1 << 20, 8192}, {8192, 16384}}) {
      // not a structured binding: clang 14 cannot capture one in CAPTURE's lambda
      const std::uint64_t oc = chunks.first, nc = chunks.second;
      CAPTURE(size);
      CAPTURE(oc);
      CAPTURE(nc);
      const std::uint64_t on = (size + oc - 1) / oc, nn = (size + nc - 1) / nc;
      // the last chunk, the first, and every third one
      std::set<std::uint64_t> old = {0, on - 1};
      for (std::uint64_t i = 0; i < on; i += 3) old.insert(i);
      auto in = pack(on, old);
      in.push_back(std::byte{0xFF});  // padding past the last chunk is ignored
      if (on % 8) in[on / 8] |= std::byte(0xFF << (on % 8));
      auto out = rescale_bits(in, size, oc, nc);
      REQUIRE(out.size() == (nn + 7) / 8);
      CHECK(unpack(out, nn) == reference(old, size, oc, nc));
      // the result's padding bits are zero
      CHECK(count_bits(out, out.size() * 8) == count_bits(out, nn));
      // the last (partial) chunk stays covered when it was dirty
      CHECK(unpack(out, nn).count(nn - 1));
    }
  }
}

TEST_CASE("rescale: all clean stays clean, all dirty stays all dirty") {
  const std::uint64_t size = (10ull << 20) + 4096 * 3;
  for (auto [oc, nc] : {std::pair<std::uint64_t, std::uint64_t>{4096, 65536}, {65536, 4096}}) {
    const std::uint64_t on = (size + oc - 1) / oc, nn = (size + nc - 1) / nc;
    auto clean = rescale_bits(std::vector<std::byte>((on + 7) / 8), size, oc, nc);
    CHECK(count_bits(clean, nn) == 0);
    std::vector<std::byte> full((on + 7) / 8, std::byte{0xFF});
    auto dirty = rescale_bits(full, size, oc, nc);
    CHECK(count_bits(dirty, nn) == nn);
    CHECK(count_bits(dirty, dirty.size() * 8) == nn);
  }
}

TEST_CASE("rescale: collapse then expand gives a superset of the original") {
  const std::uint64_t size = 2ull << 20;
  const std::set<std::uint64_t> old = {3, 40, 41, 300, 511};
  auto up = rescale_bits(pack(512, old), size, 4096, 65536);
  auto back = unpack(rescale_bits(up, size, 65536, 4096), 512);
  for (auto i : old) CHECK(back.count(i));
  CHECK(back.size() == 4 * 16);  // 4 distinct 64K chunks were dirty
}

TEST_CASE("rescale: progress reports every old chunk") {
  std::uint64_t last = 0, total = 0;
  (void)rescale_bits(std::vector<std::byte>(1 << 18, std::byte{0x11}), 8ull << 30, 4096, 65536,
                     [&](std::uint64_t d, std::uint64_t t) {
                       CHECK(d >= last);
                       last = d;
                       total = t;
                     });
  CHECK(total == (8ull << 30) / 4096);
  CHECK(last == total);
}

TEST_CASE("rescale_bitmap_file: rewrites header and bits atomically") {
  TempDir d;
  const std::string f = d / "disk.img.fmbm";
  const std::uint64_t size = (4ull << 20) + 100;  // 1025 x 4K, 65 x 64K
  auto h = fmtest::clean_header(kSet, 4096, size);
  h.state = kStateClean | kStateDegraded;
  h.write_behind = 7;
  fmtest::write_bitmap_file(f, h, {0, 17, 1024});
  ::chmod(f.c_str(), 0640);

  auto rep = rescale_bitmap_file(f, 65536);
  CHECK(rep.changed);
  CHECK(rep.dirty_before == 3);
  CHECK(rep.dirty_after == 3);  // chunks 0, 1 and 64 (the partial last one)
  auto nh = fmtest::header_on_disk(f);
  CHECK(nh.chunk_size == 65536);
  CHECK(nh.events == h.events + 1);
  CHECK(nh.events_cleared == h.events_cleared);
  CHECK(nh.sync_size == size);
  CHECK(nh.state == h.state);
  CHECK(nh.write_behind == 7);
  CHECK(nh.set_uuid == h.set_uuid);
  CHECK(nh.image_uuid == h.image_uuid);
  auto bytes = fmtest::read_bytes(f);
  CHECK(bytes.size() == kHeaderSize + 4096);
  CHECK(fmtest::count_file_bits(bytes, 65) == 3);
  CHECK(fmtest::file_bit(bytes, 0));
  CHECK(fmtest::file_bit(bytes, 1));
  CHECK(fmtest::file_bit(bytes, 64));
  struct stat st {};
  ::stat(f.c_str(), &st);
  CHECK((st.st_mode & 07777) == 0640);
  // no temp file left behind
  CHECK(std::distance(fmtest::stdfs::directory_iterator(d.path()), fmtest::stdfs::directory_iterator()) == 1);

  // and back: each of the 3 bits becomes 16 (the last one 1: the image ends there)
  auto rep2 = rescale_bitmap_file(f, 4096);
  CHECK(rep2.dirty_after == 16 + 16 + 1);
  CHECK(fmtest::header_on_disk(f).events == h.events + 2);

  // same chunk size: nothing to do, the file is not touched
  auto before = fmtest::read_bytes(f);
  CHECK_FALSE(rescale_bitmap_file(f, 4096).changed);
  CHECK(fmtest::read_bytes(f) == before);
}

TEST_CASE("rescale_bitmap_file: refuses bad files and sizes, leaving them untouched") {
  TempDir d;
  const std::string f = d / "x.fmbm";
  auto h = fmtest::clean_header(kSet, 65536, 1 << 20);
  fmtest::write_bitmap_file(f, h, {3});
  auto good = fmtest::read_bytes(f);
  CHECK_THROWS_AS(rescale_bitmap_file(f, 3000), fusemirror::utils::Error);
  CHECK_THROWS_AS(rescale_bitmap_file(f, 2048), fusemirror::utils::Error);
  CHECK_THROWS_AS(rescale_bitmap_file(f, 2ull << 30), fusemirror::utils::Error);
  CHECK(fmtest::read_bytes(f) == good);

  auto bad = good;
  bad[70] ^= std::byte{1};  // chunk_size byte: the CRC no longer matches
  fmtest::write_bytes(f, bad, 0600);
  try {
    rescale_bitmap_file(f, 4096);
    FAIL("a corrupted header was rescaled");
  } catch (const fusemirror::utils::Error& e) {
    CHECK(std::string(e.what()).find("checksum") != std::string::npos);
  }
  CHECK(fmtest::read_bytes(f) == bad);

  std::vector<std::byte> truncated(good.begin(), good.begin() + kHeaderSize);
  fmtest::write_bytes(f, truncated, 0600);
  CHECK_THROWS_WITH_AS(rescale_bitmap_file(f, 4096), doctest::Contains("truncated"), fusemirror::utils::Error);
  CHECK_THROWS_AS(rescale_bitmap_file(d / "missing.fmbm", 4096), fusemirror::utils::Error);
}
