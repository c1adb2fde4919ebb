// core/bitmap_record.cpp — the bitmap's side of the activity log's record of logged chunks
// (core/al_record.hpp; the ordering is argued in docs/write-path.md §3d).
//
// The rule: a chunk that is logged in the record *file* has had no data written to either
// leg since its extent was activated. So:
//   * every change of the logged bits in memory marks its record page pending
//     (rec_touch_locked): a write or mark_unsynced taking the mark, an activation setting
//     it, a retirement or shrink dropping it;
//   * before any data is issued for a range — start_write, and mark_unsynced and
//     mark_all_dirty_unsynced, after which a resync copies the chunks — the pending pages
//     of the range are written (rec_before_data_locked). A page written holds the bits as
//     they were after the change, because the snapshot is taken under rec_mu_ after it;
//   * a page written late only makes the recovery copy more (a logged bit the file lacks).
// The file is never flushed: a kill -9 keeps the page cache, and the record is believed
// only in the boot that wrote it. After a power cut it is ignored.
//
// A write error kills the record for this mount: the bitmap header's events move on, and
// no data is written until that header is durable (rec_fence_). A record whose events are
// not the bitmap's is never believed, so the pages the failed write may have left behind
// can never spare a chunk.
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
    const std::uint64_t pages = (total_chunks_ + AlRecord::kChunksPerPage - 1) / AlRecord::kChunksPerPage;
    std::string why;
    for (const auto& [p, words] : rec->read(id, pages, &why))
      for (std::uint64_t i = 0; i < words.size(); ++i)
        for (std::uint64_t w = words[i]; w != 0; w &= w - 1) {
          const std::uint64_t c = p * AlRecord::kChunksPerPage + i * 64 + std::countr_zero(w);
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
  if (auto ec = rec->begin({header_.set_uuid, header_.image_uuid, header_.chunk_size, header_.events})) {
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

void Bitmap::rec_touch_logged_locked() {
  if (!rec_on_) return;
  for (std::uint64_t c = pages_.next_set(kLogged, 0, total_chunks_); c < total_chunks_;
       c = pages_.next_set(kLogged, (al_record_page(c) + 1) * AlRecord::kChunksPerPage, total_chunks_))
    rec_touch_locked(c);
}

void Bitmap::rec_cut_locked(std::uint64_t chunks) {
  if (!rec_on_) return;
  const std::uint64_t pages = (chunks + AlRecord::kChunksPerPage - 1) / AlRecord::kChunksPerPage;
  rec_cut_ = rec_cut_ ? std::min(*rec_cut_, pages) : pages;
  rec_pending_.erase(rec_pending_.lower_bound(pages), rec_pending_.end());
  if (chunks % AlRecord::kChunksPerPage) rec_touch_locked(chunks);  // its bits past the end went
}

std::error_code Bitmap::rec_before_data_locked(std::unique_lock<std::mutex>& lk, ChunkRange r) {
  if (rec_on_ && !r.empty() && (rec_cut_ || !rec_pending_.empty())) {
    auto it = rec_pending_.lower_bound(al_record_page(r.first));
    if (rec_cut_ || (it != rec_pending_.end() && it->first <= al_record_page(r.end - 1)))
      (void)rec_write_locked(lk);  // an error kills the record: the fence below
  }
  if (rec_fence_ > commit_.durable_gen()) return wait_durable_locked(lk, rec_fence_);
  return {};
}

std::error_code Bitmap::rec_write_locked(std::unique_lock<std::mutex>& lk) {
  lk.unlock();
  std::lock_guard rl(rec_mu_);
  lk.lock();
  if (!rec_on_) return {};
  // The pages pending now, in batches: each batch's bits are copied under mu_, after every
  // change this caller made, and written with mu_ released.
  std::vector<std::uint64_t> todo;
  todo.reserve(rec_pending_.size());
  for (const auto& [p, seq] : rec_pending_) todo.push_back(p);
  const std::optional<std::uint64_t> cut = rec_cut_;
  rec_cut_.reset();
  const std::uint64_t events = header_.events;
  constexpr std::size_t kBatch = 32;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seqs;
  std::vector<AlRecord::Words> words;
  std::error_code ec;
  std::size_t at = 0;
  bool first = true;
  do {
    seqs.clear();
    words.clear();
    for (; at < todo.size() && seqs.size() < kBatch; ++at) {
      auto it = rec_pending_.find(todo[at]);
      if (it == rec_pending_.end()) continue;  // written by another caller meanwhile
      seqs.emplace_back(*it);
      words.emplace_back();
      pages_.copy_words(kLogged, it->first * AlRecord::kWordsPerPage, words.back());
    }
    lk.unlock();
    // Test builds only: FM_FAULT=al_record.write fails every write before it reaches the file.
    if (FM_FAULT_POINT("al_record.write")) ec = utils::errno_code(EIO);
    if (!ec && first && cut) ec = rec_->cut(*cut);
    for (std::size_t i = 0; i < seqs.size() && !ec; ++i) ec = rec_->write_page(seqs[i].first, words[i]);
    // rec_events_ changes under rec_mu_ only (held): read without mu_.
    if (!ec && first && events != rec_events_) ec = rec_->write_header(events);
    lk.lock();
    if (ec) break;
    if (first) rec_events_ = events;
    first = false;
    rec_writes_ += seqs.size();
    for (const auto& [p, seq] : seqs)
      if (auto it = rec_pending_.find(p); it != rec_pending_.end() && it->second == seq) rec_pending_.erase(it);
  } while (at < todo.size());
  if (!ec) return {};
  // Dead for this mount: the header's events move past the record's, durably before any
  // more data is written (rec_before_data_locked waits for rec_fence_).
  rec_on_ = false;
  rec_pending_.clear();
  header_.events += 1;
  commit_.touch_header();
  rec_fence_ = commit_.header_gen();
  spdlog::error("activity log record: write failed ({}); it is dropped for this mount, and a crash "
                "will resync whole active extents",
                ec.message());
  return ec;
}

}  // namespace fusemirror::core
