// Unit tests for the bitmap's activity log (core/activity_log, its use in core/bitmap):
// writes into an active extent need no flush, the bound, the sweep keeps active extents,
// retired ones clear, a crash leaves every written chunk's bit set, off = md's rules.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <latch>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "core/activity_log.hpp"
#include "core/bitmap.hpp"
#include "al_test_helpers.hpp"
#include "test_helpers.hpp"

using namespace fusemirror;
using core::ActivityLog;
using core::Bitmap;
using core::BitmapOpenParams;
using fmtest::TempDir;

namespace {

const utils::Uuid kSet = {1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16};
using namespace fmtest::al;  // kCs, kExt, kExtChunks, kImage, open_at, write_chunk, ...

BitmapOpenParams al_params(std::uint64_t al_extents, std::uint64_t image_size = kImage) {
  return fmtest::al::params(kSet, al_extents, image_size);
}

// A fresh, clean bitmap (new file: an empty image, then grown by the writes' cover).
std::unique_ptr<Bitmap> fresh(const std::string& path, std::uint64_t al_extents) {
  auto bm = open_at(path, al_params(al_extents, 0));
  REQUIRE_FALSE(bm->resize(kImage));
  REQUIRE(bm->stats().dirty_chunks == 0);
  return bm;
}

// The chunks whose bit a mount would find set in the bitmap file as it is on disk now
// (a crash: the file copied, then opened; every set bit is unsynced there).
std::set<std::uint64_t> on_disk_after_crash(const std::string& path, const TempDir& td,
                                            std::uint64_t image_size = kImage) {
  const std::string copy = td.path() + "/crash.fmbm";
  fmtest::write_bytes(copy, fmtest::read_bytes(path), 0600);
  auto bm = open_at(copy, al_params(0, image_size));
  std::set<std::uint64_t> set;
  for (std::uint64_t c = bm->next_unsynced(0); c < bm->stats().total_chunks; c = bm->next_unsynced(c + 1))
    set.insert(c);
  CHECK(set.size() == bm->stats().dirty_chunks);
  return set;
}

// Fresh bitmaps at `path`N (al_extents `bound`, `extents` extents of kExt) until one write
// at each of `offs`, all released together, makes a burst (writers arriving in cold extents
// while another's flush runs: up to the scheduler, usually the first try). Returns that
// bitmap and sets `path` to its file.
std::unique_ptr<Bitmap> until_burst(const std::string& prefix, std::string& path, std::uint64_t bound,
                                    std::uint64_t extents, const std::vector<std::uint64_t>& offs) {
  std::unique_ptr<Bitmap> bm;
  for (int attempt = 0; attempt < 200; ++attempt) {
    path = prefix + std::to_string(attempt) + ".fmbm";
    bm = open_at(path, al_params(bound, 0));
    REQUIRE_FALSE(bm->resize(extents * kExt));
    std::latch go(static_cast<std::ptrdiff_t>(offs.size()));
    std::vector<std::thread> ts;
    for (std::uint64_t off : offs)
      ts.emplace_back([&, off] {
        go.arrive_and_wait();
        REQUIRE_FALSE(bm->start_write(off, 4096));
        bm->end_write(off, 4096, true);
      });
    for (auto& t : ts) t.join();
    if (bm->stats().al_burst_extents > 0) break;
  }
  return bm;
}

}  // namespace

