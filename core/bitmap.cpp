#include "core/bitmap.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "utils/crash_point.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

static_assert(std::endian::native == std::endian::little,
              "bit words are copied to the file as little-endian bytes");

namespace {
constexpr std::uint64_t kWordsPerPage = kBitsPerPage / 64;

std::uint64_t pages_for(std::uint64_t chunks) { return (chunks + kBitsPerPage - 1) / kBitsPerPage; }
}  // namespace

ChunkRange chunks_for(std::uint64_t chunk_size, std::uint64_t off, std::uint64_t len) {
  if (len == 0) return {off / chunk_size, off / chunk_size};
  return {off / chunk_size, (off + len - 1) / chunk_size + 1};
}

// ---- loading -----------------------------------------------------------------------------

utils::Result<std::unique_ptr<Bitmap>> Bitmap::open(utils::UniqueFd fd,
                                                    const BitmapOpenParams& params,
                                                    std::string* why_untrusted) {
  std::unique_ptr<Bitmap> bm(new Bitmap(std::move(fd)));
  bm->persist_bits_ = params.persist_bits;
  struct stat st {};
  if (::fstat(bm->fd_.get(), &st) != 0) return utils::last_errno();
  const auto file_size = static_cast<std::uint64_t>(st.st_size);

  std::string why;
  bool all_dirty = false;
  BitmapHeader h;
  std::vector<std::byte> bits;
  if (file_size == 0) {
    // A new image: nothing to copy unless it already holds data (then we cannot know).
    h.set_uuid = params.set_uuid;
    h.image_uuid = utils::random_uuid();
    h.chunk_size = params.chunk_size;
    h.daemon_sleep_ms = params.daemon_sleep_ms;
    h.write_behind = params.write_behind;
    h.sync_size = params.image_size;
    if (params.image_size > 0) {
      all_dirty = true;
      why = "no bitmap existed for an image holding data";
    }
  } else {
    auto file = read_bitmap_file(bm->fd_.get(), params.persist_bits);
    if (!file) return file.error();
    const std::optional<BitmapHeader>& dec = file->header;
    if (!dec) {
      why = file->problem;
    } else if (dec->set_uuid != params.set_uuid) {
      why = "belongs to another mirror set (uuid " + utils::to_string(dec->set_uuid) + ")";
    } else {
      h = *dec;
      why = file->problem;  // bits truncated, or nothing
      bits = std::move(file->bits);
      if (why.empty() && !params.persist_bits) {
        // bitmap "none" keeps only the header: its clean flag is all there is to trust.
        bits.clear();
        if (!(h.state & kStateClean)) {
          all_dirty = true;
          why = "the bitmap is disabled and the set was not shut down cleanly";
        }
      }
      if (why.empty() && (h.state & kStateStale)) {
        all_dirty = true;
        why = "the bitmap is marked stale";
      }
      if (why.empty() && (h.state & kStateNeedsFullSync)) {
        all_dirty = true;
        why = "a full resync was still pending";
      }
    }
    if (!why.empty() && !all_dirty) {
      // Untrusted: start over with a fresh header; everything is dirty.
      all_dirty = true;
      bits.clear();
      BitmapHeader fresh;
      fresh.set_uuid = params.set_uuid;
      fresh.image_uuid = dec ? dec->image_uuid : utils::random_uuid();
      fresh.events = dec ? dec->events : 0;
      fresh.chunk_size = dec && dec->set_uuid == params.set_uuid ? dec->chunk_size : params.chunk_size;
      fresh.daemon_sleep_ms = params.daemon_sleep_ms;
      fresh.write_behind = params.write_behind;
      fresh.sync_size = params.image_size;
      h = fresh;
    }
  }
  if (why_untrusted) *why_untrusted = why;

  h.daemon_sleep_ms = params.daemon_sleep_ms;
  h.write_behind = params.write_behind;
  bm->header_ = h;
  bm->total_chunks_ = h.bit_count();
  const std::uint64_t pages = pages_for(bm->total_chunks_);
  bm->dirty_.assign(pages * kWordsPerPage, 0);
  bm->recent_.assign(pages * kWordsPerPage, 0);
  bm->unsynced_.assign(pages * kWordsPerPage, 0);
  bm->ondisk_.assign(pages * kWordsPerPage, 0);
  bm->page_gen_.assign(pages, 0);
  bm->page_queued_.assign(pages, false);
  if (!bits.empty()) std::memcpy(bm->dirty_.data(), bits.data(), std::min<std::size_t>(bits.size(), bm->dirty_.size() * 8));
  // Bits past the last chunk are padding: never let them count.
  {
    const std::uint64_t full = bm->total_chunks_ / 64, rem = bm->total_chunks_ % 64;
    if (rem) bm->dirty_[full] &= (1ull << rem) - 1;
    std::fill(bm->dirty_.begin() + static_cast<std::ptrdiff_t>(full + (rem ? 1 : 0)),
              bm->dirty_.end(), 0);
  }

  std::unique_lock lk(bm->mu_);
  bm->file_size_ = file_size;
  if (params.image_size > h.sync_size) {
    // The image grew while no fusemirror watched it (the cover follows every truncate and
    // write we serve): what lies past the old cover was never mirrored.
    const std::uint64_t old_size = h.sync_size;
    bm->grow_locked(params.image_size);
    if (!all_dirty && file_size != 0)
      for (std::uint64_t c = old_size / h.chunk_size; c < bm->total_chunks_; ++c) bm->set_bit_locked(c);
  }
  if (params.image_size < h.sync_size && !all_dirty) {
    // Bits past the end describe data that no longer exists on the primary.
    const std::uint64_t chunks = (params.image_size + h.chunk_size - 1) / h.chunk_size;
    for (std::uint64_t c = chunks; c < bm->total_chunks_; ++c) bm->clear_bit_locked(c);
    bm->total_chunks_ = chunks;
    bm->header_.sync_size = params.image_size;
  }
  if (all_dirty) {
    for (std::uint64_t c = 0; c < bm->total_chunks_; ++c) bm->set_bit_locked(c);
    bm->header_.state |= kStateNeedsFullSync;
    // Rewrite every page: the file's bits are not to be trusted.
    for (std::uint64_t p = 0; p < pages; ++p) bm->touch_page_locked(p);
  }
  bm->dirty_count_ = 0;
  for (auto w : bm->dirty_) bm->dirty_count_ += static_cast<std::uint64_t>(std::popcount(w));
  // Every dirty chunk found at open must be copied before it may be cleared.
  bm->unsynced_ = bm->dirty_;
  bm->unsynced_count_ = bm->dirty_count_;
  if (bm->unsynced_count_ == 0) bm->header_.state &= ~kStateNeedsFullSync;
  // Active from here: the clean flag is cleared durably before any data write can be
  // issued, so a crash can never leave a header that claims a clean shutdown.
  // The degraded flag stays: a secondary that left stays out until an operator re-adds it
  // (md keeps a faulty member out across restarts); its bits have kept accumulating.
  bm->header_.state &= ~(kStateClean | kStateStale);
  bm->header_.events += 1;
  bm->touch_header_locked();
  if (auto ec = bm->wait_durable_locked(lk, bm->requested_gen_)) return ec;
  return bm;
}

