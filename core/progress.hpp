// core/progress.hpp — speed and ETA of running resync/check/repair passes.
//
// An image reports only "done of total bytes". The tracker samples that (once a second
// from its own thread, and whenever the status is read) and keeps, per image, when the
// current pass was first seen and a sliding window of samples, from which it derives the
// current speed and the ETA (md's /proc/mdstat "finish=… speed=…").
//
// Thread safety: every public member may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/status.hpp"

namespace fusemirror::core {

class ProgressTracker {
 public:
  // Calls `sample` every `period` until stop(); `sample` is expected to read the status,
  // which records a sample (MirrorSet::status).
  void start(std::function<void()> sample, std::chrono::milliseconds period = std::chrono::milliseconds(1000));
  void stop();

  // Records one sample of every running pass in `images` and sets each one's `rate`.
  void sample(std::vector<ImageStatus>& images);
  // The rate of image `name`'s running pass, if any.
  std::optional<PassRate> rate(const std::string& name);

 private:
  struct Track {
    SyncAction action = SyncAction::idle;
    std::uint64_t total = 0;
    std::int64_t started = 0;
    std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> samples;
  };
  void sample_locked(const std::string& name, SyncAction action, std::uint64_t done, std::uint64_t total);
  PassRate rate_locked(const Track& t) const;

  std::mutex mu_;
  std::map<std::string, Track> tracks_;  // guarded by mu_
  std::jthread thread_;
};

}  // namespace fusemirror::core
