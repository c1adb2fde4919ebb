// core/mirror_set.hpp — a mounted mirror set: the two backing directories, the bitmaps,
// the table of images, and the background workers (sweeper, resync).
//
// Paths given to the namespace operations are relative to the set's root ("" is the root,
// "dir/disk.img" an image), already stripped of FUSE's leading slash. The primary's
// metadata directory (.fusemirror) is never reachable through them.
//
// Thread safety: every public member may be called concurrently. Lock order:
//   ns_mu_ (namespace changes) -> table_mu_ (image table) -> Image internals.
#pragma once

#include <sys/statvfs.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/config.hpp"
#include "core/dir.hpp"
#include "core/image.hpp"
#include "utils/fd.hpp"
#include "utils/result.hpp"
#include "utils/thread_pool.hpp"

namespace fusemirror::core {

struct DirEntry {
  std::string name;
  bool is_dir = false;
};

class MirrorSet {
 public:
  // Opens the set for serving: checks both directories, the secondary's membership, takes
  // the locks, loads every image's bitmap (repairing sizes, logging untrusted bitmaps).
  // Throws utils::Error naming the path and the reason.
  static std::unique_ptr<MirrorSet> open(const Config& config, const std::string& mountpoint);
  ~MirrorSet();

  // Starts the sweeper and the resync of every image with unsynced chunks.
  void start();
  // Stops the workers, drains, clears idle bits and marks the bitmaps clean. Idempotent.
  void shutdown();

  const Config& config() const { return config_; }

  utils::Result<struct stat> getattr(const std::string& rel);
  utils::Result<std::vector<DirEntry>> readdir(const std::string& rel);
  std::error_code mkdir(const std::string& rel, mode_t mode, uid_t uid, gid_t gid);
  std::error_code rmdir(const std::string& rel);
  std::error_code unlink(const std::string& rel);
  std::error_code rename(const std::string& from, const std::string& to, unsigned flags);
  std::error_code chmod(const std::string& rel, mode_t mode);
  std::error_code chown(const std::string& rel, uid_t uid, gid_t gid);
  std::error_code utimens(const std::string& rel, const struct timespec ts[2]);
  std::error_code truncate(const std::string& rel, std::uint64_t size);
  utils::Result<struct statvfs> statfs();
  std::error_code setxattr(const std::string& rel, const std::string& name, const char* value,
                           std::size_t size, int flags);
  utils::Result<std::size_t> getxattr(const std::string& rel, const std::string& name, char* value,
                                      std::size_t size);
  utils::Result<std::size_t> listxattr(const std::string& rel, char* list, std::size_t size);
  std::error_code removexattr(const std::string& rel, const std::string& name);

  utils::Result<std::shared_ptr<Image>> open_image(const std::string& rel);
  utils::Result<std::shared_ptr<Image>> create_image(const std::string& rel, mode_t mode,
                                                     uid_t uid, gid_t gid);

  // The live state as JSON (docs/quickstart.md), and the same for one image.
  std::string status_json() const;

  // Operator controls (md's sysfs): fail / re-add the secondary of an image, and
  // sync_action idle|resync|check|repair. Errors: ENOENT unknown image, EBUSY/EINVAL
  // wrong state; the reason is logged.
  std::error_code fail(const std::string& rel);
  std::error_code readd(const std::string& rel);
  std::error_code sync_action(const std::string& rel, SyncAction action);
  // Parses and runs one control line ("fail IMAGE", "re-add IMAGE",
  // "sync-action IMAGE ACTION"); `why` gets the reason of a refusal.
  std::error_code control(const std::string& line, std::string* why);

  // Runs one sweep of every image now (tests; the sweeper thread does it periodically).
  void sweep_all();
  // Blocks until no image has unsynced chunks or a resync queued (tests, CLI waits).
  void wait_resync_idle();

