// core/image_loader.hpp — loading an image: its two legs, its bitmap, and the trust
// decision that says how much of it must be copied again.
//
// The decision (docs/on-disk-format.md "Trust rules", docs/reliability.md invariant 4):
//   * no copy on the secondary                      -> full resync
//   * bitmap untrusted (header, uuid, size, bits)   -> full resync (Bitmap::open says why)
//   * the secondary's record does not prove the bitmap covers what the copy may lack
//                                                   -> full resync (why_not_covered says why)
//   * the bitmap says the secondary was failed      -> degraded until `re-add`
//   * otherwise                                     -> resync of the dirty chunks only
// Then the secondary is recorded a member at the bitmap's new events.
//
// The descriptor budget (docs/design.md "Descriptors"): a loaded image holds
// three descriptors (primary, secondary, bitmap), so at most budget() images stay loaded.
// Before a load that would pass it, the least recently used *idle* images are evicted: an
// image nothing holds (no FUSE handle, no resync job), with an empty write-behind queue,
// no pass running, nothing unsynced, its secondary in service and its bitmap healthy. An
// eviction is what unmount does for one image (MirrorSet::shutdown), so the next load's
// trust decision finds a clean bitmap and a clean record: no resync. A degraded or
// resyncing image is never evicted — its state lives in the loaded image. A load that fails
// leaves nothing it made behind (the secondary copy, the bitmap, the record).
//
// Thread safety: REQUIRES the namespace lock exclusively (core/namespace.hpp) for load(),
// load_within_budget(), evict_idle() and scan(): two loads of one image never race, and no
// open can take an image that is being evicted.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "core/config.hpp"
#include "core/events.hpp"
#include "core/image.hpp"
#include "core/image_table.hpp"
#include "core/legs.hpp"
#include "core/records.hpp"
#include "core/resync.hpp"
#include "core/sweeper.hpp"
#include "utils/result.hpp"
#include "utils/thread_pool.hpp"

namespace fusemirror::core {

class ImageLoader {
 public:
  ImageLoader(const Config& config, const Legs& legs, SecondaryRecords& records, ImageTable& table,
              ResyncEngine& resync, utils::ThreadPool* pool, WriteBehindExecutor* wb_executor,
              const SecondaryWatch* watch = nullptr, EventLog* events = nullptr)
      : config_(config), legs_(legs), records_(records), table_(table), resync_(resync), pool_(pool),
        wb_executor_(wb_executor), watch_(watch), events_(events) {}

  // Returns the loaded image REL, loading it first when it is not (and queueing its resync
  // when it has unsynced chunks).
  utils::Result<std::shared_ptr<Image>> load(const std::string& rel);
  // Loads every image beneath REL_DIR (and makes the secondary's directories); an image
  // that cannot be loaded is logged and skipped.
  void scan(const std::string& rel_dir);

  // load(), after evicting idle images when the table is at the budget; when the load still
  // fails with EMFILE or ENFILE, evicts a few more and tries once again.
  utils::Result<std::shared_ptr<Image>> load_within_budget(const std::string& rel);
  // Evicts least recently used idle images until at most `target` are loaded (or none is
  // idle). Returns how many were evicted.
  std::size_t evict_idle(std::size_t target);
  // The most images kept loaded (unbounded until set).
  std::size_t budget() const { return budget_.load(std::memory_order_relaxed); }
  void set_budget(std::size_t n) { budget_.store(n == 0 ? 1 : n, std::memory_order_relaxed); }
  // The budget for a descriptor limit of `nofile` and the config's max_open_images (0: as
  // many as the limit allows): (nofile - reserve) / 3, the reserve (min(512, nofile / 2))
  // covering the set's directories, locks, log, /dev/fuse and the descriptors each FUSE
  // request opens for a moment.
  // `per_image`: descriptors a loaded image holds (3, or 4 with its checksum file).
  static std::size_t budget_for(std::uint64_t nofile, std::uint64_t max_open_images, unsigned per_image = 3);

  // The set's event log (null in tests): images loaded degraded post DegradedArray, and
  // every image posts Fail / SecondaryReconnected / LagExceeded there (ImageOptions).
  EventLog* events() const { return events_; }

 private:
  ImageOptions image_options() const;
  // The image's checksum file (docs/write-path.md §9.4), opened and checked against its
  // bitmap; null when checksums are off in the config (an old file is then removed,
  // durably). `made`: the file did not exist before.
  utils::Result<std::unique_ptr<Checksums>> open_checksums(const std::string& rel, const Bitmap& bm,
                                                           bool bitmap_trusted, const struct stat& primary,
                                                           bool* made);
  // The activity log's record of logged chunks (core/al_record.hpp), opened beside the
  // bitmap and attached to it: after a crash of the daemon in this boot it spares the
  // chunks the log set and nobody wrote. Without it (the log off, or the file unusable),
  // a crash resyncs whole active extents; the load goes on — unless the daemon is out of
  // descriptors (returned: the caller evicts idle images and retries, as for the others).
  std::error_code attach_al_record(const std::string& rel, Bitmap& bm);
  // The mount's scan: when REL was closed clean (by an unmount or an eviction) and nothing
  // changed since, registers it unloaded without opening it for good (no bitmap or record
  // write, no descriptor kept); false when it must be loaded (see the .cpp).
  bool register_if_closed_clean(const std::string& rel);
  // Evicts REL if it is idle (see above); true when it was.
  bool evict(const std::string& rel);

  const Config& config_;
  const Legs& legs_;
  SecondaryRecords& records_;
  ImageTable& table_;
  ResyncEngine& resync_;
  utils::ThreadPool* pool_;
  WriteBehindExecutor* wb_executor_;
  const SecondaryWatch* watch_;  // null: never consulted (tests)
  EventLog* events_;             // null: no events (tests)
  std::atomic<std::size_t> budget_{SIZE_MAX};
};

}  // namespace fusemirror::core
