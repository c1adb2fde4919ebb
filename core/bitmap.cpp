// core/bitmap.cpp — the md rules of an image's write-intent bitmap; see bitmap.hpp.
// The bits live in BitmapPages, the flushes in BitmapCommit: this file decides which bits
// are set and cleared, and when a caller waits for them to be durable.
#include "core/bitmap.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "utils/crash_point.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

ChunkRange chunks_for(std::uint64_t chunk_size, std::uint64_t off, std::uint64_t len) {
  if (len == 0) return {off / chunk_size, off / chunk_size};
  return {off / chunk_size, (off + len - 1) / chunk_size + 1};
}

// ---- bit bookkeeping (mu_ held) ----------------------------------------------------------

void Bitmap::grow_locked(std::uint64_t size) {
  // No allocation: the new pages are absent (zero) until a bit is set in them, and the
  // file's extension (ftruncate, sparse) holds them as zeros on disk.
  header_.sync_size = std::max(header_.sync_size, size);
  total_chunks_ = std::max(total_chunks_, header_.bit_count());
  rec_resize_locked(total_chunks_);
  // The new cover must be durable before data lands beyond the old one: the header carries
  // sync_size (start_write waits for header_gen when it grew the cover).
  commit_.touch_header();
}

std::uint64_t Bitmap::set_dirty_locked(ChunkRange r) {
  return pages_.set_range(kDirty, r, [this](std::uint64_t p) { commit_.touch_page(p); });
}

void Bitmap::clear_bit_locked(std::uint64_t c) {
  if (!pages_.clear(kDirty, c)) return;
  pages_.clear(kOndisk, c);  // a flush will write this 0
  if (pages_.clear(kLogged, c)) rec_store_locked(al_record_word(c));
  // Queued: the page stays until that flush (the commit tidies it after).
  commit_.touch_page(c / kBitsPerPage);
}

void Bitmap::drop_past_locked(std::uint64_t chunks) {
  // The file is cut to the new cover at the next flush, so the old bits of freed pages
  // never reappear; a queued index of a freed page is skipped there.
  if (pages_.drop_past(chunks)) commit_.touch_page(chunks / kBitsPerPage);
  al_.drop_past(chunks);  // their active and logged bits went with the pages
  rec_resize_locked(chunks);
  commit_.cut_file_to(kHeaderSize + bits_bytes(chunks));
}

std::uint64_t Bitmap::clear_idle_locked(const BitmapPages::Snapshot& cand, unsigned minus) {
  std::uint64_t cleared = 0;
  pages_.for_each_still(cand, kDirty, minus, [&](std::uint64_t chunk) {
    if (inflight_locked(chunk)) return;
    clear_bit_locked(chunk);
    ++cleared;
  });
  return cleared;
}

utils::Result<std::uint64_t> Bitmap::record_then_clear_locked(std::unique_lock<std::mutex>& lk,
                                                              const BitmapPages::Snapshot& cand, unsigned minus,
                                                              const RecordChecksums& record) {
  // Entries only for chunks this call may clear, and clears only of chunks whose entries
  // are durable: both sets are the runs `record` kept (docs/write-path.md §9.2).
  std::vector<ChunkRange> runs;
  pages_.for_each_still(cand, kDirty, minus, [&](std::uint64_t c) {
    if (inflight_locked(c)) return;
    if (!runs.empty() && runs.back().end == c) ++runs.back().end;
    else runs.push_back({c, c + 1});
  });
  if (runs.empty()) return std::uint64_t{0};
  lk.unlock();
  std::error_code ec = record(runs);
  FM_CRASH_POINT("sweep.after_checksums");
  lk.lock();
  if (ec) return ec;
  if (header_.state & kStateDegraded) return std::uint64_t{0};
  std::uint64_t cleared = 0;
  for (const ChunkRange& r : runs)
    for (std::uint64_t c = r.first; c < r.end && c < total_chunks_; ++c) {
      // Written (or started) meanwhile, or waiting for resync: its entry may describe data
      // that is changing; the bit stays and hides it.
      // Activated meanwhile (minus holds kActive in a sweep): kept for the activity log.
      if (!pages_.test(kDirty, c) || inflight_locked(c) || in_any_locked(c, minus)) continue;
      clear_bit_locked(c);
      ++cleared;
    }
  return cleared;
}

bool Bitmap::in_any_locked(std::uint64_t c, unsigned minus) const {
  for (unsigned k = 0; k < BitmapPages::kVecs; ++k)
    if ((minus & (1u << k)) && pages_.test(static_cast<Vec>(k), c)) return true;
  return false;
}

