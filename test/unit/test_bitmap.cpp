// Unit tests for core::Bitmap over real files: durability ordering, lazy clearing, trust.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "core/bitmap.hpp"
#include "core/bitmap_file.hpp"
#include "core/dir.hpp"
#include "test_helpers.hpp"

using namespace fusemirror;
using core::Bitmap;
using core::BitmapOpenParams;
using fmtest::TempDir;

namespace {

const utils::Uuid kSet = {1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16};
const utils::Uuid kOtherSet = {0xF1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16};
constexpr std::uint64_t kCs = 65536;

BitmapOpenParams params(std::uint64_t image_size, std::uint64_t chunk_size = kCs) {
  BitmapOpenParams p;
  p.set_uuid = kSet;
  p.chunk_size = chunk_size;
  p.daemon_sleep_ms = 1000;
  p.image_size = image_size;
  return p;
}

// Opens (creating if needed) `path` as a bitmap; `fdnum` gets the descriptor number it uses.
std::unique_ptr<Bitmap> open_bm(const std::string& path, const BitmapOpenParams& p,
                                std::string* why = nullptr, int* fdnum = nullptr) {
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  if (fdnum) *fdnum = fd.get();
  std::string w;
  auto r = Bitmap::open(std::move(fd), p, &w);
  if (why) *why = w;
  REQUIRE_MESSAGE(r, "Bitmap::open failed: " << r.error().message());
  return std::move(r).value();
}

// A clean bitmap of `chunks` chunks, made by hand, then opened.
std::unique_ptr<Bitmap> clean_bm(const std::string& path, std::uint64_t chunks,
                                 std::uint64_t chunk_size = kCs, int* fdnum = nullptr) {
  fmtest::write_bitmap_file(path, fmtest::clean_header(kSet, chunk_size, chunks * chunk_size));
  std::string why;
  auto bm = open_bm(path, params(chunks * chunk_size, chunk_size), &why, fdnum);
  CHECK(why.empty());
  CHECK(bm->stats().dirty_chunks == 0);
  return bm;
}

std::error_code ok_sync() { return {}; }

// Copies `src` byte for byte into `dst` with pread (a snapshot of what is on disk now).
void copy_file(const std::string& src, const std::string& dst) {
  fmtest::write_bytes(dst, fmtest::read_bytes(src), 0600);
}

void write_once(Bitmap& bm, std::uint64_t off, std::uint64_t len) {
  REQUIRE_FALSE(bm.start_write(off, len));
  bm.end_write(off, len, true);
}

std::uint64_t sweep_ok(Bitmap& bm, const std::function<std::error_code()>& sync = ok_sync) {
  auto r = bm.sweep(sync);
  REQUIRE_MESSAGE(r, "sweep failed: " << r.error().message());
  return *r;
}

}  // namespace

TEST_SUITE("bitmap") {

TEST_CASE("a new bitmap over a 0-size image is clean") {
  TempDir d;
  const auto path = d / "img.fmbm";
  std::string why = "unset";
  auto bm = open_bm(path, params(0), &why);
  CHECK(why.empty());
  auto s = bm->stats();
  CHECK(s.total_chunks == 0);
  CHECK(s.dirty_chunks == 0);
  CHECK(s.unsynced_chunks == 0);
  CHECK(s.chunk_size == kCs);
  CHECK_FALSE(fmtest::has(s.state, core::kStateNeedsFullSync));
  // The header is on disk, active (not clean), with our set UUID.
  CHECK(fmtest::file_size(path) == core::kHeaderSize);
  auto h = fmtest::header_on_disk(path);
  CHECK(h.set_uuid == kSet);
  CHECK(h.chunk_size == kCs);
  CHECK(h.sync_size == 0);
  CHECK_FALSE(fmtest::has(h.state, core::kStateClean));
  CHECK(h.events == 1);
}

TEST_CASE("an empty bitmap file over an image holding data is all dirty") {
  TempDir d;
  const auto path = d / "img.fmbm";
  const std::uint64_t size = 5 * kCs + 123;
  std::string why;
  auto bm = open_bm(path, params(size), &why);
  MESSAGE("why_untrusted: " << why);
  CHECK_FALSE(why.empty());
  auto s = bm->stats();
  CHECK(s.total_chunks == 6);
  CHECK(s.dirty_chunks == 6);
  CHECK(s.unsynced_chunks == 6);
  CHECK(fmtest::has(s.state, core::kStateNeedsFullSync));
  // Durable: every bit is set in the file, the padding bits are not.
  auto file = fmtest::read_bytes(path);
  CHECK(file.size() == core::kHeaderSize + 4096);
  CHECK(fmtest::count_file_bits(file, 6) == 6);
  CHECK_FALSE(fmtest::file_bit(file, 6));
  auto h = fmtest::header_on_disk(path);
  CHECK(h.sync_size == size);
  CHECK(fmtest::has(h.state, core::kStateNeedsFullSync));
  // Unsynced chunks are never cleared by sweeps.
  for (int i = 0; i < 3; ++i) CHECK(sweep_ok(*bm) == 0);
  CHECK(bm->stats().dirty_chunks == 6);
  CHECK(bm->next_unsynced(0) == 0);
  CHECK(bm->next_unsynced(5) == 5);
  CHECK(bm->next_unsynced(6) == 6);  // none: total_chunks
}

TEST_CASE("the header on disk after open is active with events + 1") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto h0 = fmtest::clean_header(kSet, kCs, 8 * kCs);
  h0.events = 41;
  fmtest::write_bitmap_file(path, h0);
  REQUIRE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
  std::string why;
  auto bm = open_bm(path, params(8 * kCs), &why);
  CHECK(why.empty());
  auto h = fmtest::header_on_disk(path);
  CHECK_FALSE(fmtest::has(h.state, core::kStateClean));
  CHECK(h.events == 42);
  CHECK(h.image_uuid == h0.image_uuid);
  CHECK(bm->stats().events == 42);
}

TEST_CASE("intent before data: start_write's bits are durable when it returns") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 16);
  const auto before = fmtest::read_bytes(path);
  REQUIRE_FALSE(fmtest::file_bit(before, 5));
  REQUIRE_FALSE(fmtest::file_bit(before, 7));
  REQUIRE_FALSE(fmtest::file_bit(before, 8));

  const auto waiters0 = bm->stats().flush_waiters;
  REQUIRE_FALSE(bm->start_write(5 * kCs + 10, 100));
  REQUIRE_FALSE(bm->start_write(8 * kCs - 1, 2));  // chunks 7 and 8
  // "Power cut" now: snapshot the file before any end_write.
  copy_file(path, d / "copy.fmbm");
  bm->end_write(5 * kCs + 10, 100, true);
  bm->end_write(8 * kCs - 1, 2, true);
  CHECK(bm->stats().flush_waiters == waiters0 + 2);

  const auto copy = fmtest::read_bytes(d / "copy.fmbm");
  CHECK(fmtest::file_bit(copy, 5));
  CHECK(fmtest::file_bit(copy, 7));
  CHECK(fmtest::file_bit(copy, 8));
  CHECK(fmtest::count_file_bits(copy, 16) == 3);
  // The copy, opened as a bitmap, is trusted and says exactly those chunks need a copy.
  std::string why;
  auto bm2 = open_bm(d / "copy.fmbm", params(16 * kCs), &why);
  CHECK(why.empty());
  CHECK(bm2->stats().dirty_chunks == 3);
  CHECK(bm2->stats().unsynced_chunks == 3);
  CHECK(bm2->next_unsynced(0) == 5);
  CHECK(bm2->next_unsynced(6) == 7);
  CHECK(bm2->next_unsynced(9) == 16);
}

