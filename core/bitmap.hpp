// core/bitmap.hpp — an image's write-intent bitmap: in-memory bits backed by a sidecar file.
//
// The md rules this class keeps (md-bitmap.c: startwrite / endwrite / unplug / daemon_work):
//   * start_write() returns only once every bit of the range is durable in the file;
//     writers that arrive while a flush runs are served together by the next one
//     (group commit: one pwrite of the dirty pages + one fdatasync for all of them).
//   * bits are cleared lazily by sweep(): only for chunks with no write in flight, not
//     written during the last full sweep period, not awaiting resync, after both legs were
//     fdatasync'ed (a finished pwrite is not yet durable), and never while degraded.
//   * a failed bitmap write is sticky: every later start_write fails (no data without a
//     durable intent) until the bitmap is reopened by an operator's action.
//
// Per-chunk state, derived from four bit vectors (a diagram, md-bitmap.h style):
//
//      clean --start_write--> dirty+recent (+inflight) --end_write--> dirty+recent
//        ^                                                              |
//        |            sweep k: recent cleared, chunk becomes a candidate |
//        +-- sweep k+1: not recent, not inflight, not unsynced, legs fdatasync'ed
//
//   unsynced: dirty bits found at open (or after a leg error) whose chunk still has to be
//   copied by resync; mark_synced() turns such a chunk into an ordinary recent dirty chunk.
//
// The activity log (DRBD's; core/activity_log.hpp, docs/write-path.md §3b) changes which
// bits are set and when they are cleared, never the order "bit durable before data":
//   * a write that needs a flush sets the bits of its whole extent in that flush (the
//     chunks that were clean become "logged": set by the log alone) and the extent becomes
//     active; writes into an active extent then find their bits durable and need no flush;
//   * the sweep never clears a chunk of an active extent;
//   * an extent retires when the active set is over its bound (least recently written
//     first) or when no write touched it for a whole sweep period, and at a clean close or
//     a re-add: its logged chunks — clean when it was activated and not written since, so
//     equal and durable on both legs with their checksum entry still true — are cleared at
//     once (degraded too: the absent secondary holds them; not unsynced ones); its written
//     chunks become ordinary candidates for the md rules above (idle, synced legs,
//     checksums recorded first, never while degraded).
//   After a power cut every set bit is resynced as always: the active extents (at most
//   al_extents x al_extent_size) plus the chunks md itself would have left set. After a
//   crash of the daemon alone, the record of logged chunks (core/al_record.hpp, kept by
//   core/bitmap_record.cpp, docs/write-path.md §3d) spares the chunks never written.
//
// Memory (docs/reliability.md §8): the bits are sparse, by 4 KiB bitmap page, as md allocates its
// counter pages lazily (core/bitmap_pages.hpp says how). An empty image of any size costs a
// header; memory grows with the set bits (all dirty 16 TiB at 64 KiB chunks: dirty +
// unsynced + on-disk copies = 3 x 32 MiB), and a shrink or a sweep gives it back.
//
// Three units, each owning its state, all guarded by this class's mu_:
//   * BitmapPages (core/bitmap_pages.hpp): the bits, sparse by page, and their counts;
//   * BitmapCommit (core/bitmap_commit.hpp): the file, the generations, the flush queue
//     and leader, the sticky error — the group commit and its durability ordering;
//   * Bitmap (here): the header, the cover, the writes in flight, and the md rules that
//     decide which bits are set and cleared, and when a caller must wait for durability.
//
// A failed bitmap write is sticky (md): from then on no data write gets a durable intent.
// ENOSPC/EDQUOT alone can pass: recover() (the sweeper calls it every daemon_sleep)
// rewrites every page held in memory and the header; once that is durable, writes resume.
// Until then the header is never marked clean (close_clean fails) and stats().error names
// the condition (status: bitmap-failed).
//
// Thread safety: every public member is safe to call concurrently. Lock order: mu_ only;
// the file I/O of a flush runs with mu_ released (BitmapCommit's flushing_ makes the leader
// unique). BitmapPages and BitmapCommit have no lock of their own: mu_ guards them.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <memory>
#include <vector>

#include "core/activity_log.hpp"
#include "core/al_record.hpp"
#include "core/bitmap_commit.hpp"
#include "core/bitmap_format.hpp"
#include "core/bitmap_pages.hpp"
#include "utils/fd.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