// ---- the activity log (docs/write-path.md §3b) ----------------------------------------

ChunkRange Bitmap::al_activate_locked(std::uint64_t e) {
  // Activation: every chunk of the extent is set, in the flush the caller needs (or the
  // next one). Those that were clean are the log's own ("logged"): clean, equal and durable
  // on both legs until a write touches them.
  const ChunkRange x = al_.chunks_of(e, total_chunks_);
  for (std::uint64_t c = x.first; c < x.end; ++c) {
    if (pages_.test(kDirty, c) || pinned_locked(c)) continue;
    set_dirty_locked({c, c + 1});
    pages_.set_range(kLogged, {c, c + 1});
  }
  rec_store_range_locked(x);  // the record names them (§3d)
  pages_.set_range(kActive, x);
  return x;
}

ChunkRange Bitmap::al_touch_locked(ChunkRange r, Intent* intent) {
  // A range over more than kMaxExtents extents (a large punch, zero range or allocate, not
  // a write of the page cache's size) is left to md's rules: activating its extents would
  // only push the working set out, and set bits nobody is about to write.
  constexpr std::uint64_t kMaxExtents = 8;
  const ChunkRange in{r.first, std::min(r.end, total_chunks_)};
  if (!al_.enabled() || in.empty()) return {};
  if (al_.extent_of(in.end - 1) - al_.extent_of(in.first) >= kMaxExtents) return {};
  ChunkRange hull{};
  bool one_run = true;
  al_.touch(
      in,
      [&](std::uint64_t e) {
        const ChunkRange x = al_activate_locked(e);
        hull = hull.empty() ? x : ChunkRange{std::min(hull.first, x.first), std::max(hull.end, x.end)};
        if (!intent) return;
        if (intent->al_first == intent->al_end) {
          intent->al_first = e;
          intent->al_end = e + 1;
        } else if (intent->al_end == e) {
          ++intent->al_end;
        } else {
          one_run = false;
        }
      },
      [&](std::uint64_t e) { al_retire_locked(e); });
  if (intent && !one_run) intent->al_first = intent->al_end = 0;
  // Activation ahead of the writes (docs/write-path.md §3b): in a burst when another
  // writer's flush runs (any group of the write's extents), else in a dense group only.
  if (!hull.empty() && persist_bits_) al_adopt_locked(in, commit_.flushing() ? 0 : ActivityLog::kDenseAt);
  return hull;
}

void Bitmap::al_adopt_locked(ChunkRange in, std::uint64_t dense_at) {
  // This write activated an extent; the rest of the aligned group of kBurstGroup extents
  // around each extent of the write is activated now, in the same flush, so that the
  // writes about to come there find their bits durable (docs/write-path.md §3b):
  //   * in a burst (dense_at 0): another writer's flush is running, so writers are arriving
  //     in cold extents faster than flushes end (a deep random queue on a fresh bitmap) —
  //     one by one, each activation would cost its writers a flush;
  //   * in a dense group (dense_at kDenseAt): a writer alone (queue depth 1, fdatasync per
  //     write) whose group now holds kDenseAt active extents is spreading over the group,
  //     and would pay one flush for each of the rest. A load that keeps to a few scattered
  //     extents never gets there, so its crash price is unchanged.
  // Only while the log has room (adopt() never retires an extent for it), and not part of
  // the write's intent: its wait covers its own extents, and a cancel leaves the group
  // active with its chunks logged — clean and equal, cleared when it retires. An adopted
  // extent no write touched retires when the sweep period ends, and is the first to go
  // when the set is over its bound (ActivityLog::adopt).
  // Safety: a superset of the intent, set in memory before the flush that carries it.
  // Test builds only: FM_FAULT=al.burst_ondisk breaks the rule on purpose — an adopted
  // extent is marked active and durable without its bits being set, so a write into it
  // issues its data before any flush carries its bit — so that the power-cut suite can
  // show it notices (t_powercut_canary.sh).
  const bool broken = FM_FAULT_POINT("al.burst_ondisk");
  auto activate = [&](std::uint64_t x) {
    if (!broken) {
      al_activate_locked(x);
      return;
    }
    pages_.set_range(kActive, al_.chunks_of(x, total_chunks_));
    pages_.set_range(kOndisk, al_.chunks_of(x, total_chunks_));
  };
  const std::uint64_t g = ActivityLog::kBurstGroup;
  const std::uint64_t last = al_.extent_of(in.end - 1);
  for (std::uint64_t first = al_.extent_of(in.first) / g * g; first <= last; first += g) {
    if (dense_at != 0 && al_.active_in(first, g) < dense_at) continue;
    for (std::uint64_t e = first; e < first + g; ++e) {
      if (al_.chunks_of(e, total_chunks_).empty()) break;  // past the cover
      if (al_.adopt(e, activate)) ++al_burst_extents_;
    }
  }
}

