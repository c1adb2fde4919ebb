// core/bitmap_commit.cpp — the group commit of a bitmap's pages and header; see bitmap_commit.hpp.
#include "core/bitmap_commit.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include <spdlog/spdlog.h>

#include "utils/crash_point.hpp"
#include "utils/io.hpp"
#include "utils/proc_fd.hpp"

namespace fusemirror::core {

namespace {
std::atomic<bool> direct_allowed{true};  // allow_direct_io(): tests only
std::atomic<bool> fallback_said{false};  // the fallback is logged once per process
constexpr std::size_t kMaxRunPages = 256;  // at most 1 MiB per pwrite (and in buf_)
}  // namespace

void BitmapCommit::allow_direct_io(bool allow) { direct_allowed.store(allow); }

void BitmapCommit::FreeDeleter::operator()(std::byte* p) const { std::free(p); }

void BitmapCommit::touch_page(std::uint64_t page) {
  BitmapPages::Page& pg = pages_.page(page);
  pg.gen = ++requested_gen_;
  if (!pg.queued) {
    pg.queued = true;
    dirty_pages_.push_back(page);
  }
}

void BitmapCommit::touch_header() {
  header_gen_ = ++requested_gen_;
  header_dirty_ = true;
}

std::uint64_t BitmapCommit::want_size() const {
  return persist_bits_ ? kHeaderSize + bits_bytes(total_chunks_) : kHeaderSize;
}

// Ordering: every writer that changed a bit waits here before it issues data. The leader
// snapshots the pages as they are *now* (including bits set by writers still queueing) and
// writes them, then one fdatasync makes all of them durable; only then does it publish
// durable_gen_, which releases the writers whose generations it covered. Flushes never
// overlap (flushing_), so the last page image written is always the newest snapshot: a
// sweeper's clear and a writer's later set of the same bit reach the file in that order.
//
// A power cut before the fdatasync returned may leave any subset of this flush's pages
// (and header) on disk, each 4 KiB page old or new (a torn page: old or new per sector):
// no writer has been released, so no data write depends on them yet; a set bit that did
// land costs a copy, a clear that did land was allowed once its legs were durable
// (docs/write-path.md §2 E),
// and the header's CRC rejects a torn header (a full resync). This holds for both ways
// of writing (write_out): buffered pwrite + fdatasync, and O_DIRECT pwrite + fdatasync.
// O_DIRECT alone is NOT durable — a direct write completes once the device has it in its
// volatile write cache — so the fdatasync stays: it makes the block allocation of a hole
// page and a size change durable (journal commit) and always ends with a cache flush
// (REQ_PREFLUSH), so the bits are on stable media before durable_gen_ moves. O_DIRECT only
// removes the page cache from the path (no writeback to start and wait for inside the
// fdatasync): the same pages reach the same device before the same flush.
std::error_code BitmapCommit::wait_durable(std::unique_lock<std::mutex>& lk, std::uint64_t gen) {
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
    PageImages pages;
    pages.reserve(dirty_pages_.size());
    for (auto p : dirty_pages_) {
      BitmapPages::Page* pg = pages_.find(p);
      // Absent: freed by a shrink (past the cover, cut from the file). Not queued: a
      // second listing of a page already taken.
      if (!pg || !pg->queued) continue;
      pg->queued = false;
      if (p >= cover_pages) continue;
      pages.emplace_back(p, pages_.image(p));
    }
    dirty_pages_.clear();
    std::array<std::byte, kHeaderSize> header_bytes{};
    const bool with_header = header_dirty_;
    if (with_header) header_bytes = encode_header(header_);
    header_dirty_ = false;
    const std::uint64_t want = want_size();
    const std::uint64_t cut_to = std::min(shrink_to_, want);
    shrink_to_ = UINT64_MAX;
    if (!persist_bits_) pages.clear();  // bitmap "none": only the header is kept
    lk.unlock();
    FM_CRASH_POINT("bitmap.before_flush");
    // A cut below the cover (shrink, then regrow before this flush) zeroes the regrown
    // range; the header is written before the cut so a crash between them leaves extra
    // bits past the cover, never a cover whose bits are missing.
    std::error_code ec;
    if (cut_to < want && cut_to < file_size_) {
      ec = write_out({}, with_header ? &header_bytes : nullptr, cut_to);
      if (!ec) ec = write_out(pages, with_header ? &header_bytes : nullptr, want);
    } else {
      ec = write_out(pages, with_header ? &header_bytes : nullptr, want);
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
        if (p < pages_for(total_chunks_)) touch_page(p);
      }
      if (with_header) touch_header();
      cv_.notify_all();
      return ec;
    }
    durable_gen_ = std::max(durable_gen_, target);
    // What this flush made durable, less anything cleared in memory meanwhile (a clear
    // zeroes ondisk and queues its own write of the page).
    for (const auto& [p, bytes] : pages) {
      pages_.set_durable(p, bytes);
      pages_.tidy(p);  // a page cleared to zero and written is freed now
    }
    cv_.notify_all();
  }
  return sticky_error_;
}

std::error_code BitmapCommit::write_out(const PageImages& pages,
                                        const std::array<std::byte, kHeaderSize>* header,
                                        std::uint64_t file_size) {
  if (mode_ == WriteMode::untried) start_direct();
  // Extend first: the zero bits of a grown cover are then part of the file that fdatasync
  // makes durable (an extension's size change is data-integrity metadata for fdatasync).
  // The extension is sparse: an empty cover of any size costs no disk blocks.
  if (file_size > file_size_) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_size)) != 0) return utils::last_errno();
    file_size_ = file_size;
  }
  if (auto ec = write_blocks(pages, header)) return ec;
  // A shrunk cover: the file is cut after the header that no longer covers the bits.
  if (file_size < file_size_) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_size)) != 0) return utils::last_errno();
    file_size_ = file_size;
  }
  return utils::fdatasync_fd(fd_.get());
}