// Chunks touched by the byte range [off, off + len); empty when len == 0.
ChunkRange chunks_for(std::uint64_t chunk_size, std::uint64_t off, std::uint64_t len);

struct BitmapOpenParams {
  utils::Uuid set_uuid{};
  std::uint64_t chunk_size = 65536;  // for a new bitmap; an existing one keeps its own
  std::uint32_t daemon_sleep_ms = 5000;
  std::uint32_t write_behind = 0;
  std::uint64_t image_size = 0;  // current primary size: bits beyond a bitmap's cover are dirty
  bool persist_bits = true;      // false: config "bitmap": false (md --bitmap=none)
  // A header whose sync_size exceeds max(max_image_size, image_size) is not trusted (it
  // would make a mount allocate and scan for an image nobody has).
  std::uint64_t max_image_size = kDefaultMaxImageSize;
  // The activity log (docs/write-path.md §3b): at most `al_extents` active extents of
  // `al_extent_size` bytes (at least one chunk). 0 = off, md's rules alone: the default
  // here (create, rescale, the tests of the md rules); the config's default is on
  // (core/config.hpp), and the image loader passes it. Off when persist_bits is false.
  std::uint64_t al_extents = 0;
  std::uint64_t al_extent_size = 4 << 20;
};

// Before a sweep or close_clean clears bits, the chunks it is about to clear (ascending runs)
// are handed to this function, called without the bitmap lock after the legs were synced.
// It must make a checksum entry durable for each chunk it keeps in `runs` (it may shorten
// the list: chunks it drops keep their bits), and fail only when no bit may be cleared
// (docs/write-path.md §9.2). Empty function: no checksums.
using RecordChecksums = std::function<std::error_code(std::vector<ChunkRange>& runs)>;

struct BitmapStats {
  std::uint64_t chunk_size = 0;
  std::uint64_t total_chunks = 0;
  std::uint64_t dirty_chunks = 0;
  std::uint64_t unsynced_chunks = 0;
  std::uint64_t flushes = 0;        // bitmap write+fdatasync rounds
  std::uint64_t flush_waiters = 0;  // start_write calls that needed a durable bit
  std::uint64_t events = 0;
  std::uint64_t events_cleared = 0;
  std::uint32_t state = 0;
  std::string error;          // the sticky bitmap write error, "" when none
  std::uint64_t memory_bytes = 0;  // heap held by the bits (Bitmap::memory_bytes)
  std::uint64_t active_extents = 0;  // extents of the activity log active now
  std::uint64_t al_extents = 0;      // their bound (0: the log is off)
  std::uint64_t al_extent_size = 0;  // bytes per extent (0 when off)
  std::uint64_t logged_chunks = 0;   // dirty chunks set by the log alone (never written)
  std::uint64_t al_burst_extents = 0;  // extents activated ahead of writes, in bursts (total)
  bool al_record = false;              // the record of logged chunks is kept (attach_record)
  std::uint64_t al_record_spared = 0;  // chunks its recovery did not copy at this mount
  std::uint64_t al_record_writes = 0;  // stores into the record's slots (never flushed)
  bool direct_io = false;  // flushes write the file O_DIRECT (false: buffered, or no flush yet)
};

class Bitmap {
 public:
  // Loads the bitmap in `fd` (opened O_RDWR) or initialises it when the file is empty.
  // An untrusted file (bad magic/CRC/version, foreign set UUID, truncated bits) is never
  // refused here: it is rebuilt all-dirty and `why_untrusted` says why, for the log.
  // Before returning, the header is rewritten active (clean flag cleared, events + 1) and
  // fdatasync'ed, so a crash from now on can never leave a header that reads clean.
  static utils::Result<std::unique_ptr<Bitmap>> open(utils::UniqueFd fd,
                                                     const BitmapOpenParams& params,
                                                     std::string* why_untrusted);

  // Writes a new all-dirty bitmap for an image of `image_size` into `fd` (for `create`).
  static std::error_code write_all_dirty(int fd, const BitmapOpenParams& params);

  std::uint64_t chunk_size() const { return header_.chunk_size; }
  ChunkRange chunks_for(std::uint64_t off, std::uint64_t len) const {
    return core::chunks_for(header_.chunk_size, off, len);
  }

