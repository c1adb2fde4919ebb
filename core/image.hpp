// core/image.hpp — one mirrored image: its two legs, its bitmap, and the write path.
//
// Write path ordering (argued in docs/write-path.md):
//   range lock -> bitmap start_write (bits durable, group commit) -> pwrite both legs
//   concurrently -> bitmap end_write -> acknowledge.
// One leg policy, written once in settle(): the secondary fails -> the write succeeds,
// the image is degraded (durably, in the bitmap header) and its chunks stay dirty; the
// primary fails -> the user gets the primary's error (reads come from the primary, so
// acknowledging a write it does not hold would serve stale data). The bitmap cannot be
// written -> the data write is refused with EIO: never data without a durable intent.
//
// Thread safety: all public members may be called concurrently.
#pragma once

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>

#include "core/bitmap.hpp"
#include "core/events.hpp"
#include "core/leg.hpp"
#include "core/checksums.hpp"
#include "core/fresh_hashes.hpp"
#include "core/chunk_check.hpp"
#include "core/status.hpp"
#include "core/range_lock.hpp"
#include "core/write_behind.hpp"
#include "utils/fd.hpp"
#include "utils/result.hpp"
#include "utils/thread_pool.hpp"

namespace fusemirror::core {

struct ImageOptions {
  std::uint32_t write_behind = 0;          // 0: synchronous
  bool fsync_waits_for_secondary = false;  // write-behind only
  bool secondary_serves_reads = true;      // role mirror; false for backup (write-mostly)
  double drain_timeout = 60.0;
  // Write-behind's lag bound (config max_lag_bytes, max_lag_seconds; 0 = none):
  // core/write_behind.hpp.
  std::uint64_t max_lag_bytes = 0;
  double max_lag_seconds = 0;
  // Bytes marked dirty ahead of a sequential stream, at most: a stream that has written
  // L >= 1 MiB in order gets min(L, intent_ahead) ahead (ramping up like read-ahead), so
  // short runs of small writes (a file system's metadata) mark nothing extra.
  std::uint64_t intent_ahead = 16 << 20;
  // Config leg_write_piece: the largest pwrite a write issues to the primary, aligned to it
  // in the file (a file secondary takes it at its opening, core/file_leg.hpp); 0: each
  // write whole. Keeps the legs' page-cache folios small (docs/performance.md "Large folios").
  // Only a leg on a local disk file system is written in pieces (utils::local_disk_fs):
  // on FUSE, NFS or SMB each piece would be a request that pays the latency.
  std::uint64_t leg_write_piece = 64 << 10;
  // Config max_image_size: a write, truncate or size-changing fallocate that would make the
  // image larger is refused with EFBIG before either leg or the bitmap changes.
  std::uint64_t max_image_size = kDefaultMaxImageSize;
  // Config verify_reads: a read of a clean chunk with a checksum checks the primary's data
  // (docs/write-path.md §9.5). Needs checksums (attach_checksums).
  bool verify_reads = false;
  // Config direct_reads: reads aligned to 4 KiB (offset, length and buffer) go to a second
  // descriptor of the primary opened with O_DIRECT — no page-cache pages allocated, filled
  // and evicted per read — unless the cache already holds their whole range, or a reader
  // alone reads on from where the last read ended (the cache's read-ahead serves it
  // better): docs/write-path.md §8a. Unaligned reads, and every read after the primary's
  // file system refused O_DIRECT once, use the buffered descriptor. Writes are never
  // direct. direct_concurrent_window_ns below also applies: a read that finds another in
  // flight marks the image's reads as concurrent for that long.
  bool direct_reads = false;
  // Config direct_write_max (docs/write-path.md §1b): a write whose offset and length are
  // multiples of 4 KiB and whose length is at most this goes to both legs through O_DIRECT
  // descriptors, the two submitted together (utils/uring.hpp); 0: every write buffered.
  // Synchronous mode with a file secondary (or degraded) only; a file system that refuses
  // O_DIRECT turns it off for the image.
  std::uint64_t direct_write_max = 1 << 20;
  // Config direct_write_inflight: such a write goes direct only when at least this many
  // writes of the image are in flight, itself included (1: always). A write alone — a
  // writer at queue depth 1 — is cheaper buffered (a copy, where O_DIRECT waits for the
  // disk); writes that queue up are cheaper direct (no page-cache work, no writeback).
  std::uint32_t direct_write_inflight = 2;
  // ... or when one of the image's writes found that many within this window before it:
  // a deep queue whose count dips at some arrivals stays direct. Not a config key (tests
  // widen or close it).
  std::int64_t direct_concurrent_window_ns = 5'000'000;
  // The set-wide write-behind workers (MirrorSet owns them; must outlive the image). Null:
  // the image makes its own, of min(write_behind, 32) threads (standalone use, tests).
  WriteBehindExecutor* wb_executor = nullptr;
  // Where Fail, SecondaryReconnected and LagExceeded go (core/events.hpp); null: nowhere.
  EventLog* events = nullptr;
};

class Image {
 public:
  // `secondary` may be null: the image starts degraded.
  Image(std::string name, utils::UniqueFd primary, std::unique_ptr<Leg> secondary,
        std::unique_ptr<Bitmap> bitmap, utils::ThreadPool* pool, ImageOptions options = {});
  // A file secondary (core/file_leg.hpp); `secondary` may be invalid.
  Image(std::string name, utils::UniqueFd primary, utils::UniqueFd secondary,
        std::unique_ptr<Bitmap> bitmap, utils::ThreadPool* pool, ImageOptions options = {});
  ~Image();