TEST_CASE("an already durable bit needs no flush") {
  TempDir d;
  auto bm = clean_bm(d / "img.fmbm", 4);
  write_once(*bm, 0, 10);
  const auto s0 = bm->stats();
  write_once(*bm, 20, 10);  // same chunk, bit already durable
  const auto s1 = bm->stats();
  CHECK(s1.flushes == s0.flushes);
  CHECK(s1.flush_waiters == s0.flush_waiters);
  write_once(*bm, kCs, 10);  // a new chunk needs one
  CHECK(bm->stats().flushes == s0.flushes + 1);
}

TEST_CASE("intent ahead: one flush covers the next chunks of a sequential stream") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 64);
  const auto s0 = bm->stats();
  // A write needing a flush, with 4 chunks ahead: chunks 0 (written) and 1..4 (ahead).
  REQUIRE_FALSE(bm->start_write(0, kCs, 4 * kCs));
  bm->end_write(0, kCs, true);
  CHECK(bm->stats().dirty_chunks == 5);
  CHECK(bm->stats().flushes == s0.flushes + 1);
  // The ahead bits are on disk, so the next four writes need no flush.
  const auto on_disk = fmtest::read_bytes(path);
  CHECK((std::to_integer<unsigned>(on_disk[core::kHeaderSize]) & 0x1f) == 0x1f);
  for (std::uint64_t c = 1; c <= 4; ++c) {
    REQUIRE_FALSE(bm->start_write(c * kCs, kCs, 4 * kCs));
    bm->end_write(c * kCs, kCs, true);
  }
  CHECK(bm->stats().flushes == s0.flushes + 1);
  CHECK(bm->stats().dirty_chunks == 5);  // nothing more was marked: no flush was needed
  // Chunk 5 needs one: it marks 5..9.
  REQUIRE_FALSE(bm->start_write(5 * kCs, kCs, 4 * kCs));
  bm->end_write(5 * kCs, kCs, true);
  CHECK(bm->stats().flushes == s0.flushes + 2);
  CHECK(bm->stats().dirty_chunks == 10);
  // Ahead never passes the cover, and never grows it.
  REQUIRE_FALSE(bm->start_write(62 * kCs, kCs, 16 * kCs));
  bm->end_write(62 * kCs, kCs, true);
  CHECK(bm->stats().total_chunks == 64);
  CHECK(bm->stats().dirty_chunks == 12);
  // Chunks marked ahead and never written are cleared by the sweep like any idle chunk.
  for (int i = 0; i < 3; ++i) REQUIRE(bm->sweep(ok_sync));
  CHECK(bm->stats().dirty_chunks == 0);
}

TEST_CASE("sweep clears lazily, after sync_legs, two sweeps after the last write") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  int syncs = 0;
  std::uint64_t dirty_at_sync = 999;
  bool bit_on_disk_at_sync = false;
  auto sync = [&]() -> std::error_code {
    ++syncs;
    dirty_at_sync = bm->stats().dirty_chunks;
    bit_on_disk_at_sync = fmtest::file_bit(fmtest::read_bytes(path), 3);
    return {};
  };

  write_once(*bm, 3 * kCs, 100);
  CHECK(bm->stats().dirty_chunks == 1);
  CHECK(sweep_ok(*bm, sync) == 0);  // written during this period
  CHECK(syncs == 0);                // nothing to clear: no leg sync
  CHECK(bm->stats().dirty_chunks == 1);

  SUBCASE("idle for a whole period: cleared on the second sweep, after sync_legs") {
    CHECK(sweep_ok(*bm, sync) == 1);
    CHECK(syncs == 1);
    CHECK(dirty_at_sync == 1);         // sync_legs ran before the clear
    CHECK(bit_on_disk_at_sync);
    CHECK(bm->stats().dirty_chunks == 0);
    CHECK_FALSE(fmtest::file_bit(fmtest::read_bytes(path), 3));  // the clear is durable
    const auto s = bm->stats();
    CHECK(s.events_cleared == s.events);
    CHECK(fmtest::header_on_disk(path).events_cleared == s.events);
    CHECK(sweep_ok(*bm, sync) == 0);
    CHECK(syncs == 1);
  }
  SUBCASE("written again in the next period: not cleared") {
    write_once(*bm, 3 * kCs + 5, 1);
    CHECK(sweep_ok(*bm, sync) == 0);
    CHECK(bm->stats().dirty_chunks == 1);
    CHECK(sweep_ok(*bm, sync) == 1);
    CHECK(bm->stats().dirty_chunks == 0);
  }
  SUBCASE("written while sync_legs runs: not cleared") {
    auto racing = [&]() -> std::error_code {
      ++syncs;
      write_once(*bm, 3 * kCs, 1);
      return {};
    };
    CHECK(sweep_ok(*bm, racing) == 0);
    CHECK(syncs == 1);
    CHECK(bm->stats().dirty_chunks == 1);
    CHECK(fmtest::file_bit(fmtest::read_bytes(path), 3));
  }
  SUBCASE("a write still in flight: not cleared") {
    REQUIRE_FALSE(bm->start_write(3 * kCs, 1));
    for (int i = 0; i < 3; ++i) CHECK(sweep_ok(*bm, sync) == 0);
    CHECK(bm->stats().dirty_chunks == 1);
    bm->end_write(3 * kCs, 1, true);
    CHECK(sweep_ok(*bm, sync) == 0);
    CHECK(sweep_ok(*bm, sync) == 1);
  }
}

TEST_CASE("the held flag: with degraded only, durable, kept by later failures, gone when back") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  const auto ev0 = bm->stats().events;
  REQUIRE_FALSE(bm->set_degraded(true));  // lost by the link: not held
  CHECK_FALSE(bm->held());
  CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateHeld));
  REQUIRE_FALSE(bm->set_degraded(true, true));  // the operator's fail while degraded
  auto h = fmtest::header_on_disk(path);
  CHECK(fmtest::has(h.state, core::kStateDegraded));
  CHECK(fmtest::has(h.state, core::kStateHeld));
  CHECK(h.events == ev0 + 2);
  REQUIRE_FALSE(bm->set_degraded(true));  // another failure does not lift it
  CHECK(bm->held());
  CHECK(fmtest::header_on_disk(path).events == ev0 + 2);
  CHECK(core::state_string(h.state) == "active, degraded, held");
  bm.reset();
  std::string why;
  bm = open_bm(path, params(8 * kCs), &why);  // across a remount
  CHECK(why.empty());
  CHECK(bm->degraded());
  CHECK(bm->held());
  REQUIRE_FALSE(bm->set_degraded(false));  // re-add
  CHECK_FALSE(bm->held());
  CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateHeld | core::kStateDegraded));
}

