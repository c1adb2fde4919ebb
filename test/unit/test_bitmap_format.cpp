// Unit tests for core/bitmap_format: the documented on-disk header (format version 1).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <vector>
#include <string>

#include "core/bitmap_format.hpp"
#include "test_helpers.hpp"
#include "utils/crc32c.hpp"

using namespace fusemirror;
using core::BitmapHeader;
using core::HeaderError;

namespace {

using Raw = std::array<std::byte, core::kHeaderSize>;

BitmapHeader sample_header() {
  BitmapHeader h;
  h.version_major = 1;
  h.version_minor = 0;
  for (int i = 0; i < 16; ++i) {
    h.set_uuid[i] = static_cast<std::uint8_t>(0x10 + i);
    h.image_uuid[i] = static_cast<std::uint8_t>(0xA0 + i);
  }
  h.events = 0x0102030405060708ull;
  h.events_cleared = 0x1112131415161718ull;
  h.chunk_size = 1ull << 20;
  h.daemon_sleep_ms = 0x21222324u;
  h.write_behind = 0x31323334u;
  h.sync_size = 0x4142434445464748ull;
  h.state = core::kStateClean | core::kStateDegraded;
  return h;
}

std::uint64_t le(const Raw& b, std::size_t off, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(b[off + i])) << (8 * i);
  return v;
}

void put_le(Raw& b, std::size_t off, std::size_t n, std::uint64_t v) {
  for (std::size_t i = 0; i < n; ++i) b[off + i] = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}

// Recomputes the CRC after an edit, so only the edited field's check can fail.
void recrc(Raw& b) {
  put_le(b, core::kCrcOffset, 4, utils::crc32c(std::span<const std::byte>(b.data(), core::kCrcOffset)));
}

std::error_code decode_error(std::span<const std::byte> b) {
  auto r = core::decode_header(b);
  return r ? std::error_code{} : r.error();
}

}  // namespace