  // Gives the image its checksum sidecar (core/checksums.hpp). REQUIRES: called once, before
  // the image is shared with any other thread.
  void attach_checksums(std::unique_ptr<Checksums> checksums) { checksums_ = std::move(checksums); }
  bool has_checksums() const { return checksums_ && !checksums_->disabled(); }

  // By value: a rename may change it concurrently (name_mu_ guards it).
  std::string name() const;
  void rename(std::string name);

  utils::Result<std::size_t> read(std::span<std::byte> buf, std::uint64_t off);
  utils::Result<std::size_t> write(std::span<const std::byte> data, std::uint64_t off);
  std::error_code truncate(std::uint64_t size);
  std::error_code fallocate(int mode, std::uint64_t off, std::uint64_t len);
  std::error_code fsync(bool datasync);
  utils::Result<struct stat> stat() const;
  int primary_fd() const { return primary_.get(); }
  // Reads served by the primary's O_DIRECT descriptor so far (ImageOptions::direct_reads).
  std::uint64_t direct_reads() const { return direct_reads_.load(std::memory_order_relaxed); }
  // Aligned reads direct_reads left to the page cache: their range was all there, or a
  // reader alone read on sequentially.
  std::uint64_t cached_reads() const { return cached_reads_.load(std::memory_order_relaxed); }
  // Writes issued through the legs' O_DIRECT descriptors so far (direct_write_max).
  std::uint64_t direct_writes() const { return direct_writes_.load(std::memory_order_relaxed); }
  // Chunks the sweep hashed from a direct write's buffer instead of reading the primary.
  std::uint64_t hashes_from_writes() const { return fresh_.used(); }
  // The secondary file's descriptor; -1 when degraded or when the leg is not a file.
  int secondary_fd() const { return secondary_ ? secondary_->fd() : -1; }
  // The secondary leg (null when the image never had one); REQUIRES the namespace's
  // exclusive lock or the image not shared yet (re-add replaces it under that lock).
  Leg* secondary_leg() const { return secondary_.get(); }
  // What the secondary is, for messages ("" when there is none).
  std::string secondary_describe() const { return secondary_ ? secondary_->describe() : std::string(); }
  bool secondary_ok() const { return secondary_ok_.load(std::memory_order_acquire); }

  // Degrades the image: logs once, records it durably in the bitmap.
  void fail_secondary(const char* op, std::error_code ec);
  // Why a degraded image has no secondary, for status (the loader's reason at load).
  void set_degraded_reason(std::string why);
  // The secondary stays out until the operator's re-add (`fail` by the operator, now or
  // before this mount: the bitmap header's held flag): no automatic reconnect
  // (core/link.hpp). readd() lifts it. An image already degraded records it in its bitmap
  // now (a failure after this records it with the degraded flag).
  std::error_code hold_out();
  bool held_out() const { return held_out_.load(std::memory_order_acquire); }