  // What one start_write changed, for cancel_write(): filled when the caller asks.
  struct Intent {
    std::uint64_t seq = 0;       // the start_write's number (a later one shows as a change)
    bool all_new = false;        // every chunk of the range was clean before it
    ChunkRange ahead{};          // chunks marked ahead of it, each of them clean before
    std::uint64_t old_sync_size = 0, old_chunks = 0;  // the cover before it
    // Extents [al_first, al_end) it activated (empty: none, or not one contiguous run).
    std::uint64_t al_first = 0, al_end = 0;
  };

  // Marks the chunks of [off, off+len) in flight and dirty, growing the cover when the
  // range passes its end; returns when those bits are durable. On error nothing is in
  // flight and the caller must not write data.
  // `ahead` (bytes): when the range needs a flush, the chunks of the next `ahead` bytes
  // after it (within the cover) are marked dirty in the same flush, not in flight — the
  // writer of a sequential stream then finds its next chunks durably dirty. A superset of
  // the intent is always safe; they are cleared by the sweep like any idle chunk.
  // With the activity log, the extents of the range are touched (activated when new, in
  // the same flush); see the class comment.
  std::error_code start_write(std::uint64_t off, std::uint64_t len, std::uint64_t ahead = 0,
                              Intent* intent = nullptr);
  // Ends a start_write. `legs_ok` false: some leg failed, the chunks become unsynced.
  void end_write(std::uint64_t off, std::uint64_t len, bool legs_ok);
  // Ends a start_write whose operation changed no byte on either leg (refused by the
  // primary before any change, the secondary not asked or refusing it too): the intent is
  // taken back — the bits it set are cleared and a cover it grew shrinks back — when
  // nothing else set a bit or changed the cover since (no start_write, mark_unsynced or
  // resize after it) and every chunk of the range was clean before. Otherwise it is
  // end_write(legs_ok = true): the legs are equal there and the sweep clears the bits.
  // Clearing needs no flush: a bit left set on disk by a crash only costs a resync.
  // Returns whether the intent was taken back.
  bool cancel_write(std::uint64_t off, std::uint64_t len, const Intent& intent);

  // The image's size changed to `size` (both legs truncated, under the image's whole-file
  // lock, so nothing is in flight): the cover follows it. Bits past a shrunk end are
  // dropped (the secondary's size is reconciled separately); a grown cover is clean.
  std::error_code resize(std::uint64_t size);

  // True when no chunk of [off, off+len) is dirty (so both legs hold the same data).
  bool range_clean(std::uint64_t off, std::uint64_t len) const;
  // Chunk c is neither dirty nor awaiting resync (degraded or not): its checksum, if any,
  // describes its data (docs/write-path.md §9.1).
  bool chunk_clean(std::uint64_t c) const;

  // A repair of a bad primary (docs/write-path.md §9.3) rewrites chunk c's primary with its
  // bit clear, so that a crash never resyncs the half-repaired primary over the good
  // secondary: pin_clean(c) makes the activity log and intent ahead — which set the bits
  // of chunks nobody writes — leave c clear until unpin_clean(c). False (nothing pinned)
  // when c is not clean now. REQUIRES: the caller holds c's range lock (no write to c).
  bool pin_clean(std::uint64_t c);
  void unpin_clean(std::uint64_t c);

  // Marks [off, off+len) as needing resync (dirty + unsynced), durable before returning.
  std::error_code mark_unsynced(std::uint64_t off, std::uint64_t len);
  // The first unsynced chunk >= from, or total_chunks() when none.
  std::uint64_t next_unsynced(std::uint64_t from) const;
  // Resync copied chunk c: it is an ordinary dirty chunk now, cleared after idle.
  void mark_synced(std::uint64_t c);
  // Marks every dirty chunk unsynced (after re-add: the secondary lacks them); the activity
  // log's extents are retired first, so that its never-written chunks are not copied.
  // An error (the record of logged chunks could not be fenced off): nothing may be copied.
  std::error_code mark_all_dirty_unsynced();

  // One sweep (called every daemon_sleep). `sync_legs` fdatasyncs both legs; it is called
  // without mu_ held, only when there is something to clear; then `record` (when given)
  // makes the checksums of the chunks to clear durable. Returns chunks cleared.
  utils::Result<std::uint64_t> sweep(const std::function<std::error_code()>& sync_legs,
                                     const RecordChecksums& record = {});

