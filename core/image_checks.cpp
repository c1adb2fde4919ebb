// core/image_checks.cpp — the parts of Image (core/image.hpp) that use its checksums: the
// sweep's hashing of chunks about to be cleared, check/repair/scrub steps that know which
// leg is wrong, verified reads, and the repair of the primary. The ordering arguments are
// in docs/write-path.md §9.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>

#include "core/chunk_check.hpp"
#include "core/image.hpp"
#include "utils/aligned_buffer.hpp"
#include "utils/crash_point.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

namespace {

// Bytes a sweep or a clean close hashes per image at most; past it the sweep leaves bits
// set for its next round, close_clean clears them with "no checksum" (write-path.md §9.2).
constexpr std::uint64_t kSweepHashBudget = 1ull << 30;

std::string range_text(std::uint64_t first, std::uint64_t last) {
  return std::to_string(first) + ".." + std::to_string(last);
}

}  // namespace

ScrubRecord Image::scrub_record() const {
  if (checksums_) return checksums_->scrub();
  std::lock_guard lk(scrub_mu_);
  return scrub_;
}

void Image::save_scrub(const ScrubRecord& r) {
  if (checksums_) {
    checksums_->save_scrub(r);
    return;
  }
  std::lock_guard lk(scrub_mu_);
  scrub_ = r;
}

void Image::note_bad_chunk(std::uint64_t c, const char* what, const std::string& detail) const {
  const std::uint64_t cs = bitmap_->chunk_size();
  // Issue 17 (events): a check-mismatch event belongs here — every chunk a check, repair,
  // scrub or verified read finds bad (or differing) passes here once.
  spdlog::error("{}: chunk {} (bytes {}): {}{}", name(), c, range_text(c * cs, (c + 1) * cs - 1), what,
                detail.empty() ? "" : "; " + detail);
}

std::error_code Image::record_checksums(std::vector<ChunkRange>& runs, bool forget_rest) {
  // Called by Bitmap::sweep / close_clean without the bitmap lock, after both legs were
  // fdatasync'ed; the chunks of `runs` stay idle until the bitmap clears them, or are not
  // cleared (Bitmap::record_then_clear_locked). A chunk is hashed from the primary: the
  // secondary holds the same data (write-path.md §9.2, "Primary only").
  //
  // Each batch (at most one entry page's chunks, at most kBatchBytes) is hashed and its
  // entries written under the batch's range lock: a truncate (whole-file lock) drops
  // entries either before the batch is hashed or after its entries were written, never in
  // between, so no entry for a chunk past a new end of file survives it.
  if (checksums_->disabled()) return {};  // an empty sidecar: nothing can go stale
  constexpr std::uint64_t kBatchBytes = 32ull << 20;
  const std::uint64_t cs = bitmap_->chunk_size();
  const std::uint64_t batch_chunks = std::max<std::uint64_t>(1, kBatchBytes / cs);
  // Aligned, so that the chunks not in the page cache are read O_DIRECT and do not fill it
  // (primary_hash_reader). No memory for it is std::bad_alloc, as the vector it replaced.
  const std::size_t buf_len = static_cast<std::size_t>(std::min<std::uint64_t>(cs, 1 << 20));
  utils::AlignedBuffer aligned;
  std::byte* bp = aligned.get(buf_len);
  if (bp == nullptr) throw std::bad_alloc();
  const std::span<std::byte> buf(bp, buf_len);
  const ReadAt read = primary_hash_reader();
  std::vector<ChunkRange> kept;
  auto keep = [&kept](ChunkRange r) {
    if (r.empty()) return;
    if (!kept.empty() && kept.back().end == r.first) kept.back().end = r.end;
    else kept.push_back(r);
  };
  std::uint64_t hashed = 0;
  bool stopped = false;
  for (const ChunkRange& run : runs) {
    for (std::uint64_t first = run.first; first < run.end;) {
      // A batch ends at the run's end, at an entry page's end, or after batch_chunks.
      const std::uint64_t page_end = (first / kEntriesPerPage + 1) * kEntriesPerPage;
      const std::uint64_t end = std::min({run.end, page_end, first + batch_chunks});
      auto guard = locks_.lock(lock_floor(first * cs), lock_ceil(end * cs));
      if (stopped) {
        if (!forget_rest) break;
        // close_clean: past the budget, the chunks are cleared with no checksum (unverified
        // until a scrub adopts them) rather than left dirty for a resync at the next mount.
        if (auto ec = checksums_->forget_range(first, end)) return ec;
        keep({first, end});
        first = end;
        continue;
      }
      std::vector<ChecksumEntry> entries;
      std::uint64_t c = first;
      for (; c < end; ++c) {
        // A direct write's own hash of the chunk, if it left one (nothing to read: it is
        // what the primary holds, core/fresh_hashes.hpp) and the budget does not count it.
        if (auto fresh = fresh_.take(c)) {
          entries.push_back({c, *fresh});
          continue;
        }
        if (hashed >= kSweepHashBudget) {
          stopped = true;
          break;
        }
        auto h = hash_chunk(read, c, cs, buf);
        if (!h) {
          // The primary cannot be read here: the chunk keeps its bit (no checksum is made of
          // data we could not read); what was hashed is still recorded.
          if (!hash_error_logged_.exchange(true))
            spdlog::warn("{}: chunk {} cannot be read for its checksum ({}); its bit stays set (logged once)",
                         name(), c, h.error().message());
          stopped = true;
          forget_rest = false;
          break;
        }
        entries.push_back({c, *h});
        hashed += cs;
      }
      if (auto ec = checksums_->write(std::move(entries))) return ec;
      keep({first, c});
      first = c;
      if (stopped && !forget_rest) break;
    }
    if (stopped && !forget_rest) break;
  }
  if (auto ec = checksums_->sync()) return ec;
  runs = std::move(kept);
  return {};
}

