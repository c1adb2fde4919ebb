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

// ---- loading -----------------------------------------------------------------------------

utils::Result<std::unique_ptr<Bitmap>> Bitmap::open(utils::UniqueFd fd,
                                                    const BitmapOpenParams& params,
                                                    std::string* why_untrusted) {
  std::unique_ptr<Bitmap> bm(new Bitmap(std::move(fd)));
  bm->persist_bits_ = params.persist_bits;
  struct stat st {};
  if (::fstat(bm->commit_.fd(), &st) != 0) return utils::last_errno();
  // The caller (open_bitmap_file) refuses anything else with its reason; never write into
  // a FIFO, a device or a file shared by another name.
  if (!S_ISREG(st.st_mode)) return utils::errno_code(EINVAL);
  if (st.st_nlink > 1) return utils::errno_code(EMLINK);
  const auto file_size = static_cast<std::uint64_t>(st.st_size);

  std::string why;
  bool all_dirty = false;
  bool load_bits = false;
  BitmapHeader h;
  if (file_size == 0) {
    // A new image: nothing to copy unless it already holds data (then we cannot know).
    h.set_uuid = params.set_uuid;
    h.image_uuid = utils::random_uuid();
    h.chunk_size = params.chunk_size;
    h.sync_size = params.image_size;
    if (params.image_size > 0) {
      all_dirty = true;
      why = "no bitmap existed for an image holding data";
    }
  } else {
    // The header only: the bits are loaded page by page below, never as one buffer.
    auto file = read_bitmap_file(bm->commit_.fd(), /*with_bits=*/false);
    if (!file) return file.error();
    const std::optional<BitmapHeader>& dec = file->header;
    if (!dec) {
      why = file->problem;
    } else if (dec->set_uuid != params.set_uuid) {
      why = "belongs to another mirror set (uuid " + utils::to_string(dec->set_uuid) + ")";
    } else if (!file->problem.empty()) {
      why = file->problem;  // header_implausible
    } else if (dec->sync_size > std::max(params.max_image_size, params.image_size)) {
      // Checked against the image before anything is allocated: no image we serve is this
      // big (a legitimate sync_size is at most the image's size or max_image_size).
      why = "sync_size " + std::to_string(dec->sync_size) + " is larger than the image (" +
            std::to_string(params.image_size) + " bytes) and than max_image_size (" +
            std::to_string(params.max_image_size) + ")";
    } else {
      h = *dec;
      if (params.persist_bits) why = bits_truncated_problem(h, file_size);
      load_bits = why.empty() && params.persist_bits;
      if (why.empty() && !params.persist_bits && !(h.state & kStateClean)) {
        // bitmap "none" keeps only the header: its clean flag is all there is to trust.
        all_dirty = true;
        why = "the bitmap is disabled and the set was not shut down cleanly";
      }
      if (why.empty() && (h.state & kStateStale)) {
        all_dirty = true;
        load_bits = false;
        why = "the bitmap is marked stale";
      }
      if (why.empty() && (h.state & kStateNeedsFullSync)) {
        all_dirty = true;
        load_bits = false;
        why = "a full resync was still pending";
      }
    }
    if (!why.empty() && !all_dirty) {
      // Untrusted: start over with a fresh header; everything is dirty.
      all_dirty = true;
      load_bits = false;
      const bool ours = dec && dec->set_uuid == params.set_uuid && file->problem.empty();
      BitmapHeader fresh;
      fresh.set_uuid = params.set_uuid;
      fresh.image_uuid = dec ? dec->image_uuid : utils::random_uuid();
      fresh.events = dec ? dec->events : 0;
      fresh.chunk_size = ours ? dec->chunk_size : params.chunk_size;
      fresh.sync_size = params.image_size;
      h = fresh;
    }
  }
  if (why_untrusted) *why_untrusted = why;

  // The header records the config's values (clamped: a 0 ms sleep would make the next
  // open refuse the header as implausible).
  h.daemon_sleep_ms = std::clamp<std::uint32_t>(params.daemon_sleep_ms, 1, kMaxDaemonSleepMs);
  h.write_behind = std::min<std::uint32_t>(params.write_behind, kMaxWriteBehind);
  std::unique_lock lk(bm->mu_);
  bm->header_ = h;
  bm->total_chunks_ = h.bit_count();
  bm->commit_.set_file_size(file_size);
  // Bits past the primary's end describe data that no longer exists: never read them —
  // unless the image is degraded. Then they name what the absent secondary still holds
  // past the primary's end (a shrink marks them, and the cover never shrinks while
  // degraded): a later grow of the primary must find them set (docs/write-path.md §7).
  const std::uint64_t image_chunks = (params.image_size + h.chunk_size - 1) / h.chunk_size;
  const bool keep_past_end = load_bits && (h.state & kStateDegraded);
  if (load_bits) {
    const std::uint64_t n =
        keep_past_end ? bm->total_chunks_ : std::min(bm->total_chunks_, image_chunks);
    if (auto ec = bm->load_bits_locked(n)) return ec;
  }
  if (params.image_size > h.sync_size) {
    // The image grew while no fusemirror watched it (the cover follows every truncate and
    // write we serve): what lies past the old cover was never mirrored.
    const std::uint64_t old_size = h.sync_size;
    bm->grow_locked(params.image_size);
    if (!all_dirty && file_size != 0)
      bm->set_dirty_locked({old_size / h.chunk_size, bm->total_chunks_});
  }
  if (params.image_size < h.sync_size && !all_dirty && !keep_past_end) {
    bm->drop_past_locked(image_chunks);
    // The file's last page may hold old bits past the new end: it is rewritten.
    if (image_chunks % kBitsPerPage) bm->commit_.touch_page(image_chunks / kBitsPerPage);
    bm->total_chunks_ = image_chunks;
    bm->header_.sync_size = params.image_size;
  }
  if (all_dirty) {
    bm->set_dirty_locked({0, bm->total_chunks_});
    bm->header_.state |= kStateNeedsFullSync;
    // Rewrite every page: the file's bits are not to be trusted.
    for (std::uint64_t p = 0; p < pages_for(bm->total_chunks_); ++p) bm->commit_.touch_page(p);
  }
  // A file longer than the cover (an old daemon's, or a crafted one) is cut at the flush.
  bm->commit_.cut_file_to(kHeaderSize + (params.persist_bits ? bits_bytes(bm->total_chunks_) : 0));
  // Every dirty chunk found at open must be copied before it may be cleared.
  bm->pages_.copy(kDirty, kUnsynced);
  if (bm->pages_.count(kUnsynced) == 0) bm->header_.state &= ~kStateNeedsFullSync;
  // Active from here: the clean flag is cleared durably before any data write can be
  // issued, so a crash can never leave a header that claims a clean shutdown.
  // The degraded flag stays: a secondary that left stays out until an operator re-adds it
  // (md keeps a faulty member out across restarts); its bits have kept accumulating.
  bm->header_.state &= ~(kStateClean | kStateStale);
  bm->header_.events += 1;
  bm->commit_.touch_header();
  if (auto ec = bm->wait_durable_locked(lk, bm->commit_.requested_gen())) {
    // No space for the bitmap (typically an all-dirty rebuild of a sparse file): the image
    // is still served, read-only in effect (bitmap-failed, sticky), and recover() retries.
    // The header on disk is unchanged or active, never newly clean.
    if (ec != std::errc::no_space_on_device && ec.value() != EDQUOT) return ec;
  }
  return bm;
}