TEST_CASE("never clears while degraded") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  const auto ev0 = bm->stats().events;
  REQUIRE_FALSE(bm->set_degraded(true));
  CHECK(bm->degraded());
  auto h = fmtest::header_on_disk(path);
  CHECK(fmtest::has(h.state, core::kStateDegraded));
  CHECK(h.events == ev0 + 1);
  REQUIRE_FALSE(bm->set_degraded(true));  // idempotent: no second bump
  CHECK(fmtest::header_on_disk(path).events == ev0 + 1);

  int syncs = 0;
  auto sync = [&]() -> std::error_code {
    ++syncs;
    return {};
  };
  write_once(*bm, 2 * kCs, 10);
  for (int i = 0; i < 4; ++i) CHECK(sweep_ok(*bm, sync) == 0);
  CHECK(bm->stats().dirty_chunks == 1);
  CHECK(fmtest::file_bit(fmtest::read_bytes(path), 2));

  SUBCASE("degraded while sync_legs runs: nothing cleared") {
    REQUIRE_FALSE(bm->set_degraded(false));
    CHECK(sweep_ok(*bm, sync) == 0);  // period of the write
    auto degrade_now = [&]() -> std::error_code {
      ++syncs;
      return bm->set_degraded(true);
    };
    CHECK(sweep_ok(*bm, degrade_now) == 0);
    CHECK(bm->stats().dirty_chunks == 1);
  }
  SUBCASE("back from degraded: clearing resumes") {
    REQUIRE_FALSE(bm->set_degraded(false));
    CHECK(fmtest::header_on_disk(path).events == ev0 + 2);
    CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateDegraded));
    std::uint64_t cleared = 0;
    for (int i = 0; i < 2; ++i) cleared += sweep_ok(*bm, sync);
    CHECK(cleared == 1);
  }
}

TEST_CASE("never clears an unsynced chunk") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  REQUIRE_FALSE(bm->mark_unsynced(4 * kCs, 1));
  CHECK(fmtest::file_bit(fmtest::read_bytes(path), 4));  // durable before returning
  CHECK(bm->stats().unsynced_chunks == 1);
  CHECK(bm->next_unsynced(0) == 4);
  // A failed leg at end_write: unsynced too.
  REQUIRE_FALSE(bm->start_write(6 * kCs, 1));
  bm->end_write(6 * kCs, 1, false);
  CHECK(bm->stats().unsynced_chunks == 2);
  CHECK(bm->next_unsynced(5) == 6);
  for (int i = 0; i < 4; ++i) CHECK(sweep_ok(*bm) == 0);
  CHECK(bm->stats().dirty_chunks == 2);

  bm->mark_synced(4);
  CHECK(bm->stats().unsynced_chunks == 1);
  CHECK(bm->next_unsynced(0) == 6);
  CHECK(sweep_ok(*bm) == 0);  // mark_synced counts as a write in this period
  CHECK(sweep_ok(*bm) == 1);
  CHECK(bm->stats().dirty_chunks == 1);
  CHECK_FALSE(fmtest::file_bit(fmtest::read_bytes(path), 4));
  CHECK(fmtest::file_bit(fmtest::read_bytes(path), 6));

  REQUIRE_FALSE(bm->mark_all_dirty_unsynced());
  CHECK(bm->stats().unsynced_chunks == 1);
}

TEST_CASE("a failing sync_legs clears nothing") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  write_once(*bm, 0, 1);
  write_once(*bm, 7 * kCs, 1);
  CHECK(sweep_ok(*bm) == 0);
  int calls = 0;
  auto fail = [&]() -> std::error_code {
    ++calls;
    return utils::errno_code(EIO);
  };
  auto r = bm->sweep(fail);
  CHECK(calls == 1);
  REQUIRE_FALSE(r);
  CHECK(r.error() == std::errc::io_error);
  CHECK(bm->stats().dirty_chunks == 2);
  auto file = fmtest::read_bytes(path);
  CHECK(fmtest::file_bit(file, 0));
  CHECK(fmtest::file_bit(file, 7));
  // Not sticky: a later sweep whose sync succeeds clears them.
  CHECK(sweep_ok(*bm) == 2);
  CHECK(bm->stats().dirty_chunks == 0);
}

TEST_CASE("close_clean sets the clean flag and leaves nothing dirty") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  write_once(*bm, 0, 3 * kCs);  // chunks 0..2, just written (recent)
  const auto ev = bm->stats().events;
  int syncs = 0;
  REQUIRE_FALSE(bm->close_clean([&]() -> std::error_code {
    ++syncs;
    return {};
  }));
  CHECK(syncs == 1);
  CHECK(bm->stats().dirty_chunks == 0);
  auto h = fmtest::header_on_disk(path);
  CHECK(fmtest::has(h.state, core::kStateClean));
  CHECK_FALSE(fmtest::has(h.state, core::kStateNeedsFullSync));
  CHECK(h.events == ev + 1);
  CHECK(h.events_cleared == h.events);
  CHECK(fmtest::count_file_bits(fmtest::read_bytes(path), 8) == 0);
  bm.reset();
  std::string why;
  auto bm2 = open_bm(path, params(8 * kCs), &why);
  CHECK(why.empty());
  CHECK(bm2->stats().dirty_chunks == 0);
  CHECK(fmtest::header_on_disk(path).events == ev + 2);
}

TEST_CASE("close_clean keeps unsynced and degraded bits") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 8);
  write_once(*bm, 0, 1);
  REQUIRE_FALSE(bm->mark_unsynced(kCs, 1));
  SUBCASE("unsynced") {
    REQUIRE_FALSE(bm->close_clean(ok_sync));
    CHECK(bm->stats().dirty_chunks == 1);
    auto file = fmtest::read_bytes(path);
    CHECK_FALSE(fmtest::file_bit(file, 0));
    CHECK(fmtest::file_bit(file, 1));
  }
  SUBCASE("degraded") {
    REQUIRE_FALSE(bm->set_degraded(true));
    REQUIRE_FALSE(bm->close_clean(ok_sync));
    CHECK(bm->stats().dirty_chunks == 2);
    auto file = fmtest::read_bytes(path);
    CHECK(fmtest::file_bit(file, 0));
    CHECK(fmtest::file_bit(file, 1));
  }
  SUBCASE("a failing sync_legs: not clean") {
    auto r = bm->close_clean([] { return utils::errno_code(EIO); });
    CHECK(r == std::errc::io_error);
    CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
    CHECK(bm->stats().dirty_chunks == 2);
  }
  // Whatever happened, reopening finds the kept bits and must copy them.
  bm.reset();
  auto bm2 = open_bm(path, params(8 * kCs));
  CHECK(bm2->stats().unsynced_chunks >= 1);
  CHECK(bm2->next_unsynced(0) <= 1);
}