  // --- resync (called by the resync worker only) ---
  // Copies the next run of unsynced chunks at or after `from` (up to `max_bytes`),
  // primary -> secondary, sparse-aware. Returns the chunk after the run, or
  // total_chunks when nothing is left. `copied` gets the data bytes written.
  utils::Result<std::uint64_t> resync_step(std::uint64_t from, std::uint64_t max_bytes,
                                           std::vector<std::byte>& buf, std::uint64_t* copied);
  // Starts reading the primary's ranges of the unsynced chunks at or after `from`, up to
  // `max_bytes` of them, without waiting (the disk gets many requests at once instead of
  // one per step). Returns the chunk after the last one requested.
  std::uint64_t read_ahead_unsynced(std::uint64_t from, std::uint64_t max_bytes) const;
  // Drops from both legs' page cache what resync steps copied and have not dropped yet
  // (the end of a resync, whichever way it ends; resync_step drops as it goes).
  void drop_resync_cache();
  // Makes the secondary's size the primary's (under the whole-file lock).
  std::error_code reconcile_size();
  void set_sync_progress(SyncAction a, std::uint64_t done, std::uint64_t total);

  // --- check / repair / scrub (md's sync_action; docs/write-path.md §9.3) ---
  // Compares chunks [from, from + n) of both legs under the range lock, with their checksums
  // where they have trusted ones (core/chunk_check.hpp judges), and counts into *counts.
  // With `repair`: a bad secondary (or, without a checksum, a differing chunk) is rewritten
  // from the primary, its bit set durably first; a bad primary is rewritten from the
  // secondary with its bit left clear; an unrecoverable chunk is left alone. A clean chunk
  // without a checksum whose legs are equal gets one. Every bad chunk is logged with its
  // byte offsets. Returns the next chunk. (Implemented in image_checks.cpp.)
  utils::Result<std::uint64_t> check_step(std::uint64_t from, std::uint64_t n, bool repair,
                                          std::vector<std::byte>& a, std::vector<std::byte>& b,
                                          ScrubCounts* counts);
  // The scrub's record (cursor, counters, last run): in the sidecar when there is one.
  ScrubRecord scrub_record() const;
  void save_scrub(const ScrubRecord& r);
  void set_mismatch_cnt(std::uint64_t n) { mismatch_cnt_.store(n, std::memory_order_relaxed); }
  std::uint64_t total_chunks() const { return bitmap_->stats().total_chunks; }

  // --- re-add ---
  // Puts `secondary` back as the image's secondary. With `full`, every chunk is marked for
  // resync; otherwise only the bitmap's dirty chunks (the caller proved it covers all the
  // secondary missed). REQUIRES: the image is degraded.
  // `automatic`: by the link's reconnect (core/link.hpp), not the operator (the log and
  // the SecondaryReconnected event say which).
  std::error_code readd(std::unique_ptr<Leg> secondary, bool full, bool automatic = false);
  std::error_code readd(utils::UniqueFd secondary, bool full);

  // The sweeper's clock (every 500 ms): posts LagExceeded once when the write-behind queue
  // was found full or the lag bound held a writer (writers waited for the secondary) since
  // the last call, and not again until the queue has been seen empty.
  void note_write_behind_lag();

  // Nanoseconds (steady clock) of the last user write: resync yields to user I/O.
  std::int64_t last_user_write_ns() const { return last_write_ns_.load(std::memory_order_relaxed); }

  // --- housekeeping ---
  std::error_code sweep();       // lazy clearing; called every daemon_sleep
  // Unmount: waits up to drain_timeout for the write-behind queue; false when it timed out
  // (the queue is then abandoned: its chunks stay dirty).
  bool drain_for_shutdown();
  std::error_code close_clean(); // at unmount (drains first)
  std::error_code sync_legs();   // fdatasync both legs concurrently

  Bitmap* bitmap() { return bitmap_.get(); }
  const Bitmap* bitmap() const { return bitmap_.get(); }
  ImageStatus status() const;