std::error_code Bitmap::load_bits_locked(std::uint64_t chunks) {
  // 256 pages per read; a page of zeros allocates nothing.
  std::vector<std::byte> buf(256 * 4096);
  const std::uint64_t bytes = (chunks + 7) / 8;
  for (std::uint64_t off = 0; off < bytes; off += buf.size()) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), bytes - off));
    auto got = utils::pread_all(commit_.fd(), std::span(buf.data(), want), kHeaderSize + off);
    if (!got) return got.error();
    if (*got < want) return utils::errno_code(EIO);  // checked against the size already
    for (std::size_t po = 0; po < want; po += 4096) {
      const std::uint64_t p = (off + po) / 4096;
      const std::size_t n = std::min<std::size_t>(4096, want - po);
      BitmapPages::Words w{};
      std::memcpy(w.data(), buf.data() + po, n);
      // Bits past the last chunk are padding: never let them count.
      const std::uint64_t first = p * kBitsPerPage;
      if (chunks < first + kBitsPerPage) {
        const std::uint64_t keep = chunks - first;
        if (keep % 64) w[keep / 64] &= (1ull << (keep % 64)) - 1;
        for (std::size_t i = (keep + 63) / 64; i < w.size(); ++i) w[i] = 0;
      }
      pages_.load(kDirty, p, w);
    }
  }
  return {};
}

std::error_code Bitmap::write_all_dirty(int fd, const BitmapOpenParams& params) {
  BitmapHeader h;
  h.set_uuid = params.set_uuid;
  h.image_uuid = utils::random_uuid();
  h.chunk_size = params.chunk_size;
  h.daemon_sleep_ms = std::clamp<std::uint32_t>(params.daemon_sleep_ms, 1, kMaxDaemonSleepMs);
  h.write_behind = std::min<std::uint32_t>(params.write_behind, kMaxWriteBehind);
  h.sync_size = params.image_size;
  h.state = kStateNeedsFullSync | kStateClean;
  const std::uint64_t n = h.bit_count();
  // A page at a time: the file is as big as the image needs, memory is not.
  std::vector<std::byte> page(4096, std::byte{0xFF});
  for (std::uint64_t p = 0; p * kBitsPerPage < n; ++p) {
    const std::uint64_t bits = std::min(kBitsPerPage, n - p * kBitsPerPage);
    if (bits < kBitsPerPage) {
      std::fill(page.begin(), page.end(), std::byte{0});
      for (std::uint64_t c = 0; c < bits; ++c) page[c / 8] |= std::byte(1u << (c % 8));
    }
    if (auto ec = utils::pwrite_all(fd, page, kHeaderSize + p * 4096)) return ec;
  }
  auto raw = encode_header(h);
  if (auto ec = utils::pwrite_all(fd, raw, 0)) return ec;
  if (::ftruncate(fd, static_cast<off_t>(kHeaderSize + bits_bytes(n))) != 0) return utils::last_errno();
  return utils::fdatasync_fd(fd);
}