TEST_CASE("untrusted bitmaps reopen all dirty with a reason") {
  TempDir d;
  const auto path = d / "img.fmbm";
  const std::uint64_t chunks = 40000;  // two pages of bits
  const std::uint64_t size = chunks * 4096;
  auto good = fmtest::clean_header(kSet, 4096, size);
  std::vector<std::byte> file;
  {
    fmtest::write_bitmap_file(path, good);
    file = fmtest::read_bytes(path);
    REQUIRE(file.size() == core::kHeaderSize + 8192);
  }
  std::string label;
  SUBCASE("control: the intact file is trusted") {
    label = "intact";
  }
  SUBCASE("foreign set UUID") {
    label = "foreign";
    fmtest::write_bitmap_file(path, fmtest::clean_header(kOtherSet, 4096, size));
  }
  SUBCASE("flipped header byte (events)") {
    label = "flip48";
    file[48] ^= std::byte{0x01};
    fmtest::write_bytes(path, file);
  }
  SUBCASE("flipped header byte (reserved)") {
    label = "flip3000";
    file[3000] ^= std::byte{0x80};
    fmtest::write_bytes(path, file);
  }
  SUBCASE("flipped magic byte") {
    label = "flip0";
    file[0] ^= std::byte{0x20};
    fmtest::write_bytes(path, file);
  }
  SUBCASE("zeroed header page") {
    label = "zero";
    std::fill(file.begin(), file.begin() + 4096, std::byte{0});
    fmtest::write_bytes(path, file);
  }
  SUBCASE("truncated bits region") {
    label = "truncbits";
    file.resize(core::kHeaderSize + 4096);
    fmtest::write_bytes(path, file);
  }
  SUBCASE("truncated header") {
    label = "trunchdr";
    file.resize(1000);
    fmtest::write_bytes(path, file);
  }
  SUBCASE("the stale flag is set") {
    label = "stale";
    auto h = good;
    h.state |= core::kStateStale;
    fmtest::write_bitmap_file(path, h);
  }
  SUBCASE("a full resync was pending") {
    label = "needsfull";
    auto h = good;
    h.state |= core::kStateNeedsFullSync;
    fmtest::write_bitmap_file(path, h);
  }
  INFO("case " << label);
  std::string why;
  auto bm = open_bm(path, params(size, 4096), &why);
  INFO("why_untrusted = '" << why << "'");
  const auto s = bm->stats();
  if (label == "intact") {
    CHECK(why.empty());
    CHECK(s.dirty_chunks == 0);
    return;
  }
  CHECK_FALSE(why.empty());
  CHECK(s.total_chunks == chunks);
  CHECK(s.dirty_chunks == chunks);
  CHECK(s.unsynced_chunks == chunks);
  if (label == "foreign") CHECK(why.find("another mirror set") != std::string::npos);
  if (label == "truncbits") CHECK(why.find("truncated") != std::string::npos);
  // Rebuilt on disk: our UUID, needs-full-sync, every bit set, never clean.
  auto h = fmtest::header_on_disk(path);
  CHECK(h.set_uuid == kSet);
  CHECK(fmtest::has(h.state, core::kStateNeedsFullSync));
  CHECK_FALSE(fmtest::has(h.state, core::kStateClean));
  CHECK(h.sync_size == size);
  auto after = fmtest::read_bytes(path);
  CHECK(after.size() >= core::kHeaderSize + 8192);
  CHECK(fmtest::count_file_bits(after, chunks) == chunks);
  // And a second open of the rebuilt file still says "copy everything".
  bm.reset();
  std::string why2;
  auto bm2 = open_bm(path, params(size, 4096), &why2);
  CHECK_FALSE(why2.empty());
  CHECK(bm2->stats().unsynced_chunks == chunks);
}

// docs/on-disk-format.md §2.7: "covers less than the image (the image grew while
// unmounted) -> the chunks past its cover are dirty"; bitmap.hpp: "image_size: current
// primary size: bits beyond a bitmap's cover are dirty".
TEST_CASE("an image that grew while unmounted: chunks past the cover are dirty") {
  TempDir d;
  const auto path = d / "img.fmbm";
  std::uint64_t old_size = 0;
  std::uint64_t first_new = 0;  // first chunk holding bytes past the old cover
  SUBCASE("old cover chunk-aligned") {
    old_size = 4 * kCs;
    first_new = 4;
  }
  SUBCASE("old cover ends mid-chunk") {
    old_size = 4 * kCs + kCs / 2;
    first_new = 4;
  }
  fmtest::write_bitmap_file(path, fmtest::clean_header(kSet, kCs, old_size));
  std::string why;
  auto bm = open_bm(path, params(10 * kCs), &why);
  const auto s = bm->stats();
  CHECK(s.total_chunks == 10);
  CHECK(fmtest::header_on_disk(path).sync_size == 10 * kCs);
  INFO("why_untrusted='" << why << "' dirty=" << s.dirty_chunks << " unsynced=" << s.unsynced_chunks);
  CHECK(s.dirty_chunks == 10 - first_new);
  CHECK(s.unsynced_chunks == 10 - first_new);
  CHECK(bm->next_unsynced(0) == first_new);
  // And durably so: a crash right after open must not lose them.
  auto file = fmtest::read_bytes(path);
  CHECK(fmtest::count_file_bits(file, 10) == 10 - first_new);
  CHECK_FALSE(fmtest::file_bit(file, first_new - 1));
}

TEST_CASE("a degraded image cut short keeps its cover and the bits past its end") {
  // While degraded a shrink marks [new end, old end) for the absent secondary, which still
  // holds data there; an open must not forget them, or a later grow of the primary (zeros)
  // would leave the secondary's old bytes there unmarked.
  TempDir d;
  const auto path = d / "img.fmbm";
  auto h = fmtest::clean_header(kSet, kCs, 10 * kCs);
  h.state = core::kStateDegraded;
  fmtest::write_bitmap_file(path, h, {1, 5, 6, 7, 8, 9});
  std::string why;
  auto bm = open_bm(path, params(5 * kCs), &why);
  CHECK(why.empty());
  CHECK(bm->stats().total_chunks == 10);
  CHECK(bm->stats().dirty_chunks == 6);
  CHECK(bm->stats().unsynced_chunks == 6);
  CHECK(bm->next_unsynced(2) == 5);
  CHECK(fmtest::header_on_disk(path).sync_size == 10 * kCs);

  SUBCASE("not degraded: the cover follows the image, the bits past it go") {
    h.state = 0;
    fmtest::write_bitmap_file(path, h, {1, 5, 6, 7, 8, 9});
    bm = open_bm(path, params(5 * kCs), &why);
    CHECK(bm->stats().total_chunks == 5);
    CHECK(bm->stats().dirty_chunks == 1);
  }
}