  // Degraded: from now on no bit is cleared; the header records it (events + 1), durably.
  // `held` (with degraded): failed by the operator, recorded too (kStateHeld); leaving
  // degraded clears it. A degraded bitmap can become held later (events + 1 again).
  std::error_code set_degraded(bool degraded, bool held = false);
  bool degraded() const;
  bool held() const;

  // Clean shutdown: retires every extent of the activity log, clears every idle, synced bit
  // after `sync_legs` (and `record`, as in sweep), marks the header clean, and flushes.
  // REQUIRES: no write in flight.
  std::error_code close_clean(const std::function<std::error_code()>& sync_legs,
                              const RecordChecksums& record = {});

  // The activity log's record (core/al_record.hpp, docs/write-path.md §3d), in `fd` (the
  // image's .fmal file). Called once, right after open and before any write. When this
  // bitmap was loaded from an unclean shutdown and the record is this boot's and this
  // bitmap's, the chunks it names as logged — never written since their extent became
  // active, so equal on both legs — are not resynced: their bits are cleared, durably.
  // Then this mount's record begins. Returns the chunks spared; `why_not` (when given)
  // says why a record was not used ("" when it was, or when nothing was to recover).
  std::uint64_t attach_record(utils::UniqueFd fd, std::string* why_not);

  // Makes every pending bit/header change durable now.
  std::error_code flush();

  // The sticky write error (empty when the bitmap is healthy).
  std::error_code error() const {
    std::lock_guard lk(mu_);
    return commit_.error();
  }
  bool failed() const { return static_cast<bool>(error()); }
  // After a sticky ENOSPC/EDQUOT: tries a full rewrite (every page in memory + the header,
  // one fdatasync); on success the error is gone and writes resume. Any other sticky error
  // stays until an operator reopens the bitmap (returned unchanged). No-op when healthy.
  std::error_code recover();
  // Bytes the file needs beyond what it has allocated to hold the whole cover (for the log
  // line after ENOSPC: "free N bytes"); 0 when unknown or nothing is missing.
  std::uint64_t bytes_short() const;

  // Heap bytes the in-memory bits hold now (pages, their vectors, the flush queue).
  std::uint64_t memory_bytes() const;

  BitmapStats stats() const;
  utils::Uuid image_uuid() const {
    std::lock_guard lk(mu_);
    return header_.image_uuid;
  }
  const BitmapHeader& header_for_test() const { return header_; }

 private:
  explicit Bitmap(utils::UniqueFd fd)
      : commit_(std::move(fd), pages_, header_, total_chunks_, persist_bits_) {}

  using Vec = BitmapPages::Vec;
  static constexpr Vec kDirty = BitmapPages::kDirty, kRecent = BitmapPages::kRecent,
                       kUnsynced = BitmapPages::kUnsynced, kOndisk = BitmapPages::kOndisk,
                       kActive = BitmapPages::kActive, kLogged = BitmapPages::kLogged;

