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
    auto file = read_bitmap_file(bm->fd_.get(), /*with_bits=*/false);
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
  bm->file_size_ = file_size;
  // Bits past the primary's end describe data that no longer exists: never read them.
  const std::uint64_t image_chunks = (params.image_size + h.chunk_size - 1) / h.chunk_size;
  if (load_bits)
    if (auto ec = bm->load_bits_locked(std::min(bm->total_chunks_, image_chunks))) return ec;
  if (params.image_size > h.sync_size) {
    // The image grew while no fusemirror watched it (the cover follows every truncate and
    // write we serve): what lies past the old cover was never mirrored.
    const std::uint64_t old_size = h.sync_size;
    bm->grow_locked(params.image_size);
    if (!all_dirty && file_size != 0)
      bm->set_range_locked(kDirty, {old_size / h.chunk_size, bm->total_chunks_});
  }
  if (params.image_size < h.sync_size && !all_dirty) {
    bm->drop_past_locked(image_chunks);
    // The file's last page may hold old bits past the new end: it is rewritten.
    if (image_chunks % kBitsPerPage) bm->touch_page_locked(image_chunks / kBitsPerPage);
    bm->total_chunks_ = image_chunks;
    bm->header_.sync_size = params.image_size;
  }
  if (all_dirty) {
    bm->set_range_locked(kDirty, {0, bm->total_chunks_});
    bm->header_.state |= kStateNeedsFullSync;
    // Rewrite every page: the file's bits are not to be trusted.
    for (std::uint64_t p = 0; p < pages_for(bm->total_chunks_); ++p) bm->touch_page_locked(p);
  }
  // A file longer than the cover (an old daemon's, or a crafted one) is cut at the flush.
  bm->shrink_to_ = kHeaderSize + (params.persist_bits ? bits_bytes(bm->total_chunks_) : 0);
  // Every dirty chunk found at open must be copied before it may be cleared.
  bm->unsynced_count_ = 0;
  for (auto& [p, pg] : bm->pages_) {
    if (!pg.v[kDirty]) continue;
    pg.v[kUnsynced] = std::make_unique<Words>(*pg.v[kDirty]);
    ++bm->vectors_;
  }
  bm->unsynced_count_ = bm->dirty_count_;
  if (bm->unsynced_count_ == 0) bm->header_.state &= ~kStateNeedsFullSync;
  // Active from here: the clean flag is cleared durably before any data write can be
  // issued, so a crash can never leave a header that claims a clean shutdown.
  // The degraded flag stays: a secondary that left stays out until an operator re-adds it
  // (md keeps a faulty member out across restarts); its bits have kept accumulating.
  bm->header_.state &= ~(kStateClean | kStateStale);
  bm->header_.events += 1;
  bm->touch_header_locked();
  if (auto ec = bm->wait_durable_locked(lk, bm->requested_gen_)) {
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
    auto got = utils::pread_all(fd_.get(), std::span(buf.data(), want), kHeaderSize + off);
    if (!got) return got.error();
    if (*got < want) return utils::errno_code(EIO);  // checked against the size already
    for (std::size_t po = 0; po < want; po += 4096) {
      const std::uint64_t p = (off + po) / 4096;
      const std::size_t n = std::min<std::size_t>(4096, want - po);
      Words w{};
      std::memcpy(w.data(), buf.data() + po, n);
      // Bits past the last chunk are padding: never let them count.
      const std::uint64_t first = p * kBitsPerPage;
      if (chunks < first + kBitsPerPage) {
        const std::uint64_t keep = chunks - first;
        if (keep % 64) w[keep / 64] &= (1ull << (keep % 64)) - 1;
        for (std::size_t i = (keep + 63) / 64; i < kWords; ++i) w[i] = 0;
      }
      std::uint64_t n_set = 0;
      for (auto x : w) n_set += static_cast<std::uint64_t>(std::popcount(x));
      if (!n_set) continue;
      Page& pg = pages_[p];
      pg.v[kDirty] = std::make_unique<Words>(w);
      ++vectors_;
      dirty_count_ += n_set;
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
  // sync_size (start_write waits for header_gen_ when it grew the cover).
  touch_header_locked();
}

bool Bitmap::test(Vec k, std::uint64_t c) const {
  const Page* pg = find_page(c / kBitsPerPage);
  if (!pg || !pg->v[k]) return false;
  const std::uint64_t i = c % kBitsPerPage;
  return ((*pg->v[k])[i / 64] >> (i % 64)) & 1;
}

namespace {
// Calls f(page, first word, last word + 1, mask of the first word, mask of the last word)
// for every page touched by the chunk range r (non-empty).
template <typename F>
void for_pages(ChunkRange r, F&& f) {
  for (std::uint64_t p = r.first / kBitsPerPage; p * kBitsPerPage < r.end; ++p) {
    const std::uint64_t lo = std::max(r.first, p * kBitsPerPage) - p * kBitsPerPage;
    const std::uint64_t hi = std::min(r.end, (p + 1) * kBitsPerPage) - p * kBitsPerPage;  // > lo
    const std::size_t w0 = lo / 64, w1 = (hi - 1) / 64 + 1;
    const std::uint64_t m0 = ~0ull << (lo % 64);
    const std::uint64_t m1 = (hi % 64) ? ((1ull << (hi % 64)) - 1) : ~0ull;
    f(p, w0, w1, m0, m1);
  }
}
inline std::uint64_t mask_of(std::size_t i, std::size_t w0, std::size_t w1, std::uint64_t m0,
                             std::uint64_t m1) {
  std::uint64_t m = ~0ull;
  if (i == w0) m &= m0;
  if (i + 1 == w1) m &= m1;
  return m;
}
}  // namespace

std::uint64_t Bitmap::set_range_locked(Vec k, ChunkRange r) {
  if (r.empty()) return 0;
  std::uint64_t added = 0;
  for_pages(r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
    Page& pg = pages_[p];
    if (!pg.v[k]) {
      pg.v[k] = std::make_unique<Words>(Words{});
      ++vectors_;
    }
    Words& w = *pg.v[k];
    std::uint64_t page_added = 0;
    for (std::size_t i = w0; i < w1; ++i) {
      const std::uint64_t m = mask_of(i, w0, w1, m0, m1);
      page_added += static_cast<std::uint64_t>(std::popcount(m & ~w[i]));
      w[i] |= m;
    }
    added += page_added;
    if (k == kDirty && page_added) touch_page_locked(p);
  });
  if (k == kDirty) dirty_count_ += added;
  return added;
}

