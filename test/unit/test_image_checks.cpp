// Unit tests for an Image with checksums (core/image_checks.cpp, core/bitmap.cpp's hook):
// the sweep records a checksum before it clears a bit and clears only what it recorded;
// check/repair know which leg is wrong and repair either; verify_reads returns good data;
// truncate forgets; close_clean records the primary's identity.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/image.hpp"
#include "test_helpers.hpp"
#include "utils/thread_pool.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

const utils::Uuid kSet = {7, 7, 7, 7, 7, 7, 0x47, 7, 0x87, 7, 7, 7, 7, 7, 7, 7};
constexpr std::uint64_t kCs = 65536;
constexpr std::uint64_t kSize = 16 * kCs;

struct Fixture {
  TempDir dir;
  std::string ppath = dir / "p.img", spath = dir / "s.img", bpath = dir / "img.fmbm", cpath = dir / "img.fmck";
  utils::ThreadPool pool{2};
  std::unique_ptr<core::Image> img;
  std::vector<std::byte> data = fmtest::pattern(kSize, 11);

  core::ImageOptions base;  // every open's options (verify_reads aside)

  explicit Fixture(bool verify_reads = false, core::ImageOptions o = {}) : base(o) {
    fmtest::write_bytes(ppath, data, 0600);
    fmtest::write_bytes(spath, data, 0600);
    fmtest::write_bitmap_file(bpath, fmtest::clean_header(kSet, kCs, kSize));
    open(verify_reads);
  }

  void open(bool verify_reads = false) {
    img.reset();
    utils::UniqueFd p(::open(ppath.c_str(), O_RDWR | O_CLOEXEC));
    utils::UniqueFd s(::open(spath.c_str(), O_RDWR | O_CLOEXEC));
    utils::UniqueFd b(::open(bpath.c_str(), O_RDWR | O_CLOEXEC));
    utils::UniqueFd c(::open(cpath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE((p.valid() && s.valid() && b.valid() && c.valid()));
    struct stat st {};
    REQUIRE(::fstat(p.get(), &st) == 0);
    auto bm = fmtest::open_bitmap(std::move(b), kSet, kCs, static_cast<std::uint64_t>(st.st_size));
    core::Checksums::OpenParams cp;
    cp.set_uuid = kSet;
    cp.image_uuid = bm->image_uuid();
    cp.chunk_size = kCs;
    cp.primary = core::FileIdentity::of(st);
    std::string why;
    auto ck = core::Checksums::open(std::move(c), cp, &why);
    REQUIRE(ck);
    core::ImageOptions o = base;
    o.verify_reads = verify_reads;
    img = std::make_unique<core::Image>("img", std::move(p), std::move(s), std::move(bm), &pool, o);
    img->attach_checksums(std::move(*ck));
  }

  // Writes every chunk through the image, then two sweeps: every bit is cleared and every
  // chunk has a checksum.
  void settle() {
    REQUIRE(img->write(data, 0));
    REQUIRE_FALSE(img->sweep());
    REQUIRE_FALSE(img->sweep());
    REQUIRE(img->bitmap()->stats().dirty_chunks == 0);
  }

  core::ScrubCounts check(bool repair) {
    std::vector<std::byte> a(1 << 20), b(1 << 20);
    core::ScrubCounts k;
    for (std::uint64_t c = 0; c < img->total_chunks();) {
      auto r = img->check_step(c, 4, repair, a, b, &k);
      REQUIRE_MESSAGE(r, "check_step: " << r.error().message());
      c = *r;
    }
    return k;
  }

  void flip(const std::string& path, std::uint64_t off) {
    utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    unsigned char x = 0;
    REQUIRE(::pread(fd.get(), &x, 1, static_cast<off_t>(off)) == 1);
    x ^= 0xFF;
    REQUIRE(::pwrite(fd.get(), &x, 1, static_cast<off_t>(off)) == 1);
  }
};

}  // namespace

TEST_SUITE("image checks") {

TEST_CASE("the sweep records each chunk's checksum before it clears its bit") {
  Fixture f;
  f.settle();
  core::ScrubCounts k = f.check(false);
  CHECK(k.checked == 16);
  CHECK(k.unverified == 0);  // every clean chunk has a checksum
  CHECK(k.bad_primary + k.bad_secondary + k.unrecoverable + k.mismatches == 0);
}

TEST_CASE("a bit is cleared only for chunks whose checksum was recorded") {
  Fixture f;
  REQUIRE(f.img->write(f.data, 0));
  REQUIRE_FALSE(f.img->sweep());  // the first sweep only forgets "recent"
  SUBCASE("a record that fails clears nothing") {
    auto r = f.img->bitmap()->sweep([] { return std::error_code{}; },
                                    [](std::vector<core::ChunkRange>&) { return utils::errno_code(EIO); });
    CHECK_FALSE(r);
    CHECK(f.img->bitmap()->stats().dirty_chunks == 16);
  }
  SUBCASE("a record that keeps a part clears that part") {
    std::vector<core::ChunkRange> seen;
    auto r = f.img->bitmap()->sweep([] { return std::error_code{}; }, [&](std::vector<core::ChunkRange>& runs) {
      seen = runs;
      runs = {{2, 5}};
      return std::error_code{};
    });
    REQUIRE(r);
    CHECK(*r == 3);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].first == 0);
    CHECK(seen[0].end == 16);
    CHECK(f.img->bitmap()->stats().dirty_chunks == 13);
    CHECK(f.img->bitmap()->chunk_clean(2));
    CHECK_FALSE(f.img->bitmap()->chunk_clean(5));
  }
  SUBCASE("a chunk written while the sweep hashes keeps its bit") {
    auto r = f.img->bitmap()->sweep([] { return std::error_code{}; }, [&](std::vector<core::ChunkRange>&) {
      // A write starts (and ends) between the hashing and the clear.
      CHECK_FALSE(f.img->bitmap()->start_write(3 * kCs, 10));
      f.img->bitmap()->end_write(3 * kCs, 10, true);
      return std::error_code{};
    });
    REQUIRE(r);
    CHECK(*r == 15);
    CHECK_FALSE(f.img->bitmap()->chunk_clean(3));
  }
}