TEST_CASE("writes past the cover grow it durably") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 4, 4096);
  CHECK(fmtest::file_size(path) == core::kHeaderSize + 4096);
  const std::uint64_t c = 40000;  // beyond the first page of bits
  const std::uint64_t off = c * 4096 + 100, len = 5000;  // chunks 40000 and 40001
  REQUIRE_FALSE(bm->start_write(off, len));
  copy_file(path, d / "copy.fmbm");
  bm->end_write(off, len, true);

  CHECK(bm->stats().total_chunks == c + 2);
  auto copy = fmtest::read_bytes(d / "copy.fmbm");
  CHECK(copy.size() == core::kHeaderSize + core::bits_bytes(c + 2));
  auto h = core::decode_header(copy);
  REQUIRE(h);
  CHECK(h->sync_size >= off + len);
  CHECK(h->bit_count() == c + 2);
  CHECK(fmtest::file_bit(copy, c));
  CHECK(fmtest::file_bit(copy, c + 1));
  CHECK(fmtest::count_file_bits(copy, c + 2) == 2);
  // The copy is a trusted bitmap of the grown size.
  std::string why;
  auto bm2 = open_bm(d / "copy.fmbm", params(off + len, 4096), &why);
  CHECK(why.empty());
  CHECK(bm2->stats().dirty_chunks == 2);
  CHECK(bm2->next_unsynced(0) == c);

  SUBCASE("growing within the last page") {
    REQUIRE_FALSE(bm->start_write((c + 10) * 4096, 1));
    bm->end_write((c + 10) * 4096, 1, true);
    CHECK(fmtest::header_on_disk(path).sync_size == (c + 10) * 4096 + 1);
    CHECK(fmtest::file_bit(fmtest::read_bytes(path), c + 10));
  }
  SUBCASE("mark_unsynced past the cover grows it too") {
    REQUIRE_FALSE(bm->mark_unsynced(100000 * 4096ull, 1));
    CHECK(fmtest::header_on_disk(path).sync_size == 100000 * 4096ull + 1);
    CHECK(fmtest::file_bit(fmtest::read_bytes(path), 100000));
  }
}

TEST_CASE("cancel_write takes back the intent of a write no leg performed") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = clean_bm(path, 4, 4096);
  const auto file0 = fmtest::read_bytes(path);

  SUBCASE("clean chunks: cleared, and the cover it grew shrinks back") {
    const std::uint64_t off = 40000 * 4096ull, len = 5000;  // past the cover, a page further
    Bitmap::Intent in;
    REQUIRE_FALSE(bm->start_write(1000, 9000, 0, &in));  // chunks 0-2, all clean
    CHECK(in.all_new);
    CHECK(bm->cancel_write(1000, 9000, in));
    CHECK(bm->stats().dirty_chunks == 0);
    REQUIRE_FALSE(bm->start_write(off, len, 0, &in));
    CHECK(fmtest::header_on_disk(path).sync_size == off + len);  // the grown cover was durable
    CHECK(bm->cancel_write(off, len, in));
    CHECK(bm->stats().total_chunks == 4);
    CHECK(bm->stats().dirty_chunks == 0);
    REQUIRE_FALSE(bm->flush());
    CHECK(fmtest::read_bytes(path) == file0);  // the file as it was, byte for byte
    // And the bitmap goes on as before.
    write_once(*bm, 0, 1);
    CHECK(bm->stats().dirty_chunks == 1);
  }
  SUBCASE("a chunk dirty before stays dirty: an older write may not be durable on both legs") {
    write_once(*bm, 0, 100);
    Bitmap::Intent in;
    REQUIRE_FALSE(bm->start_write(50, 8000, 0, &in));  // chunks 0 (dirty) and 1 (clean)
    CHECK_FALSE(in.all_new);
    CHECK_FALSE(bm->cancel_write(50, 8000, in));
    CHECK(bm->stats().dirty_chunks == 2);
    CHECK(fmtest::file_bit(fmtest::read_bytes(path), 0));
  }
  SUBCASE("another write after it keeps the bits: it may rely on them") {
    Bitmap::Intent in;
    REQUIRE_FALSE(bm->start_write(4096, 100, 0, &in));
    REQUIRE_FALSE(bm->start_write(4096 + 200, 100));  // the same chunk, other bytes
    CHECK_FALSE(bm->cancel_write(4096, 100, in));
    bm->end_write(4096 + 200, 100, true);
    CHECK(bm->stats().dirty_chunks == 1);
  }
  SUBCASE("a mark_unsynced or a resize after it keeps the bits and the cover") {
    Bitmap::Intent in;
    REQUIRE_FALSE(bm->start_write(8 * 4096, 100, 0, &in));  // grows the cover to 9 chunks
    REQUIRE_FALSE(bm->mark_unsynced(2 * 4096, 1));
    CHECK_FALSE(bm->cancel_write(8 * 4096, 100, in));
    CHECK(bm->stats().total_chunks == 9);
    CHECK(bm->stats().dirty_chunks == 2);
    CHECK(bm->stats().unsynced_chunks == 1);
  }
  SUBCASE("the chunks marked ahead of a stream are taken back with it") {
    Bitmap::Intent in;
    REQUIRE_FALSE(bm->start_write(0, 4096, 3 * 4096, &in));
    CHECK(bm->stats().dirty_chunks == 4);
    CHECK(bm->cancel_write(0, 4096, in));
    CHECK(bm->stats().dirty_chunks == 0);
  }
}

TEST_CASE("group commit: concurrent writers share flushes") {
  TempDir d;
  const auto path = d / "img.fmbm";
  constexpr int kThreads = 8, kPer = 200;
  auto bm = clean_bm(path, kThreads * kPer, 4096);
  const auto s0 = bm->stats();
  std::atomic<int> errors{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < kPer; ++i) {
        const std::uint64_t off = static_cast<std::uint64_t>(t * kPer + i) * 4096;
        if (bm->start_write(off, 4096)) ++errors;
        bm->end_write(off, 4096, true);
      }
    });
  go = true;
  for (auto& t : ts) t.join();
  const auto s = bm->stats();
  const auto flushes = s.flushes - s0.flushes, waiters = s.flush_waiters - s0.flush_waiters;
  MESSAGE("group commit: " << kThreads * kPer << " start_write calls, " << waiters
                           << " needed a durable bit, " << flushes << " flushes");
  CHECK(errors == 0);
  CHECK(waiters == kThreads * kPer);
  CHECK(flushes < waiters);
  WARN(flushes * 2 < waiters);  // typically ~4x fewer here; informative only
  CHECK(s.dirty_chunks == kThreads * kPer);
  CHECK(fmtest::count_file_bits(fmtest::read_bytes(path), kThreads * kPer) == kThreads * kPer);
}