bool Bitmap::all_set_locked(Vec k, ChunkRange r) const {
  if (r.empty()) return true;
  bool all = true;
  for_pages(r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
    if (!all) return;
    const Page* pg = find_page(p);
    if (!pg || !pg->v[k]) {
      all = false;
      return;
    }
    for (std::size_t i = w0; i < w1 && all; ++i) {
      const std::uint64_t m = mask_of(i, w0, w1, m0, m1);
      all = ((*pg->v[k])[i] & m) == m;
    }
  });
  return all;
}

bool Bitmap::any_set_locked(Vec k, ChunkRange r) const {
  if (r.empty()) return false;
  bool any = false;
  for_pages(r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
    if (any) return;
    const Page* pg = find_page(p);
    if (!pg || !pg->v[k]) return;
    for (std::size_t i = w0; i < w1 && !any; ++i) any = ((*pg->v[k])[i] & mask_of(i, w0, w1, m0, m1)) != 0;
  });
  return any;
}

void Bitmap::clear_bit_locked(std::uint64_t c) {
  const std::uint64_t p = c / kBitsPerPage, i = c % kBitsPerPage;
  Page* pg = find_page(p);
  if (!pg || !pg->v[kDirty]) return;
  const std::uint64_t m = 1ull << (i % 64);
  std::uint64_t& w = (*pg->v[kDirty])[i / 64];
  if (!(w & m)) return;
  w &= ~m;
  if (pg->v[kOndisk]) (*pg->v[kOndisk])[i / 64] &= ~m;  // a flush will write this 0
  --dirty_count_;
  touch_page_locked(p);  // queued: the page stays until that flush (tidy_locked after it)
}