TEST_SUITE("activity log") {
  TEST_CASE("the LRU: touch, bound, idle periods") {
    ActivityLog al;
    al.configure(4, 2);
    std::vector<std::uint64_t> act, ret;
    auto on_act = [&](std::uint64_t e) { act.push_back(e); };
    auto on_ret = [&](std::uint64_t e) { ret.push_back(e); };
    al.touch({0, 1}, on_act, on_ret);    // extent 0
    al.touch({5, 9}, on_act, on_ret);    // extents 1 and 2: 0 is pushed out
    CHECK(act == std::vector<std::uint64_t>{0, 1, 2});
    CHECK(ret == std::vector<std::uint64_t>{0});
    CHECK(al.active() == 2);
    al.touch({4, 5}, on_act, on_ret);    // 1 is the most recent now: 2 goes next
    al.touch({12, 13}, on_act, on_ret);  // extent 3
    CHECK(ret == std::vector<std::uint64_t>{0, 2});
    CHECK(al.is_active(1));
    CHECK(al.is_active(3));
    // Periods: touched during the period that ends -> kept; idle for a whole one -> retired.
    ret.clear();
    al.end_period(on_ret);
    CHECK(ret.empty());
    al.touch({4, 5}, on_act, on_ret);
    al.end_period(on_ret);
    CHECK(ret == std::vector<std::uint64_t>{3});
    al.end_period(on_ret);
    CHECK(ret == std::vector<std::uint64_t>{3, 1});
    CHECK(al.active() == 0);
    CHECK(al.memory_bytes() == 0);
    CHECK(al.chunks_of(3, 14).first == 12);
    CHECK(al.chunks_of(3, 14).end == 14);
    CHECK(al.chunks_of(4, 14).empty());
  }

  TEST_CASE("writes into an active extent need no bitmap flush") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 8);
    write_chunk(*bm, 3);
    auto s = bm->stats();
    CHECK(s.dirty_chunks == kExtChunks);  // the whole extent, in one flush
    CHECK(s.logged_chunks == kExtChunks - 1);
    CHECK(s.active_extents == 1);
    CHECK(s.al_extents == 8);
    CHECK(s.al_extent_size == kExt);
    const auto flushes = s.flushes, waiters = s.flush_waiters;
    // Every other chunk of the extent: durable already.
    for (std::uint64_t c = 0; c < kExtChunks; ++c) write_chunk(*bm, c, 8192);
    s = bm->stats();
    CHECK(s.flushes == flushes);
    CHECK(s.flush_waiters == waiters);
    CHECK(s.logged_chunks == 0);  // all written now
    CHECK(s.dirty_chunks == kExtChunks);
    // And they are durable: a crash now finds the whole extent set.
    CHECK(on_disk_after_crash(td.path() + "/b.fmbm", td).size() == kExtChunks);
    // A write into another extent flushes once again.
    write_chunk(*bm, 5 * kExtChunks + 1);
    CHECK(bm->stats().flush_waiters == waiters + 1);
    CHECK(bm->stats().active_extents == 2);
  }

  TEST_CASE("off: md's rules, one flush per new chunk") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 0);
    write_chunk(*bm, 3);
    const auto waiters = bm->stats().flush_waiters;
    for (std::uint64_t c = 4; c < 10; ++c) write_chunk(*bm, c);
    auto s = bm->stats();
    CHECK(s.flush_waiters == waiters + 6);
    CHECK(s.dirty_chunks == 7);
    CHECK(s.active_extents == 0);
    CHECK(s.al_extents == 0);
    CHECK(s.al_extent_size == 0);
    CHECK(s.logged_chunks == 0);
    // Cleared after two idle periods, as md does.
    CHECK(sweep(*bm) == 0);
    CHECK(sweep(*bm) == 7);
    CHECK(bm->stats().dirty_chunks == 0);
  }

  TEST_CASE("the sweep never clears an active extent; an idle one retires and clears") {
    TempDir td;
    const std::string path = td.path() + "/b.fmbm";
    auto bm = fresh(path, 8);
    int syncs = 0;
    auto sync = [&] { ++syncs; return std::error_code{}; };
    write_chunk(*bm, 0);
    CHECK(sweep(*bm, sync) == 0);  // period 0 ends: extent 0 was written in it
    write_chunk(*bm, 1);           // period 1: still hot (no flush)
    // Chunk 0 is idle for the whole period now: without the log it would be cleared here.
    CHECK(sweep(*bm, sync) == 0);
    CHECK(bm->stats().dirty_chunks == kExtChunks);
    CHECK(bm->stats().active_extents == 1);
    // Period 2 passes with no write: the extent retires at its end. Its logged chunks go
    // at once; the written chunks 0 and 1 (idle, legs synced) are cleared by the same sweep.
    const int before = syncs;
    CHECK(sweep(*bm, sync) == kExtChunks);
    CHECK(syncs == before + 1);
    auto s = bm->stats();
    CHECK(s.dirty_chunks == 0);
    CHECK(s.active_extents == 0);
    CHECK(s.logged_chunks == 0);
    CHECK(on_disk_after_crash(path, td).empty());  // flushed by the sweep
  }

  TEST_CASE("a written chunk of a retired extent keeps its bit until the md rules allow") {
    TempDir td;
    const std::string path = td.path() + "/b.fmbm";
    auto bm = fresh(path, 2);
    write_chunk(*bm, 0);                   // extent 0
    write_chunk(*bm, kExtChunks);          // extent 1
    write_chunk(*bm, 2 * kExtChunks + 5);  // extent 2: extent 0 is pushed out
    auto s = bm->stats();
    CHECK(s.active_extents == 2);
    // Extent 0's 63 logged chunks were cleared at once; its written chunk 0 was not.
    CHECK(s.dirty_chunks == 1 + 2 * kExtChunks);
    CHECK(on_disk_after_crash(path, td).count(0) == 1);
    CHECK(sweep(*bm) == 0);  // chunk 0 still recent; extents 1 and 2 written this period
    // A period without writes, and the legs' fdatasync fails: extents 1 and 2 retire, their
    // logged chunks go (never written: no sync needed), but no written chunk is cleared.
    auto r = bm->sweep([] { return std::make_error_code(std::errc::io_error); });
    CHECK_FALSE(r);
    s = bm->stats();
    CHECK(s.active_extents == 0);
    CHECK(s.dirty_chunks == 3);
    const auto disk = on_disk_after_crash(path, td);
    CHECK(disk.count(0) == 1);
    CHECK(disk.count(kExtChunks) == 1);
    CHECK(disk.count(2 * kExtChunks + 5) == 1);
    // With a sync that works, they clear.
    CHECK(sweep(*bm) == 3);
    CHECK(bm->stats().dirty_chunks == 0);
  }

  TEST_CASE("a crash at any moment: every chunk written since the last leg sync is set on disk") {
    // A model of the legs: a chunk may differ between them when it was written after the
    // last fdatasync of the legs (the sweep's sync). Random writes over more extents than
    // the bound (eviction all the time), random sweeps; after every step the bitmap file
    // as it is on disk must have all those bits set.
    TempDir td;
    const std::string path = td.path() + "/b.fmbm";
    auto bm = fresh(path, 3);
    std::mt19937_64 rng(18);
    std::set<std::uint64_t> may_differ;
    std::uint64_t logged_cleared_seen = 0;
    for (int step = 0; step < 300; ++step) {
      if (rng() % 5 == 0) {
        auto r = bm->sweep([&] {
          may_differ.clear();  // both legs durable: nothing written before differs
          return std::error_code{};
        });
        REQUIRE(r);
      } else {
        const std::uint64_t c = rng() % (8 * kExtChunks);  // 8 extents, 3 active at most
        const std::uint64_t before = bm->stats().dirty_chunks;
        write_chunk(*bm, c);
        may_differ.insert(c);
        if (bm->stats().dirty_chunks < before) ++logged_cleared_seen;
      }
      CHECK(bm->stats().active_extents <= 3);
      const auto disk = on_disk_after_crash(path, td);
      for (std::uint64_t c : may_differ) {
        INFO("step " << step << " chunk " << c);
        CHECK(disk.count(c) == 1);
      }
    }
    CHECK(logged_cleared_seen > 0);  // evictions did clear logged chunks meanwhile
  }

  TEST_CASE("cancel_write takes an activation back") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 8);
    Bitmap::Intent in;
    REQUIRE_FALSE(bm->start_write(7 * kCs, 4096, 0, &in));
    CHECK(bm->stats().dirty_chunks == kExtChunks);
    CHECK(bm->cancel_write(7 * kCs, 4096, in));
    auto s = bm->stats();
    CHECK(s.dirty_chunks == 0);
    CHECK(s.active_extents == 0);
    CHECK(s.logged_chunks == 0);
  }

  TEST_CASE("retirement keeps unsynced and written chunks; degraded, it clears the logged ones only") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 1);
    write_chunk(*bm, 0);
    REQUIRE_FALSE(bm->mark_unsynced(10 * kCs, kCs));  // a logged chunk now needs a copy
    CHECK(bm->stats().logged_chunks == kExtChunks - 2);
    write_chunk(*bm, kExtChunks);  // extent 0 retires: chunks 0 (written) and 10 stay
    CHECK(bm->stats().dirty_chunks == 2 + kExtChunks);
    CHECK(bm->next_unsynced(0) == 10);
    // Degraded: the written chunks stay (the secondary misses them), the logged ones go
    // (the secondary has them), by eviction and by idle periods alike.
    REQUIRE_FALSE(bm->set_degraded(true));
    write_chunk(*bm, 2 * kExtChunks);  // extent 1 retires, degraded
    CHECK(bm->stats().dirty_chunks == 2 + 1 + kExtChunks);
    sweep(*bm);
    sweep(*bm);  // extent 2 idle for a period: retired, its logged chunks cleared
    CHECK(bm->stats().dirty_chunks == 2 + 1 + 1);
    CHECK(bm->stats().active_extents == 0);
    // A re-add copies what was written, not the log's chunks of active extents.
    write_chunk(*bm, 3 * kExtChunks);
    CHECK(bm->stats().dirty_chunks == 4 + kExtChunks);
    REQUIRE_FALSE(bm->mark_all_dirty_unsynced());
    CHECK(bm->stats().dirty_chunks == 5);
    CHECK(bm->stats().unsynced_chunks == 5);
  }

  TEST_CASE("clean close clears the active extents; the reopened bitmap is clean") {
    TempDir td;
    const std::string path = td.path() + "/b.fmbm";
    {
      auto bm = fresh(path, 8);
      write_chunk(*bm, 0);
      write_chunk(*bm, 3 * kExtChunks + 2);
      CHECK(bm->stats().dirty_chunks == 2 * kExtChunks);
      int hashed = 0;
      core::RecordChecksums record = [&](std::vector<core::ChunkRange>& runs) {
        for (auto& r : runs) hashed += static_cast<int>(r.end - r.first);
        return std::error_code{};
      };
      REQUIRE_FALSE(bm->close_clean(ok_sync, record));
      CHECK(hashed == 2);  // only the written chunks: logged ones kept their entries
      CHECK(bm->stats().dirty_chunks == 0);
      CHECK(bm->stats().active_extents == 0);
    }
    auto again = open_at(path, al_params(8));
    CHECK(again->stats().dirty_chunks == 0);
  }

  TEST_CASE("a chunk pinned clean (a repair of its primary) stays clear through activation and intent ahead") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 8);
    REQUIRE(bm->pin_clean(10));
    write_chunk(*bm, 3);  // activates extent 0, chunk 10 included — but for the pin
    auto s = bm->stats();
    CHECK(s.dirty_chunks == kExtChunks - 1);
    CHECK(bm->chunk_clean(10));
    CHECK_FALSE(bm->pin_clean(3));  // a dirty chunk cannot be pinned
    // Unpinned: once the extent retired (two idle sweeps), the next activation sets it.
    bm->unpin_clean(10);
    sweep(*bm);
    sweep(*bm);
    REQUIRE(bm->stats().dirty_chunks == 0);
    write_chunk(*bm, 4);
    CHECK_FALSE(bm->chunk_clean(10));
    // Intent ahead of a stream stops before a pinned chunk too (log off: ahead alone).
    TempDir td2;
    auto md = fresh(td2.path() + "/b.fmbm", 0);
    REQUIRE(md->pin_clean(20));
    Bitmap::Intent in;
    REQUIRE_FALSE(md->start_write(5 * kCs, 4096, 32 * kCs, &in));
    md->end_write(5 * kCs, 4096, true);
    CHECK(md->stats().dirty_chunks == 15);  // chunk 5, then 6..19 ahead
    CHECK(md->chunk_clean(20));
  }

  TEST_CASE("adopt: only with room, at the back of the order, retired with its period unless written") {
    ActivityLog al;
    al.configure(4, 3);
    std::vector<std::uint64_t> act, ret;
    auto on_act = [&](std::uint64_t e) { act.push_back(e); };
    auto on_ret = [&](std::uint64_t e) { ret.push_back(e); };
    al.touch({0, 1}, on_act, on_ret);  // extent 0, written in period 0
    al.end_period(on_ret);             // period 1 begins; 0 was written in period 0: kept
    CHECK(al.adopt(5, on_act));
    CHECK_FALSE(al.adopt(5, on_act));  // active already
    CHECK(al.adopt(6, on_act));        // three active: the bound
    CHECK_FALSE(al.adopt(7, on_act));  // no room: adopt never pushes an extent out
    CHECK(act == std::vector<std::uint64_t>{0, 5, 6});
    CHECK(ret.empty());
    // Over the bound, the adopted extents go before the written one, the last adopted first.
    al.touch({8, 9}, on_act, on_ret);  // extent 2
    CHECK(ret == std::vector<std::uint64_t>{6});
    CHECK(al.is_active(0));
    // A write into an adopted extent keeps it; the untouched adopted one retires when the
    // period ends, with extent 0 (not written in period 1).
    al.touch({20, 21}, on_act, on_ret);  // extent 5: written now
    al.end_period(on_ret);
    CHECK(ret == std::vector<std::uint64_t>{6, 0});
    CHECK(al.is_active(5));
    CHECK(al.is_active(2));
    CHECK(al.active() == 2);
    // Adopted during period 2 and never written: gone when period 2 ends.
    CHECK(al.adopt(9, on_act));
    al.touch({8, 9}, on_act, on_ret);
    al.touch({20, 21}, on_act, on_ret);
    al.end_period(on_ret);
    CHECK(ret == std::vector<std::uint64_t>{6, 0, 9});
    CHECK(al.active() == 2);
    ActivityLog off;
    off.configure(4, 0);
    CHECK_FALSE(off.adopt(1, on_act));
  }

  TEST_CASE("one writer at a time, a few extents per group: never activates ahead") {
    // Four groups; fewer than kDenseAt extents written in each (a load that keeps to a few
    // scattered extents): no extent is activated that no write reached.
    constexpr std::uint64_t kGroup = ActivityLog::kBurstGroup, kDense = ActivityLog::kDenseAt;
    TempDir td;
    auto bm = open_at(td.path() + "/b.fmbm", al_params(1024, 0));
    REQUIRE_FALSE(bm->resize(4 * kGroup * kExt));
    static_assert((kDense - 2) * 4 < kGroup);
    const auto waiters = bm->stats().flush_waiters;
    for (std::uint64_t k = 0; k + 1 < kDense; ++k)
      for (std::uint64_t g = 0; g < 4; ++g) write_chunk(*bm, (g * kGroup + k * 4) * kExtChunks + 3);
    const auto s = bm->stats();
    CHECK(s.active_extents == 4 * (kDense - 1));
    CHECK(s.al_burst_extents == 0);
    CHECK(s.dirty_chunks == 4 * (kDense - 1) * kExtChunks);
    CHECK(s.flush_waiters - waiters == 4 * (kDense - 1));  // one flush per extent
  }

  TEST_CASE("one writer spreading over a group: its kDenseAt-th extent activates the rest") {
    constexpr std::uint64_t kGroup = ActivityLog::kBurstGroup, kDense = ActivityLog::kDenseAt;
    TempDir td;
    const std::string path = td.path() + "/b.fmbm";
    auto bm = open_at(path, al_params(1024, 0));
    REQUIRE_FALSE(bm->resize(2 * kGroup * kExt));
    // Extents 0, 3, 6, ... of group 0, one at a time: each pays a flush, none is adopted
    // until the group holds kDenseAt active extents.
    static_assert((kDense - 1) * 3 < kGroup);
    for (std::uint64_t k = 0; k + 1 < kDense; ++k) write_chunk(*bm, k * 3 * kExtChunks + 1);
    CHECK(bm->stats().al_burst_extents == 0);
    write_chunk(*bm, (kDense - 1) * 3 * kExtChunks + 1);
    auto s = bm->stats();
    CHECK(s.al_burst_extents == kGroup - kDense);
    CHECK(s.active_extents == kGroup);
    CHECK(s.dirty_chunks == kGroup * kExtChunks);         // every chunk of the group, set
    CHECK(s.logged_chunks == s.dirty_chunks - kDense);    // all but the written ones
    // The rest of group 0 needs no flush; group 1 is still cold.
    const auto waiters = s.flush_waiters;
    for (std::uint64_t e = 0; e < kGroup; ++e) write_chunk(*bm, e * kExtChunks + 9);
    CHECK(bm->stats().flush_waiters == waiters);
    write_chunk(*bm, (kGroup + 3) * kExtChunks);
    CHECK(bm->stats().flush_waiters == waiters + 1);
    CHECK(bm->stats().active_extents == kGroup + 1);
    // A crash now finds every chunk of group 0 set (what was written, and more).
    CHECK(on_disk_after_crash(path, td, 2 * kGroup * kExt).size() == (kGroup + 1) * kExtChunks);
    // Nobody wrote most of the group: the adopted extents retire when their period ends.
    sweep(*bm);
    sweep(*bm);
    CHECK(bm->stats().active_extents == 0);
  }

  TEST_CASE("one writer spreading over a group adopts only while the log has room") {
    constexpr std::uint64_t kDense = ActivityLog::kDenseAt, kBound = kDense + 2;
    TempDir td;
    auto bm = open_at(td.path() + "/b.fmbm", al_params(kBound, 0));
    REQUIRE_FALSE(bm->resize(ActivityLog::kBurstGroup * kExt));
    for (std::uint64_t k = 0; k < kDense; ++k) write_chunk(*bm, k * 3 * kExtChunks);
    const auto s = bm->stats();
    CHECK(s.al_burst_extents == kBound - kDense);
    CHECK(s.active_extents == kBound);
    // Every written extent is still active: the adoption pushed none of them out.
    for (std::uint64_t k = 0; k < kDense; ++k) {
      const auto before = bm->stats().flush_waiters;
      write_chunk(*bm, k * 3 * kExtChunks + 5);
      CHECK(bm->stats().flush_waiters == before);
    }
  }

  TEST_CASE("writers arriving in cold extents during a flush activate their aligned groups") {
    // Four groups of extents; four writers, one per group, released together.
    constexpr std::uint64_t kGroup = ActivityLog::kBurstGroup, kWriters = 4, kExtents = kWriters * kGroup;
    TempDir td;
    std::string path;
    std::vector<std::uint64_t> offs;
    for (std::uint64_t t = 0; t < kWriters; ++t) offs.push_back((t * kGroup + t) * kExt + 8192);  // extent t of group t
    auto bm = until_burst(td.path() + "/b", path, 1024, kExtents, offs);
    auto s = bm->stats();
    REQUIRE(s.al_burst_extents > 0);
    CHECK(s.al_burst_extents % (kGroup - 1) == 0);  // whole groups, less the written extent
    CHECK(s.active_extents == kWriters + s.al_burst_extents);
    CHECK(s.dirty_chunks == s.active_extents * kExtChunks);  // every chunk of each, set
    CHECK(s.logged_chunks == s.dirty_chunks - kWriters);     // all but the written ones
    // The point of it: a write into an adopted extent needs no flush; a write into an
    // extent of a group the burst did not reach needs one (one writer: no burst now) until
    // the group is dense, when the rest of it is adopted too.
    std::uint64_t no_flush = 0;
    for (std::uint64_t e = 0; e < kExtents; ++e) {
      if (e % kGroup == e / kGroup) continue;  // written above
      const auto before = bm->stats().flushes;
      write_chunk(*bm, e * kExtChunks + 5);
      if (bm->stats().flushes == before) ++no_flush;
    }
    CHECK(no_flush == bm->stats().al_burst_extents);
    CHECK(no_flush >= s.al_burst_extents);
    // A crash now finds every chunk written set (with the whole of every active extent).
    const auto on_disk = on_disk_after_crash(path, td, kExtents * kExt);
    CHECK(on_disk.size() == kExtents * kExtChunks);
  }

  TEST_CASE("a burst adopts only while the log has room") {
    constexpr std::uint64_t kGroup = ActivityLog::kBurstGroup, kBound = kGroup / 2;
    TempDir td;
    std::string path;
    std::vector<std::uint64_t> offs;
    for (std::uint64_t t = 0; t < 4; ++t) offs.push_back((t * kGroup + 1) * kExt);
    auto bm = until_burst(td.path() + "/r", path, kBound, 4 * kGroup, offs);
    const auto s = bm->stats();
    REQUIRE(s.al_burst_extents > 0);
    CHECK(s.active_extents <= kBound);
    // Every written extent is still active: an adoption never pushed one out, and the
    // adopted extents went first when a later activation needed the room.
    for (std::uint64_t t = 0; t < 4; ++t) {
      const auto before = bm->stats().flushes;
      write_chunk(*bm, (t * kGroup + 1) * kExtChunks + 7);
      CHECK(bm->stats().flushes == before);
    }
  }

  TEST_CASE("a range over many extents (a large punch or allocate) is left to md's rules") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 8);
    REQUIRE_FALSE(bm->start_write(0, 9 * kExt, 0));  // 9 extents: not activated
    bm->end_write(0, 9 * kExt, true);
    CHECK(bm->stats().active_extents == 0);
    CHECK(bm->stats().dirty_chunks == 9 * kExtChunks);
    REQUIRE_FALSE(bm->start_write(10 * kExt - 4096, 8192, 0));  // across two extents
    bm->end_write(10 * kExt - 4096, 8192, true);
    CHECK(bm->stats().active_extents == 2);
  }

  TEST_CASE("BitmapPages::clear_range clears a range across pages and keeps the counts") {
    core::BitmapPages pg;
    const std::uint64_t n = 3 * core::kBitsPerPage;
    pg.set_range(core::BitmapPages::kLogged, {10, n - 10});
    CHECK(pg.count(core::BitmapPages::kLogged) == n - 20);
    CHECK(pg.clear_range(core::BitmapPages::kLogged, {core::kBitsPerPage - 3, 2 * core::kBitsPerPage + 70}) ==
          core::kBitsPerPage + 73);
    CHECK(pg.count(core::BitmapPages::kLogged) == n - 20 - core::kBitsPerPage - 73);
    CHECK(pg.test(core::BitmapPages::kLogged, core::kBitsPerPage - 4));
    CHECK_FALSE(pg.test(core::BitmapPages::kLogged, core::kBitsPerPage - 3));
    CHECK_FALSE(pg.test(core::BitmapPages::kLogged, 2 * core::kBitsPerPage + 69));
    CHECK(pg.test(core::BitmapPages::kLogged, 2 * core::kBitsPerPage + 70));
    CHECK(pg.clear_range(core::BitmapPages::kDirty, {0, n}) == 0);  // nothing there
  }

  TEST_CASE("a shrink forgets the extents past the end") {
    TempDir td;
    auto bm = fresh(td.path() + "/b.fmbm", 8);
    write_chunk(*bm, 0);
    write_chunk(*bm, 10 * kExtChunks);
    CHECK(bm->stats().active_extents == 2);
    REQUIRE_FALSE(bm->resize(5 * kExt + kCs));  // extent 5 keeps one chunk
    write_chunk(*bm, 5 * kExtChunks);
    auto s = bm->stats();
    CHECK(s.active_extents == 2);
    CHECK(s.dirty_chunks == kExtChunks + 1);
    // A regrow does not bring extent 10 back.
    REQUIRE_FALSE(bm->resize(kImage));
    CHECK(bm->stats().dirty_chunks == kExtChunks + 1);
  }
}