TEST_SUITE("bitmap_format") {

TEST_CASE("crc32c known vector") {
  const char* s = "123456789";
  auto bytes = std::as_bytes(std::span(s, 9));
  CHECK(utils::crc32c(bytes) == 0xE3069283u);
  CHECK(utils::crc32c({}) == 0u);
  // Seeded continuation equals one pass.
  CHECK(utils::crc32c(bytes.subspan(4), utils::crc32c(bytes.first(4))) == 0xE3069283u);
  CHECK(utils::crc32c_portable(bytes) == 0xE3069283u);
  // The CPU's instruction (where used) and the table agree at every length and alignment.
  std::vector<std::byte> buf(4200);
  std::uint32_t x = 12345;
  for (auto& b : buf) b = static_cast<std::byte>((x = x * 1103515245u + 12345u) >> 16);
  for (std::size_t off : {0, 1, 3, 7})
    for (std::size_t len : {0, 1, 7, 8, 9, 63, 4092, 4096})
      CHECK(utils::crc32c(std::span(buf).subspan(off, len), 0x1234u) ==
            utils::crc32c_portable(std::span(buf).subspan(off, len), 0x1234u));
}

TEST_CASE("encode/decode round trip of every field") {
  const BitmapHeader h = sample_header();
  Raw raw = core::encode_header(h);
  auto d = core::decode_header(raw);
  REQUIRE(d);
  CHECK(d->version_major == h.version_major);
  CHECK(d->version_minor == h.version_minor);
  CHECK(d->set_uuid == h.set_uuid);
  CHECK(d->image_uuid == h.image_uuid);
  CHECK(d->events == h.events);
  CHECK(d->events_cleared == h.events_cleared);
  CHECK(d->chunk_size == h.chunk_size);
  CHECK(d->daemon_sleep_ms == h.daemon_sleep_ms);
  CHECK(d->write_behind == h.write_behind);
  CHECK(d->sync_size == h.sync_size);
  CHECK(d->state == h.state);
  CHECK(*d == h);

  // Each field on its own: change one, the others keep their values.
  SUBCASE("each field independently") {
    for (int field = 0; field < 9; ++field) {
      BitmapHeader x = sample_header();
      switch (field) {
        case 0: x.set_uuid[15] ^= 0xFF; break;
        case 1: x.image_uuid[0] ^= 0xFF; break;
        case 2: x.events = ~0ull; break;
        case 3: x.events_cleared = 0; break;
        case 4: x.chunk_size = core::kMinChunkSize; break;
        case 5: x.daemon_sleep_ms = 1; break;
        case 6: x.write_behind = 16383; break;
        case 7: x.sync_size = 0; break;
        case 8: x.state = core::kStateStale | core::kStateNeedsFullSync; break;
      }
      INFO("field " << field);
      auto dx = core::decode_header(core::encode_header(x));
      REQUIRE(dx);
      CHECK(*dx == x);
      CHECK_FALSE(*dx == h);
    }
  }
  SUBCASE("minor version is carried and ignored") {
    BitmapHeader x = sample_header();
    x.version_minor = 7;
    auto dx = core::decode_header(core::encode_header(x));
    REQUIRE(dx);
    CHECK(dx->version_minor == 7);
  }
  SUBCASE("longer input than the header is fine") {
    std::vector<std::byte> big(raw.begin(), raw.end());
    big.resize(3 * core::kHeaderSize, std::byte{0x5A});
    auto dx = core::decode_header(big);
    REQUIRE(dx);
    CHECK(*dx == h);
  }
}

TEST_CASE("documented byte offsets of the encoded header") {
  const BitmapHeader h = sample_header();
  const Raw b = core::encode_header(h);
  CHECK(std::memcmp(b.data(), "FMBITMAP", 8) == 0);
  CHECK(le(b, 8, 2) == 1);                       // version_major
  CHECK(le(b, 10, 2) == 0);                      // version_minor
  CHECK(le(b, 12, 4) == 4096);                   // header_size
  for (int i = 0; i < 16; ++i) {
    CHECK(static_cast<std::uint8_t>(b[16 + i]) == h.set_uuid[i]);
    CHECK(static_cast<std::uint8_t>(b[32 + i]) == h.image_uuid[i]);
  }
  // events at 48, little-endian: least significant byte first.
  CHECK(static_cast<std::uint8_t>(b[48]) == 0x08);
  CHECK(static_cast<std::uint8_t>(b[55]) == 0x01);
  CHECK(le(b, 48, 8) == h.events);
  CHECK(le(b, 56, 8) == h.events_cleared);
  CHECK(le(b, 64, 8) == h.chunk_size);
  CHECK(static_cast<std::uint8_t>(b[66]) == 0x10);  // 1 MiB = 0x00100000
  CHECK(le(b, 72, 4) == h.daemon_sleep_ms);
  CHECK(le(b, 76, 4) == h.write_behind);
  CHECK(le(b, 80, 8) == h.sync_size);
  CHECK(static_cast<std::uint8_t>(b[80]) == 0x48);
  CHECK(le(b, 88, 4) == h.state);
  CHECK(le(b, 92, 4) == 0);
  // Reserved space is zero.
  std::size_t nonzero = 0;
  for (std::size_t i = 96; i < core::kCrcOffset; ++i) nonzero += b[i] != std::byte{0};
  CHECK(nonzero == 0);
  // CRC32C of [0, 4092) at 4092, little-endian.
  CHECK(le(b, 4092, 4) == utils::crc32c(std::span<const std::byte>(b.data(), 4092)));
}

TEST_CASE("a decoded hand-made header reads the documented offsets") {
  // The reverse direction: bytes laid out by hand per the documentation decode as expected.
  Raw b{};
  std::memcpy(b.data(), "FMBITMAP", 8);
  put_le(b, 8, 2, 1);
  put_le(b, 12, 4, 4096);
  b[16] = std::byte{0xEE};
  b[47] = std::byte{0xDD};
  put_le(b, 48, 8, 77);
  put_le(b, 56, 8, 66);
  put_le(b, 64, 8, 8192);
  put_le(b, 72, 4, 1234);
  put_le(b, 76, 4, 5);
  put_le(b, 80, 8, 1ull << 40);
  put_le(b, 88, 4, core::kStateNeedsFullSync);
  recrc(b);
  auto d = core::decode_header(b);
  REQUIRE(d);
  CHECK(d->set_uuid[0] == 0xEE);
  CHECK(d->image_uuid[15] == 0xDD);
  CHECK(d->events == 77);
  CHECK(d->events_cleared == 66);
  CHECK(d->chunk_size == 8192);
  CHECK(d->daemon_sleep_ms == 1234);
  CHECK(d->write_behind == 5);
  CHECK(d->sync_size == (1ull << 40));
  CHECK(d->state == core::kStateNeedsFullSync);
}

TEST_CASE("any single flipped byte is refused") {
  const Raw good = core::encode_header(sample_header());
  std::size_t checked = 0, wrong = 0;
  for (std::size_t off = 0; off < core::kHeaderSize; ++off) {
    Raw b = good;
    b[off] ^= std::byte{0xFF};
    const auto ec = decode_error(b);
    const HeaderError want = off < 8 ? HeaderError::bad_magic : HeaderError::bad_checksum;
    if (ec != core::make_error_code(want)) {
      ++wrong;
      FAIL_CHECK("flipping byte " << off << " gave '" << ec.message() << "'");
    }
    ++checked;
  }
  CHECK(checked == core::kHeaderSize);
  CHECK(wrong == 0);
  // Single-bit flips at a sample of offsets, including the CRC itself.
  for (std::size_t off : {8u, 16u, 47u, 48u, 64u, 80u, 88u, 95u, 96u, 2000u, 4091u, 4092u, 4095u}) {
    for (int bit = 0; bit < 8; ++bit) {
      Raw b = good;
      b[off] ^= std::byte(1u << bit);
      INFO("offset " << off << " bit " << bit);
      CHECK(decode_error(b) == core::make_error_code(HeaderError::bad_checksum));
    }
  }
}

TEST_CASE("wrong magic") {
  Raw b = core::encode_header(sample_header());
  std::memcpy(b.data(), "FMBITMAQ", 8);
  recrc(b);  // even with a valid CRC
  CHECK(decode_error(b) == core::make_error_code(HeaderError::bad_magic));
  Raw zero{};
  CHECK(decode_error(zero) == core::make_error_code(HeaderError::bad_magic));
}

TEST_CASE("future major version is refused, only by the version check") {
  SUBCASE("edited bytes, re-CRC'd") {
    Raw b = core::encode_header(sample_header());
    put_le(b, 8, 2, core::kVersionMajor + 1);
    recrc(b);
    CHECK(decode_error(b) == core::make_error_code(HeaderError::future_version));
    put_le(b, 8, 2, 0xFFFF);
    recrc(b);
    CHECK(decode_error(b) == core::make_error_code(HeaderError::future_version));
  }
  SUBCASE("major version 0 is not a valid version either") {
    Raw b = core::encode_header(sample_header());
    put_le(b, 8, 2, 0);
    recrc(b);
    CHECK(decode_error(b) == core::make_error_code(HeaderError::future_version));
  }
  SUBCASE("encoded with a newer major") {
    BitmapHeader h = sample_header();
    h.version_major = 2;
    CHECK(decode_error(core::encode_header(h)) == core::make_error_code(HeaderError::future_version));
  }
}

TEST_CASE("truncated input") {
  const Raw good = core::encode_header(sample_header());
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{8}, std::size_t{96},
                        core::kCrcOffset, core::kHeaderSize - 1}) {
    INFO("size " << n);
    CHECK(decode_error(std::span<const std::byte>(good.data(), n)) ==
          core::make_error_code(HeaderError::truncated));
  }
  CHECK(decode_error(std::span<const std::byte>(good.data(), core::kHeaderSize)) == std::error_code{});
}