void Bitmap::drop_past_locked(std::uint64_t chunks) {
  for (auto it = pages_.lower_bound(chunks / kBitsPerPage); it != pages_.end();) {
    const std::uint64_t p = it->first;
    Page& pg = it->second;
    const std::uint64_t keep = chunks > p * kBitsPerPage ? chunks - p * kBitsPerPage : 0;
    std::uint64_t gone[kVecs] = {};
    for (unsigned k = 0; k < kVecs; ++k) {
      if (!pg.v[k]) continue;
      Words& w = *pg.v[k];
      for (std::size_t i = keep / 64; i < kWords; ++i) {
        const std::uint64_t m = (i == keep / 64) ? (~0ull << (keep % 64)) : ~0ull;
        gone[k] += static_cast<std::uint64_t>(std::popcount(w[i] & m));
        w[i] &= ~m;
      }
    }
    dirty_count_ -= gone[kDirty];
    unsynced_count_ -= gone[kUnsynced];
    if (keep == 0) {
      // Wholly past the end: freed. The file is cut to the new cover at the next flush
      // (shrink_to_), so its old bits never reappear; a queued index is skipped there.
      for (auto& v : pg.v) vectors_ -= v ? 1 : 0;
      it = pages_.erase(it);
      continue;
    }
    if (gone[kDirty]) touch_page_locked(p);  // the kept part of the page is rewritten
    tidy_locked(p);
    it = pages_.upper_bound(p);
  }
  shrink_to_ = std::min(shrink_to_, kHeaderSize + bits_bytes(chunks));
}

void Bitmap::tidy_locked(std::uint64_t p) {
  auto it = pages_.find(p);
  if (it == pages_.end()) return;
  Page& pg = it->second;
  bool empty = true;
  for (auto& v : pg.v) {
    if (!v) continue;
    if (std::all_of(v->begin(), v->end(), [](std::uint64_t x) { return x == 0; })) {
      v.reset();
      --vectors_;
    } else {
      empty = false;
    }
  }
  if (empty && !pg.queued) pages_.erase(it);
}

void Bitmap::touch_page_locked(std::uint64_t page) {
  Page& pg = pages_[page];
  pg.gen = ++requested_gen_;
  if (!pg.queued) {
    pg.queued = true;
    dirty_pages_.push_back(page);
  }
}

