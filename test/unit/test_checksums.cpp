// Unit tests for the checksum sidecar: its format (core/checksum_format), the Checksums file
// (core/checksums: trust rules at open, record/lookup, paging, corrupt pages, forgetting)
// and the chunk hash and verdicts (core/chunk_check).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <cstring>

#include "core/checksum_format.hpp"
#include "core/checksums.hpp"
#include "core/chunk_check.hpp"
#include "core/scrub.hpp"
#include "test_helpers.hpp"
#include "utils/crc32c.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

const utils::Uuid kSet = {1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16};
const utils::Uuid kImage = {9, 9, 9, 9, 9, 9, 0x49, 9, 0x89, 9, 9, 9, 9, 9, 9, 9};
constexpr std::uint64_t kCs = 65536;

core::FileIdentity primary_of(std::uint64_t size) { return {1234, size, 5678}; }

core::Checksums::OpenParams params(std::uint64_t size = 1ull << 30) {
  core::Checksums::OpenParams p;
  p.set_uuid = kSet;
  p.image_uuid = kImage;
  p.chunk_size = kCs;
  p.primary = primary_of(size);
  return p;
}

std::unique_ptr<core::Checksums> open_ck(const std::string& path, const core::Checksums::OpenParams& p,
                                         std::string* why = nullptr) {
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  std::string w;
  auto ck = core::Checksums::open(std::move(fd), p, &w);
  REQUIRE_MESSAGE(ck, "open failed: " << ck.error().message());
  if (why) *why = w;
  return std::move(*ck);
}

std::optional<std::uint64_t> entry(const core::Checksums& ck, std::uint64_t c) { return ck.lookup(c).entry; }

}  // namespace

