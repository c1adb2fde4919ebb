// core/image_resync.cpp — the Image's side of resync and re-add (declared in image.hpp):
// the secondary's size, copying runs of unsynced chunks, putting a secondary leg back.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>

#include "core/image.hpp"
#include "core/leg_copy.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

std::error_code Image::set_secondary_size(std::uint64_t size) {
  // Durable before anything is served or resized: the secondary's old bytes past `size`
  // must not come back after a power cut under chunks the bitmap no longer covers (see
  // truncate()).
  if (auto ec = secondary_->set_size(size)) return ec;
  return secondary_->flush();
}

std::error_code Image::reconcile_size() {
  if (!secondary_ok()) return {};
  auto guard = locks_.lock(0, RangeLock::kEnd);
  struct stat p {};
  if (::fstat(primary_.get(), &p) != 0) return utils::last_errno();
  auto s = secondary_->size();
  if (!s) {
    fail_secondary("fstat", s.error());
    return {};
  }
  if (static_cast<std::uint64_t>(p.st_size) != *s) {
    spdlog::info("{}: secondary size {} differs from primary size {}; set to the primary's", name(),
                 *s, p.st_size);
    if (auto ec = set_secondary_size(static_cast<std::uint64_t>(p.st_size))) fail_secondary("truncate", ec);
  }
  return {};
}

utils::Result<std::uint64_t> Image::resync_step(std::uint64_t from, std::uint64_t max_bytes,
                                                std::vector<std::byte>& buf,
                                                std::uint64_t* copied) {
  *copied = 0;
  const std::uint64_t cs = bitmap_->chunk_size();
  const std::uint64_t total = bitmap_->stats().total_chunks;
  const std::uint64_t first = bitmap_->next_unsynced(from);
  if (first >= total) return total;
  if (!secondary_ok()) return utils::errno_code(EIO);
  // The chunks' bits may not be durable while the bitmap is failed: a copy torn by a crash
  // must find its bit set, so nothing is copied until recover() rewrote the bitmap.
  if (auto ec = bitmap_->error()) return ec;
  // A run of consecutive unsynced chunks, copied under one range lock: writes racing with
  // the copy wait for it (and then go to both legs), or went before it (and are copied).
  std::uint64_t end = first + 1;
  while (end < total && (end - first + 1) * cs <= std::max(max_bytes, cs) &&
         bitmap_->next_unsynced(end) == end)
    ++end;
  const std::uint64_t off = first * cs;
  const std::uint64_t stop = end * cs;
  auto guard = locks_.lock(lock_floor(off), lock_ceil(stop));
  if (auto ec = copy_range_locked(off, stop, buf, copied)) return ec;
  // Start the secondary's writeback of what was just copied (asynchronous): the disk
  // writes this run while the next one is read, instead of the page cache filling with
  // gigabytes of dirty resync data for the flusher and the final fsync. Not a durability
  // step: the chunks' bits are cleared only after both legs are fdatasync'ed (sweep).
  if (*copied) secondary_->start_writeback(off, stop - off);
  for (std::uint64_t c = first; c < end; ++c) bitmap_->mark_synced(c);
  resync_copied_.fetch_add(*copied, std::memory_order_relaxed);
  // Drop-behind: the pages of a copy that ended kDropBehind ago leave both legs' cache.
  // Otherwise a resync leaves the whole image cached twice — the primary read (read-ahead
  // and copy_file_range go through its cache), the secondary written — evicting the host's
  // working set, and every later O_DIRECT leg write into a cached page is handed to a
  // kernel worker (docs/performance.md, "the hashes that filled the cache"). That copy's
  // writeback, started a window ago, is done or nearly: the wait rarely blocks.
  constexpr std::uint64_t kDropBehind = 32 << 20;
  resync_behind_.emplace_back(off, stop - off);
  resync_behind_bytes_ += stop - off;
  while (resync_behind_bytes_ > kDropBehind) drop_oldest_resync_range();
  return end;
}

void Image::drop_oldest_resync_range() {
  const auto [off, len] = resync_behind_.front();
  resync_behind_.pop_front();
  resync_behind_bytes_ -= len;
  // Clean pages only: the copy wrote the primary's dirty pages back before it read them,
  // and a write since then keeps its dirty pages.
  drop_legs_cache(off, len);
}