TEST_CASE("a bitmap write error is sticky") {
  // Inject the failure from outside: replace the descriptor number the Bitmap holds with
  // /dev/full (every write: ENOSPC), then restore the real file.
  TempDir d;
  const auto path = d / "img.fmbm";
  int fdnum = -1;
  auto bm = clean_bm(path, 8, kCs, &fdnum);
  REQUIRE(fdnum >= 0);
  write_once(*bm, 0, 1);  // chunk 0 durable before the fault
  const int saved = ::dup(fdnum);
  REQUIRE(saved >= 0);
  {
    utils::UniqueFd full(::open("/dev/full", O_RDWR | O_CLOEXEC));
    REQUIRE(full.valid());
    REQUIRE(::dup2(full.get(), fdnum) == fdnum);
  }
  auto ec = bm->start_write(3 * kCs, 1);  // needs a flush: fails
  MESSAGE("injected bitmap write error: " << ec.message());
  CHECK(ec);
  // Restore the real file: the error stays (no data write without a durable intent).
  REQUIRE(::dup2(saved, fdnum) == fdnum);
  ::close(saved);
  CHECK(bm->start_write(4 * kCs, 1));
  CHECK(bm->start_write(0, 1));  // even when the bit is already durable
  CHECK(bm->mark_unsynced(5 * kCs, 1));
  CHECK(bm->flush());
  CHECK_FALSE(bm->sweep(ok_sync));
  CHECK(bm->close_clean(ok_sync));
  // Nothing of it reached the file; the header never claims clean.
  auto file = fmtest::read_bytes(path);
  CHECK(fmtest::file_bit(file, 0));
  CHECK_FALSE(fmtest::file_bit(file, 4));
  CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
  // An operator's reopen starts over.
  bm.reset();
  std::string why;
  auto bm2 = open_bm(path, params(8 * kCs), &why);
  CHECK(why.empty());
  CHECK_FALSE(bm2->start_write(4 * kCs, 1));
  bm2->end_write(4 * kCs, 1, true);
}

TEST_CASE("bitmap none (persist_bits=false) keeps only the header") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto p = params(0);
  p.persist_bits = false;
  {
    std::string why;
    auto bm = open_bm(path, p, &why);
    CHECK(why.empty());
    write_once(*bm, 10 * kCs, 100);
    CHECK(bm->stats().dirty_chunks == 1);
    CHECK(fmtest::file_size(path) == core::kHeaderSize);
    // Not shut down cleanly: dropped here.
  }
  SUBCASE("unclean: everything dirty") {
    p.image_size = 11 * kCs;
    std::string why;
    auto bm = open_bm(path, p, &why);
    CHECK_FALSE(why.empty());
    CHECK(bm->stats().dirty_chunks == 11);
  }
  SUBCASE("clean shutdown: trusted") {
    p.image_size = 11 * kCs;
    {
      auto bm = open_bm(path, p);
      REQUIRE(bm->stats().dirty_chunks == 11);
      for (std::uint64_t c = 0; c < 11; ++c) bm->mark_synced(c);
      REQUIRE_FALSE(bm->close_clean(ok_sync));
      CHECK(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
    }
    std::string why;
    auto bm = open_bm(path, p, &why);
    CHECK(why.empty());
    CHECK(bm->stats().dirty_chunks == 0);
  }
}

TEST_CASE("bitmap switched on after \"none\": clean starts clear, anything else all dirty") {
  // An operator turns `bitmap` from false to true: a set closed clean must not pay a full
  // resync (the legs were identical at that close), and a header that says nothing about
  // which chunks differ must never read as clean.
  TempDir d;
  const auto path = d / "img.fmbm";
  auto none = params(11 * kCs);
  none.persist_bits = false;
  auto bits = params(11 * kCs);
  auto close_none_clean = [&] {
    auto bm = open_bm(path, none);
    for (std::uint64_t c = 0; c < 11; ++c) bm->mark_synced(c);
    write_once(*bm, 3 * kCs, 100);
    REQUIRE_FALSE(bm->close_clean(ok_sync));
    const auto h = fmtest::header_on_disk(path);
    REQUIRE(fmtest::has(h.state, core::kStateClean));
    REQUIRE(fmtest::has(h.state, core::kStateNoBits));
    REQUIRE(fmtest::file_size(path) == core::kHeaderSize);
  };
  SUBCASE("closed clean under none: trusted, every bit clear, and bits kept from then on") {
    close_none_clean();
    {
      std::string why;
      auto bm = open_bm(path, bits, &why);
      CHECK(why.empty());
      CHECK(bm->stats().dirty_chunks == 0);
      CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateNoBits));
      CHECK(fmtest::file_size(path) > core::kHeaderSize);  // the bits, all clear
      write_once(*bm, 5 * kCs, 100);
      CHECK(bm->stats().dirty_chunks == 1);
      // Dropped without a clean close: the bit in the file is what the next mount resyncs.
    }
    std::string why;
    auto bm = open_bm(path, bits, &why);
    CHECK(why.empty());
    CHECK(bm->stats().dirty_chunks == 1);
  }
  SUBCASE("not closed clean under none: all dirty") {
    { auto bm = open_bm(path, none); }  // mounted (clean flag cleared), then a crash
    std::string why;
    auto bm = open_bm(path, bits, &why);
    CHECK(why.find("not shut down cleanly") != std::string::npos);
    CHECK(bm->stats().dirty_chunks == 11);
  }
  SUBCASE("clean but degraded under none: all dirty") {
    close_none_clean();
    auto h = fmtest::header_on_disk(path);
    h.state |= core::kStateDegraded;
    fmtest::write_bitmap_file(path, h);
    std::string why;
    auto bm = open_bm(path, bits, &why);
    CHECK(why.find("secondary was out") != std::string::npos);
    CHECK(bm->stats().dirty_chunks == 11);
  }
  SUBCASE("a bitmap with bits cut to its header, without the flag: still bits truncated") {
    {
      auto bm = open_bm(path, bits);
      for (std::uint64_t c = 0; c < 11; ++c) bm->mark_synced(c);
      REQUIRE_FALSE(bm->close_clean(ok_sync));
    }
    REQUIRE(::truncate(path.c_str(), core::kHeaderSize) == 0);
    std::string why;
    auto bm = open_bm(path, bits, &why);
    CHECK(why.find("bits truncated") != std::string::npos);
    CHECK(bm->stats().dirty_chunks == 11);
  }
  SUBCASE("bits switched off again: the header says so") {
    close_none_clean();
    { auto bm = open_bm(path, bits); REQUIRE_FALSE(bm->close_clean(ok_sync)); }
    { auto bm = open_bm(path, none); REQUIRE_FALSE(bm->close_clean(ok_sync)); }
    CHECK(fmtest::has(fmtest::header_on_disk(path).state, core::kStateNoBits));
    CHECK(fmtest::file_size(path) == core::kHeaderSize);
  }
}

}  // TEST_SUITE

// ---- issue 12: memory proportional to the set bits, headers checked, hostile files ----------

