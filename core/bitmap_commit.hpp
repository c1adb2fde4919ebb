// core/bitmap_commit.hpp — the group commit of a write-intent bitmap: making bits durable.
//
// Owns: the bitmap file (its fd and the size it was last given), the generations, the
// queue of pages changed since the last flush, the flush leader, the sticky write error and
// the flush counters. It writes what the Bitmap it serves holds (the dirty vector of its
// BitmapPages, its header, its cover) and decides nothing about which bits are set: the
// md rules stay in Bitmap (core/bitmap.hpp). A unit of its own because this is the state
// the durability ordering is argued about (wait_durable, write_out), and because it is the
// only part that does file I/O after open.
//
// Group commit. A change to a page (or the header) takes generation ++requested_gen_;
// the page's gen remembers it. A flush leader snapshots every queued page, writes them and
// fdatasyncs, then publishes durable_gen_ = the requested_gen_ it snapshotted.
//
// The file is written O_DIRECT (whole 4 KiB pages from one aligned buffer, then fdatasync):
// the first flush, after the load's reads, sets O_DIRECT on fd_ (F_SETFL), so an image still
// holds one descriptor for its bitmap. When the bitmap directory's file system refuses
// O_DIRECT (EINVAL from F_SETFL or from the first write) the flag is taken off again and
// the flushes write buffered, as before. Readers (the checks, examine-bitmap) use their own
// buffered descriptors, which the kernel keeps coherent with direct writes
// (docs/write-path.md §3c). Nothing reads through fd_ after the first flush: a read there
// would need an aligned buffer.
//
// A failed write is sticky (md): from then on no data write gets a durable intent.
// ENOSPC/EDQUOT alone can pass: recover() rewrites every page held in memory and the
// header; once that is durable, the error is gone.
//
// Thread safety: no lock of its own. Every member REQUIRES the owning Bitmap's mu_ held
// (the same mutex guards the pages, the header and the cover it reads); wait_durable()
// releases it around the file I/O, and flushing_ makes the leader unique.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "core/bitmap_format.hpp"
#include "core/bitmap_pages.hpp"
#include "utils/fd.hpp"

namespace fusemirror::core {

class BitmapCommit {
 public:
  // `pages`, `header`, `total_chunks` and `persist_bits` are the owning Bitmap's members,
  // guarded by its mu_: a flush writes them as they are when it snapshots.
  BitmapCommit(utils::UniqueFd fd, BitmapPages& pages, const BitmapHeader& header,
               const std::uint64_t& total_chunks, const bool& persist_bits)
      : fd_(std::move(fd)),
        pages_(pages),
        header_(header),
        total_chunks_(total_chunks),
        persist_bits_(persist_bits) {}

  int fd() const { return fd_.get(); }
  // The file's size as found at open.
  void set_file_size(std::uint64_t size) { file_size_ = size; }
  // The next flush cuts the file to at most `bytes`: the smallest size the cover had since
  // the last flush, so that a shrink then a regrow still cuts the file and the regrown
  // range reads as zeros, not old bits.
  void cut_file_to(std::uint64_t bytes) { shrink_to_ = std::min(shrink_to_, bytes); }

  // Page p (or the header) changed: a new generation, queued for the next flush.
  void touch_page(std::uint64_t p);
  void touch_header();
  bool header_dirty() const { return header_dirty_; }
  std::uint64_t requested_gen() const { return requested_gen_; }
  std::uint64_t durable_gen() const { return durable_gen_; }
  std::uint64_t header_gen() const { return header_gen_; }
  // The generation that makes every page holding bits of r (non-empty) durable.
  std::uint64_t needed_gen(ChunkRange r) const { return pages_.max_gen(r); }

  // Waits until generation `gen` is durable, leading a flush if none runs. `lk` holds
  // the Bitmap's mu_; it is released during the I/O and held again on return.
  std::error_code wait_durable(std::unique_lock<std::mutex>& lk, std::uint64_t gen);
  // See Bitmap::recover().
  std::error_code recover(std::unique_lock<std::mutex>& lk);

  std::error_code error() const { return sticky_error_; }
  // A flush leader is writing now (its I/O runs with mu_ released): another writer needed a
  // durable bit a moment ago.
  bool flushing() const { return flushing_; }
  // True once the flushes write the file O_DIRECT; false before the first flush and after a
  // fallback to buffered writes (the file system refused O_DIRECT).
  bool direct_io() const { return mode_ == WriteMode::direct; }
  // Tests only: false makes every flush that opens its descriptor from now on use buffered
  // writes, as when the file system refuses O_DIRECT. Process-wide; default true.
  static void allow_direct_io(bool allow);
  // See Bitmap::bytes_short().
  std::uint64_t bytes_short() const;
  std::uint64_t flushes() const { return flushes_; }
  std::uint64_t flush_waiters() const { return flush_waiters_; }
  // Heap bytes of the queue.
  std::uint64_t memory_bytes() const { return dirty_pages_.capacity() * sizeof(std::uint64_t); }

 private:
  using PageImages = std::vector<std::pair<std::uint64_t, std::vector<std::byte>>>;
  std::error_code write_out(const PageImages& pages,
                            const std::array<std::byte, kHeaderSize>* header,
                            std::uint64_t file_size);
  std::uint64_t want_size() const;  // the file's size for the whole cover
  // The pages (ascending runs, each one pwrite) then the header, O_DIRECT or buffered;
  // falls back to buffered for good when a direct write is refused (EINVAL).
  std::error_code write_blocks(const PageImages& pages, const std::array<std::byte, kHeaderSize>* header);
  std::error_code write_direct(const PageImages& pages, const std::array<std::byte, kHeaderSize>* header);
  void start_direct();                      // chooses mode_ at the first flush
  void fall_back(const std::string& why);   // mode_ = buffered, said once per process

  enum class WriteMode : std::uint8_t { untried, direct, buffered };
  struct FreeDeleter {
    void operator()(std::byte* p) const;
  };

  utils::UniqueFd fd_;  // O_RDWR; O_DIRECT from the first flush on (mode_ direct)
  // Set by the flush leader without mu_ (start_direct, fall_back), read by stats() under it.
  std::atomic<WriteMode> mode_{WriteMode::untried};
  std::unique_ptr<std::byte[], FreeDeleter> buf_;  // 4096-aligned, buf_pages_ pages
  std::size_t buf_pages_ = 0;
  BitmapPages& pages_;
  const BitmapHeader& header_;
  const std::uint64_t& total_chunks_;
  const bool& persist_bits_;
  std::condition_variable cv_;
  std::vector<std::uint64_t> dirty_pages_;  // page indices, unique while queued
  bool header_dirty_ = false;
  std::uint64_t header_gen_ = 0;
  std::uint64_t requested_gen_ = 0;
  std::uint64_t durable_gen_ = 0;
  bool flushing_ = false;
  std::error_code sticky_error_;
  std::uint64_t file_size_ = 0;  // as last set by write_out
  std::uint64_t shrink_to_ = UINT64_MAX;
  std::uint64_t flushes_ = 0, flush_waiters_ = 0;
};

}  // namespace fusemirror::core