std::uint64_t Bitmap::al_retire_locked(std::uint64_t e) {
  // A logged chunk was clean when its extent was activated and no write started on it
  // since (start_write, mark_unsynced and a leg error take the mark away): its legs are
  // equal and durable and its checksum entry still describes it, so its bit may go now —
  // no fdatasync of the legs, no hashing. A crash before the 0 is durable leaves a set
  // bit: a needless copy. Also while degraded: md clears nothing then because the absent
  // secondary misses what was *written*; a logged chunk was clean (so the secondary had
  // it: nothing else is cleared while degraded) and was not written since.
  const ChunkRange x = al_.chunks_of(e, total_chunks_);
  // Test builds only: FM_FAULT=al.clear_written breaks the rule on purpose — the written
  // chunks are cleared too, without a leg sync — so that the power-cut suite can show it
  // notices (t_powercut_canary.sh). Never compiled into a release build.
  const bool broken = FM_FAULT_POINT("al.clear_written");
  std::uint64_t cleared = 0;
  pages_.clear_range(kActive, x);
  for (std::uint64_t c = x.first; c < x.end; ++c) {
    if (!broken && !pages_.test(kLogged, c)) continue;
    if (pages_.test(kUnsynced, c) || inflight_locked(c)) continue;
    clear_bit_locked(c);
    ++cleared;
  }
  return cleared;
}

bool Bitmap::pinned_locked(std::uint64_t c) const {
  return std::find(pinned_.begin(), pinned_.end(), c) != pinned_.end();
}

bool Bitmap::pin_clean(std::uint64_t c) {
  std::lock_guard lk(mu_);
  if (c >= total_chunks_ || pages_.test(kDirty, c) || pages_.test(kUnsynced, c)) return false;
  pinned_.push_back(c);
  return true;
}

void Bitmap::unpin_clean(std::uint64_t c) {
  std::lock_guard lk(mu_);
  if (auto it = std::find(pinned_.begin(), pinned_.end(), c); it != pinned_.end()) pinned_.erase(it);
}

bool Bitmap::inflight_locked(std::uint64_t c) const {
  for (const auto& r : inflight_)
    if (c >= r.first && c < r.end) return true;
  return false;
}

void Bitmap::end_inflight_locked(const ChunkRange& r) {
  for (auto it = inflight_.begin(); it != inflight_.end(); ++it) {
    if (it->first == r.first && it->end == r.end) {
      inflight_.erase(it);
      return;
    }
  }
}

// ---- the write path ----------------------------------------------------------------------

std::error_code Bitmap::start_write(std::uint64_t off, std::uint64_t len, std::uint64_t ahead,
                                    Intent* intent) {
  if (len == 0) return {};
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  const ChunkRange r = chunks_for(off, len);
  if (intent) *intent = Intent{++changes_, false, {}, header_.sync_size, total_chunks_};
  else ++changes_;
  const bool grew = r.end > total_chunks_ || off + len > header_.sync_size;
  if (grew) grow_locked(off + len);
  inflight_.push_back(r);
  pages_.set_range(kRecent, r);
  const std::uint64_t fresh = set_dirty_locked(r);
  if (intent) intent->all_new = fresh == r.end - r.first;
  // Written from now on: no longer the log's own.
  rec_clear_logged_locked(r);
  // The activity log: the range's extents are the most recently written; a new one has all
  // its chunks set in the flush this write waits for (hull: the chunks it set).
  const ChunkRange al = al_touch_locked(r, intent);
  // The record no longer names r's chunks (rec_clear_logged_locked above); one that failed
  // is known dead by a durable header before the data goes (§3d).
  if (auto ec = rec_fence_locked(lk)) {
    end_inflight_locked(r);
    return ec;
  }
  const bool all_durable = pages_.all_set(kOndisk, r);
  FM_CRASH_POINT("bitmap.after_set");
  if (!al.empty()) FM_CRASH_POINT("al.after_activate");
  if (!persist_bits_) return {};
  if (all_durable) return {};  // hot path: the chunks were already dirty on disk
  if (ahead) {
    // Intent ahead of a sequential stream, in the flush this write needs anyway.
    ChunkRange more{r.end, std::min(total_chunks_, chunks_for(off + len, ahead).end)};
    for (std::uint64_t p : pinned_)  // a primary under repair stays clear (pin_clean)
      if (p >= more.first && p < more.end) more.end = p;
    pages_.set_range(kRecent, more);
    const std::uint64_t fresh_ahead = set_dirty_locked(more);
    if (intent && !more.empty() && fresh_ahead == more.end - more.first) intent->ahead = more;
  }
  std::uint64_t gen = commit_.needed_gen(r);
  // The extent's bits in the same flush: the next write into it finds them durable.
  if (!al.empty()) gen = std::max(gen, commit_.needed_gen(al));
  if (grew) gen = std::max(gen, commit_.header_gen());  // the new sync_size, with the bits
  if (gen <= commit_.durable_gen()) return {};  // every page holding our bits is durable
  if (auto ec = wait_durable_locked(lk, gen)) {
    end_inflight_locked(r);
    return ec;
  }
  return {};
}

