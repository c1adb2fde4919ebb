// fusemirror/progress.hpp — speed and ETA of running resync/check/repair passes.
//
// Core reports only "done of total bytes" per image. The tracker samples that once a
// second on its own thread and keeps, per image, when the current pass was first seen
// and a sliding window of samples, from which it derives the current speed and the ETA
// (md's /proc/mdstat "finish=… speed=…"). The status file and the per-image control files
// add these to what core says.
//
// Thread safety: every public member may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/mirror_set.hpp"

namespace fusemirror::fuse {

class ProgressTracker {
 public:
  struct Rate {
    double speed = 0;           // bytes/s over the last few seconds (0: not measured yet)
    double eta = -1;            // seconds left at that speed (-1: unknown)
    std::int64_t started = 0;   // unix time the pass was first seen running
  };

  // Starts sampling `set` every `period`. REQUIRES: `set` outlives stop().
  void start(core::MirrorSet* set, std::chrono::milliseconds period = std::chrono::milliseconds(1000));
  void stop();

  // Records one sample of `status_json` (core's JSON) and returns it with, per image whose
  // sync.action is not idle, sync.started, sync.speed and sync.eta_seconds added.
  std::string augment(const std::string& status_json);
  // The rate of image `name`'s running pass, if any.
  std::optional<Rate> rate(const std::string& name);

  static ProgressTracker& instance();

 private:
  struct Track {
    std::string action;
    std::uint64_t total = 0;
    std::int64_t started = 0;
    std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> samples;
  };
  void sample_locked(const std::string& name, const std::string& action, std::uint64_t done,
                     std::uint64_t total);
  Rate rate_locked(const Track& t) const;

  std::mutex mu_;
  std::map<std::string, Track> tracks_;  // guarded by mu_
  std::jthread thread_;
};

}  // namespace fusemirror::fuse