TEST_CASE("a bad primary: check says so, verify_reads serves the secondary, repair fixes the primary") {
  Fixture f(/*verify_reads=*/true);
  f.settle();
  f.flip(f.ppath, 5 * kCs + 100);
  core::ScrubCounts k = f.check(false);
  CHECK(k.bad_primary == 1);
  CHECK(k.bad_secondary == 0);
  CHECK(k.mismatches == 1);
  CHECK(fmtest::read_bytes(f.ppath) != f.data);  // check changes nothing
  SUBCASE("a read returns the good data and repairs the primary") {
    std::vector<std::byte> buf(4096);
    auto r = f.img->read(buf, 5 * kCs);
    REQUIRE(r);
    CHECK(std::equal(buf.begin(), buf.end(), f.data.begin() + 5 * kCs));
    CHECK(fmtest::read_bytes(f.ppath) == f.data);
    CHECK(f.img->status().scrub.read_repaired == 1);
  }
  SUBCASE("repair rewrites the primary from the secondary, then it verifies") {
    k = f.check(true);
    CHECK(k.bad_primary == 1);
    CHECK(k.repaired == 1);
    CHECK(fmtest::read_bytes(f.ppath) == f.data);
    CHECK(fmtest::read_bytes(f.spath) == f.data);
    CHECK(f.img->bitmap()->chunk_clean(5));  // the primary's repair never sets a bit
    k = f.check(false);
    CHECK(k.bad_primary + k.mismatches == 0);
  }
}

TEST_CASE("a bad secondary is repaired from the primary") {
  Fixture f;
  f.settle();
  f.flip(f.spath, 9 * kCs + 7);
  core::ScrubCounts k = f.check(true);
  CHECK(k.bad_secondary == 1);
  CHECK(k.repaired == 1);
  CHECK(fmtest::read_bytes(f.spath) == f.data);
  CHECK(fmtest::read_bytes(f.ppath) == f.data);
}