  // All *_locked members REQUIRE mu_ held.
  void grow_locked(std::uint64_t size);
  // Sets the dirty bits of r; the pages that changed are queued for the next flush.
  // Returns the bits newly set.
  std::uint64_t set_dirty_locked(ChunkRange r);
  void clear_bit_locked(std::uint64_t c);  // dirty (and ondisk) bit; queues its page
  // Drops every bit at or past chunk `chunks` (the cover shrank): whole pages are freed.
  void drop_past_locked(std::uint64_t chunks);
  // The activity log's side of a write to r (mu_ held): touches its extents, activates the
  // new ones (their clean chunks set dirty + logged, queued for the next flush) and retires
  // those beyond the bound. Returns the hull of the chunks it set (empty when none);
  // `intent` (when given) records the extents it activated.
  ChunkRange al_touch_locked(ChunkRange r, Intent* intent);
  // Activates extent e: its clean chunks set dirty + logged, all of it kActive. Returns its
  // chunks (the cover's part).
  ChunkRange al_activate_locked(std::uint64_t e);
  // A write into r activated an extent: the rest of the aligned groups of r's extents are
  // adopted, while the log has room — every group (a burst: a flush runs) when `dense_at`
  // is 0, else only groups with at least `dense_at` active extents (docs/write-path.md §3b).
  void al_adopt_locked(ChunkRange r, std::uint64_t dense_at);
  // Extent e leaves the active set: its chunks are no longer kept from the sweep, and its
  // logged chunks are cleared now (degraded or not; not unsynced or in-flight ones).
  // Returns the chunks cleared.
  std::uint64_t al_retire_locked(std::uint64_t e);
  // Chunk c is set in one of the vectors of `minus`.
  bool in_any_locked(std::uint64_t c, unsigned minus) const;
  // Clears every chunk of `cand` (from pages_.less(kDirty, minus)) that is still dirty,
  // still outside `minus`, and not in flight; returns the chunks cleared.
  std::uint64_t clear_idle_locked(const BitmapPages::Snapshot& cand, unsigned minus);
  // With checksums: the chunks of `cand` still clearable, as runs; `record` makes their
  // entries durable (mu_ released in `lk` meanwhile); then only chunks of the runs it kept
  // that are *still* clearable are cleared. Returns the chunks cleared.
  utils::Result<std::uint64_t> record_then_clear_locked(std::unique_lock<std::mutex>& lk,
                                                        const BitmapPages::Snapshot& cand, unsigned minus,
                                                        const RecordChecksums& record);
  bool inflight_locked(std::uint64_t c) const;
  bool pinned_locked(std::uint64_t c) const;
  void end_inflight_locked(const ChunkRange& r);
  // ---- the record of logged chunks (core/bitmap_record.cpp) ----
  // Slot w of the record now holds the logged bits of its 64 chunks (a store; a failure
  // kills the record).
  void rec_store_locked(std::uint64_t w);
  void rec_store_range_locked(ChunkRange r);
  // Clears the logged bits of r, storing each slot that held one; returns bits cleared.
  std::uint64_t rec_clear_logged_locked(ChunkRange r);
  // The cover is now `chunks`: the record's file and mapping follow it.
  void rec_resize_locked(std::uint64_t chunks);
  // Before data may be written (or copied by a resync): a record that failed is known dead
  // by a durable header.
  std::error_code rec_fence_locked(std::unique_lock<std::mutex>& lk);
  // The header when the events moved (the sweep: precision only).
  void rec_catch_up_locked();
  // A store or write of the record failed: it is dropped, and the header's events move on
  // (fence).
  void rec_kill_locked(std::error_code ec);

  // Loads the bits of chunks [0, chunks) from the file, page by page (absent when zero).
  std::error_code load_bits_locked(std::uint64_t chunks);
  std::error_code wait_durable_locked(std::unique_lock<std::mutex>& lk, std::uint64_t gen) {
    return commit_.wait_durable(lk, gen);
  }

  mutable std::mutex mu_;
  BitmapHeader header_;                   // guarded by mu_
  bool persist_bits_ = true;
  std::uint64_t total_chunks_ = 0;        // guarded by mu_
  // ondisk: bits known to be 1 on disk *and* in every page image a pending flush may still
  // write. A writer whose chunks are all set there needs no flush at all (the hot path for
  // chunks that are already dirty).
  BitmapPages pages_;                     // guarded by mu_
  std::vector<ChunkRange> inflight_;      // guarded by mu_: ranges of writes in flight
  // Counts start_write, mark_unsynced and resize calls: cancel_write takes an intent back
  // only when nothing set a bit or moved the cover after it. Guarded by mu_.
  std::uint64_t changes_ = 0;
  ActivityLog al_;                        // guarded by mu_
  std::uint64_t al_burst_extents_ = 0;    // guarded by mu_: al_adopt_locked's adoptions
  std::vector<std::uint64_t> pinned_;     // guarded by mu_: chunks pin_clean() holds clear
  // The record of logged chunks (core/al_record.hpp), guarded by mu_: its slots always
  // hold pages_' kLogged words while mu_ is free.
  std::unique_ptr<AlRecord> rec_;          // set once by attach_record
  bool rec_on_ = false;                    // false: none, or dead after a failure
  std::uint64_t rec_events_ = 0;           // events in the record's header as written
  std::uint64_t rec_fence_ = 0;            // header generation that kills a dead record
  std::uint64_t rec_spared_ = 0;           // for stats()
  // From open: the bits were loaded from an unclean shutdown at these events (the
  // record to believe must carry them).
  bool recovering_ = false;
  std::uint64_t recovered_events_ = 0;
  // Declared last: it refers to the members above. Guarded by mu_.
  BitmapCommit commit_;
};

}  // namespace fusemirror::core