 private:
  // Drops resync_behind_'s oldest range from both legs' cache. REQUIRES: a range lock that
  // keeps re-add out (any range: re-add takes the whole file's).
  void drop_oldest_resync_range();
  // Drops [off, off + len) from both legs' page cache, the secondary's after its writeback
  // (a hint: dirty pages stay). REQUIRES: a range lock that keeps re-add out.
  void drop_legs_cache(std::uint64_t off, std::uint64_t len);
  // ftruncate + fdatasync of the secondary (reconcile_size, readd).
  std::error_code set_secondary_size(std::uint64_t size);
  // Write-behind: the primary has the data; queue the secondary's copy (or, when it cannot
  // be queued, write it here). Always ends the bitmap write; fails only if the primary did.
  utils::Result<std::size_t> write_behind(std::span<const std::byte> data, std::uint64_t off,
                                          const Bitmap::Intent& intent);
  // pwrite_all of the primary in pieces of at most leg_write_piece; `*done` as pwrite_all's.
  std::error_code write_primary(std::span<const std::byte> data, std::uint64_t off, std::size_t* done);
  // The primary refused a write (REQUIRES its range lock and started bitmap write): ends
  // the bitmap write and returns `primary`. `changed`: some leg wrote part of the range.
  std::error_code refuse_write(std::uint64_t off, std::uint64_t len, std::error_code primary,
                               std::error_code secondary, bool changed,
                               const Bitmap::Intent& intent);
  // Waits until the write-behind queue is empty (no-op when synchronous).
  void drain_write_behind();
  // The primary refused fallocate(mode, off, len) of an image of size `old` (REQUIRES the
  // range lock, and the started bitmap write of its part inside the image): gives back what
  // the primary got past the end, ends the bitmap write, returns `p`.
  std::error_code refuse_fallocate(int mode, std::uint64_t off, std::uint64_t len,
                                   std::uint64_t old, bool blocks_past_end, std::error_code p,
                                   const Bitmap::Intent& intent);
  // --- checksums (image_checks.cpp) ---
  // RecordChecksums for the sweep (forget_rest false: past the hashing budget, chunks keep
  // their bits) and close_clean (true: they get entry 0 and are cleared).
  std::error_code record_checksums(std::vector<ChunkRange>& runs, bool forget_rest);
  // With verify_reads: checks the chunks of [off, off + data.size()) that have trusted
  // checksums against what the primary holds (data is refilled from the leg that matched).
  std::error_code verify_read(std::span<std::byte> data, std::uint64_t off);
  // Reads chunk c of `fd` into the caller's part (`data` at image offset `off`) and a
  // scratch buffer for the rest; true when the chunk matches `entry`.
  utils::Result<bool> read_chunk_verified(const ReadAt& read, std::uint64_t c, std::uint64_t entry, std::span<std::byte> data,
                                          std::uint64_t off);
  // Rewrites chunk c of the primary from the secondary, syncs, and reads it back from the
  // disk; true when it then matches `entry`. REQUIRES the chunk's range lock; the bit stays
  // clear (docs/write-path.md §9.3).
  utils::Result<bool> repair_primary_locked(std::uint64_t c, std::uint64_t entry, std::span<std::byte> buf);
  // Logs a bad chunk (image, chunk, byte offsets) once, where the verdict is made.
  void note_bad_chunk(std::uint64_t c, const char* what, const std::string& detail) const;

  // The secondary leg as a reader for core/chunk_check (REQUIRES a secondary).
  ReadAt sec_reader() const {
    Leg* leg = secondary_.get();
    return [leg](std::span<std::byte> d, std::uint64_t o) { return leg->pread(d, o); };
  }
  // Direct writes (core/image_direct.cpp). open_direct_writes: at construction and re-add.
  // kDirectFolio: the largest page-cache folio (a PMD, 2 MiB on x86-64 and arm64 with 4 KiB
  // pages); lock_floor/lock_ceil widen a range to it while direct writes are configured,
  // for every lock but a direct write's own (write-path.md §1b).
  static constexpr std::uint64_t kDirectFolio = 2 << 20;
  std::uint64_t lock_floor(std::uint64_t off) const;
  std::uint64_t lock_ceil(std::uint64_t end) const;
  void open_direct_writes();
  // `in_flight`: this image's writes running now, this one included; `now_ns`: the
  // steady clock at its arrival. Notes a concurrent arrival (hence not const).
  bool direct_write_fits(std::uint64_t off, std::uint64_t len, std::uint32_t in_flight, std::int64_t now_ns);
  bool direct_legs_ready() const;
  // REQUIRES: the range lock and a started bitmap write. nullopt: a leg refused O_DIRECT
  // (EINVAL, nothing counted as written); direct writes are then off and the caller writes
  // the same bytes buffered.
  std::optional<utils::Result<std::size_t>> write_direct(std::span<const std::byte> data, std::uint64_t off,
                                                         const Bitmap::Intent& intent);
  // A synchronous write's last step, once both legs answered: refuse_write on a primary
  // error (`changed`: a leg took some bytes), else end_write, and a secondary error
  // degrades the image.
  utils::Result<std::size_t> finish_write(std::uint64_t off, std::uint64_t len, bool with_sec, std::error_code p,
                                          std::error_code s, bool changed, const Bitmap::Intent& intent);
  // Turns the two legs' results into the user's result; degrades on a secondary error.
  std::error_code settle(const char* op, std::error_code primary, std::error_code secondary);