TEST_CASE("both legs bad, differently: unrecoverable, nothing overwritten, a verified read fails") {
  Fixture f(/*verify_reads=*/true);
  f.settle();
  f.flip(f.ppath, 2 * kCs + 1);
  f.flip(f.spath, 2 * kCs + 2);
  const auto p = fmtest::read_bytes(f.ppath), s = fmtest::read_bytes(f.spath);
  core::ScrubCounts k = f.check(true);
  CHECK(k.unrecoverable == 1);
  CHECK(k.repaired == 0);
  CHECK(fmtest::read_bytes(f.ppath) == p);
  CHECK(fmtest::read_bytes(f.spath) == s);
  std::vector<std::byte> buf(100);
  auto r = f.img->read(buf, 2 * kCs);
  CHECK_FALSE(r);
  CHECK(r.error() == std::errc::io_error);
}

TEST_CASE("a chunk being written is not judged by its old checksum") {
  Fixture f(/*verify_reads=*/true);
  f.settle();
  auto fresh = fmtest::pattern(100, 99);
  REQUIRE(f.img->write(fresh, 4 * kCs));  // sets the bit: the checksum no longer counts
  core::ScrubCounts k = f.check(true);
  CHECK(k.unverified == 1);
  CHECK(k.bad_primary + k.bad_secondary + k.unrecoverable + k.mismatches == 0);
  std::vector<std::byte> buf(100);
  REQUIRE(f.img->read(buf, 4 * kCs));
  CHECK(buf == fresh);
  // Two sweeps later the chunk is clean again, with its new checksum.
  REQUIRE_FALSE(f.img->sweep());
  REQUIRE_FALSE(f.img->sweep());
  k = f.check(false);
  CHECK(k.unverified == 0);
  CHECK(k.mismatches == 0);
}

TEST_CASE("check adopts clean chunks that have no checksum yet; truncate forgets") {
  Fixture f;
  // The bitmap is clean and nothing was written through the image: no checksum at all.
  core::ScrubCounts k = f.check(false);
  CHECK(k.unverified == 16);
  k = f.check(false);
  CHECK(k.unverified == 0);  // adopted by the first pass
  // A shrink to the middle of chunk 10 drops chunk 10's checksum (its tail changes) and
  // those past it.
  REQUIRE_FALSE(f.img->truncate(10 * kCs + 5));
  k = f.check(false);
  CHECK(k.checked == 11);
  CHECK(k.unverified == 1);
  CHECK(k.mismatches == 0);
}

TEST_CASE("close_clean records every dirty chunk and the primary's identity") {
  Fixture f;
  REQUIRE(f.img->write(f.data, 0));
  REQUIRE_FALSE(f.img->close_clean());
  CHECK(f.img->bitmap()->stats().dirty_chunks == 0);
  f.open();
  core::ScrubCounts k = f.check(false);
  CHECK(k.unverified == 0);
  CHECK(k.checked == 16);
  // Changed while "unmounted": the checksums are reset, not used to accuse the primary.
  REQUIRE_FALSE(f.img->close_clean());
  f.img.reset();
  ::usleep(20000);     // past the file system clock's granularity
  f.flip(f.ppath, 3);  // a write: its mtime changes
  f.open();
  k = f.check(false);
  CHECK(k.bad_primary == 0);
  CHECK(k.unverified == 16);
}

}  // TEST_SUITE