TEST_SUITE("checksums") {

TEST_CASE("header: round trip, every field at its documented offset, little-endian") {
  core::CksumHeader h;
  h.set_uuid = kSet;
  h.image_uuid = kImage;
  h.chunk_size = kCs;
  h.generation = 0xA1B2C3D4;
  h.state = core::kCksumStateClean;
  h.primary_ino = 0x0102030405060708;
  h.primary_size = 1 << 20;
  h.primary_mtime_ns = 1764081600123456789;
  const auto b = core::encode_cksum_header(h);
  CHECK(std::memcmp(b.data(), "FMCHKSUM", 8) == 0);
  CHECK(b[8] == std::byte{1});                       // version_major, LE
  CHECK(b[12] == std::byte{0x00});                   // header_size 4096 = 0x1000
  CHECK(b[13] == std::byte{0x10});
  CHECK(std::memcmp(b.data() + 16, kSet.data(), 16) == 0);
  CHECK(std::memcmp(b.data() + 32, kImage.data(), 16) == 0);
  CHECK(b[50] == std::byte{1});                      // chunk_size 65536 = 0x10000
  CHECK(b[56] == std::byte{1});                      // algorithm xxh3
  CHECK(b[60] == std::byte{0xD4});                   // generation, LE
  CHECK(b[64] == std::byte{1});                      // state clean
  CHECK(b[72] == std::byte{0x08});                   // primary_ino, LE
  CHECK(utils::crc32c(std::span(b.data(), 4092)) ==
        (static_cast<std::uint32_t>(b[4092]) | static_cast<std::uint32_t>(b[4093]) << 8 |
         static_cast<std::uint32_t>(b[4094]) << 16 | static_cast<std::uint32_t>(b[4095]) << 24));
  core::CksumHeader d;
  REQUIRE(core::decode_cksum_header(b, &d).empty());
  CHECK(d == h);
}

TEST_CASE("header: every rejection names its reason, and a flipped byte anywhere is caught") {
  core::CksumHeader h;
  h.set_uuid = kSet;
  h.image_uuid = kImage;
  h.chunk_size = kCs;
  h.generation = 7;
  auto b = core::encode_cksum_header(h);
  core::CksumHeader d;
  CHECK(core::decode_cksum_header(std::span(b.data(), 100), &d).find("truncated") != std::string::npos);
  for (std::size_t off : {0u, 9u, 20u, 50u, 61u, 1000u, 4091u, 4094u}) {
    auto c = b;
    c[off] ^= std::byte{0x20};
    const std::string why = core::decode_cksum_header(c, &d);
    INFO("offset " << off << ": " << why);
    CHECK_FALSE(why.empty());
  }
  auto future = h;
  future.version_major = 2;
  CHECK(core::decode_cksum_header(core::encode_cksum_header(future), &d).find("newer") != std::string::npos);
  auto algo = h;
  algo.algorithm = 9;
  CHECK(core::decode_cksum_header(core::encode_cksum_header(algo), &d).find("algorithm") != std::string::npos);
  auto gen0 = h;
  gen0.generation = 0;
  CHECK(core::decode_cksum_header(core::encode_cksum_header(gen0), &d).find("generation") != std::string::npos);
  auto cs = h;
  cs.chunk_size = 5000;
  CHECK(core::decode_cksum_header(core::encode_cksum_header(cs), &d).find("chunk size") != std::string::npos);
  auto flags = h;
  flags.state = 0x10;
  CHECK(core::decode_cksum_header(core::encode_cksum_header(flags), &d).find("flags") != std::string::npos);
}

TEST_CASE("scrub block and entry pages: round trip; torn, misplaced or foreign pages are rejected") {
  core::ScrubRecord r;
  r.generation = 42;
  r.in_progress = true;
  r.cursor = 12345;
  r.pass_started = 1700000000;
  r.last_run = 1690000000;
  r.counts = {100, 5, 1, 2, 3, 4, 6};
  core::ScrubRecord d;
  REQUIRE(core::decode_scrub_block(core::encode_scrub_block(r), &d).empty());
  CHECK(d == r);
  auto torn = core::encode_scrub_block(r);
  torn[20] ^= std::byte{1};
  CHECK_FALSE(core::decode_scrub_block(torn, &d).empty());

  core::CksumEntries e{};
  e[0] = 11;
  e[509] = 0xFFFFFFFFFFFFFFFF;
  const auto page = core::encode_cksum_page(3, 42, e);
  core::CksumEntries out{};
  REQUIRE(core::decode_cksum_page(page, 3, 42, &out) == core::PageState::valid);
  CHECK(out == e);
  CHECK(core::decode_cksum_page(page, 4, 42, &out) == core::PageState::bad);   // misplaced
  CHECK(core::decode_cksum_page(page, 3, 43, &out) == core::PageState::bad);   // before a reset
  auto flipped = page;
  flipped[100] ^= std::byte{4};
  CHECK(core::decode_cksum_page(flipped, 3, 42, &out) == core::PageState::bad);  // corrupt
  std::array<std::byte, core::kCksumBlock> zeros{};
  CHECK(core::decode_cksum_page(zeros, 3, 42, &out) == core::PageState::empty);  // a hole
  CHECK(core::cksum_entry(0) == 1);
  CHECK(core::cksum_entry(77) == 77);
}

TEST_CASE("record, lookup and reopen: entries are paged in the file, nothing held per chunk") {
  TempDir t;
  const std::string path = t / "img.fmck";
  std::string why;
  auto ck = open_ck(path, params(), &why);
  CHECK(why.empty());
  CHECK_FALSE(entry(*ck, 0));
  // Chunks on four different pages, one far away (a 1 TiB image's last page).
  const std::uint64_t far = (1ull << 40) / kCs - 1;
  REQUIRE_FALSE(ck->record({{0, 100}, {509, 101}, {510, 102}, {far, 103}}));
  CHECK(entry(*ck, 0) == 100u);
  CHECK(entry(*ck, 509) == 101u);
  CHECK(entry(*ck, 510) == 102u);
  CHECK(entry(*ck, far) == 103u);
  CHECK_FALSE(entry(*ck, 1));
  // Sparse: the file spans a 1 TiB image's pages but holds only the pages written.
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_size) == core::cksum_page_offset(far / core::kEntriesPerPage + 1));
  CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 <= 64 * 1024);
  // A later record of the same chunk wins; 0 forgets.
  REQUIRE_FALSE(ck->record({{0, 200}, {509, 0}}));
  CHECK(entry(*ck, 0) == 200u);
  CHECK_FALSE(entry(*ck, 509));
  CHECK(entry(*ck, 510) == 102u);
  const auto gen = ck->generation();
  ck.reset();
  // Reopened for the same image (after a crash: not closed clean): kept.
  auto again = open_ck(path, params((far + 1) * kCs), &why);
  CHECK(why.empty());
  CHECK(again->generation() == gen);
  CHECK(entry(*again, 0) == 200u);
  CHECK(entry(*again, far) == 103u);
}