void Bitmap::end_write(std::uint64_t off, std::uint64_t len, bool legs_ok) {
  if (len == 0) return;
  std::lock_guard lk(mu_);
  const ChunkRange r = chunks_for(off, len);
  end_inflight_locked(r);
  const ChunkRange in{r.first, std::min(r.end, total_chunks_)};
  pages_.set_range(kRecent, in);
  if (!legs_ok) pages_.set_range(kUnsynced, in);
}

bool Bitmap::cancel_write(std::uint64_t off, std::uint64_t len, const Intent& intent) {
  if (len == 0) return false;
  std::lock_guard lk(mu_);
  const ChunkRange r = chunks_for(off, len);
  end_inflight_locked(r);
  // Another start_write after this one may rely on these bits (its data is in flight or
  // written, not yet durable on both legs); a chunk dirty before belongs to older writes.
  if (intent.seq != changes_ || !intent.all_new) {
    pages_.set_range(kRecent, {r.first, std::min(r.end, total_chunks_)});
    return false;
  }
  for (std::uint64_t c = r.first; c < std::min(r.end, total_chunks_); ++c) clear_bit_locked(c);
  for (std::uint64_t c = intent.ahead.first; c < std::min(intent.ahead.end, total_chunks_); ++c)
    clear_bit_locked(c);
  // The extents it activated: retired, their logged chunks cleared (nothing touched them).
  for (std::uint64_t e = intent.al_first; e < intent.al_end; ++e)
    al_.retire(e, [&](std::uint64_t x) { al_retire_locked(x); });
  if (total_chunks_ != intent.old_chunks || header_.sync_size != intent.old_sync_size) {
    // The cover grew for this write alone (no other change since): it shrinks back.
    drop_past_locked(intent.old_chunks);
    total_chunks_ = intent.old_chunks;
    header_.sync_size = intent.old_sync_size;
    commit_.touch_header();
  }
  return true;
}

bool Bitmap::chunk_clean(std::uint64_t c) const {
  std::lock_guard lk(mu_);
  return c < total_chunks_ && !pages_.test(kDirty, c) && !pages_.test(kUnsynced, c);
}

bool Bitmap::range_clean(std::uint64_t off, std::uint64_t len) const {
  std::lock_guard lk(mu_);
  const ChunkRange r = chunks_for(off, len);
  const ChunkRange in{r.first, std::min(r.end, total_chunks_)};
  if (pages_.any_set(kDirty, in) || pages_.any_set(kUnsynced, in)) return false;
  return !(header_.state & kStateDegraded);
}

std::error_code Bitmap::resize(std::uint64_t size) {
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  const std::uint64_t chunks = (size + header_.chunk_size - 1) / header_.chunk_size;
  ++changes_;
  if (chunks > total_chunks_) {
    grow_locked(size);
  } else {
    // Every bit past the new end is dropped and its page freed: memory returns on shrink.
    drop_past_locked(chunks);
    total_chunks_ = chunks;
    header_.sync_size = size;
    commit_.touch_header();
  }
  if (!persist_bits_) return {};
  return wait_durable_locked(lk, commit_.requested_gen());
}