  // EFBIG when [off, off + len) reaches past opts_.max_image_size.
  std::error_code check_size_limit(std::uint64_t off, std::uint64_t len) const;

  std::atomic<bool> bitmap_error_logged_{false};  // the sweeper's recover() failure, once
  mutable std::mutex name_mu_;
  std::string name_;  // guarded by name_mu_
  // Reads or writes "in company": an arrival that finds enough others in flight says so
  // (and is); for ImageOptions::direct_concurrent_window_ns after it, every arrival is.
  // Under a deep queue the count some arrivals see dips (the others just completed).
  class Company {
   public:
    bool at(bool found, std::int64_t now_ns, std::int64_t window_ns) {
      if (found) {
        last_ns_.store(now_ns, std::memory_order_relaxed);
        return true;
      }
      return now_ns - last_ns_.load(std::memory_order_relaxed) < window_ns;
    }

   private:
    std::atomic<std::int64_t> last_ns_{INT64_MIN / 2};  // steady clock; INT64_MIN/2: never
  };
  utils::UniqueFd primary_;
  // The size of the pieces write_primary writes in: leg_write_piece on a local disk file
  // system, 0 (whole) on any other (utils::local_disk_fs; the constructor sets it).
  std::size_t primary_piece_ = 0;
  // The secondary's (Leg::write_piece) for status, which must not touch secondary_ (re-add
  // swaps it under the whole range lock): set with it.
  std::atomic<std::uint64_t> secondary_piece_{0};
  // The primary again, O_DIRECT, read-only (ImageOptions::direct_reads); invalid when off or
  // refused. direct_ok_ falls once for good when a direct read fails with EINVAL;
  // cache_probe_ok_ when the kernel cannot say what its page cache holds (cachestat).
  utils::UniqueFd primary_direct_;
  std::atomic<bool> direct_ok_{false};
  std::atomic<bool> cache_probe_ok_{true};
  std::atomic<std::uint64_t> direct_reads_{0};
  std::atomic<std::uint64_t> cached_reads_{0};
  // For the lone sequential reader (read_primary): aligned reads running now, where the
  // last one ended, and whether reads have had company lately.
  std::atomic<std::uint32_t> reads_in_flight_{0};
  std::atomic<std::uint64_t> next_read_off_{UINT64_MAX};
  Company read_company_;
  // The primary again, O_DIRECT, read-write (ImageOptions::direct_write_max); dw_ok_ falls
  // once for good when a leg refuses a direct write with EINVAL (core/image_direct.cpp).
  utils::UniqueFd primary_dw_;  // set (or not) in the constructor only
  bool dw_tried_ = false;
  std::atomic<bool> dw_ok_{false};
  std::atomic<std::uint64_t> direct_writes_{0};
  std::atomic<std::uint32_t> writes_in_flight_{0};  // Image::write calls running now
  // Whether writes have had direct_write_inflight in flight lately (direct_write_fits).
  Company write_company_;
  std::unique_ptr<Leg> secondary_;  // null: none (degraded)
  std::unique_ptr<Bitmap> bitmap_;
  utils::ThreadPool* pool_;
  RangeLock locks_;
  std::atomic<bool> secondary_ok_;
  std::atomic<bool> held_out_{false};
  mutable std::mutex progress_mu_;
  SyncAction action_ = SyncAction::idle;  // guarded by progress_mu_
  std::string degraded_reason_;           // guarded by progress_mu_
  std::uint64_t sync_done_ = 0, sync_total_ = 0;  // guarded by progress_mu_
  std::atomic<std::uint64_t> resync_copied_{0};
  // Ranges resync steps copied whose pages are still in the legs' cache, oldest first, and
  // their bytes (the resync worker's only; docs/write-path.md, "Resync's drop-behind").
  std::deque<std::pair<std::uint64_t, std::uint64_t>> resync_behind_;
  std::uint64_t resync_behind_bytes_ = 0;
  std::atomic<std::uint64_t> mismatch_cnt_{0};
  std::atomic<std::int64_t> last_write_ns_{0};
  ImageOptions opts_;
  std::unique_ptr<WriteBehindExecutor> own_wb_executor_;  // only without opts_.wb_executor
  std::unique_ptr<WriteBehind> wb_;                      // destroyed before its executor
  std::atomic<bool> wb_copy_failed_{false};              // logged once
  std::uint64_t wb_full_waits_seen_ = 0;  // note_write_behind_lag's (the sweeper thread's)
  std::uint64_t wb_lag_holds_seen_ = 0;   // note_write_behind_lag's
  bool lag_reported_ = false;             // note_write_behind_lag's
  std::atomic<std::uint64_t> secondary_reads_{0};
  std::unique_ptr<Checksums> checksums_;  // null: checksums off (config, or no sidecar)
  std::atomic<bool> checksums_failure_logged_{false};
  std::atomic<bool> bad_page_logged_{false};
  std::atomic<bool> hash_error_logged_{false};
  // Checksums of chunks direct writes covered whole, for the sweep (core/fresh_hashes.hpp):
  // every change to the primary forgets its range first, under its range lock.
  FreshHashes fresh_;
  mutable std::mutex scrub_mu_;
  ScrubRecord scrub_;  // guarded by scrub_mu_: the record without a sidecar
  std::atomic<std::uint64_t> read_verified_{0}, read_repaired_{0}, read_failed_{0};
  std::atomic<bool> primary_read_failed_{false};
  utils::Result<std::size_t> read_primary(std::span<std::byte> buf, std::uint64_t off);
  // Opens primary_direct_ when direct_reads is on (constructor; core/image_direct.cpp).
  void open_direct_reads();
  // Counts itself among the image's reads or writes running now, for its lifetime; `now`
  // is the count with it.
  struct InFlight {
    std::atomic<std::uint32_t>& n;
    const std::uint32_t now = n.fetch_add(1, std::memory_order_relaxed) + 1;
    ~InFlight() { n.fetch_sub(1, std::memory_order_relaxed); }
  };
  // The primary as a reader for the sweep's hashing: O_DIRECT where the page cache does
  // not hold the range and the buffer is aligned (core/image_direct.cpp).
  ReadAt primary_hash_reader();
  // One aligned read of the primary's O_DIRECT descriptor; nullopt when its file system
  // refused O_DIRECT (EINVAL: direct reads then go off for good, logged once), so that the
  // caller reads buffered (read_primary, primary_hash_reader).
  std::optional<utils::Result<std::size_t>> pread_direct(std::span<std::byte> buf, std::uint64_t off);
  // Is [off, off + len) of the primary all in the page cache? false when unknown.
  bool cached_whole(std::uint64_t off, std::size_t len);
  // Should this aligned read skip O_DIRECT? (read_primary; `in_flight` includes it)
  bool read_buffered(std::uint64_t off, std::size_t len, std::uint32_t in_flight);
  std::atomic<bool> copy_file_range_ok_{true};  // false once the legs' file systems refuse it
  // The last few write streams: a write starting where one ended continues it (a
  // heuristic: a miss only costs a flush that could have been saved).
  struct Stream {
    std::uint64_t end = 0;     // one past the stream's last byte
    std::uint64_t length = 0;  // bytes written in order so far
  };
  std::mutex stream_mu_;
  std::array<Stream, 4> streams_{};  // guarded by stream_mu_
  unsigned stream_victim_ = 0;       // guarded by stream_mu_
  // The bytes to mark dirty ahead of this write (see ImageOptions::intent_ahead).
  std::uint64_t intent_ahead_for(std::uint64_t off, std::uint64_t len);
  // Copies [off, stop) primary -> secondary, holes as holes. REQUIRES the range lock.
  std::error_code copy_range_locked(std::uint64_t off, std::uint64_t stop,
                                    std::vector<std::byte>& buf, std::uint64_t* copied);
};

}  // namespace fusemirror::core