TEST_SUITE("bitmap hostile") {

namespace {
constexpr std::uint64_t kTiB = 1ull << 40;

std::uint64_t allocated(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}
}  // namespace

TEST_CASE("a 16 TiB cover with a few bits set costs little memory and no disk; a shrink frees it") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = open_bm(path, params(0));
  const std::uint64_t m0 = bm->memory_bytes();
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_FALSE(bm->resize(16 * kTiB));
  const double grow_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(bm->stats().total_chunks == 16 * kTiB / kCs);
  CHECK(bm->memory_bytes() < 64 * 1024);  // 256 Mi chunks: 32 MiB per dense vector before
  // The file covers every bit (sparse: ftruncate), but no page of it was written.
  CHECK(fmtest::file_size(path) == core::kHeaderSize + 16 * kTiB / kCs / 8);
  CHECK(allocated(path) < 1024 * 1024);
  // A few writes spread over the cover: one page each.
  const std::uint64_t offs[] = {0, 3 * kTiB, 7 * kTiB + 12345, 15 * kTiB, 16 * kTiB - 1};
  for (auto off : offs) write_once(*bm, off, 1);
  CHECK(bm->stats().dirty_chunks == 5);
  const std::uint64_t m5 = bm->memory_bytes();
  MESSAGE("memory: empty " << m0 << " B, 16 TiB cover with 5 bits set " << m5 << " B, grow took "
                           << grow_s << " s");
  CHECK(m5 < 5 * 3 * 4096 + 64 * 1024);
  CHECK(grow_s < 1.0);
  CHECK(allocated(path) < 1024 * 1024);
  // Durable on disk like any bit.
  {
    auto file = fmtest::read_bytes(path);  // 32 MiB, a test-only read
    CHECK(fmtest::file_bit(file, 3 * kTiB / kCs));
    CHECK(fmtest::file_bit(file, (16 * kTiB - 1) / kCs));
  }
  // Shrink to 1 MiB: every page past the end is freed, the file is cut.
  REQUIRE_FALSE(bm->resize(1 << 20));
  CHECK(bm->stats().dirty_chunks == 1);  // chunk 0
  CHECK(bm->stats().total_chunks == 16);
  CHECK(bm->memory_bytes() < 3 * 4096 + 8 * 1024);
  CHECK(fmtest::file_size(path) == core::kHeaderSize + 4096);
  // Regrow: the old bits past the shrink point do not come back.
  REQUIRE_FALSE(bm->resize(16 * kTiB));
  CHECK(bm->stats().dirty_chunks == 1);
  CHECK(bm->next_unsynced(0) == bm->stats().total_chunks);
  bm.reset();
  std::string why;
  auto again = open_bm(path, params(16 * kTiB), &why);
  CHECK(why.empty());
  CHECK(again->stats().dirty_chunks == 1);
  CHECK(again->memory_bytes() < 4 * 4096 + 8 * 1024);
}

TEST_CASE("an all-dirty bitmap stays exact: counts, next_unsynced, resync, sweep free the pages") {
  TempDir d;
  const auto path = d / "img.fmbm";
  const std::uint64_t size = kTiB / 4;  // 4 Mi chunks = 128 pages
  std::string why;
  // An image holding data with no bitmap: everything dirty and unsynced.
  auto bm = open_bm(path, params(size), &why);
  CHECK_FALSE(why.empty());
  const std::uint64_t n = size / kCs;
  CHECK(bm->stats().dirty_chunks == n);
  CHECK(bm->stats().unsynced_chunks == n);
  CHECK(fmtest::count_file_bits(fmtest::read_bytes(path), n) == n);
  // Proportional to what is set: dirty + unsynced + on-disk, n/8 bytes each.
  CHECK(bm->memory_bytes() <= 3 * n / 8 + 256 * 1024);
  CHECK(bm->next_unsynced(0) == 0);
  CHECK(bm->next_unsynced(n - 1) == n - 1);
  for (std::uint64_t c = 0; c < n; ++c) bm->mark_synced(c);
  CHECK(bm->stats().unsynced_chunks == 0);
  CHECK(bm->next_unsynced(0) == n);
  CHECK(sweep_ok(*bm) == 0);  // recent this period
  CHECK(sweep_ok(*bm) == n);
  CHECK(bm->stats().dirty_chunks == 0);
  CHECK(bm->memory_bytes() < 64 * 1024);
  CHECK(fmtest::count_file_bits(fmtest::read_bytes(path), n) == 0);
}

TEST_CASE("next_unsynced skips absent pages") {
  TempDir d;
  const auto path = d / "img.fmbm";
  auto bm = open_bm(path, params(0));
  REQUIRE_FALSE(bm->resize(16 * kTiB));
  const std::uint64_t total = bm->stats().total_chunks;
  const std::uint64_t a = 5, b = 200'000'000, c = total - 1;
  for (auto x : {a, b, c}) REQUIRE_FALSE(bm->mark_unsynced(x * kCs, 1));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(bm->next_unsynced(0) == a);
  CHECK(bm->next_unsynced(a + 1) == b);
  CHECK(bm->next_unsynced(b) == b);
  CHECK(bm->next_unsynced(b + 1) == c);
  bm->mark_synced(c);
  CHECK(bm->next_unsynced(b + 1) == total);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(s < 0.05);
}

TEST_CASE("crafted headers with a valid CRC are untrusted with a reason, before anything is allocated") {
  TempDir d;
  const auto path = d / "img.fmbm";
  const std::uint64_t size = 64 * kCs;
  auto h = fmtest::clean_header(kSet, kCs, size);
  std::string expect;
  bool intrinsic = true;  // refused by the header alone (the shared reader too)
  SUBCASE("sync_size of 2^62 (larger than max_image_size and the image)") {
    h.sync_size = 1ull << 62;
    expect = "sync_size";
    intrinsic = false;
  }
  SUBCASE("sync_size of 2^64 - 1") {
    h.sync_size = ~0ull;
    expect = "sync_size";
  }
  SUBCASE("sync_size just above max_image_size") {
    h.sync_size = core::kDefaultMaxImageSize + kCs;
    expect = "max_image_size";
    intrinsic = false;
  }
  SUBCASE("unknown state flags") {
    h.state |= 1u << 7;
    expect = "unknown state flags";
  }
  SUBCASE("events_cleared > events") {
    h.events_cleared = h.events + 1;
    expect = "events_cleared";
  }
  SUBCASE("daemon sleep 0") {
    h.daemon_sleep_ms = 0;
    expect = "daemon sleep";
  }
  SUBCASE("daemon sleep of 49 days") {
    h.daemon_sleep_ms = 0xFFFFFFFFu;
    expect = "daemon sleep";
  }
  SUBCASE("write-behind above md's limit") {
    h.write_behind = 1u << 20;
    expect = "write-behind";
  }
  // The bits a crafted header claims are not in the file: only the header is written.
  fmtest::write_bytes(path, [&] {
    auto raw = core::encode_header(h);
    return std::vector<std::byte>(raw.begin(), raw.end());
  }(), 0600);
  REQUIRE(core::decode_header(fmtest::read_bytes(path)));  // the CRC is valid
  std::string why;
  const auto t0 = std::chrono::steady_clock::now();
  auto bm = open_bm(path, params(size), &why);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("untrusted: " << why);
  CHECK(why.find(expect) != std::string::npos);
  // Never clean: the whole image is dirty, the cover is the image's.
  CHECK(bm->stats().total_chunks == 64);
  CHECK(bm->stats().dirty_chunks == 64);
  CHECK(bm->stats().unsynced_chunks == 64);
  CHECK(bm->memory_bytes() < 64 * 1024);
  CHECK(s < 1.0);
  CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
  CHECK(fmtest::header_on_disk(path).sync_size == size);
  CHECK(fmtest::file_size(path) == core::kHeaderSize + 4096);
  // The shared reader (examine-bitmap, rescale-bitmap) agrees on the intrinsic ones; the
  // others it reports as truncated bits, reading no more than the file holds.
  if (intrinsic) {
    fmtest::write_bytes(path, [&] {
      auto raw = core::encode_header(h);
      return std::vector<std::byte>(raw.begin(), raw.end());
    }(), 0600);
    utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    auto f = core::read_bitmap_file(fd.get());
    REQUIRE(f);
    CHECK(f->implausible);
    CHECK(f->bits.empty());
    CHECK(f->problem.find(expect) != std::string::npos);
  }
}

