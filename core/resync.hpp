// core/resync.hpp — the resync engine: md's sync_action worker for a whole set.
//
// Owns the job queue (one job per image and action at a time, oldest first), the single
// worker thread that runs resync, check and repair passes one image at a time, their
// throttling (md's sync_speed_min / sync_speed_max, live-tunable, set-wide) and the
// cancellation of a running pass (sync_action idle). The copying itself is the image's
// (Image::resync_step, Image::check_step): this unit decides what runs when and how fast.
//
// Thread safety: every public member may be called concurrently. mu_ is taken before an
// image's progress lock (a job leaves the queue and becomes the image's action in one
// step, so a status reader never sees it in neither place).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "core/events.hpp"
#include "core/image.hpp"

namespace fusemirror::core {

class ResyncEngine {
 public:
  // `events` (may be null) gets RebuildStarted/NN/Finished, CheckFinished, MismatchesFound.
  ResyncEngine(std::uint64_t min_rate, std::uint64_t max_rate, EventLog* events = nullptr)
      : min_rate_(min_rate), max_rate_(max_rate), events_(events) {}
  ~ResyncEngine() { stop(); }

  void start();
  // Stops the worker (a running pass is interrupted; it resumes from the bitmap). Idempotent.
  void stop();

  // Queues `action` for `img` unless the same job is already queued. `scheduled`: a scrub
  // pass (core/scrub.hpp) — a check or repair that resumes from the image's scrub cursor;
  // an operator's check or repair starts from chunk 0.
  void queue(const std::shared_ptr<Image>& img, SyncAction action, bool scheduled = false);
  // sync_action idle: drops the image's queued jobs and interrupts its running pass.
  void cancel(const std::shared_ptr<Image>& img);
  bool running(const std::shared_ptr<Image>& img) const;
  // A scheduled scrub pass is queued or running (the scheduler starts one at a time).
  bool scrub_busy() const;
  // Queued actions per image, oldest first.
  std::map<const Image*, std::vector<SyncAction>> pending() const;
  // Blocks until nothing is queued or running.
  void wait_idle();

  // md's sync_speed_min / sync_speed_max, bytes/s (max 0 = unlimited). Take effect at the
  // next step of a running pass. EINVAL (reason logged) when the pair would break
  // check_resync_rates, the config's rule.
  std::uint64_t min_rate() const { return min_rate_.load(std::memory_order_relaxed); }
  std::uint64_t max_rate() const { return max_rate_.load(std::memory_order_relaxed); }
  std::error_code set_min_rate(std::uint64_t bytes_per_s);
  std::error_code set_max_rate(std::uint64_t bytes_per_s);

 private:
  struct Job {
    std::shared_ptr<Image> image;
    SyncAction action;
    bool scheduled = false;
  };
  void main(std::stop_token st);
  void run_resync(const std::stop_token& st, const std::shared_ptr<Image>& img);
  void run_check(const std::stop_token& st, const std::shared_ptr<Image>& img, bool repair, bool scheduled);
  bool interrupted(const std::stop_token& st) const { return st.stop_requested() || cancel_running_; }
  // Sleeps as md's sync_speed_min/max ask: never above max; above min only while user
  // writes are idle. `done` bytes since `t0`.
  void throttle(const std::shared_ptr<Image>& img, std::uint64_t done,
                std::chrono::steady_clock::time_point t0, const std::stop_token& st);

  void post(Event e, const std::shared_ptr<Image>& img, const std::string& detail) const {
    if (events_) events_->post(e, img->name(), detail);
  }

  std::atomic<std::uint64_t> min_rate_, max_rate_;
  EventLog* const events_;
  std::mutex rates_mu_;  // serialises the setters' check-then-store (check_resync_rates)
  mutable std::mutex mu_;
  std::condition_variable_any work_cv_, idle_cv_;
  std::deque<Job> queue_;          // guarded by mu_
  bool busy_ = false;              // guarded by mu_
  std::shared_ptr<Image> running_;  // guarded by mu_
  bool running_scheduled_ = false;  // guarded by mu_
  std::atomic<bool> cancel_running_{false};
  std::jthread worker_;
};

}  // namespace fusemirror::core