void Bitmap::touch_header_locked() {
  header_gen_ = ++requested_gen_;
  header_dirty_ = true;
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
  for (auto it = pages_.lower_bound(r.first / kBitsPerPage);
       it != pages_.end() && it->first <= (r.end - 1) / kBitsPerPage; ++it)
    gen = std::max(gen, it->second.gen);
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
    const std::uint64_t cover_pages = pages_for(total_chunks_);
    std::vector<std::pair<std::uint64_t, std::vector<std::byte>>> pages;
    pages.reserve(dirty_pages_.size());
    for (auto p : dirty_pages_) {
      Page* pg = find_page(p);
      // Absent: freed by a shrink (past the cover, cut from the file). Not queued: a
      // second listing of a page already taken.
      if (!pg || !pg->queued) continue;
      pg->queued = false;
      if (p >= cover_pages) continue;
      std::vector<std::byte> bytes(4096);
      if (pg->v[kDirty]) std::memcpy(bytes.data(), pg->v[kDirty]->data(), 4096);
      pages.emplace_back(p, std::move(bytes));
    }
    dirty_pages_.clear();
    std::array<std::byte, kHeaderSize> header_bytes{};
    const bool with_header = header_dirty_;
    if (with_header) header_bytes = encode_header(header_);
    header_dirty_ = false;
    const std::uint64_t want_size = persist_bits_ ? kHeaderSize + bits_bytes(total_chunks_) : kHeaderSize;
    const std::uint64_t cut_to = std::min(shrink_to_, want_size);
    shrink_to_ = UINT64_MAX;
    if (!persist_bits_) pages.clear();  // bitmap "none": only the header is kept
    lk.unlock();
    FM_CRASH_POINT("bitmap.before_flush");
    // A cut below the cover (shrink, then regrow before this flush) zeroes the regrown
    // range; the header is written before the cut so a crash between them leaves extra
    // bits past the cover, never a cover whose bits are missing.
    std::error_code ec;
    if (cut_to < want_size && cut_to < file_size_) {
      ec = write_out({}, with_header ? &header_bytes : nullptr, cut_to);
      if (!ec) ec = write_out(pages, with_header ? &header_bytes : nullptr, want_size);
    } else {
      ec = write_out(pages, with_header ? &header_bytes : nullptr, want_size);
    }
    FM_CRASH_POINT("bitmap.after_flush");
    lk.lock();
    flushing_ = false;
    ++flushes_;
    if (ec) {
      // Sticky (docs/reliability.md invariant 5): from now on no data write gets a durable intent.
      // What this flush did not make durable is queued again, so recover() rewrites it.
      sticky_error_ = ec;
      for (const auto& [p, bytes] : pages) {
        (void)bytes;
        if (p < pages_for(total_chunks_)) touch_page_locked(p);
      }
      if (with_header) touch_header_locked();
      cv_.notify_all();
      return ec;
    }
    durable_gen_ = std::max(durable_gen_, target);
    // What this flush made durable, less anything cleared in memory meanwhile (a clear
    // zeroes ondisk and queues its own write of the page).
    for (const auto& [p, bytes] : pages) {
      Page* pg = find_page(p);
      if (!pg) continue;
      if (pg->v[kDirty]) {
        const auto* words = reinterpret_cast<const std::uint64_t*>(bytes.data());
        const Words& d = *pg->v[kDirty];
        bool any = false;
        for (std::size_t i = 0; i < kWords && !any; ++i) any = (words[i] & d[i]) != 0;
        if (any && !pg->v[kOndisk]) {
          pg->v[kOndisk] = std::make_unique<Words>(Words{});
          ++vectors_;
        }
        if (any) {
          Words& o = *pg->v[kOndisk];
          for (std::size_t i = 0; i < kWords; ++i) o[i] |= words[i] & d[i];
        }
      }
      tidy_locked(p);  // a page cleared to zero and written is freed now
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
  // The extension is sparse: an empty cover of any size costs no disk blocks.
  if (file_size > file_size_) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_size)) != 0) return utils::last_errno();
    file_size_ = file_size;
  }
  for (const auto& [p, bytes] : pages)
    if (auto ec = utils::pwrite_all(fd_.get(), bytes, kHeaderSize + p * 4096)) return ec;
  if (header)
    if (auto ec = utils::pwrite_all(fd_.get(), *header, 0)) return ec;
  // A shrunk cover: the file is cut after the header that no longer covers the bits.
  if (file_size < file_size_) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_size)) != 0) return utils::last_errno();
    file_size_ = file_size;
  }
  return utils::fdatasync_fd(fd_.get());
}

// ---- the write path ----------------------------------------------------------------------

std::error_code Bitmap::start_write(std::uint64_t off, std::uint64_t len, std::uint64_t ahead) {
  if (len == 0) return {};
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  const ChunkRange r = chunks_for(off, len);
  const bool grew = r.end > total_chunks_ || off + len > header_.sync_size;
  if (grew) grow_locked(off + len);
  inflight_.push_back(r);
  set_range_locked(kRecent, r);
  set_range_locked(kDirty, r);
  const bool all_durable = all_set_locked(kOndisk, r);
  FM_CRASH_POINT("bitmap.after_set");
  if (!persist_bits_) return {};
  if (all_durable) return {};  // hot path: the chunks were already dirty on disk
  if (ahead) {
    // Intent ahead of a sequential stream, in the flush this write needs anyway.
    const ChunkRange more{r.end, std::min(total_chunks_, chunks_for(off + len, ahead).end)};
    set_range_locked(kRecent, more);
    set_range_locked(kDirty, more);
  }
  std::uint64_t gen = needed_gen_locked(r);
  if (grew) gen = std::max(gen, header_gen_);  // the new sync_size, with the bits
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
  const ChunkRange in{r.first, std::min(r.end, total_chunks_)};
  set_range_locked(kRecent, in);
  if (!legs_ok) unsynced_count_ += set_range_locked(kUnsynced, in);
}

bool Bitmap::range_clean(std::uint64_t off, std::uint64_t len) const {
  std::lock_guard lk(mu_);
  const ChunkRange r = chunks_for(off, len);
  const ChunkRange in{r.first, std::min(r.end, total_chunks_)};
  if (any_set_locked(kDirty, in) || any_set_locked(kUnsynced, in)) return false;
  return !(header_.state & kStateDegraded);
}