std::error_code Bitmap::mark_unsynced(std::uint64_t off, std::uint64_t len) {
  if (len == 0) return {};
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  const ChunkRange r = chunks_for(off, len);
  ++changes_;
  if (r.end > total_chunks_ || off + len > header_.sync_size) grow_locked(off + len);
  set_dirty_locked(r);
  pages_.set_range(kUnsynced, r);
  // To be copied: not the log's own any more (a retirement must not clear it), in the
  // record too before a resync may copy it (§3d).
  rec_clear_logged_locked({r.first, std::min(r.end, total_chunks_)});
  if (auto ec = rec_fence_locked(lk)) return ec;
  if (!persist_bits_) return {};
  return wait_durable_locked(lk, commit_.requested_gen());
}

std::uint64_t Bitmap::next_unsynced(std::uint64_t from) const {
  std::lock_guard lk(mu_);
  if (from >= total_chunks_ || pages_.count(kUnsynced) == 0) return total_chunks_;
  return pages_.next_set(kUnsynced, from, total_chunks_);
}

void Bitmap::mark_synced(std::uint64_t c) {
  std::lock_guard lk(mu_);
  if (c >= total_chunks_) return;
  pages_.set_range(kRecent, {c, c + 1});
  if (!pages_.clear(kUnsynced, c)) return;
  if (pages_.count(kUnsynced) == 0 && (header_.state & kStateNeedsFullSync)) {
    header_.state &= ~kStateNeedsFullSync;
    commit_.touch_header();  // flushed by the next flush; harmless if lost (bits rule)
  }
}

std::error_code Bitmap::mark_all_dirty_unsynced() {
  std::unique_lock lk(mu_);
  // The log's own chunks need no copy (never written: the secondary has them): cleared
  // first, so that a re-add after a long degraded period copies what was written only.
  al_.retire_all([&](std::uint64_t e) { al_retire_locked(e); });
  pages_.copy(kDirty, kUnsynced);
  // Every one of them is to be copied now, and the record says so.
  rec_clear_logged_locked({0, total_chunks_});
  return rec_fence_locked(lk);
}

// ---- lazy clearing -----------------------------------------------------------------------

utils::Result<std::uint64_t> Bitmap::sweep(const std::function<std::error_code()>& sync_legs,
                                           const RecordChecksums& record) {
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  // The record's header after an events change: for precision only, never needed for
  // safety (§3d).
  rec_catch_up_locked();
  // The activity log's extents that no write touched during the period that just ended
  // retire: their logged chunks are cleared now (never written: nothing to sync or hash;
  // degraded or not), their written chunks are candidates below like any other.
  std::uint64_t retired = 0;
  al_.end_period([&](std::uint64_t e) { retired += al_retire_locked(e); });
  if (retired) FM_CRASH_POINT("al.after_retire");
  if (header_.state & kStateDegraded) {
    if (retired && persist_bits_)
      if (auto ec = wait_durable_locked(lk, commit_.requested_gen())) return ec;
    return retired;
  }
  // Candidates: dirty, synced, not written during the period that just ended, and not in
  // an active extent.
  constexpr unsigned kKeep =
      BitmapPages::vecs(kRecent) | BitmapPages::vecs(kUnsynced) | BitmapPages::vecs(kActive);
  const auto cand = pages_.less(kDirty, kKeep);
  // A new period: nothing is recent. Pages left with nothing are freed.
  pages_.reset(kRecent);
  if (cand.empty()) {
    if ((commit_.header_dirty() || retired) && persist_bits_) {
      if (auto ec = wait_durable_locked(lk, commit_.requested_gen())) return ec;
    }
    return retired;
  }
  // Both legs must hold every completed write durably before a bit may say "in sync".
  lk.unlock();
  if (auto ec = sync_legs()) return ec;
  FM_CRASH_POINT("sweep.before_clear");
  lk.lock();
  if (header_.state & kStateDegraded) return std::uint64_t{0};
  // Written (or started) since the fdatasync began, or waiting for resync: kept.
  std::uint64_t cleared = 0;
  if (record) {
    auto r = record_then_clear_locked(lk, cand, kKeep, record);
    if (!r) return r.error();
    cleared = *r;
  } else {
    cleared = clear_idle_locked(cand, kKeep);
  }
  if (cleared) FM_CRASH_POINT("sweep.after_clear");
  cleared += retired;
  if (cleared && header_.events_cleared != header_.events) {
    header_.events_cleared = header_.events;
    commit_.touch_header();
  }
  if (persist_bits_)
    if (auto ec = wait_durable_locked(lk, commit_.requested_gen())) return ec;
  return cleared;
}