utils::Result<bool> Image::read_chunk_verified(const ReadAt& read, std::uint64_t c, std::uint64_t entry, std::span<std::byte> data,
                                               std::uint64_t off) {
  const std::uint64_t cs = bitmap_->chunk_size();
  const std::uint64_t start = c * cs, end = start + cs, data_end = off + data.size();
  std::vector<std::byte> scratch(static_cast<std::size_t>(std::min<std::uint64_t>(cs, 256 << 10)));
  ChunkHasher h;
  for (std::uint64_t pos = start; pos < end;) {
    // The caller's part is read straight into the caller's buffer: what is returned is
    // exactly what was hashed.
    std::span<std::byte> dest;
    if (pos >= off && pos < data_end) dest = data.subspan(pos - off, std::min(data_end, end) - pos);
    else dest = std::span(scratch).first(std::min<std::uint64_t>({scratch.size(), end - pos, pos < off ? off - pos : end - pos}));
    auto got = read(dest, pos);
    if (!got) return got.error();
    h.update(dest.first(*got));
    pos += *got;
    if (*got < dest.size()) {  // end of file: zeros from here (write-path.md §9.1)
      std::fill(dest.begin() + static_cast<std::ptrdiff_t>(*got), dest.end(), std::byte{0});
      h.zeros(end - pos);
      break;
    }
  }
  return h.entry() == entry;
}

