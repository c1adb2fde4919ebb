// core/bitmap_record.cpp — the bitmap's side of the activity log's record of logged chunks
// (core/al_record.hpp; the ordering is argued in docs/write-path.md §3d).
//
// The rule: a chunk that is logged in the record *file* has had no data written to either
// leg since its extent was activated. So every change of the logged bits in memory is
// stored into its slot (64 chunks) of the mapped file at once, under mu_, before mu_ is let
// go: a write or mark_unsynced taking the mark (before start_write returns, so before any
// data is issued, and before a resync may copy the chunk), an activation setting it, a
// retirement, a shrink or mark_all_dirty_unsynced dropping it. The file's slot is then the
// memory's word at every moment mu_ is free; a store is a few nanoseconds and no system
// call (the first store into a page of slots allocates the page: one fallocate per 256
// slots, 16,384 chunks).
// The file is never flushed: a kill -9 keeps the page cache, and the record is believed
// only in the boot that wrote it. After a power cut it is ignored.
//
// A failure (a page that cannot be allocated, a failed header write, a failed resize)
// kills the record for this mount: the bitmap header's events move on, and no data is
// written until that header is durable (rec_fence_). A record whose events are not the
// bitmap's is never believed, so whatever the dead record's file still says can never
// spare a chunk.
#include <bit>

#include <spdlog/spdlog.h>

#include "core/bitmap.hpp"
#include "utils/crash_point.hpp"

namespace fusemirror::core {

std::uint64_t Bitmap::attach_record(utils::UniqueFd fd, std::string* why_not) {
  std::unique_lock lk(mu_);
  if (why_not) why_not->clear();
  if (!al_.enabled() || !persist_bits_ || rec_) return 0;
  auto rec = std::make_unique<AlRecord>(std::move(fd));
  std::uint64_t spared = 0;
  if (recovering_) {
    // The chunks the crashed mount had logged: set on disk by their extent's activation,
    // never written since. Their legs are equal, durable (they were clean before), and
    // their checksum entries still describe them: cleared as a retirement would.
    const AlRecordId id{header_.set_uuid, header_.image_uuid, header_.chunk_size, recovered_events_};
    std::string why;
    for (const auto& [w, bits] : rec->read(id, (total_chunks_ + 63) / 64, &why))
      for (std::uint64_t b = bits; b != 0; b &= b - 1) {
        const std::uint64_t c = w * 64 + static_cast<std::uint64_t>(std::countr_zero(b));
        if (c >= total_chunks_ || !pages_.test(kUnsynced, c)) continue;
        pages_.clear(kUnsynced, c);
        clear_bit_locked(c);
        ++spared;
      }
    if (why_not) *why_not = why;
    if (spared && pages_.count(kUnsynced) == 0) header_.state &= ~kStateNeedsFullSync;
  }
  recovering_ = false;
  rec_spared_ = spared;
  // The zeros first: a crash from here on finds them durable, or the bits set with a
  // record that no longer matches (the new header below) — a copy, never a loss.
  if (spared) (void)wait_durable_locked(lk, commit_.requested_gen());
  if (auto ec = rec->begin({header_.set_uuid, header_.image_uuid, header_.chunk_size, header_.events},
                           (total_chunks_ + 63) / 64)) {
    // Without a record the recovery copies whole extents, as before it existed. The old
    // header, if any, names the events of an earlier mount: never believed again.
    spdlog::warn("activity log record: cannot begin it ({}); a crash will resync whole active extents",
                 ec.message());
    return spared;
  }
  rec_events_ = header_.events;
  rec_ = std::move(rec);
  rec_on_ = true;
  return spared;
}

void Bitmap::rec_store_locked(std::uint64_t w) {
  if (!rec_on_) return;
  std::uint64_t bits = 0;
  pages_.copy_words(kLogged, w, std::span(&bits, 1));
  std::error_code ec;
  // Test builds only: FM_FAULT=al_record.write fails every store before it reaches the file.
  if (FM_FAULT_POINT("al_record.write")) ec = utils::errno_code(EIO);
  if (!ec) ec = rec_->set_slot(w, bits);
  if (ec) rec_kill_locked(ec);
}

void Bitmap::rec_store_range_locked(ChunkRange r) {
  const std::uint64_t end = std::min(r.end, total_chunks_);
  if (!rec_on_ || r.first >= end) return;
  for (std::uint64_t w = al_record_word(r.first); w <= al_record_word(end - 1); ++w) rec_store_locked(w);
}

std::uint64_t Bitmap::rec_clear_logged_locked(ChunkRange r) {
  // Every write passes here: with no logged chunk anywhere (a warm working set), no search.
  if (pages_.count(kLogged) == 0) return 0;
  const std::uint64_t end = std::min(r.end, total_chunks_);
  std::uint64_t cleared = 0;
  for (std::uint64_t c = pages_.next_set(kLogged, r.first, end); c < end;) {
    const std::uint64_t wend = std::min(end, (al_record_word(c) + 1) * 64);
    cleared += pages_.clear_range(kLogged, {c, wend});
    rec_store_locked(al_record_word(c));
    c = pages_.next_set(kLogged, wend, end);
  }
  return cleared;
}

void Bitmap::rec_resize_locked(std::uint64_t chunks) {
  if (!rec_on_) return;
  if (auto ec = rec_->resize((chunks + 63) / 64)) return rec_kill_locked(ec);
  if (chunks % 64) rec_store_locked(al_record_word(chunks));  // its bits past the end went
}

std::error_code Bitmap::rec_fence_locked(std::unique_lock<std::mutex>& lk) {
  if (rec_fence_ > commit_.durable_gen()) return wait_durable_locked(lk, rec_fence_);
  return {};
}

void Bitmap::rec_catch_up_locked() {
  if (rec_on_ && rec_events_ != header_.events) {
    // Under mu_: only when the events moved (a degrade, a re-add), and only the sweep.
    if (auto ec = rec_->write_header(header_.events)) return rec_kill_locked(ec);
    rec_events_ = header_.events;
  }
}

void Bitmap::rec_kill_locked(std::error_code ec) {
  if (!rec_on_) return;
  // Dead for this mount: the header's events move past the record's, durably before any
  // more data is written (rec_fence_locked waits for rec_fence_).
  rec_on_ = false;
  header_.events += 1;
  commit_.touch_header();
  rec_fence_ = commit_.header_gen();
  spdlog::error("activity log record: write failed ({}); it is dropped for this mount, and a crash "
                "will resync whole active extents",
                ec.message());
}

}  // namespace fusemirror::core