 private:
  MirrorSet() = default;
  static bool reserved_name(const std::string& rel);
  std::string bitmap_rel(const std::string& rel) const;
  // Loads (or returns the loaded) image; REQUIRES ns_mu_ held (shared or exclusive).
  utils::Result<std::shared_ptr<Image>> load_image_locked(const std::string& rel);
  void scan(const std::string& rel_dir);
  void queue_resync(const std::shared_ptr<Image>& img);
  void queue_job(const std::shared_ptr<Image>& img, SyncAction action);
  void sweeper_main(std::stop_token st);
  void resync_main(std::stop_token st);
  void run_resync(std::stop_token& st, const std::shared_ptr<Image>& img);
  void run_check(std::stop_token& st, const std::shared_ptr<Image>& img, bool repair);
  // Sleeps as md's sync_speed_min/max ask: never above max; above min only while
  // user writes are idle. `done` bytes since `t0`.
  void throttle(const std::shared_ptr<Image>& img, std::uint64_t done,
                std::chrono::steady_clock::time_point t0, const std::stop_token& st);
  // The secondary's record of an image: the bitmap events at which its copy was last
  // known complete (md's per-device event count). SECONDARY/.fusemirror/images/REL.json
  // A record written at a clean shutdown also holds the secondary file's identity (inode,
  // mtime, size) then: a different file found there later is an old or foreign copy.
  struct LegRecord {
    bool present = false;
    utils::Uuid set_uuid{}, image_uuid{};
    std::uint64_t events = 0;
    bool clean = false;
    std::uint64_t ino = 0, size = 0;
    std::int64_t mtime_ns = 0;
  };
  LegRecord read_record(const std::string& rel) const;
  std::error_code write_record(const std::string& rel, const Image& img, std::uint64_t events,
                               bool clean = false);
  // Whether the bitmap covers everything the secondary copy may lack; `why` says why not.
  // `bitmap_events`: the events the bitmap had recorded before this session touched it.
  bool bitmap_covers(const std::string& rel, const Image& img, std::uint64_t bitmap_events,
                     std::string* why) const;
  void check_secondary_identity();
  std::vector<std::shared_ptr<Image>> images_snapshot() const;
  // Applies `fn(dir)` to the secondary (logging, not failing, on its error).
  void secondary_ns_error(const char* op, const std::string& rel, std::error_code ec);

  Config config_;
  std::string mountpoint_;
  Dir primary_, secondary_, bitmaps_;
  utils::UniqueFd primary_lock_, secondary_lock_;
  dev_t secondary_dev_ = 0;
  ino_t secondary_ino_ = 0;
  std::unique_ptr<utils::ThreadPool> pool_;
  std::unique_ptr<WriteBehindExecutor> wb_executor_;  // every image's write-behind workers

  mutable std::shared_mutex ns_mu_;     // exclusive for create/unlink/rename/rmdir
  mutable std::mutex table_mu_;
  std::map<std::string, std::shared_ptr<Image>> images_;  // guarded by table_mu_

  mutable std::mutex work_mu_;
  std::condition_variable_any work_cv_;
  struct Job {
    std::shared_ptr<Image> image;
    SyncAction action;
  };
  std::deque<Job> resync_queue_;                     // guarded by work_mu_
  bool resync_busy_ = false;                         // guarded by work_mu_
  std::shared_ptr<Image> running_;                   // guarded by work_mu_
  std::atomic<bool> cancel_running_{false};
  std::condition_variable_any idle_cv_;
  std::jthread sweeper_, resyncer_;
  bool shut_down_ = true;  // until open() completed: a refused open has nothing to stop
  bool secondary_vanished_ = false;

 public:
  // ---- live tunables (md's sync_speed_min / sync_speed_max), set-wide ---------------------
  // Bytes per second; max 0 = unlimited. Take effect at the resync's next step; not
  // persisted (config.json keeps the values the next mount starts with). Thread safety:
  // config_'s rate words are only ever accessed through std::atomic_ref by these.
  std::uint64_t resync_min_rate() const;
  std::uint64_t resync_max_rate() const;
  void set_resync_min_rate(std::uint64_t bytes_per_s);
  void set_resync_max_rate(std::uint64_t bytes_per_s);
};

}  // namespace fusemirror::core