std::error_code Bitmap::resize(std::uint64_t size) {
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  const std::uint64_t chunks = (size + header_.chunk_size - 1) / header_.chunk_size;
  if (chunks > total_chunks_) {
    grow_locked(size);
  } else {
    // Every bit past the new end is dropped and its page freed: memory returns on shrink.
    drop_past_locked(chunks);
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
  set_range_locked(kDirty, r);
  unsynced_count_ += set_range_locked(kUnsynced, r);
  if (!persist_bits_) return {};
  return wait_durable_locked(lk, requested_gen_);
}

std::uint64_t Bitmap::next_unsynced(std::uint64_t from) const {
  std::lock_guard lk(mu_);
  if (from >= total_chunks_ || unsynced_count_ == 0) return total_chunks_;
  // In page order, absent pages skipped: O(pages holding bits), not O(image size).
  for (auto it = pages_.lower_bound(from / kBitsPerPage); it != pages_.end(); ++it) {
    const std::uint64_t base = it->first * kBitsPerPage;
    if (base >= total_chunks_) break;
    if (!it->second.v[kUnsynced]) continue;
    const Words& w = *it->second.v[kUnsynced];
    const std::size_t start = from > base ? (from - base) / 64 : 0;
    for (std::size_t i = start; i < kWords; ++i) {
      std::uint64_t bits = w[i];
      if (from > base && i == start) bits &= ~0ull << ((from - base) % 64);
      if (bits)
        return std::min(total_chunks_, base + i * 64 + static_cast<std::uint64_t>(std::countr_zero(bits)));
    }
  }
  return total_chunks_;
}

void Bitmap::mark_synced(std::uint64_t c) {
  std::lock_guard lk(mu_);
  if (c >= total_chunks_) return;
  set_range_locked(kRecent, {c, c + 1});
  Page* pg = find_page(c / kBitsPerPage);
  if (!pg || !pg->v[kUnsynced]) return;
  const std::uint64_t i = c % kBitsPerPage, m = 1ull << (i % 64);
  std::uint64_t& w = (*pg->v[kUnsynced])[i / 64];
  if (!(w & m)) return;
  w &= ~m;
  if (--unsynced_count_ == 0 && (header_.state & kStateNeedsFullSync)) {
    header_.state &= ~kStateNeedsFullSync;
    touch_header_locked();  // flushed by the next flush; harmless if lost (bits rule)
  }
}

void Bitmap::mark_all_dirty_unsynced() {
  std::lock_guard lk(mu_);
  for (auto& [p, pg] : pages_) {
    if (pg.v[kUnsynced]) --vectors_;
    pg.v[kUnsynced].reset();
    if (pg.v[kDirty]) {
      pg.v[kUnsynced] = std::make_unique<Words>(*pg.v[kDirty]);
      ++vectors_;
    }
  }
  unsynced_count_ = dirty_count_;
}

// ---- lazy clearing -----------------------------------------------------------------------

utils::Result<std::uint64_t> Bitmap::sweep(const std::function<std::error_code()>& sync_legs) {
  std::unique_lock lk(mu_);
  if (sticky_error_) return sticky_error_;
  if (header_.state & kStateDegraded) return std::uint64_t{0};
  // Candidates: dirty, synced, and not written during the period that just ended. Kept
  // only for pages that have some (memory stays proportional to the set bits).
  std::vector<std::pair<std::uint64_t, Words>> cand;
  for (auto& [p, pg] : pages_) {
    if (!pg.v[kDirty]) continue;
    Words c{};
    bool any = false;
    const Words& d = *pg.v[kDirty];
    for (std::size_t i = 0; i < kWords; ++i) {
      std::uint64_t x = d[i];
      if (pg.v[kRecent]) x &= ~(*pg.v[kRecent])[i];
      if (pg.v[kUnsynced]) x &= ~(*pg.v[kUnsynced])[i];
      c[i] = x;
      any |= x != 0;
    }
    if (any) cand.emplace_back(p, c);
  }
  // A new period: nothing is recent. Pages left with nothing are freed.
  std::vector<std::uint64_t> idle;
  for (auto& [p, pg] : pages_) {
    if (pg.v[kRecent]) {
      pg.v[kRecent].reset();
      --vectors_;
    }
    if (!pg.v[kDirty] && !pg.v[kUnsynced] && !pg.queued) idle.push_back(p);
  }
  for (auto p : idle) tidy_locked(p);
  if (cand.empty()) {
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
  for (const auto& [p, c] : cand) {
    const Page* pg = find_page(p);
    if (!pg || !pg->v[kDirty]) continue;
    for (std::size_t i = 0; i < kWords; ++i) {
      // Written (or started) since the fdatasync began, or waiting for resync: keep.
      std::uint64_t bits = c[i] & (*pg->v[kDirty])[i];
      if (pg->v[kRecent]) bits &= ~(*pg->v[kRecent])[i];
      if (pg->v[kUnsynced]) bits &= ~(*pg->v[kUnsynced])[i];
      while (bits) {
        const std::uint64_t chunk = p * kBitsPerPage + i * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
        bits &= bits - 1;
        if (inflight_locked(chunk)) continue;
        clear_bit_locked(chunk);
        ++cleared;
      }
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
  std::vector<std::pair<std::uint64_t, Words>> cand;
  if (!degraded) {
    for (auto& [p, pg] : pages_) {
      if (!pg.v[kDirty]) continue;
      Words c = *pg.v[kDirty];
      if (pg.v[kUnsynced])
        for (std::size_t i = 0; i < kWords; ++i) c[i] &= ~(*pg.v[kUnsynced])[i];
      if (std::any_of(c.begin(), c.end(), [](std::uint64_t x) { return x != 0; })) cand.emplace_back(p, c);
    }
  }
  const bool any = !cand.empty();
  lk.unlock();
  // Even with nothing to clear, the legs are made durable: "clean" promises it.
  if (auto ec = sync_legs()) return ec;
  lk.lock();
  if (any) {
    for (const auto& [p, c] : cand) {
      const Page* pg = find_page(p);
      if (!pg || !pg->v[kDirty]) continue;
      for (std::size_t i = 0; i < kWords; ++i) {
        std::uint64_t bits = c[i] & (*pg->v[kDirty])[i];
        if (pg->v[kUnsynced]) bits &= ~(*pg->v[kUnsynced])[i];
        while (bits) {
          const std::uint64_t chunk = p * kBitsPerPage + i * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
          bits &= bits - 1;
          if (!inflight_locked(chunk)) clear_bit_locked(chunk);
        }
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

std::error_code Bitmap::recover() {
  std::unique_lock lk(mu_);
  if (!sticky_error_) return {};
  // Only a lack of space can pass by itself; EIO and the like wait for an operator (md).
  if (sticky_error_ != std::errc::no_space_on_device && sticky_error_.value() != EDQUOT)
    return sticky_error_;
  if (flushing_) return sticky_error_;  // a leader is still failing; try at the next call
  // A full rewrite: every page held in memory (a page absent from memory is zero in the
  // file: it was never set, or its zeros were written before it was freed) and the header.
  sticky_error_.clear();
  for (auto& [p, pg] : pages_)
    if (p < pages_for(total_chunks_)) touch_page_locked(p);
  touch_header_locked();
  return wait_durable_locked(lk, requested_gen_);
}

std::uint64_t Bitmap::bytes_short() const {
  std::lock_guard lk(mu_);
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return 0;
  const std::uint64_t want = persist_bits_ ? kHeaderSize + bits_bytes(total_chunks_) : kHeaderSize;
  const auto have = static_cast<std::uint64_t>(st.st_blocks) * 512;
  // At most every page we hold (plus the header) must be allocated; absent pages stay holes.
  const std::uint64_t need = std::min(want, kHeaderSize + pages_.size() * 4096);
  return need > have ? need - have : 0;
}

std::uint64_t Bitmap::memory_bytes() const {
  std::lock_guard lk(mu_);
  // A std::map node: the value plus three pointers and a colour, rounded.
  constexpr std::uint64_t kNode = sizeof(std::pair<const std::uint64_t, Page>) + 32;
  return pages_.size() * kNode + vectors_ * sizeof(Words) +
         dirty_pages_.capacity() * sizeof(std::uint64_t) + inflight_.capacity() * sizeof(ChunkRange);
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
  if (sticky_error_) s.error = sticky_error_.message();
  constexpr std::uint64_t kNode = sizeof(std::pair<const std::uint64_t, Page>) + 32;
  s.memory_bytes = pages_.size() * kNode + vectors_ * sizeof(Words);
  return s;
}

}  // namespace fusemirror::core