std::error_code Image::verify_read(std::span<std::byte> data, std::uint64_t off) {
  const std::uint64_t cs = bitmap_->chunk_size();
  const ChunkRange r = bitmap_->chunks_for(off, data.size());
  for (std::uint64_t c = r.first; c < r.end; ++c) {
    const std::uint64_t lo = std::max(off, c * cs), hi = std::min(off + data.size(), (c + 1) * cs);
    const std::span<std::byte> part = data.subspan(lo - off, hi - lo);
    if (!bitmap_->chunk_clean(c)) continue;  // being written: its checksum is not trusted
    const auto l = checksums_->lookup(c);
    if (!l.entry) continue;
    auto ok = read_chunk_verified(fd_reader(primary_.get()), c, *l.entry, part, lo);
    if (!ok) return ok.error();
    if (*ok) {
      read_verified_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // A mismatch: look again under the chunk's range lock, where no write can be going on.
    auto guard = locks_.lock(lock_floor(c * cs), lock_ceil((c + 1) * cs));
    const auto l2 = checksums_->lookup(c);
    if (!bitmap_->chunk_clean(c) || !l2.entry) {
      // A write raced with the first look: what the primary holds now is the answer.
      auto got = utils::pread_all(primary_.get(), part, lo);
      if (!got) return got.error();
      continue;
    }
    ok = read_chunk_verified(fd_reader(primary_.get()), c, *l2.entry, part, lo);
    if (!ok) return ok.error();
    if (*ok) {
      read_verified_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    utils::Result<bool> sec = false;
    if (secondary_ok()) sec = read_chunk_verified(sec_reader(), c, *l2.entry, part, lo);
    if (!sec || !*sec) {
      read_failed_.fetch_add(1, std::memory_order_relaxed);
      note_bad_chunk(c, "unrecoverable on read",
                     secondary_ok() ? "neither leg matches its checksum; the read fails with EIO"
                                    : "the primary does not match its checksum and the secondary is out of service; "
                                      "the read fails with EIO");
      return utils::errno_code(EIO);
    }
    // `part` now holds the secondary's bytes, which match the checksum.
    read_repaired_.fetch_add(1, std::memory_order_relaxed);
    std::vector<std::byte> buf(static_cast<std::size_t>(std::min<std::uint64_t>(cs, 1 << 20)));
    auto fixed = repair_primary_locked(c, *l2.entry, buf);
    note_bad_chunk(c, "bad primary on read",
                   std::string("served from the secondary; primary ") +
                       (!fixed ? "repair failed: " + fixed.error().message()
                               : *fixed ? "repaired" : "rewritten but still does not match"));
  }
  return {};
}

utils::Result<bool> Image::repair_primary_locked(std::uint64_t c, std::uint64_t entry, std::span<std::byte> buf) {
  // The bit stays clear: a crash in the middle leaves the checksum accusing the primary
  // again, never a resync of the bad primary over the good secondary (write-path.md §9.3).
  const std::uint64_t cs = bitmap_->chunk_size();
  // A write next to it may have set its bit since it was judged (the activity log sets a
  // whole extent): its checksum is no longer trusted, the next pass looks again. Otherwise
  // the bit is pinned clear for the repair (Bitmap::pin_clean).
  if (!bitmap_->pin_clean(c)) return utils::errno_code(EAGAIN);
  struct Unpin {
    Bitmap& bm;
    std::uint64_t c;
    ~Unpin() { bm.unpin_clean(c); }
  } unpin{*bitmap_, c};
  auto ssize = secondary_->size();
  if (!ssize) return ssize.error();
  fresh_.forget(c * cs, cs);  // the primary's bytes change (core/fresh_hashes.hpp)
  const std::uint64_t start = c * cs;
  const std::uint64_t end = std::min(start + cs, *ssize);
  for (std::uint64_t pos = start; pos < end;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(end - pos, buf.size()));
    auto got = secondary_->pread(buf.first(n), pos);
    if (!got) return got.error();
    if (*got == 0) break;
    if (auto ec = utils::pwrite_all(primary_.get(), buf.first(*got), pos)) return ec;
    pos += *got;
    FM_CRASH_POINT("repair.mid_primary");
  }
  if (auto ec = utils::fdatasync_fd(primary_.get())) return ec;
  // Read back from the disk, not from the pages just written.
  ::posix_fadvise(primary_.get(), static_cast<off_t>(start), static_cast<off_t>(cs), POSIX_FADV_DONTNEED);
  auto h = hash_chunk(primary_.get(), c, cs, buf);
  if (!h) return h.error();
  return *h == entry;
}

utils::Result<std::uint64_t> Image::check_step(std::uint64_t from, std::uint64_t n, bool repair,
                                               std::vector<std::byte>& a, std::vector<std::byte>& b,
                                               ScrubCounts* counts) {
  const std::uint64_t cs = bitmap_->chunk_size();
  const std::uint64_t total = bitmap_->stats().total_chunks;
  if (from >= total) return total;
  if (!secondary_ok()) return utils::errno_code(EIO);
  const std::uint64_t end = std::min(total, from + std::max<std::uint64_t>(n, 1));
  auto guard = locks_.lock(lock_floor(from * cs), lock_ceil(end * cs));
  if (wb_) wb_->wait_range_idle(from * cs, end * cs);  // compare what the queue delivered
  // A check compares what the legs' disks hold, not clean pages left in the cache (a
  // medium that changed under them would go unseen), and leaves no pages behind: a pass
  // over a large image would otherwise evict the host's cache and leave both legs cached,
  // where every later O_DIRECT write into a cached page goes to a kernel worker. The
  // step's range leaves both legs' cache before it is read and after (write-path.md §2,
  // "Resync's drop-behind").
  drop_legs_cache(from * cs, (end - from) * cs);
  secondary_->read_ahead(from * cs, (end - from) * cs);  // a file leg has no read-ahead of its own
  std::vector<ChecksumEntry> adopt;
  for (std::uint64_t c = from; c < end; ++c) {
    // Under the range lock a clean chunk stays clean: every write sets its bit under it.
    const bool clean = bitmap_->chunk_clean(c);
    std::optional<std::uint64_t> entry;
    if (clean && has_checksums()) {
      const auto l = checksums_->lookup(c);
      entry = l.entry;
      if (l.bad_page && !bad_page_logged_.exchange(true))
        spdlog::warn("{}: a page of the checksum file fails its own checks (torn or corrupted); its chunks "
                     "count as unverified (logged once)", name());
    }
    auto rd = read_both(fd_reader(primary_.get()), sec_reader(), c, cs, a, b);
    if (!rd) {
      fail_secondary("check read", rd.error());
      return utils::errno_code(EIO);
    }
    // Without a checksum, a primary that cannot be read stops the pass, as it always did.
    if (rd->primary_error && !entry) return rd->primary_error;
    const Verdict v = judge(entry, *rd);
    ++counts->checked;
    if (!entry) ++counts->unverified;
    if (rd->differ) ++counts->mismatches;
    const std::string where =
        rd->primary_error ? "the primary cannot be read: " + rd->primary_error.message()
        : rd->differ      ? "the legs differ in bytes " + range_text(rd->first_diff, rd->last_diff)
                          : "the legs are equal";
    switch (v) {
      case Verdict::ok: break;
      case Verdict::unverified_same:
        // A clean chunk whose legs agree gets the checksum it lacked (write-path.md §9.1:
        // the range lock is held until it is durable, so no write can change it before).
        if (clean && has_checksums() && !bitmap_->failed()) adopt.push_back({c, rd->primary_entry});
        break;
      case Verdict::unverified_differ:
        note_bad_chunk(c, "differs between primary and secondary, with no checksum to tell which is right",
                       where + (repair ? "; repairing from the primary" : ""));
        break;
      case Verdict::bad_primary:
        ++counts->bad_primary;
        note_bad_chunk(c, "bad primary: it does not match its checksum, the secondary does",
                       where + (repair ? "; repairing the primary from the secondary" : ""));
        break;
      case Verdict::bad_secondary:
        ++counts->bad_secondary;
        note_bad_chunk(c, "bad secondary: it does not match its checksum, the primary does",
                       where + (repair ? "; repairing the secondary from the primary" : ""));
        break;
      case Verdict::unrecoverable:
        ++counts->unrecoverable;
        note_bad_chunk(c, "unrecoverable: neither leg matches its checksum; nothing is overwritten",
                       where + (rd->differ ? "" : " (the checksum itself may be wrong)"));
        break;
    }
    if (!repair) continue;
    if (v == Verdict::bad_primary) {
      auto fixed = repair_primary_locked(c, *entry, a);
      if (!fixed && fixed.error() == std::errc::resource_unavailable_try_again) {
        spdlog::info("{}: chunk {}: its bit was set meanwhile (a write next to it); the repair of the "
                     "primary waits for the next pass", name(), c);
        continue;
      }
      if (!fixed) {
        spdlog::error("{}: repair of chunk {} on the primary failed: {}", name(), c, fixed.error().message());
        return fixed.error();
      }
      if (*fixed) ++counts->repaired;
      else note_bad_chunk(c, "repair of the primary did not verify", "the primary still does not match its checksum");
    } else if (v == Verdict::bad_secondary || v == Verdict::unverified_differ) {
      // Intent first (the repair writes the secondary), then the copy, then "synced".
      if (auto ec = bitmap_->mark_unsynced(c * cs, cs)) return utils::errno_code(EIO);
      std::uint64_t copied = 0;
      if (auto ec = copy_range_locked(c * cs, (c + 1) * cs, a, &copied)) return ec;
      bitmap_->mark_synced(c);
      if (v == Verdict::unverified_differ) {
        ++counts->repaired;
        continue;
      }
      auto h = hash_chunk(sec_reader(), c, cs, b);
      if (!h) {
        fail_secondary("check read", h.error());
        return utils::errno_code(EIO);
      }
      if (*h == *entry) ++counts->repaired;
      else note_bad_chunk(c, "repair of the secondary did not verify", "the secondary still does not match");
    }
  }
  if (!adopt.empty())
    if (auto ec = checksums_->record(std::move(adopt)))
      spdlog::warn("{}: checksums of verified chunks not recorded: {}", name(), ec.message());
  drop_legs_cache(from * cs, (end - from) * cs);
  return end;
}

}  // namespace fusemirror::core