TEST_CASE("open resets the sidecar when it cannot vouch for the data") {
  TempDir t;
  const std::string path = t / "img.fmck";
  auto fill = [&] {
    auto ck = open_ck(path, params());
    REQUIRE_FALSE(ck->record({{3, 33}}));
    return ck->generation();
  };
  std::string why;
  SUBCASE("another image") {
    fill();
    auto p = params();
    p.image_uuid[0] ^= 1;
    auto ck = open_ck(path, p, &why);
    CHECK(why.find("another image") != std::string::npos);
    CHECK_FALSE(entry(*ck, 3));
  }
  SUBCASE("another chunk size (rescale-bitmap)") {
    fill();
    auto p = params();
    p.chunk_size = 2 * kCs;
    auto ck = open_ck(path, p, &why);
    CHECK(why.find("chunk size") != std::string::npos);
    CHECK_FALSE(entry(*ck, 3));
  }
  SUBCASE("an untrusted bitmap") {
    const auto gen = fill();
    auto p = params();
    p.bitmap_trusted = false;
    auto ck = open_ck(path, p, &why);
    CHECK(why.find("bitmap") != std::string::npos);
    CHECK_FALSE(entry(*ck, 3));
    CHECK(ck->generation() != gen);  // no page written before the reset can validate
  }
  SUBCASE("a torn header") {
    fill();
    utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(::pwrite(fd.get(), "X", 1, 40) == 1);
    auto ck = open_ck(path, params(), &why);
    CHECK(why.find("checksum mismatch") != std::string::npos);
    CHECK_FALSE(entry(*ck, 3));
  }
  SUBCASE("closed clean, then the primary changed while unmounted") {
    {
      auto ck = open_ck(path, params());
      REQUIRE_FALSE(ck->record({{3, 33}}));
      REQUIRE_FALSE(ck->close_clean(primary_of(1ull << 30)));
    }
    auto p = params();
    p.primary.mtime_ns += 1;  // an edit made offline
    auto ck = open_ck(path, p, &why);
    CHECK(why.find("primary changed") != std::string::npos);
    CHECK_FALSE(entry(*ck, 3));
  }
  SUBCASE("closed clean and found as it was: kept, and open again on disk") {
    {
      auto ck = open_ck(path, params());
      REQUIRE_FALSE(ck->record({{3, 33}}));
      REQUIRE_FALSE(ck->close_clean(primary_of(1ull << 30)));
    }
    {
      auto ck = open_ck(path, params(), &why);
      CHECK(why.empty());
      CHECK(entry(*ck, 3) == 33u);
    }
    utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    auto f = core::read_cksum_file(fd.get());
    REQUIRE(f);
    REQUIRE(f->header);
    CHECK((f->header->state & core::kCksumStateClean) == 0u);  // a crash now is not a clean close
  }
}

TEST_CASE("a corrupt page loses only its own entries, never yields a wrong one, and is rebuilt") {
  TempDir t;
  const std::string path = t / "img.fmck";
  auto ck = open_ck(path, params());
  REQUIRE_FALSE(ck->record({{5, 55}, {600, 66}}));
  ck.reset();
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  const unsigned char junk = 0x5A;
  REQUIRE(::pwrite(fd.get(), &junk, 1, static_cast<off_t>(core::cksum_page_offset(0) + 5 * 8 + 1)) == 1);
  ck = open_ck(path, params());
  const auto l = ck->lookup(5);
  CHECK_FALSE(l.entry);
  CHECK(l.bad_page);
  CHECK(entry(*ck, 600) == 66u);  // another page
  REQUIRE_FALSE(ck->record({{7, 77}}));  // rewrites page 0 from zeros
  CHECK(entry(*ck, 7) == 77u);
  CHECK_FALSE(entry(*ck, 5));
  CHECK_FALSE(ck->lookup(5).bad_page);
}

TEST_CASE("forget_from drops the entries from a chunk on (a truncate), durably cut") {
  TempDir t;
  const std::string path = t / "img.fmck";
  auto ck = open_ck(path, params());
  REQUIRE_FALSE(ck->record({{1, 11}, {2, 22}, {600, 66}, {5000, 50}}));
  REQUIRE_FALSE(ck->forget_from(2));
  CHECK(entry(*ck, 1) == 11u);
  CHECK_FALSE(entry(*ck, 2));
  CHECK_FALSE(entry(*ck, 600));
  CHECK_FALSE(entry(*ck, 5000));
  CHECK(fmtest::file_size(path) == core::cksum_page_offset(1));
  REQUIRE_FALSE(ck->forget_from(0));
  CHECK_FALSE(entry(*ck, 1));
  // Reopening for a smaller image drops what lies past its end.
  REQUIRE_FALSE(ck->record({{1, 11}, {700, 77}}));
  ck.reset();
  ck = open_ck(path, params(600 * kCs));
  CHECK(entry(*ck, 1) == 11u);
  CHECK_FALSE(entry(*ck, 700));
}