std::error_code Bitmap::write_all_dirty(int fd, const BitmapOpenParams& params) {
  BitmapHeader h;
  h.set_uuid = params.set_uuid;
  h.image_uuid = utils::random_uuid();
  h.chunk_size = params.chunk_size;
  h.daemon_sleep_ms = params.daemon_sleep_ms;
  h.write_behind = params.write_behind;
  h.sync_size = params.image_size;
  h.state = kStateNeedsFullSync | kStateClean;
  const std::uint64_t n = h.bit_count();
  std::vector<std::byte> bits(bits_bytes(n), std::byte{0});
  for (std::uint64_t c = 0; c < n; ++c) bits[c / 8] |= std::byte(1u << (c % 8));
  if (auto ec = utils::pwrite_all(fd, bits, kHeaderSize)) return ec;
  auto raw = encode_header(h);
  if (auto ec = utils::pwrite_all(fd, raw, 0)) return ec;
  if (::ftruncate(fd, static_cast<off_t>(kHeaderSize + bits.size())) != 0) return utils::last_errno();
  return utils::fdatasync_fd(fd);
}

// ---- bit bookkeeping (mu_ held) ----------------------------------------------------------

void Bitmap::grow_locked(std::uint64_t size) {
  header_.sync_size = std::max(header_.sync_size, size);
  const std::uint64_t chunks = header_.bit_count();
  if (chunks <= total_chunks_) {
    touch_header_locked();
    return;
  }
  const std::uint64_t old_pages = page_gen_.size();
  const std::uint64_t pages = pages_for(chunks);
  if (pages > old_pages) {
    dirty_.resize(pages * kWordsPerPage, 0);
    recent_.resize(pages * kWordsPerPage, 0);
    unsynced_.resize(pages * kWordsPerPage, 0);
    ondisk_.resize(pages * kWordsPerPage, 0);
    page_gen_.resize(pages, 0);
    page_queued_.resize(pages, false);
  }
  total_chunks_ = chunks;
  // The new cover must be durable before data lands beyond the old one: the header carries
  // sync_size, and the new pages (zero, from the file's extension) share its generation.
  touch_header_locked();
  for (std::uint64_t p = old_pages; p < pages; ++p) page_gen_[p] = header_gen_;
}

