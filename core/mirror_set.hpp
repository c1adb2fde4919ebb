// core/mirror_set.hpp — a mounted mirror set: assembly and lifetime of its parts.
//
// MirrorSet opens the set (both directories, the membership check, the locks), builds the
// units that each own one job, and starts and stops them. It holds no logic of its own
// beyond that and the status snapshot. The units (docs/design.md has the picture):
//
//   Legs              the three backing directories, the rule for creating anything on them
//   ImageTable        the loaded images
//   SecondaryRecords  member.json and the per-image records; the coverage proof
//   ImageLoader       loading an image and the trust decision
//   Namespace         the mirrored namespace operations; the namespace lock
//   ResyncEngine      the resync/check/repair queue, worker and throttle
//   ProgressTracker   speed and ETA of running passes
//   SecondaryWatch    the secondary's identity watchdog
//   Sweeper           lazy bit clearing, the watchdog's clock, re-queueing unsynced chunks
//   ScrubScheduler    the scrub schedule (scrub_interval), ticked by the sweeper
//   Control           the operator's verbs and the md-sysfs attributes
//   EventLog          the events the units post, for `fusemirror monitor`
//   LinkKeeper        the link to the secondary: automatic reconnect with backoff
//
// Thread safety: every public member may be called concurrently once open() returned.
#pragma once

#include <memory>
#include <string>

#include "core/config.hpp"
#include "core/control.hpp"
#include "core/events.hpp"
#include "core/image_loader.hpp"
#include "core/image_table.hpp"
#include "core/legs.hpp"
#include "core/link.hpp"
#include "core/namespace.hpp"
#include "core/progress.hpp"
#include "core/records.hpp"
#include "core/resync.hpp"
#include "core/scrub.hpp"
#include "core/status.hpp"
#include "core/sweeper.hpp"
#include "utils/fd.hpp"
#include "utils/thread_pool.hpp"

namespace fusemirror::core {

class MirrorSet {
 public:
  // Opens the set for serving: checks both directories, the secondary's membership, takes
  // the locks, loads every image (repairing sizes, logging untrusted bitmaps).
  // Throws utils::Error naming the path and the reason.
  static std::unique_ptr<MirrorSet> open(const Config& config, const std::string& mountpoint);
  ~MirrorSet();
  MirrorSet(const MirrorSet&) = delete;
  MirrorSet& operator=(const MirrorSet&) = delete;

  // Starts the sweeper, the resync worker (resyncing every image with unsynced chunks) and
  // the progress sampler.
  void start();
  // Stops the workers, drains, records the secondary's copies and marks the bitmaps clean.
  // Idempotent.
  void shutdown();

  const Config& config() const { return config_; }
  Namespace& ns() { return *ns_; }
  Control& control() { return *control_; }
  // What `fusemirror monitor` reads (MOUNT/.fusemirror/events).
  EventLog& events() { return events_; }
  // The live state (samples the progress tracker).
  SetStatus status();

  // Tests: one sweep of every image now; wait until no resync is queued or running.
  void sweep_all() { sweeper_->sweep_all(); }
  void wait_resync_idle() { resync_->wait_idle(); }
  // Tests: one pass of the link's reconnect tries now.
  void link_tick() { link_->tick(); }

 private:
  MirrorSet() = default;

  Config config_;
  std::string mountpoint_;
  EventLog events_;  // before every unit that posts to it (destroyed after them)
  Legs legs_;
  utils::UniqueFd primary_lock_, secondary_lock_;
  std::unique_ptr<utils::ThreadPool> pool_;            // secondary legs of concurrent writes
  std::unique_ptr<WriteBehindExecutor> wb_executor_;  // every image's write-behind workers
  ImageTable table_;  // destroyed before the pool and the executor its images use
  std::unique_ptr<SecondaryRecords> records_;
  std::unique_ptr<ResyncEngine> resync_;
  ProgressTracker progress_;
  std::unique_ptr<SecondaryWatch> watch_;
  std::unique_ptr<ImageLoader> loader_;
  std::unique_ptr<Namespace> ns_;
  std::unique_ptr<ScrubScheduler> scrub_;
  std::unique_ptr<Sweeper> sweeper_;
  std::unique_ptr<Control> control_;
  std::unique_ptr<LinkKeeper> link_;
  bool shut_down_ = true;  // until open() completed: a refused open has nothing to stop
};

}  // namespace fusemirror::core