TEST_CASE("bad chunk size, re-CRC'd") {
  const std::uint64_t bad_sizes[] = {0, 1, 2048, 3000, 4095, 65537, std::uint64_t{3} << 20,
                                     core::kMaxChunkSize * 2, ~std::uint64_t{0}};
  for (std::uint64_t cs : bad_sizes) {
    Raw b = core::encode_header(sample_header());
    put_le(b, 64, 8, cs);
    recrc(b);
    INFO("chunk_size " << cs);
    CHECK(decode_error(b) == core::make_error_code(HeaderError::bad_chunk_size));
  }
  for (std::uint64_t cs : {core::kMinChunkSize, std::uint64_t{65536}, core::kMaxChunkSize}) {
    Raw b = core::encode_header(sample_header());
    put_le(b, 64, 8, cs);
    recrc(b);
    INFO("chunk_size " << cs);
    CHECK(decode_error(b) == std::error_code{});
  }
}

TEST_CASE("bad header size field, re-CRC'd") {
  Raw b = core::encode_header(sample_header());
  put_le(b, 12, 4, 512);
  recrc(b);
  CHECK(decode_error(b) == core::make_error_code(HeaderError::bad_header_size));
}

TEST_CASE("error messages are non-empty and distinct") {
  std::set<std::string> seen;
  const HeaderError all[] = {HeaderError::truncated,       HeaderError::bad_magic,
                             HeaderError::bad_checksum,    HeaderError::future_version,
                             HeaderError::bad_header_size, HeaderError::bad_chunk_size};
  for (auto e : all) {
    const std::string m = core::make_error_code(e).message();
    INFO("error " << static_cast<int>(e) << ": " << m);
    CHECK_FALSE(m.empty());
    CHECK(seen.insert(m).second);
    CHECK(std::string(core::make_error_code(e).category().name()) == "bitmap header");
  }
  CHECK(seen.size() == 6);
  // The implicit conversion the is_error_code_enum specialisation allows.
  std::error_code ec = HeaderError::bad_magic;
  CHECK(ec == core::make_error_code(HeaderError::bad_magic));
  CHECK(ec != core::make_error_code(HeaderError::bad_checksum));
}

