// core/sweeper.hpp — the set's housekeeping thread: the secondary's identity watchdog, the
// lazy clearing of bitmap bits (md's daemon_work, every daemon_sleep), and the re-queueing
// of chunks a failed leg write left unsynced; and the clock of the descriptor budget's
// eviction of idle images.
//
// The watchdog (docs/reliability.md, "a lazily unmounted secondary"): after `umount -l`
// of the secondary's file system, open descriptors go on accepting writes into a file
// system no longer attached. Every 500 ms the secondary's path must still lead to the
// directory the set opened (same device and inode); when it does not, every image is
// degraded at once, and the secondary stays out until `re-add` finds it back.
//
// Thread safety: every public member may be called concurrently.
#pragma once

#include <sys/types.h>

#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/dir.hpp"
#include "core/image_table.hpp"
#include "core/resync.hpp"

namespace fusemirror::core {

class SecondaryWatch {
 public:
  // `path` as configured; `opened` is the directory the set opened there (invalid: an NBD
  // secondary, which has no directory; the watch never fires).
  SecondaryWatch(std::string path, const Dir& opened);
  // True once the path stops leading to the opened directory (sticky until reattach()).
  bool vanished() const;
  // Checks now; returns true exactly once, when it first finds the secondary gone.
  bool check();
  // The secondary came back as `d` (re-add checked its membership).
  void reattach(const Dir& d);
  const std::string& path() const { return path_; }

 private:
  const std::string path_;
  const bool inert_;
  mutable std::mutex mu_;
  dev_t dev_ = 0;          // guarded by mu_
  ino_t ino_ = 0;          // guarded by mu_
  bool vanished_ = false;  // guarded by mu_
};

class Sweeper {
 public:
  // `trim` runs on every pass (every 500 ms): the set's eviction of idle images beyond the
  // descriptor budget (core/image_loader.hpp).
  Sweeper(double daemon_sleep_s, ImageTable& table, ResyncEngine& resync, SecondaryWatch& watch,
          std::function<void()> trim = {})
      : period_s_(daemon_sleep_s), table_(table), resync_(resync), watch_(watch), trim_(std::move(trim)) {}
  ~Sweeper() { stop(); }

  void start();
  void stop();  // idempotent
  // One sweep of every image now (the thread does it every daemon_sleep).
  void sweep_all();

 private:
  void main(std::stop_token st);

  const double period_s_;
  ImageTable& table_;
  ResyncEngine& resync_;
  SecondaryWatch& watch_;
  std::function<void()> trim_;
  std::jthread thread_;
};

}  // namespace fusemirror::core