void Bitmap::touch_page_locked(std::uint64_t page) {
  page_gen_[page] = ++requested_gen_;
  if (!page_queued_[page]) {
    page_queued_[page] = true;
    dirty_pages_.push_back(page);
  }
}

void Bitmap::touch_header_locked() {
  header_gen_ = ++requested_gen_;
  header_dirty_ = true;
}

void Bitmap::set_bit_locked(std::uint64_t c) {
  auto& w = dirty_[c >> 6];
  const std::uint64_t m = 1ull << (c & 63);
  if (w & m) return;
  w |= m;
  ++dirty_count_;
  touch_page_locked(c / kBitsPerPage);
}

void Bitmap::clear_bit_locked(std::uint64_t c) {
  auto& w = dirty_[c >> 6];
  const std::uint64_t m = 1ull << (c & 63);
  if (!(w & m)) return;
  w &= ~m;
  ondisk_[c >> 6] &= ~m;  // a flush will write this 0: no longer a durable 1
  --dirty_count_;
  touch_page_locked(c / kBitsPerPage);
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

std::uint64_t Bitmap::needed_gen_locked(const ChunkRange& r) const {
  std::uint64_t gen = 0;
  for (std::uint64_t p = r.first / kBitsPerPage; p <= (r.end - 1) / kBitsPerPage; ++p)
    gen = std::max(gen, page_gen_[p]);
  return gen;
}

// ---- group commit ------------------------------------------------------------------------

// Ordering: every writer that changed a bit waits here before it issues data. The leader
// snapshots the pages as they are *now* (including bits set by writers still queueing) and
// writes them, then one fdatasync makes all of them durable; only then does it publish
// durable_gen_, which releases the writers whose generations it covered. Flushes never
// overlap (flushing_), so the last page image written is always the newest snapshot: a
// sweeper's clear and a writer's later set of the same bit reach the file in that order.
std::error_code Bitmap::wait_durable_locked(std::unique_lock<std::mutex>& lk, std::uint64_t gen) {
  if (durable_gen_ < gen) ++flush_waiters_;
  while (durable_gen_ < gen) {
    if (sticky_error_) return sticky_error_;
    if (flushing_) {
      cv_.wait(lk);
      continue;
    }
    flushing_ = true;
    const std::uint64_t target = requested_gen_;
    std::vector<std::pair<std::uint64_t, std::vector<std::byte>>> pages;
    pages.reserve(dirty_pages_.size());
    for (auto p : dirty_pages_) {
      std::vector<std::byte> bytes(4096);
      std::memcpy(bytes.data(), dirty_.data() + p * kWordsPerPage, 4096);
      pages.emplace_back(p, std::move(bytes));
      page_queued_[p] = false;
    }
    dirty_pages_.clear();
    std::array<std::byte, kHeaderSize> header_bytes{};
    const bool with_header = header_dirty_;
    if (with_header) header_bytes = encode_header(header_);
    header_dirty_ = false;
    const std::uint64_t want_size = kHeaderSize + bits_bytes(total_chunks_);
    if (!persist_bits_) pages.clear();  // bitmap "none": only the header is kept
    lk.unlock();
    FM_CRASH_POINT("bitmap.before_flush");
    std::error_code ec = write_out(pages, with_header ? &header_bytes : nullptr,
                                   persist_bits_ ? want_size : kHeaderSize);
    FM_CRASH_POINT("bitmap.after_flush");
    lk.lock();
    flushing_ = false;
    ++flushes_;
    if (ec) {
      // Sticky (docs/reliability.md invariant 5): from now on no data write gets a durable intent.
      sticky_error_ = ec;
      cv_.notify_all();
      return ec;
    }
    durable_gen_ = std::max(durable_gen_, target);
    // What this flush made durable, less anything cleared in memory meanwhile (a clear
    // zeroes ondisk_ and queues its own write of the page).
    for (const auto& [p, bytes] : pages) {
      const auto* words = reinterpret_cast<const std::uint64_t*>(bytes.data());
      for (std::uint64_t i = 0; i < kWordsPerPage; ++i)
        ondisk_[p * kWordsPerPage + i] |= words[i] & dirty_[p * kWordsPerPage + i];
    }
    cv_.notify_all();
  }
  return sticky_error_;
}

std::error_code Bitmap::write_out(
    const std::vector<std::pair<std::uint64_t, std::vector<std::byte>>>& pages,
    const std::array<std::byte, kHeaderSize>* header, std::uint64_t file_size) {
  // Extend first: the zero bits of a grown cover are then part of the file that fdatasync
  // makes durable (an extension's size change is data-integrity metadata for fdatasync).
  if (file_size > file_size_) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_size)) != 0) return utils::last_errno();
    file_size_ = file_size;
  }
  for (const auto& [p, bytes] : pages)
    if (auto ec = utils::pwrite_all(fd_.get(), bytes, kHeaderSize + p * 4096)) return ec;
  if (header)
    if (auto ec = utils::pwrite_all(fd_.get(), *header, 0)) return ec;
  return utils::fdatasync_fd(fd_.get());
}