void BitmapCommit::start_direct() {
  if (!direct_allowed.load()) {
    fall_back("direct I/O disabled for this process (test hook)");
    return;
  }
  // O_DIRECT is a flag of the open file description, settable on Linux: the load read the
  // file through fd_ with ordinary buffers before this first flush, and nothing reads
  // through it after. The kernel refuses the flag (EINVAL) where the file system has no
  // direct I/O.
  const int fl = ::fcntl(fd_.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd_.get(), F_SETFL, fl | O_DIRECT) != 0) {
    const int e = errno;
    fall_back(std::string("O_DIRECT refused: ") + std::strerror(e));
    return;
  }
  mode_ = WriteMode::direct;
}

void BitmapCommit::fall_back(const std::string& why) {
  mode_ = WriteMode::buffered;
  const int fl = ::fcntl(fd_.get(), F_GETFL);
  if (fl >= 0 && (fl & O_DIRECT)) (void)::fcntl(fd_.get(), F_SETFL, fl & ~O_DIRECT);
  buf_.reset();
  buf_pages_ = 0;
  if (fallback_said.exchange(true)) return;
  char link[4096];
  const ssize_t n = ::readlink(utils::proc_fd_path(fd_.get()).c_str(), link, sizeof link - 1);
  const std::string path = n > 0 ? std::string(link, static_cast<std::size_t>(n)) : "a bitmap file";
  spdlog::warn("{}: bitmap flushes use buffered writes + fdatasync instead of O_DIRECT ({}); "
               "as durable. Said once for every bitmap of this process",
               path, why);
}

std::error_code BitmapCommit::write_blocks(const PageImages& pages,
                                           const std::array<std::byte, kHeaderSize>* header) {
  if (mode_ == WriteMode::direct) {
    std::error_code ec = write_direct(pages, header);
    // EINVAL from a direct write: the file system (or its device's alignment) refuses
    // O_DIRECT after all (some FUSE file systems). Everything is written again buffered:
    // a page written directly before the refusal is written again with the same bytes,
    // and nothing is durable before the fdatasync anyway.
    if (ec.value() != EINVAL) return ec;
    fall_back("a direct write was refused: " + ec.message());
  }
  for (const auto& [p, bytes] : pages)
    if (auto ec = utils::pwrite_all(fd_.get(), bytes, kHeaderSize + p * 4096)) return ec;
  if (header)
    if (auto ec = utils::pwrite_all(fd_.get(), *header, 0)) return ec;
  return {};
}

std::error_code BitmapCommit::write_direct(const PageImages& pages,
                                           const std::array<std::byte, kHeaderSize>* header) {
  // Test builds: FM_FAULT=bitmap.direct_einval stands for a file system that accepts an
  // O_DIRECT open and refuses the write.
  if (FM_FAULT_POINT("bitmap.direct_einval")) return utils::errno_code(EINVAL);
  const std::size_t want = std::min<std::size_t>(std::max<std::size_t>(pages.size(), 1), kMaxRunPages);
  if (buf_pages_ < want) {
    auto* raw = static_cast<std::byte*>(std::aligned_alloc(4096, want * 4096));
    if (!raw) return utils::errno_code(ENOMEM);
    buf_.reset(raw);
    buf_pages_ = want;
  }
  // Pages in ascending order, each run of consecutive pages in one write (a dense flush:
  // a sweep, an all-dirty rebuild); the order of writes within a flush is not an ordering
  // on disk (only the fdatasync is), it just saves system calls.
  std::vector<std::size_t> order(pages.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return pages[a].first < pages[b].first; });
  for (std::size_t i = 0; i < order.size();) {
    const std::uint64_t first = pages[order[i]].first;
    std::size_t n = 0;  // at least 1: the run's first page matches itself
    while (i + n < order.size() && n < buf_pages_ && pages[order[i + n]].first == first + n) {
      std::memcpy(buf_.get() + n * 4096, pages[order[i + n]].second.data(), 4096);
      ++n;
    }
    if (auto ec = utils::pwrite_all(fd_.get(), std::span(buf_.get(), n * 4096), kHeaderSize + first * 4096))
      return ec;
    i += n;
  }
  if (header) {
    std::memcpy(buf_.get(), header->data(), kHeaderSize);
    if (auto ec = utils::pwrite_all(fd_.get(), std::span(buf_.get(), kHeaderSize), 0)) return ec;
  }
  return {};
}

std::error_code BitmapCommit::recover(std::unique_lock<std::mutex>& lk) {
  if (!sticky_error_) return {};
  // Only a lack of space can pass by itself; EIO and the like wait for an operator (md).
  if (sticky_error_ != std::errc::no_space_on_device && sticky_error_.value() != EDQUOT)
    return sticky_error_;
  if (flushing_) return sticky_error_;  // a leader is still failing; try at the next call
  // A full rewrite: every page held in memory (a page absent from memory is zero in the
  // file: it was never set, or its zeros were written before it was freed) and the header.
  sticky_error_.clear();
  pages_.for_each_index([&](std::uint64_t p) {
    if (p < pages_for(total_chunks_)) touch_page(p);
  });
  touch_header();
  return wait_durable(lk, requested_gen_);
}

std::uint64_t BitmapCommit::bytes_short() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return 0;
  const auto have = static_cast<std::uint64_t>(st.st_blocks) * 512;
  // At most every page we hold (plus the header) must be allocated; absent pages stay holes.
  const std::uint64_t need = std::min(want_size(), kHeaderSize + pages_.pages() * 4096);
  return need > have ? need - have : 0;
}

}  // namespace fusemirror::core