std::error_code Bitmap::set_degraded(bool degraded, bool held) {
  std::unique_lock lk(mu_);
  const std::uint32_t want =
      (header_.state & ~(kStateDegraded | kStateHeld)) | (degraded ? kStateDegraded | (held ? kStateHeld : 0) : 0);
  // Held stays once set until the secondary comes back: a later failure does not lift it.
  const std::uint32_t next = degraded ? want | (header_.state & kStateHeld) : want;
  if (next == header_.state) return {};
  header_.state = next;
  header_.events += 1;  // the moment the secondary left (or came back), durably
  commit_.touch_header();
  return wait_durable_locked(lk, commit_.requested_gen());
}

bool Bitmap::degraded() const {
  std::lock_guard lk(mu_);
  return header_.state & kStateDegraded;
}

bool Bitmap::held() const {
  std::lock_guard lk(mu_);
  return header_.state & kStateHeld;
}

std::error_code Bitmap::close_clean(const std::function<std::error_code()>& sync_legs,
                                    const RecordChecksums& record) {
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  const bool degraded = header_.state & kStateDegraded;
  // The activity log keeps nothing past a clean shutdown: its logged chunks clear now.
  al_.retire_all([&](std::uint64_t e) { al_retire_locked(e); });
  // Candidates: dirty and synced, recent or not (a clean shutdown does not wait a period).
  const BitmapPages::Snapshot cand =
      degraded ? BitmapPages::Snapshot{} : pages_.less(kDirty, BitmapPages::vecs(kUnsynced));
  const bool any = !cand.empty();
  lk.unlock();
  // Even with nothing to clear, the legs are made durable: "clean" promises it.
  if (auto ec = sync_legs()) return ec;
  lk.lock();
  if (any) {
    if (record) {
      auto r = record_then_clear_locked(lk, cand, BitmapPages::vecs(kUnsynced), record);
      if (!r) return r.error();
    } else {
      clear_idle_locked(cand, BitmapPages::vecs(kUnsynced));
    }
    header_.events_cleared = header_.events + 1;
  }
  header_.events += 1;
  header_.state |= kStateClean;
  if (pages_.count(kUnsynced) == 0) header_.state &= ~kStateNeedsFullSync;
  commit_.touch_header();
  // Pages first, header last within one flush; if the header write tears, its CRC fails
  // and the next open rebuilds all-dirty: never a false "clean".
  if (!persist_bits_) {
    // bitmap "none": the header's clean flag is the only state; it is exact only when
    // nothing is left to resync.
    if (pages_.count(kDirty) != 0) header_.state &= ~kStateClean;
  }
  return wait_durable_locked(lk, commit_.requested_gen());
}

std::error_code Bitmap::flush() {
  std::unique_lock lk(mu_);
  return wait_durable_locked(lk, commit_.requested_gen());
}

std::error_code Bitmap::recover() {
  std::unique_lock lk(mu_);
  return commit_.recover(lk);
}

std::uint64_t Bitmap::bytes_short() const {
  std::lock_guard lk(mu_);
  return commit_.bytes_short();
}

std::uint64_t Bitmap::memory_bytes() const {
  std::lock_guard lk(mu_);
  return pages_.memory_bytes() + commit_.memory_bytes() + inflight_.capacity() * sizeof(ChunkRange) +
         al_.memory_bytes();
}

BitmapStats Bitmap::stats() const {
  std::lock_guard lk(mu_);
  BitmapStats s;
  s.chunk_size = header_.chunk_size;
  s.total_chunks = total_chunks_;
  s.dirty_chunks = pages_.count(kDirty);
  s.unsynced_chunks = pages_.count(kUnsynced);
  s.flushes = commit_.flushes();
  s.flush_waiters = commit_.flush_waiters();
  s.direct_io = commit_.direct_io();
  s.events = header_.events;
  s.events_cleared = header_.events_cleared;
  s.state = header_.state;
  if (auto ec = commit_.error()) s.error = ec.message();
  s.memory_bytes = pages_.memory_bytes() + al_.memory_bytes();
  s.active_extents = al_.active();
  s.al_burst_extents = al_burst_extents_;
  s.al_extents = al_.max_extents();
  s.al_extent_size = al_.enabled() ? al_.extent_chunks() * header_.chunk_size : 0;
  s.logged_chunks = pages_.count(kLogged);
  s.al_record = rec_on_;
  s.al_record_spared = rec_spared_;
  s.al_record_writes = rec_ ? rec_->stores() : 0;
  return s;
}

}  // namespace fusemirror::core