// ---- the write path ----------------------------------------------------------------------

std::error_code Bitmap::start_write(std::uint64_t off, std::uint64_t len, std::uint64_t ahead) {
  if (len == 0) return {};
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  const ChunkRange r = chunks_for(off, len);
  if (r.end > total_chunks_ || off + len > header_.sync_size) grow_locked(off + len);
  inflight_.push_back(r);
  bool all_durable = true;
  for (std::uint64_t c = r.first; c < r.end; ++c) {
    const std::uint64_t m = 1ull << (c & 63);
    recent_[c >> 6] |= m;
    set_bit_locked(c);
    all_durable &= (ondisk_[c >> 6] & m) != 0;
  }
  FM_CRASH_POINT("bitmap.after_set");
  if (!persist_bits_) return {};
  if (all_durable) return {};  // hot path: the chunks were already dirty on disk
  if (ahead) {
    // Intent ahead of a sequential stream, in the flush this write needs anyway.
    const std::uint64_t stop = std::min(total_chunks_, chunks_for(off + len, ahead).end);
    for (std::uint64_t c = r.end; c < stop; ++c) {
      recent_[c >> 6] |= 1ull << (c & 63);
      set_bit_locked(c);
    }
  }
  const std::uint64_t gen = needed_gen_locked(r);
  if (gen <= durable_gen_) return {};  // every page holding our bits is durable
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
  for (std::uint64_t c = r.first; c < r.end && c < total_chunks_; ++c) {
    recent_[c >> 6] |= 1ull << (c & 63);
    if (!legs_ok && !test(unsynced_, c)) {
      unsynced_[c >> 6] |= 1ull << (c & 63);
      ++unsynced_count_;
    }
  }
}