TEST_CASE("bits_bytes rounds up to whole 4 KiB pages") {
  CHECK(core::bits_bytes(0) == 0);
  CHECK(core::bits_bytes(1) == 4096);
  CHECK(core::bits_bytes(8) == 4096);
  CHECK(core::bits_bytes(32768) == 4096);
  CHECK(core::bits_bytes(32769) == 8192);
  CHECK(core::bits_bytes(65536) == 8192);
  CHECK(core::bits_bytes(65537) == 12288);
}

TEST_CASE("state_string") {
  CHECK(core::state_string(0) == "active");
  CHECK(core::state_string(core::kStateClean) == "clean");
  CHECK(core::state_string(core::kStateDegraded | core::kStateStale) == "active, stale, degraded");
  CHECK(core::state_string(core::kStateClean | core::kStateNeedsFullSync) == "clean, needs-full-sync");
  CHECK(core::state_string(core::kStateClean | core::kStateNoBits) == "clean, no-bits");
}

}  // TEST_SUITE

TEST_CASE("read_bitmap_file: the bits without their page padding are complete; one byte less is not") {
  fmtest::TempDir d;
  const std::string path = d / "x.fmbm";
  // 100 chunks: 13 bytes of bits, padded to 4096 by the daemon.
  const auto h = fmtest::clean_header(fusemirror::utils::Uuid{1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16},
                                      65536, 100 * 65536);
  fmtest::write_bitmap_file(path, h, {0, 7, 99});
  auto whole = fmtest::read_bytes(path);
  REQUIRE(whole.size() == core::kHeaderSize + 4096);
  auto read = [&](std::size_t keep) {
    fmtest::write_bytes(path, std::vector<std::byte>(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(keep)), 0600);
    fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    auto r = core::read_bitmap_file(fd.get());
    REQUIRE(r);
    return std::move(r).value();
  };
  SUBCASE("padded") {
    auto f = read(whole.size());
    CHECK(f.problem.empty());
    CHECK(f.bits.size() == 13);
  }
  SUBCASE("exactly the bits") {
    auto f = read(core::kHeaderSize + 13);
    REQUIRE(f.header);
    CHECK(f.problem.empty());
    CHECK_FALSE(f.bits_truncated);
    REQUIRE(f.bits.size() == 13);
    CHECK(std::to_integer<unsigned>(f.bits[0]) == 0x81);
    CHECK(std::to_integer<unsigned>(f.bits[12]) == 0x08);  // chunk 99 = bit 3 of byte 12
  }
  SUBCASE("one byte short") {
    auto f = read(core::kHeaderSize + 12);
    REQUIRE(f.header);
    CHECK(f.bits_truncated);
    CHECK(f.bits.size() == 12);
    CHECK(f.problem.find("bits truncated") != std::string::npos);
    CHECK(f.problem.find("100 chunks") != std::string::npos);
  }
  SUBCASE("header only, no bits wanted") {
    fmtest::write_bytes(path, std::vector<std::byte>(whole.begin(), whole.begin() + core::kHeaderSize), 0600);
    fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    auto r = core::read_bitmap_file(fd.get(), /*with_bits=*/false);
    REQUIRE(r);
    CHECK(r->problem.empty());
    CHECK(r->bits.empty());
  }
  SUBCASE("a bad header is described, not an error") {
    auto bad = whole;
    bad[0] = std::byte{'X'};
    fmtest::write_bytes(path, bad, 0600);
    fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    auto r = core::read_bitmap_file(fd.get());
    REQUIRE(r);
    CHECK_FALSE(r->header);
    CHECK(r->problem.find("magic") != std::string::npos);
  }
}