// ---- bit bookkeeping (mu_ held) ----------------------------------------------------------

void Bitmap::grow_locked(std::uint64_t size) {
  // No allocation: the new pages are absent (zero) until a bit is set in them, and the
  // file's extension (ftruncate, sparse) holds them as zeros on disk.
  header_.sync_size = std::max(header_.sync_size, size);
  total_chunks_ = std::max(total_chunks_, header_.bit_count());
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
  // Queued: the page stays until that flush (the commit tidies it after).
  commit_.touch_page(c / kBitsPerPage);
}

void Bitmap::drop_past_locked(std::uint64_t chunks) {
  // The file is cut to the new cover at the next flush, so the old bits of freed pages
  // never reappear; a queued index of a freed page is skipped there.
  if (pages_.drop_past(chunks)) commit_.touch_page(chunks / kBitsPerPage);
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
      if (!pages_.test(kDirty, c) || inflight_locked(c)) continue;
      if (((minus & BitmapPages::vecs(kRecent)) && pages_.test(kRecent, c)) ||
          ((minus & BitmapPages::vecs(kUnsynced)) && pages_.test(kUnsynced, c)))
        continue;
      clear_bit_locked(c);
      ++cleared;
    }
  return cleared;
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
  const bool all_durable = pages_.all_set(kOndisk, r);
  FM_CRASH_POINT("bitmap.after_set");
  if (!persist_bits_) return {};
  if (all_durable) return {};  // hot path: the chunks were already dirty on disk
  if (ahead) {
    // Intent ahead of a sequential stream, in the flush this write needs anyway.
    const ChunkRange more{r.end, std::min(total_chunks_, chunks_for(off + len, ahead).end)};
    pages_.set_range(kRecent, more);
    const std::uint64_t fresh_ahead = set_dirty_locked(more);
    if (intent && !more.empty() && fresh_ahead == more.end - more.first) intent->ahead = more;
  }
  std::uint64_t gen = commit_.needed_gen(r);
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

void Bitmap::mark_all_dirty_unsynced() {
  std::lock_guard lk(mu_);
  pages_.copy(kDirty, kUnsynced);
}

// ---- lazy clearing -----------------------------------------------------------------------

utils::Result<std::uint64_t> Bitmap::sweep(const std::function<std::error_code()>& sync_legs,
                                           const RecordChecksums& record) {
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  if (header_.state & kStateDegraded) return std::uint64_t{0};
  // Candidates: dirty, synced, and not written during the period that just ended.
  constexpr unsigned kKeep = BitmapPages::vecs(kRecent) | BitmapPages::vecs(kUnsynced);
  const auto cand = pages_.less(kDirty, kKeep);
  // A new period: nothing is recent. Pages left with nothing are freed.
  pages_.reset(kRecent);
  if (cand.empty()) {
    if (commit_.header_dirty() && persist_bits_) {
      if (auto ec = wait_durable_locked(lk, commit_.requested_gen())) return ec;
    }
    return std::uint64_t{0};
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
  if (cleared && header_.events_cleared != header_.events) {
    header_.events_cleared = header_.events;
    commit_.touch_header();
  }
  if (persist_bits_)
    if (auto ec = wait_durable_locked(lk, commit_.requested_gen())) return ec;
  return cleared;
}

std::error_code Bitmap::set_degraded(bool degraded) {
  std::unique_lock lk(mu_);
  const bool now = header_.state & kStateDegraded;
  if (now == degraded) return {};
  if (degraded) header_.state |= kStateDegraded;
  else header_.state &= ~kStateDegraded;
  header_.events += 1;  // the moment the secondary left (or came back), durably
  commit_.touch_header();
  return wait_durable_locked(lk, commit_.requested_gen());
}

bool Bitmap::degraded() const {
  std::lock_guard lk(mu_);
  return header_.state & kStateDegraded;
}

std::error_code Bitmap::close_clean(const std::function<std::error_code()>& sync_legs,
                                    const RecordChecksums& record) {
  std::unique_lock lk(mu_);
  if (auto ec = commit_.error()) return ec;
  const bool degraded = header_.state & kStateDegraded;
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
  return pages_.memory_bytes() + commit_.memory_bytes() + inflight_.capacity() * sizeof(ChunkRange);
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
  s.events = header_.events;
  s.events_cleared = header_.events_cleared;
  s.state = header_.state;
  if (auto ec = commit_.error()) s.error = ec.message();
  s.memory_bytes = pages_.memory_bytes();
  return s;
}

}  // namespace fusemirror::core