bool Bitmap::range_clean(std::uint64_t off, std::uint64_t len) const {
  std::lock_guard lk(mu_);
  const ChunkRange r = chunks_for(off, len);
  for (std::uint64_t c = r.first; c < r.end && c < total_chunks_; ++c)
    if (test(dirty_, c) || test(unsynced_, c)) return false;
  return !(header_.state & kStateDegraded);
}

std::error_code Bitmap::resize(std::uint64_t size) {
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  const std::uint64_t chunks = (size + header_.chunk_size - 1) / header_.chunk_size;
  if (chunks > total_chunks_) {
    grow_locked(size);
  } else {
    for (std::uint64_t c = chunks; c < total_chunks_; ++c) {
      clear_bit_locked(c);
      const std::uint64_t m = 1ull << (c & 63);
      if (unsynced_[c >> 6] & m) {
        unsynced_[c >> 6] &= ~m;
        --unsynced_count_;
      }
      recent_[c >> 6] &= ~m;
    }
    total_chunks_ = chunks;
    header_.sync_size = size;
    touch_header_locked();
  }
  if (!persist_bits_) return {};
  return wait_durable_locked(lk, requested_gen_);
}

std::error_code Bitmap::mark_unsynced(std::uint64_t off, std::uint64_t len) {
  if (len == 0) return {};
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  const ChunkRange r = chunks_for(off, len);
  if (r.end > total_chunks_ || off + len > header_.sync_size) grow_locked(off + len);
  for (std::uint64_t c = r.first; c < r.end; ++c) {
    set_bit_locked(c);
    if (!test(unsynced_, c)) {
      unsynced_[c >> 6] |= 1ull << (c & 63);
      ++unsynced_count_;
    }
  }
  if (!persist_bits_) return {};
  return wait_durable_locked(lk, requested_gen_);
}

std::uint64_t Bitmap::next_unsynced(std::uint64_t from) const {
  std::lock_guard lk(mu_);
  for (std::uint64_t w = from >> 6; w < (total_chunks_ + 63) / 64; ++w) {
    std::uint64_t bits = unsynced_[w];
    if (w == (from >> 6)) bits &= ~0ull << (from & 63);
    if (bits) return std::min(total_chunks_, w * 64 + static_cast<std::uint64_t>(std::countr_zero(bits)));
  }
  return total_chunks_;
}

void Bitmap::mark_synced(std::uint64_t c) {
  std::lock_guard lk(mu_);
  if (c >= total_chunks_) return;
  recent_[c >> 6] |= 1ull << (c & 63);
  if (test(unsynced_, c)) {
    unsynced_[c >> 6] &= ~(1ull << (c & 63));
    if (--unsynced_count_ == 0 && (header_.state & kStateNeedsFullSync)) {
      header_.state &= ~kStateNeedsFullSync;
      touch_header_locked();  // flushed by the next flush; harmless if lost (bits rule)
    }
  }
}

void Bitmap::mark_all_dirty_unsynced() {
  std::lock_guard lk(mu_);
  unsynced_ = dirty_;
  unsynced_count_ = dirty_count_;
}

// ---- lazy clearing -----------------------------------------------------------------------