TEST_CASE("a header whose sync_size passes the image but not max_image_size is still read for the image") {
  // A legitimately big image (larger than max_image_size, created before the limit) keeps
  // its bitmap: the bound is max(max_image_size, image size).
  TempDir d;
  const auto path = d / "img.fmbm";
  auto p = params(0);
  p.max_image_size = 1 << 20;
  const std::uint64_t size = 4 << 20;
  fmtest::write_bitmap_file(path, fmtest::clean_header(kSet, kCs, size), {3});
  p.image_size = size;
  std::string why;
  auto bm = open_bm(path, p, &why);
  CHECK(why.empty());
  CHECK(bm->stats().dirty_chunks == 1);
}

TEST_CASE("a FIFO, a directory, a symlink or a hard link in place of the bitmap is refused and replaced") {
  TempDir d;
  REQUIRE(::mkdir((d / "bm").c_str(), 0700) == 0);
  auto dir = core::Dir::open(d / "bm");
  REQUIRE(dir);
  const auto path = d / "bm/img.fmbm";
  const auto outside = d / "outside";
  fmtest::write_text(outside, "precious data, not a bitmap\n");
  std::string expect;
  SUBCASE("FIFO") {
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    expect = "FIFO";
  }
  SUBCASE("hard link to a file outside the bitmap directory") {
    REQUIRE(::link(outside.c_str(), path.c_str()) == 0);
    expect = "hard links";
  }
  SUBCASE("symlink") {
    REQUIRE(::symlink(outside.c_str(), path.c_str()) == 0);
    expect = "symlink";
  }
  SUBCASE("directory") {
    REQUIRE(::mkdir(path.c_str(), 0700) == 0);
    expect = "directory";
  }
  auto p = params(8 * kCs);
  std::string why;
  const auto t0 = std::chrono::steady_clock::now();
  auto bm = core::open_bitmap_file(*dir, "img.fmbm", p, &why);  // must not block
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_MESSAGE(bm, "open_bitmap_file: " << bm.error().message());
  MESSAGE("refused: " << why);
  CHECK(s < 1.0);
  CHECK(why.find(expect) != std::string::npos);
  CHECK((*bm)->stats().dirty_chunks == 8);    // a full resync
  CHECK((*bm)->stats().unsynced_chunks == 8);
  write_once(**bm, 0, 100);
  // The file at the bitmap's name is a new regular file with one link; the outside file
  // never saw a byte.
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK(st.st_nlink == 1);
  CHECK(fmtest::read_text(outside) == "precious data, not a bitmap\n");
  // The refused object is kept aside under a name never taken for a bitmap.
  int aside = 0;
  for (const auto& e : fmtest::stdfs::directory_iterator(d / "bm"))
    if (e.path().filename().string().rfind(".img.fmbm.refused-", 0) == 0) ++aside;
  CHECK(aside == 1);
}

TEST_CASE("a regular bitmap with one link is opened as before") {
  TempDir d;
  REQUIRE(::mkdir((d / "bm").c_str(), 0700) == 0);
  auto dir = core::Dir::open(d / "bm");
  REQUIRE(dir);
  fmtest::write_bitmap_file(d / "bm/img.fmbm", fmtest::clean_header(kSet, kCs, 8 * kCs), {2});
  std::string why;
  auto bm = core::open_bitmap_file(*dir, "img.fmbm", params(8 * kCs), &why);
  REQUIRE(bm);
  CHECK(why.empty());
  CHECK((*bm)->stats().dirty_chunks == 1);
  // Blocking again: O_NONBLOCK was only for the open.
  write_once(**bm, 5 * kCs, 1);
}

TEST_CASE("no space for the bitmap: failed, named, then writes resume after a full rewrite") {
  TempDir d;
  const auto path = d / "img.fmbm";
  int fdnum = -1;
  auto bm = clean_bm(path, 8, kCs, &fdnum);
  write_once(*bm, 0, 1);
  const int saved = ::dup(fdnum);
  {
    utils::UniqueFd full(::open("/dev/full", O_RDWR | O_CLOEXEC));
    REQUIRE(::dup2(full.get(), fdnum) == fdnum);
  }
  CHECK(bm->start_write(3 * kCs, 1) == std::errc::no_space_on_device);
  CHECK(bm->failed());
  CHECK(bm->stats().error.find("space") != std::string::npos);
  CHECK(bm->recover());  // still full
  CHECK(bm->start_write(4 * kCs, 1));
  CHECK(bm->close_clean(ok_sync));
  // Space is back.
  REQUIRE(::dup2(saved, fdnum) == fdnum);
  ::close(saved);
  CHECK_FALSE(bm->recover());
  CHECK_FALSE(bm->failed());
  CHECK(bm->stats().error.empty());
  write_once(*bm, 6 * kCs, 1);
  auto file = fmtest::read_bytes(path);
  CHECK(fmtest::file_bit(file, 0));
  CHECK(fmtest::file_bit(file, 3));  // the refused writers' intent, kept (a superset is safe)
  CHECK(fmtest::file_bit(file, 6));
  CHECK_FALSE(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
  CHECK_FALSE(bm->close_clean(ok_sync));
  CHECK(fmtest::has(fmtest::header_on_disk(path).state, core::kStateClean));
}

TEST_CASE("an EIO on the bitmap stays sticky: recover() does not pass it") {
  TempDir d;
  const auto path = d / "img.fmbm";
  int fdnum = -1;
  auto bm = clean_bm(path, 8, kCs, &fdnum);
  const int saved = ::dup(fdnum);
  {
    // A read-only descriptor: every write fails with EBADF, an error no free space cures.
    utils::UniqueFd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(::dup2(ro.get(), fdnum) == fdnum);
  }
  CHECK(bm->start_write(3 * kCs, 1));
  REQUIRE(::dup2(saved, fdnum) == fdnum);
  ::close(saved);
  CHECK(bm->recover());
  CHECK(bm->failed());
}

}  // TEST_SUITE