TEST_CASE("the scrub record survives a reopen; a scrub block of an older generation does not") {
  TempDir t;
  const std::string path = t / "img.fmck";
  core::ScrubRecord r;
  r.in_progress = true;
  r.cursor = 99;
  r.counts.checked = 99;
  {
    auto ck = open_ck(path, params());
    ck->save_scrub(r);
    REQUIRE_FALSE(ck->close_clean(primary_of(1ull << 30)));
  }
  {
    auto ck = open_ck(path, params());
    CHECK(ck->scrub().cursor == 99u);
    CHECK(ck->scrub().in_progress);
    CHECK(ck->scrub().counts.checked == 99u);
  }
  auto p = params();
  p.bitmap_trusted = false;  // a reset: a new generation
  auto ck = open_ck(path, p);
  CHECK(ck->scrub().cursor == 0u);
  CHECK_FALSE(ck->scrub().in_progress);
}

TEST_CASE("the chunk hash is XXH3-64 of the whole chunk, zeros past the end of file") {
  TempDir t;
  const std::string f = t / "f";
  auto data = fmtest::pattern(10000, 3);
  fmtest::write_bytes(f, data);
  utils::UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
  std::vector<std::byte> buf(4096);  // pieces smaller than the chunk
  auto h = core::hash_chunk(fd.get(), 0, kCs, buf);
  REQUIRE(h);
  std::vector<std::byte> padded = data;
  padded.resize(kCs);
  CHECK(*h == core::cksum_entry(XXH3_64bits(padded.data(), padded.size())));
  // Growing the file (zeros) keeps the last chunk's hash: no invalidation needed.
  REQUIRE(::truncate(f.c_str(), 3 * kCs) == 0);
  utils::UniqueFd fd2(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
  CHECK(core::hash_chunk(fd2.get(), 0, kCs, buf).value() == *h);
  // A chunk wholly past the end is a chunk of zeros.
  std::vector<std::byte> zeros(kCs);
  CHECK(core::hash_chunk(fd2.get(), 7, kCs, buf).value() == core::cksum_entry(XXH3_64bits(zeros.data(), kCs)));
}

TEST_CASE("read_both and judge: the leg that does not match its checksum is the bad one") {
  TempDir t;
  auto data = fmtest::pattern(2 * kCs, 5);
  fmtest::write_bytes(t / "p", data);
  fmtest::write_bytes(t / "s", data);
  utils::UniqueFd p(::open((t / "p").c_str(), O_RDWR | O_CLOEXEC)), s(::open((t / "s").c_str(), O_RDWR | O_CLOEXEC));
  std::vector<std::byte> a(8192), b(8192);
  std::vector<std::byte> buf(8192);
  const std::uint64_t good = core::hash_chunk(p.get(), 1, kCs, buf).value();
  auto rd = core::read_both(p.get(), s.get(), 1, kCs, a, b);
  REQUIRE(rd);
  CHECK_FALSE(rd->differ);
  CHECK(core::judge(good, *rd) == core::Verdict::ok);
  CHECK(core::judge(std::nullopt, *rd) == core::Verdict::unverified_same);
  const unsigned char x = 0xEE;
  REQUIRE(::pwrite(p.get(), &x, 1, static_cast<off_t>(kCs + 1234)) == 1);
  rd = core::read_both(p.get(), s.get(), 1, kCs, a, b);
  REQUIRE(rd);
  CHECK(rd->differ);
  CHECK(rd->first_diff == kCs + 1234);
  CHECK(rd->last_diff == kCs + 1234);
  CHECK(core::judge(good, *rd) == core::Verdict::bad_primary);
  CHECK(core::judge(std::nullopt, *rd) == core::Verdict::unverified_differ);
  REQUIRE(::pwrite(s.get(), &x, 1, static_cast<off_t>(kCs + 9000)) == 1);
  rd = core::read_both(p.get(), s.get(), 1, kCs, a, b);
  CHECK(core::judge(good, *rd) == core::Verdict::unrecoverable);
  // Only the secondary bad.
  REQUIRE(::pwrite(p.get(), data.data() + kCs + 1234, 1, static_cast<off_t>(kCs + 1234)) == 1);
  rd = core::read_both(p.get(), s.get(), 1, kCs, a, b);
  CHECK(core::judge(good, *rd) == core::Verdict::bad_secondary);
  CHECK(rd->first_diff == kCs + 9000);
}

}  // TEST_SUITE

TEST_CASE("scrub schedule: due when never run, when a pass is in progress, or an interval after the last") {
  core::ScrubRecord r;
  CHECK_FALSE(core::scrub_due(r, 0, 1000));  // off
  CHECK(core::scrub_due(r, 3600, 1000));     // never run
  r.last_run = 1000;
  CHECK_FALSE(core::scrub_due(r, 3600, 1000 + 3599));
  CHECK(core::scrub_due(r, 3600, 1000 + 3600));
  r.in_progress = true;
  CHECK(core::scrub_due(r, 3600, 1001));  // resume at once
}