utils::Result<std::uint64_t> Bitmap::sweep(const std::function<std::error_code()>& sync_legs) {
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  if (header_.state & kStateDegraded) return std::uint64_t{0};
  // Candidates: dirty, synced, and not written during the period that just ended.
  std::vector<std::uint64_t> cand(dirty_.size(), 0);
  bool any = false;
  for (std::size_t w = 0; w < dirty_.size(); ++w) {
    cand[w] = dirty_[w] & ~recent_[w] & ~unsynced_[w];
    any |= cand[w] != 0;
  }
  std::fill(recent_.begin(), recent_.end(), 0);
  if (!any) {
    if (header_dirty_ && persist_bits_) {
      if (auto ec = wait_durable_locked(lk, requested_gen_)) return ec;
    }
    return std::uint64_t{0};
  }
  // Both legs must hold every completed write durably before a bit may say "in sync".
  lk.unlock();
  if (auto ec = sync_legs()) return ec;
  FM_CRASH_POINT("sweep.before_clear");
  lk.lock();
  if (header_.state & kStateDegraded) return std::uint64_t{0};
  std::uint64_t cleared = 0;
  for (std::size_t w = 0; w < cand.size(); ++w) {
    // Written (or started) since the fdatasync began, or waiting for resync: keep.
    std::uint64_t bits = cand[w] & dirty_[w] & ~recent_[w] & ~unsynced_[w];
    while (bits) {
      const std::uint64_t c = w * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
      bits &= bits - 1;
      if (inflight_locked(c)) continue;
      clear_bit_locked(c);
      ++cleared;
    }
  }
  if (cleared) FM_CRASH_POINT("sweep.after_clear");
  if (cleared && header_.events_cleared != header_.events) {
    header_.events_cleared = header_.events;
    touch_header_locked();
  }
  if (persist_bits_)
    if (auto ec = wait_durable_locked(lk, requested_gen_)) return ec;
  return cleared;
}

std::error_code Bitmap::set_degraded(bool degraded) {
  std::unique_lock lk(mu_);
  const bool now = header_.state & kStateDegraded;
  if (now == degraded) return {};
  if (degraded) header_.state |= kStateDegraded;
  else header_.state &= ~kStateDegraded;
  header_.events += 1;  // the moment the secondary left (or came back), durably
  touch_header_locked();
  return wait_durable_locked(lk, requested_gen_);
}

bool Bitmap::degraded() const {
  std::lock_guard lk(mu_);
  return header_.state & kStateDegraded;
}

std::error_code Bitmap::close_clean(const std::function<std::error_code()>& sync_legs) {
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  const bool degraded = header_.state & kStateDegraded;
  std::vector<std::uint64_t> cand(dirty_.size(), 0);
  bool any = false;
  if (!degraded) {
    for (std::size_t w = 0; w < dirty_.size(); ++w) {
      cand[w] = dirty_[w] & ~unsynced_[w];
      any |= cand[w] != 0;
    }
  }
  lk.unlock();
  // Even with nothing to clear, the legs are made durable: "clean" promises it.
  if (auto ec = sync_legs()) return ec;
  lk.lock();
  if (any) {
    for (std::size_t w = 0; w < cand.size(); ++w) {
      std::uint64_t bits = cand[w] & dirty_[w] & ~unsynced_[w];
      while (bits) {
        const std::uint64_t c = w * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
        bits &= bits - 1;
        if (!inflight_locked(c)) clear_bit_locked(c);
      }
    }
    header_.events_cleared = header_.events + 1;
  }
  header_.events += 1;
  header_.state |= kStateClean;
  if (unsynced_count_ == 0) header_.state &= ~kStateNeedsFullSync;
  touch_header_locked();
  // Pages first, header last within one flush; if the header write tears, its CRC fails
  // and the next open rebuilds all-dirty: never a false "clean".
  if (!persist_bits_) {
    // bitmap "none": the header's clean flag is the only state; it is exact only when
    // nothing is left to resync.
    if (dirty_count_ != 0) header_.state &= ~kStateClean;
  }
  return wait_durable_locked(lk, requested_gen_);
}

std::error_code Bitmap::flush() {
  std::unique_lock lk(mu_);
  return wait_durable_locked(lk, requested_gen_);
}

BitmapStats Bitmap::stats() const {
  std::lock_guard lk(mu_);
  BitmapStats s;
  s.chunk_size = header_.chunk_size;
  s.total_chunks = total_chunks_;
  s.dirty_chunks = dirty_count_;
  s.unsynced_chunks = unsynced_count_;
  s.flushes = flushes_;
  s.flush_waiters = flush_waiters_;
  s.events = header_.events;
  s.events_cleared = header_.events_cleared;
  s.state = header_.state;
  return s;
}

}  // namespace fusemirror::core
