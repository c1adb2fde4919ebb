// core/bitmap_record.cpp — the bitmap's side of the activity log's record of logged chunks
// (core/al_record.hpp; the ordering is argued in docs/write-path.md §3d).
//
// The rule: a chunk that is logged in the record *file* has had no data written to either
// leg since its extent was activated. So:
//   * every change of the logged bits in memory marks its slot (64 chunks) pending
//     (rec_touch_locked): a write or mark_unsynced taking the mark, an activation setting
//     it, a retirement or shrink dropping it;
//   * before any data is issued for a range — start_write, and mark_unsynced and
//     mark_all_dirty_unsynced, after which a resync copies the chunks — the pending slots
//     of the range are written (rec_before_data_locked). A slot written holds the bits as
//     they were after the change, because its snapshot is taken after it, and one caller
//     at a time writes a slot (`busy`): the others wait and find their change in its write;
//   * a slot written late only makes the recovery copy more (a logged bit the file lacks).
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

void Bitmap::rec_touch_logged_in_locked(ChunkRange r) {
  // Every write passes here: with no logged chunk anywhere (a warm working set), no search.
  if (!rec_on_ || pages_.count(kLogged) == 0) return;
  const std::uint64_t end = std::min(r.end, total_chunks_);
  for (std::uint64_t c = pages_.next_set(kLogged, r.first, end); c < end;
       c = pages_.next_set(kLogged, (al_record_word(c) + 1) * 64, end))
    rec_touch_locked(c);
}

std::uint64_t Bitmap::rec_clear_logged_locked(ChunkRange r) {
  rec_touch_logged_in_locked(r);
  return pages_.clear_range(kLogged, r);
}

void Bitmap::rec_cut_locked(std::uint64_t chunks) {
  if (!rec_on_) return;
  const std::uint64_t words = (chunks + 63) / 64;
  rec_cut_ = rec_cut_ ? std::min(*rec_cut_, words) : words;
  // Past the cut nothing is pending any more (a write in flight there finds no entry); the
  // cut itself waits for it (rec_cut_now_locked).
  rec_pending_.erase(rec_pending_.lower_bound(words), rec_pending_.end());
  if (chunks % 64) rec_touch_locked(chunks);  // its bits past the end went
}

void Bitmap::rec_cut_now_locked(std::unique_lock<std::mutex>& lk) {
  while (rec_on_ && rec_cut_ && rec_busy_ > 0) rec_cv_.wait(lk);  // a slot past it may be in flight
  if (!rec_on_ || !rec_cut_) return;
  // Under mu_: rare (a shrink), and no slot write may start before the cut is done.
  if (auto ec = rec_->cut(*rec_cut_)) return rec_kill_locked(ec);
  rec_cut_.reset();
}

std::error_code Bitmap::rec_before_data_locked(std::unique_lock<std::mutex>& lk, ChunkRange r) {
  if (rec_on_ && !r.empty()) {
    if (rec_cut_) rec_cut_now_locked(lk);
    const std::uint64_t w0 = al_record_word(r.first), w1 = al_record_word(r.end - 1);
    // What this caller needs in the file: every change made so far to its slots (its own
    // clears among them).
    std::vector<std::pair<std::uint64_t, std::uint64_t>> need;  // word, seq
    for (auto it = rec_pending_.lower_bound(w0); it != rec_pending_.end() && it->first <= w1; ++it)
      if (it->second.written < it->second.latest) need.emplace_back(it->first, it->second.latest);
    std::vector<std::uint64_t> mine;
    while (rec_on_ && !need.empty()) {
      mine.clear();
      std::erase_if(need, [&](const std::pair<std::uint64_t, std::uint64_t>& n) {
        auto it = rec_pending_.find(n.first);
        if (it == rec_pending_.end() || it->second.written >= n.second) return true;  // in the file
        if (!it->second.busy) mine.push_back(n.first);
        return false;
      });
      if (!mine.empty()) {
        (void)rec_write_words_locked(lk, mine);  // an error kills the record: the fence below
      } else if (!need.empty()) {
        rec_cv_.wait(lk);  // another caller writes them: its snapshot may carry ours
      }
    }
  }
  if (rec_fence_ > commit_.durable_gen()) return wait_durable_locked(lk, rec_fence_);
  return {};
}

std::error_code Bitmap::rec_write_words_locked(std::unique_lock<std::mutex>& lk,
                                               const std::vector<std::uint64_t>& words) {
  // Claimed and copied under mu_ (after every change their waiters made), written with
  // mu_ released, one pwrite per run of adjacent slots.
  std::vector<std::uint64_t> seqs(words.size()), bits(words.size());
  for (std::size_t i = 0; i < words.size(); ++i) {
    RecWord& e = rec_pending_[words[i]];
    e.busy = true;
    seqs[i] = e.latest;
    pages_.copy_words(kLogged, words[i], std::span(&bits[i], 1));
  }
  rec_busy_ += words.size();
  lk.unlock();
  std::error_code ec;
  std::uint64_t writes = 0;
  // Test builds only: FM_FAULT=al_record.write fails every write before it reaches the file.
  if (FM_FAULT_POINT("al_record.write")) ec = utils::errno_code(EIO);
  for (std::size_t i = 0; i < words.size() && !ec;) {
    std::size_t j = i + 1;
    while (j < words.size() && words[j] == words[j - 1] + 1) ++j;
    ec = rec_->write_slots(words[i], std::span(bits).subspan(i, j - i));
    ++writes;
    i = j;
  }
  lk.lock();
  rec_busy_ -= words.size();
  rec_writes_ += writes;
  for (std::size_t i = 0; i < words.size(); ++i) {
    auto it = rec_pending_.find(words[i]);
    if (it == rec_pending_.end()) continue;  // cut away meanwhile
    it->second.busy = false;
    if (ec) continue;
    it->second.written = std::max(it->second.written, seqs[i]);
    if (it->second.written >= it->second.latest) rec_pending_.erase(it);
  }
  if (ec) rec_kill_locked(ec);
  rec_cv_.notify_all();
  return ec;
}

void Bitmap::rec_catch_up_locked(std::unique_lock<std::mutex>& lk) {
  if (!rec_on_) return;
  if (rec_cut_) rec_cut_now_locked(lk);
  std::vector<std::uint64_t> words;
  for (const auto& [w, e] : rec_pending_)
    if (!e.busy && e.written < e.latest) words.push_back(w);
  if (rec_on_ && !words.empty()) (void)rec_write_words_locked(lk, words);
  if (rec_on_ && rec_events_ != header_.events) {
    // Under mu_: only when the events moved (a degrade, a re-add), and only the sweep.
    if (auto ec = rec_->write_header(header_.events)) return rec_kill_locked(ec);
    rec_events_ = header_.events;
  }
}

void Bitmap::rec_kill_locked(std::error_code ec) {
  if (!rec_on_) return;
  // Dead for this mount: the header's events move past the record's, durably before any
  // more data is written (rec_before_data_locked waits for rec_fence_).
  rec_on_ = false;
  rec_pending_.clear();
  rec_cut_.reset();
  header_.events += 1;
  commit_.touch_header();
  rec_fence_ = commit_.header_gen();
  rec_cv_.notify_all();
  spdlog::error("activity log record: write failed ({}); it is dropped for this mount, and a crash "
                "will resync whole active extents",
                ec.message());
}

}  // namespace fusemirror::core