namespace {

// Two quiet sweeps, then a check that must find every chunk either verified or unverified
// with equal legs: a stale checksum would accuse a leg.
void settle_and_check(Fixture& f) {
  REQUIRE_FALSE(f.img->sweep());
  REQUIRE_FALSE(f.img->sweep());
  REQUIRE(f.img->bitmap()->stats().dirty_chunks == 0);
  core::ScrubCounts k = f.check(false);
  CHECK(k.bad_primary == 0);
  CHECK(k.bad_secondary == 0);
  CHECK(k.unrecoverable == 0);
  CHECK(k.mismatches == 0);
  CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
}

// `writers` threads of random writes (with `aligned`, half of them 4 KiB-aligned, which go
// direct where the image is set so), a thread of truncates, and 60 sweeps meanwhile; then
// settle_and_check.
void churn(Fixture& f, int writers, bool aligned) {
  f.settle();
  std::atomic<bool> stop{false};
  auto writer = [&](std::uint32_t x) {
    while (!stop.load()) {
      x = x * 1103515245u + 12345u;
      if (aligned && (x & 0x100)) {
        const std::uint64_t off = ((x >> 9) % (kSize / 4096 - 32)) * 4096;
        (void)f.img->write(fmtest::pattern(4096 * (1 + x % 32), x), off);
      } else {
        const std::uint64_t off = (x >> 8) % (kSize - 8192);
        (void)f.img->write(fmtest::pattern(1 + (x % 8000), x), off);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < writers; ++i) threads.emplace_back(writer, 12345u + 777u * static_cast<std::uint32_t>(i));
  threads.emplace_back([&] {
    std::uint32_t x = 999;
    while (!stop.load()) {
      x = x * 1103515245u + 12345u;
      (void)f.img->truncate(kSize / 2 + (x % (kSize / 2)));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      (void)f.img->truncate(kSize);
    }
  });
  for (int i = 0; i < 60; ++i) {
    REQUIRE_FALSE(f.img->sweep());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  for (auto& t : threads) t.join();
  settle_and_check(f);
}

}  // namespace

TEST_CASE("under concurrent writes, truncates and sweeps, no trusted checksum ever accuses a leg") {
  Fixture f;
  churn(f, 1, false);
}

// ---- checksums from direct writes' buffers (core/fresh_hashes.hpp) -----------------------

namespace {

core::ImageOptions every_write_direct() {
  core::ImageOptions o;
  o.direct_write_max = 1 << 20;
  o.direct_write_inflight = 1;  // one writer: every aligned write goes direct
  return o;
}

}  // namespace

TEST_CASE("the sweep takes a direct write's own hashes and reads nothing for those chunks") {
  Fixture f(false, every_write_direct());
  // 1 MiB at 0 (16 whole chunks) and 6 chunks at 4 KiB into chunk 4: chunks 5..9 whole, 4
  // and 10 in part (their old hashes, from the first write, must not survive).
  REQUIRE(f.img->write(f.data, 0));
  const auto more = fmtest::pattern(6 * kCs, 5);
  REQUIRE(f.img->write(more, 4 * kCs + 4096));
  CHECK(f.img->direct_writes() == 2);
  settle_and_check(f);
  CHECK(f.img->hashes_from_writes() == 16 - 2);  // every chunk but 4 and 10
  // Every chunk has a checksum (none unverified), and each matches.
  core::ScrubCounts k = f.check(false);
  CHECK(k.unverified == 0);
  CHECK(k.checked == kSize / kCs);
}

TEST_CASE("no change to the primary leaves a direct write's hash behind") {
  Fixture f(false, every_write_direct());
  const auto d = fmtest::pattern(4 * kCs, 21);
  std::uint64_t used = 0;
  SUBCASE("an unaligned (buffered) write into a chunk") {
    REQUIRE(f.img->write(d, 4 * kCs));
    REQUIRE(f.img->write(fmtest::pattern(100, 3), 5 * kCs + 7));
    used = 3;
  }
  SUBCASE("a shrink into a chunk, then a grow") {
    REQUIRE(f.img->write(d, 4 * kCs));
    REQUIRE_FALSE(f.img->truncate(6 * kCs + 512));
    REQUIRE_FALSE(f.img->truncate(kSize));
    used = 2;  // chunks 4 and 5
  }
  SUBCASE("a punched hole and a zeroed range") {
    REQUIRE(f.img->write(d, 4 * kCs));
    REQUIRE_FALSE(f.img->fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * kCs + 8192, 4096));
    REQUIRE_FALSE(f.img->fallocate(FALLOC_FL_ZERO_RANGE, 7 * kCs, 8192));
    used = 2;  // chunks 4 and 6
  }
  SUBCASE("a direct write over a direct write") {
    REQUIRE(f.img->write(d, 4 * kCs));
    REQUIRE(f.img->write(fmtest::pattern(kCs, 9), 5 * kCs));
    used = 4;
  }
  settle_and_check(f);
  CHECK(f.img->hashes_from_writes() == used);
}

TEST_CASE("under concurrent direct and buffered writes, truncates and sweeps, no checksum accuses a leg") {
  Fixture f(false, every_write_direct());
  churn(f, 2, true);
  CHECK(f.img->direct_writes() > 0);
  CHECK(f.img->hashes_from_writes() > 0);
}