void Image::drop_legs_cache(std::uint64_t off, std::uint64_t len) {
  // DONTNEED drops clean pages only (it starts the writeback of dirty ones and skips them).
  ::posix_fadvise(primary_.get(), static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
  if (secondary_ok()) secondary_->drop_cache(off, len);
}

void Image::drop_resync_cache() {
  while (!resync_behind_.empty()) {
    // Under the range's lock, as in a step: re-add swaps the secondary under the whole
    // file's lock only.
    const auto [off, len] = resync_behind_.front();
    auto guard = locks_.lock(lock_floor(off), lock_ceil(off + len));
    drop_oldest_resync_range();
  }
}

std::uint64_t Image::read_ahead_unsynced(std::uint64_t from, std::uint64_t max_bytes) const {
  const std::uint64_t cs = bitmap_->chunk_size();
  const std::uint64_t total = bitmap_->stats().total_chunks;
  std::uint64_t bytes = 0, c = bitmap_->next_unsynced(from);
  while (c < total && bytes < max_bytes) {
    std::uint64_t end = c + 1;
    while (end < total && (end - c) * cs < max_bytes - bytes && bitmap_->next_unsynced(end) == end) ++end;
    // Asynchronous: starts the reads and returns; the copy finds the pages in the cache.
    ::posix_fadvise(primary_.get(), static_cast<off_t>(c * cs), static_cast<off_t>((end - c) * cs),
                    POSIX_FADV_WILLNEED);
    bytes += (end - c) * cs;
    c = end >= total ? total : bitmap_->next_unsynced(end);
  }
  return c;
}

std::error_code Image::copy_range_locked(std::uint64_t off, std::uint64_t stop,
                                         std::vector<std::byte>& buf, std::uint64_t* copied) {
  const LegCopy r = copy_layout(primary_.get(), *secondary_, off, stop, buf, copied, copy_file_range_ok_);
  if (r.primary) return r.primary;
  if (r.secondary) {
    fail_secondary("resync write", r.secondary);
    return utils::errno_code(EIO);
  }
  return {};
}

std::error_code Image::hold_out() {
  held_out_.store(true, std::memory_order_release);
  return secondary_ok() ? std::error_code{} : bitmap_->set_degraded(true, true);
}

std::error_code Image::readd(std::unique_ptr<Leg> secondary, bool full, bool automatic) {
  if (!secondary) return utils::errno_code(EINVAL);
  auto guard = locks_.lock(0, RangeLock::kEnd);
  if (secondary_ok()) return utils::errno_code(EBUSY);
  if (wb_) {
    drain_write_behind();  // dropped writes finish at once
    wb_->resume();
  }
  secondary_ = std::move(secondary);
  secondary_piece_.store(secondary_->write_piece(), std::memory_order_relaxed);
  open_direct_writes();  // under the whole range lock: no write is choosing its path
  if (full) {
    struct stat st {};
    if (::fstat(primary_.get(), &st) != 0) return utils::last_errno();
    if (auto ec = bitmap_->mark_unsynced(0, static_cast<std::uint64_t>(st.st_size))) return ec;
  }
  if (auto ec = bitmap_->mark_all_dirty_unsynced()) return ec;
  // Back in service: the degraded flag goes (events + 1); clearing resumes only after
  // resync has copied every unsynced chunk.
  if (auto ec = bitmap_->set_degraded(false)) return ec;
  secondary_ok_.store(true, std::memory_order_release);
  held_out_.store(false, std::memory_order_release);
  struct stat p {};
  if (::fstat(primary_.get(), &p) == 0)
    if (auto ec = set_secondary_size(static_cast<std::uint64_t>(p.st_size))) {
      fail_secondary("truncate", ec);
      return utils::errno_code(EIO);
    }
  const char* by = automatic ? "reconnected by itself" : "re-added";
  spdlog::info("{}: secondary {}; {} resync of {} chunks", name(), by, full ? "full" : "bitmap-based",
               bitmap_->stats().unsynced_chunks);
  if (opts_.events)
    opts_.events->post(Event::secondary_reconnected, name(),
                       std::string(automatic ? "automatic: " : "") + (full ? "full" : "bitmap-based") +
                           " resync of " + std::to_string(bitmap_->stats().unsynced_chunks) + " chunks");
  return {};
}

}  // namespace fusemirror::core
