// core/image_direct.cpp — direct I/O: direct writes (config direct_write_max;
// docs/write-path.md §1b) and direct reads (config direct_reads; §8a).
//
// A write whose offset and length are multiples of 4 KiB and whose length is at most
// direct_write_max goes to both legs through second descriptors opened with O_DIRECT, the
// two writes submitted together from the request thread (utils::pwrite_pair): no copy
// into either leg's page cache, no dirty pages left for writeback and fsync, and no
// small write into a large page-cache folio (docs/performance.md "Direct writes").
#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "core/image.hpp"
#include "utils/aligned_buffer.hpp"
#include "utils/crash_point.hpp"
#include "utils/io.hpp"
#include "utils/page_cache.hpp"
#include "utils/proc_fd.hpp"
#include "utils/uring.hpp"

namespace fusemirror::core {
namespace {

constexpr std::uint64_t kDirectAlign = 4096;  // every device's logical block divides it

// The request thread's 4 KiB-aligned copy of a write whose buffer is not aligned (libfuse
// places a write's data 80 bytes into its receive buffer). Grown to the largest direct
// write seen, kept for the thread's life.
thread_local utils::AlignedBuffer t_buffer;

}  // namespace

void Image::open_direct_writes() {
  // The primary's descriptor only at construction (before the image is shared): from then
  // on whether it exists never changes, so lock_floor/lock_ceil never change their answer
  // while a write holds a lock. The secondary's at construction and at re-add (under the
  // whole range lock: no write is choosing its path meanwhile).
  if (opts_.direct_write_max == 0 || wb_ || !primary_.valid()) return;
  if (!dw_tried_) {
    dw_tried_ = true;
    // The same open file, reached again through /proc: no path, so no rename or symlink
    // can put another file here.
    primary_dw_ = utils::reopen(primary_.get(), O_RDWR | O_DIRECT);
    if (!primary_dw_.valid()) {
      spdlog::info("{}: direct writes off: cannot open the primary with O_DIRECT: {}", name(),
                   utils::last_errno().message());
      return;
    }
    dw_ok_.store(true, std::memory_order_relaxed);
  }
  if (primary_dw_.valid() && secondary_ && !secondary_->open_direct() && secondary_->fd() >= 0)
    spdlog::info("{}: direct writes off while the secondary {} refuses O_DIRECT", name(), secondary_->describe());
}

bool Image::direct_write_fits(std::uint64_t off, std::uint64_t len, std::uint32_t in_flight, std::int64_t now_ns) {
  // Called before the range lock is taken: touches no leg (re-add may be replacing the
  // secondary meanwhile), only this write's shape and the image's own flags.
  if (len == 0 || len > opts_.direct_write_max || ((off | len) & (kDirectAlign - 1)) != 0) return false;
  if (!dw_ok_.load(std::memory_order_relaxed) || wb_) return false;
  // Concurrent: this write finds enough others in flight, or one did within the last
  // opts_.direct_concurrent_window_ns (5 ms). Under a deep queue the count seen at each
  // arrival dips to 1 now and then (the others just completed); without the window those
  // writes went buffered, and a buffered write among direct ones costs more than either
  // (docs/performance.md "Direct writes": +25 % at qd32 with every write direct). A writer
  // alone never finds company, so it stays buffered.
  return write_company_.at(in_flight >= opts_.direct_write_inflight, now_ns, opts_.direct_concurrent_window_ns);
}

bool Image::direct_legs_ready() const {
  // REQUIRES: a range lock (re-add, which replaces the secondary, takes the whole range).
  // Both legs direct, or the primary alone while degraded: never one leg direct and the
  // other buffered (an NBD secondary has no page cache; its writes stay on run_both).
  if (!dw_ok_.load(std::memory_order_relaxed)) return false;
  return !secondary_ok() || secondary_->direct_fd() >= 0;
}

std::uint64_t Image::lock_floor(std::uint64_t off) const {
  return primary_dw_.valid() ? off & ~(kDirectFolio - 1) : off;
}

std::uint64_t Image::lock_ceil(std::uint64_t end) const {
  if (!primary_dw_.valid() || end > RangeLock::kEnd - kDirectFolio) return end;
  return (end + kDirectFolio - 1) & ~(kDirectFolio - 1);
}

std::optional<utils::Result<std::size_t>> Image::write_direct(std::span<const std::byte> data, std::uint64_t off,
                                                              const Bitmap::Intent& intent) {
  // REQUIRES: the range lock of exactly [off, off + len) and a started bitmap write: the
  // intent is durable before either leg sees the data, as for a buffered write
  // (write-path.md §1). Both legs are written at once; end_write only after both finished.
  const bool with_sec = secondary_ok();
  const int sec_fd = with_sec ? secondary_->direct_fd() : -1;
  if (with_sec && sec_fd < 0) return std::nullopt;  // not after direct_legs_ready; never one leg alone
  const std::size_t len = data.size();
  const std::byte* src = data.data();
  if ((reinterpret_cast<std::uintptr_t>(src) & (kDirectAlign - 1)) != 0) {
    std::byte* copy = t_buffer.get(len);
    if (copy == nullptr) return std::nullopt;  // no memory for the copy: buffered, this once
    std::memcpy(copy, src, len);
    src = copy;
  }
  utils::PairWrite r;
  // With checksums, the chunks this write covers whole are hashed from its buffer while
  // both legs write it, for the sweep (core/fresh_hashes.hpp): else the sweep would read
  // them back from the disk, since a direct write leaves nothing in the page cache.
  // (Only a write that covers a chunk whole has a task; one pointer is captured, so that
  // the std::function holds it without an allocation.)
  thread_local std::vector<std::uint64_t> t_hashes;
  t_hashes.clear();
  struct HashTask {
    FreshHashes& fresh;
    std::span<const std::byte> data;
    std::uint64_t off, first = 0;
    void operator()() { first = fresh.hash_whole(data, off, t_hashes); }
  } task{fresh_, {src, len}, off};
  std::function<void()> hash;
  if (fresh_.covers_whole(off, len) && has_checksums()) hash = [t = &task] { (*t)(); };
  // Test builds: FM_FAULT=image.direct_einval stands for a file system that refuses an
  // O_DIRECT write with EINVAL (tmpfs before Linux 6.6, some FUSE file systems).
  if (FM_FAULT_POINT("image.direct_einval")) r.ec[0] = r.ec[1] = utils::errno_code(EINVAL);
  else r = utils::pwrite_pair(primary_dw_.get(), sec_fd, {src, len}, off, hash);
  FM_CRASH_POINT("image.after_legs");
  const auto einval = [](const std::error_code& ec, std::size_t done) {
    return ec == std::errc::invalid_argument && done == 0;
  };
  if (einval(r.ec[0], r.done[0]) || (with_sec && einval(r.ec[1], r.done[1]))) {
    // Refused before a byte moved on the refusing leg (O_DIRECT's alignment or support
    // check); the other leg may hold the bytes already. The caller takes the widened
    // buffered lock (the exact one is let go first) and writes the same bytes buffered to
    // both, with this write's intent still held: the legs end identical.
    if (dw_ok_.exchange(false))
      spdlog::warn("{}: a leg's file system refused an O_DIRECT write at {} (+{}): writes are buffered from now on",
                   name(), off, len);
    return std::nullopt;
  }
  direct_writes_.fetch_add(1, std::memory_order_relaxed);
  const std::error_code p = r.ec[0], s = with_sec ? r.ec[1] : std::error_code{};
  // The primary holds exactly these bytes now, and this write still holds its range lock.
  if (!p && !t_hashes.empty()) fresh_.put(off, len, task.first, t_hashes);
  return finish_write(off, len, with_sec, p, s, r.done[0] + (with_sec ? r.done[1] : 0) > 0, intent);
}

void Image::open_direct_reads() {
  if (!opts_.direct_reads || !primary_.valid()) return;
  // The same open file, reached again through /proc: no path, so no rename or symlink can
  // put another file here. Read-only: writes stay on the buffered descriptor.
  primary_direct_ = utils::reopen(primary_.get(), O_RDONLY | O_DIRECT);
  if (primary_direct_.valid())
    direct_ok_ = true;
  else
    spdlog::info("{}: direct reads off: cannot open the primary with O_DIRECT: {}", name_,
                 utils::last_errno().message());
}

ReadAt Image::primary_hash_reader() {
  // The sweep hashes the chunks that writes dirtied. Direct writes leave nothing in the
  // primary's page cache; a buffered read to hash them would fill it, and a direct write
  // into a range with cached pages cannot be issued without blocking: io_uring hands it to
  // a kernel worker, two more context switches and about twice the CPU per write until
  // the pages are gone (docs/performance.md, "the hashes that filled the cache"). So a chunk
  // the cache does not hold whole is read O_DIRECT (aligned requests only: the caller's
  // buffer must be aligned, chunk sizes are multiples of 4 KiB); one it holds is read from
  // it, as read_primary does. Coherent either way: a direct read first writes back the
  // dirty pages of its range.
  return [this](std::span<std::byte> data, std::uint64_t off) -> utils::Result<std::size_t> {
    const auto addr = reinterpret_cast<std::uintptr_t>(data.data());
    if (direct_ok_.load(std::memory_order_relaxed) && ((off | data.size() | addr) & (kDirectAlign - 1)) == 0 &&
        !cached_whole(off, data.size()))
      if (auto r = pread_direct(data, off)) return *r;
    return utils::pread_all(primary_.get(), data, off);
  };
}

std::optional<utils::Result<std::size_t>> Image::pread_direct(std::span<std::byte> buf, std::uint64_t off) {
  auto r = utils::pread_all(primary_direct_.get(), buf, off);
  if (r || r.error() != std::errc::invalid_argument) return r;
  if (direct_ok_.exchange(false))
    spdlog::warn("{}: the primary's file system refused an O_DIRECT read at {}: reads are buffered from now on",
                 name(), off);
  return std::nullopt;
}

bool Image::cached_whole(std::uint64_t off, std::size_t len) {
  if (!cache_probe_ok_.load(std::memory_order_relaxed)) return false;
  auto cached = utils::range_cached(primary_.get(), off, len);
  if (cached) return *cached;
  if (cache_probe_ok_.exchange(false))
    spdlog::info("{}: cannot ask the page cache what it holds ({}): reads that queue up go direct even "
                 "where it holds them", name(), cached.error().message());
  return false;
}

bool Image::read_buffered(std::uint64_t off, std::size_t len, std::uint32_t in_flight) {
  // A reader alone that reads on from where the last read ended (cp, cat, a guest's
  // single sequential stream at queue depth 1) is served faster by the cache's read-ahead
  // than by one direct read at a time: measured 40 % faster at 128 KiB (performance.md
  // "Direct reads"). Its pages then stay, as a buffered read's do. Reads that queue up —
  // this one finds another in flight, or one did within the window (the count dips at
  // some arrivals under a deep queue, as for direct writes) — go direct: the disk serves
  // them in parallel, and the cache's per-page work costs more than it saves.
  const std::int64_t now_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  const bool sequential = next_read_off_.exchange(off + len, std::memory_order_relaxed) == off;
  const bool company = read_company_.at(in_flight > 1, now_ns, opts_.direct_concurrent_window_ns);
  return (sequential && !company) || cached_whole(off, len);
}

utils::Result<std::size_t> Image::read_primary(std::span<std::byte> buf, std::uint64_t off) {
  // O_DIRECT needs the offset, the length and the buffer aligned to the device's logical
  // block; 4 KiB covers every device. Coherent with the buffered writes: a direct read
  // first writes back the dirty page-cache pages of its range (the kernel's rule), so it
  // returns what the last acknowledged write left. Only the read side bypasses the cache.
  // A range already wholly in the cache (a recent write's pages, a re-read) is copied from
  // there: a direct read of it would go to the disk for what memory holds; so is a lone
  // sequential reader's (read_buffered). Either choice is safe, as both descriptors read
  // the same file coherently; a page evicted between the probe and the read is simply
  // read back into the cache.
  const auto addr = reinterpret_cast<std::uintptr_t>(buf.data());
  if (direct_ok_.load(std::memory_order_relaxed) && ((off | buf.size() | addr) & (kDirectAlign - 1)) == 0) {
    const InFlight in_flight{reads_in_flight_};
    if (read_buffered(off, buf.size(), in_flight.now)) {
      auto r = utils::pread_all(primary_.get(), buf, off);
      if (r) cached_reads_.fetch_add(1, std::memory_order_relaxed);
      return r;
    }
    if (auto r = pread_direct(buf, off)) {
      if (*r) direct_reads_.fetch_add(1, std::memory_order_relaxed);
      return *r;
    }
  }
  return utils::pread_all(primary_.get(), buf, off);
}

}  // namespace fusemirror::core
