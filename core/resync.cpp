#include "core/resync.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/config.hpp"
#include "utils/result.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

void ResyncEngine::start() {
  worker_ = std::jthread([this](std::stop_token st) { main(st); });
}

void ResyncEngine::stop() { worker_ = {}; }  // request stop + join

void ResyncEngine::queue(const std::shared_ptr<Image>& img, SyncAction action, bool scheduled) {
  {
    std::lock_guard lk(mu_);
    for (const auto& q : queue_)
      if (q.image == img && q.action == action && q.scheduled == scheduled) return;
    queue_.push_back({img, action, scheduled});
  }
  work_cv_.notify_all();
}

void ResyncEngine::cancel(const std::shared_ptr<Image>& img) {
  std::lock_guard lk(mu_);
  std::erase_if(queue_, [&](const Job& j) { return j.image == img; });
  if (running_ == img) cancel_running_ = true;
}

bool ResyncEngine::running(const std::shared_ptr<Image>& img) const {
  std::lock_guard lk(mu_);
  return running_ == img;
}

bool ResyncEngine::scrub_busy() const {
  std::lock_guard lk(mu_);
  if (running_ && running_scheduled_) return true;
  return std::any_of(queue_.begin(), queue_.end(), [](const Job& j) { return j.scheduled; });
}

std::map<const Image*, std::vector<SyncAction>> ResyncEngine::pending() const {
  std::map<const Image*, std::vector<SyncAction>> out;
  std::lock_guard lk(mu_);
  for (const auto& q : queue_) out[q.image.get()].push_back(q.action);
  return out;
}

void ResyncEngine::wait_idle() {
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
}

std::error_code ResyncEngine::set_min_rate(std::uint64_t v) {
  std::lock_guard lk(rates_mu_);
  if (auto why = check_resync_rates(v, max_rate()); !why.empty()) {
    spdlog::warn("sync_speed_min {} refused: {}", v, why);
    return utils::errno_code(EINVAL);
  }
  min_rate_.store(v, std::memory_order_relaxed);
  spdlog::info("sync_speed_min set to {} bytes/s", v);
  return {};
}

std::error_code ResyncEngine::set_max_rate(std::uint64_t v) {
  std::lock_guard lk(rates_mu_);
  if (auto why = check_resync_rates(min_rate(), v); !why.empty()) {
    spdlog::warn("sync_speed_max {} refused: {}", v, why);
    return utils::errno_code(EINVAL);
  }
  max_rate_.store(v, std::memory_order_relaxed);
  spdlog::info("sync_speed_max set to {} bytes/s{}", v, v ? "" : " (unlimited)");
  return {};
}

void ResyncEngine::main(std::stop_token st) {
  for (;;) {
    Job job;
    {
      std::unique_lock lk(mu_);
      running_.reset();
      running_scheduled_ = false;
      busy_ = false;
      idle_cv_.notify_all();
      if (!work_cv_.wait(lk, st, [&] { return !queue_.empty(); })) return;
      job = queue_.front();
      queue_.pop_front();
      busy_ = true;
      running_ = job.image;
      running_scheduled_ = job.scheduled;
      cancel_running_ = false;
      // The job leaves the queue and shows as the image's action in one step (the status
      // reads the queue under this lock): a reader never sees it in neither place, which
      // `fusemirror wait` would take for "done".
      job.image->set_sync_progress(job.action, 0, 0);
    }
    if (!job.image->secondary_ok()) {
      job.image->set_sync_progress(SyncAction::idle, 0, 0);
      continue;
    }
    switch (job.action) {
      case SyncAction::resync: run_resync(st, job.image); break;
      case SyncAction::check: run_check(st, job.image, false, job.scheduled); break;
      case SyncAction::repair: run_check(st, job.image, true, job.scheduled); break;
      case SyncAction::idle: break;
    }
    job.image->set_sync_progress(SyncAction::idle, 0, 0);
  }
}

void ResyncEngine::throttle(const std::shared_ptr<Image>& img, std::uint64_t done,
                            std::chrono::steady_clock::time_point t0, const std::stop_token& st) {
  // The rates can be changed live (control files): read them once per step.
  const std::uint64_t max_rate = this->max_rate(), min_rate = this->min_rate();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
    if (max_rate && rate > static_cast<double>(max_rate)) {
      // md's sync_speed_max: sleep until the average rate is back under the limit, in short
      // slices so that a stop, an idle request or a new limit is seen promptly.
      const double ahead = static_cast<double>(done) / static_cast<double>(max_rate) - elapsed;
      if (ahead <= 0 || interrupted(st) || this->max_rate() != max_rate) return;
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(ahead, 0.1)));
      continue;
    }
    // md's sync_speed_min: above it, resync yields to user writes of the last 100 ms.
    const auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(img->last_user_write_ns()));
    if (min_rate && rate > static_cast<double>(min_rate) && now - last < std::chrono::milliseconds(100))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return;
  }
}

void ResyncEngine::run_resync(const std::stop_token& st, const std::shared_ptr<Image>& img) {
  std::vector<std::byte> buf(1 << 20);
  const auto stats0 = img->bitmap()->stats();
  const std::uint64_t total = stats0.unsynced_chunks * stats0.chunk_size;
  if (stats0.unsynced_chunks == 0) {
    (void)img->reconcile_size();
    return;
  }
  spdlog::info("{}: resync started: {} dirty chunks ({})", img->name(), stats0.unsynced_chunks,
               utils::format_size(total));
  post(Event::rebuild_started, img, std::to_string(stats0.unsynced_chunks) + " chunks (" + utils::format_size(total) + ")");
  // mdadm's RebuildNN: one event as the pass crosses each 20 %.
  constexpr Event kSteps[] = {Event::rebuild20, Event::rebuild40, Event::rebuild60, Event::rebuild80};
  std::size_t steps_posted = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t next = 0, done = 0, copied_total = 0, ahead = 0;
  img->set_sync_progress(SyncAction::resync, 0, total);
  // Reads of the primary are requested up to kReadAhead ahead of the copy: a scattered
  // resync then waits for the disk's queue, not for one seek per chunk, and a full one
  // overlaps reading the next runs with writing this one.
  constexpr std::uint64_t kReadAhead = 16 << 20, kReadAheadRefill = 8 << 20;
  // However the pass ends, the steps' last copies leave the legs' page cache too.
  struct DropBehind {
    Image& img;
    ~DropBehind() { img.drop_resync_cache(); }
  } drop_behind{*img};
  while (!interrupted(st)) {
    const std::uint64_t cs = stats0.chunk_size;
    if (ahead <= next || (ahead - next) * cs < kReadAheadRefill)
      ahead = img->read_ahead_unsynced(std::max(ahead, next), kReadAhead);
    std::uint64_t copied = 0;
    auto r = img->resync_step(next, 4 << 20, buf, &copied);
    if (!r) {
      spdlog::error("{}: resync stopped: {}", img->name(), r.error().message());
      post(Event::rebuild_finished, img, "stopped: " + r.error().message());
      return;
    }
    copied_total += copied;
    const std::uint64_t total_chunks = img->bitmap()->stats().total_chunks;
    if (*r >= total_chunks && img->bitmap()->next_unsynced(0) >= total_chunks) break;
    const std::uint64_t left = img->bitmap()->stats().unsynced_chunks * stats0.chunk_size;
    done = left >= total ? 0 : total - left;
    next = *r >= total_chunks ? 0 : *r;
    if (next == 0) ahead = 0;  // a new pass over chunks dirtied meanwhile
    img->set_sync_progress(SyncAction::resync, done, total);
    while (steps_posted < 4 && done * 5 >= total * (steps_posted + 1))
      post(kSteps[steps_posted++], img, utils::format_size(done) + " of " + utils::format_size(total));
    throttle(img, done, t0, st);
  }
  if (interrupted(st)) {
    spdlog::info("{}: resync interrupted; it resumes from the bitmap", img->name());
    post(Event::rebuild_finished, img, "interrupted; it resumes from the bitmap");
    return;
  }
  (void)img->reconcile_size();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("{}: resync done: {} chunks ({}) checked, {} of data copied in {:.2f}s",
               img->name(), stats0.unsynced_chunks, utils::format_size(total),
               utils::format_size(copied_total), secs);
  char detail[160];
  std::snprintf(detail, sizeof detail, "done: %llu chunks, %s copied in %.1fs",
                static_cast<unsigned long long>(stats0.unsynced_chunks), utils::format_size(copied_total).c_str(), secs);
  post(Event::rebuild_finished, img, detail);
}

void ResyncEngine::run_check(const std::stop_token& st, const std::shared_ptr<Image>& img, bool repair,
                             bool scheduled) {
  std::vector<std::byte> a(1 << 20), b(1 << 20);
  const SyncAction action = repair ? SyncAction::repair : SyncAction::check;
  const std::uint64_t cs = img->bitmap()->chunk_size();
  // The total follows the image's size, read again at every step: a check covers what the
  // image holds when it gets there (a grown end is checked too, a cut one is not waited for),
  // and its progress never passes its total.
  std::uint64_t total_chunks = img->total_chunks();
  const std::uint64_t step = std::max<std::uint64_t>(1, (4u << 20) / cs);
  const auto now_s = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  // A pass's cursor and counters live in the image's scrub record (the sidecar, when it
  // has one): a scheduled pass resumes where the last one stopped, across remounts too.
  ScrubRecord rec = img->scrub_record();
  const bool resume = scheduled && rec.in_progress && rec.cursor > 0 && rec.cursor < total_chunks;
  if (!resume) {
    rec.in_progress = true;
    rec.cursor = 0;
    rec.pass_started = now_s();
    rec.counts = {};
  }
  std::uint64_t next = rec.cursor;
  spdlog::info("{}: {}{} started over {} chunks{}", img->name(), scheduled ? "scheduled " : "", to_string(action),
               total_chunks,
               resume ? " (resumed at chunk " + std::to_string(next) + ")" : std::string());
  img->save_scrub(rec);
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t done0 = next * cs;
  img->set_mismatch_cnt(rec.counts.mismatches);
  img->set_sync_progress(action, next * cs, total_chunks * cs);
  while (next < total_chunks && !interrupted(st)) {
    auto r = img->check_step(next, step, repair, a, b, &rec.counts);
    if (!r) {
      spdlog::error("{}: {} stopped: {}", img->name(), to_string(action), r.error().message());
      post(Event::check_finished, img, std::string(to_string(action)) + " stopped: " + r.error().message());
      img->save_scrub(rec);
      return;
    }
    total_chunks = img->total_chunks();
    next = std::min(*r, total_chunks);
    rec.cursor = next;
    img->save_scrub(rec);
    img->set_mismatch_cnt(rec.counts.mismatches);
    img->set_sync_progress(action, next * cs, total_chunks * cs);
    throttle(img, next * cs - done0, t0, st);
  }
  if (next >= total_chunks) {
    rec.in_progress = false;
    rec.cursor = 0;
    rec.last_run = now_s();
    img->save_scrub(rec);
  }
  const ScrubCounts& k = rec.counts;
  spdlog::info("{}: {} {}: mismatch_cnt {} ({} chunks of {}); checked {}, unverified {}, bad primary {}, "
               "bad secondary {}, unrecoverable {}, repaired {}",
               img->name(), to_string(action), next >= total_chunks ? "done" : "interrupted", k.mismatches, next,
               total_chunks, k.checked, k.unverified, k.bad_primary, k.bad_secondary, k.unrecoverable, k.repaired);
  const std::string how = std::string(to_string(action)) + (next >= total_chunks ? " done" : " interrupted");
  post(Event::check_finished, img,
       how + ": mismatch_cnt " + std::to_string(k.mismatches) + " (" + std::to_string(next) + " of " +
           std::to_string(total_chunks) + " chunks)");
  // With checksums the event says which leg was wrong (docs/operations.md, the events).
  if (k.mismatches > 0 || k.bad_primary > 0 || k.bad_secondary > 0 || k.unrecoverable > 0) {
    std::string d = std::to_string(k.mismatches);
    if (k.bad_primary || k.bad_secondary || k.unrecoverable)
      d += " chunks differ between the legs; bad_primary " + std::to_string(k.bad_primary) + ", bad_secondary " +
           std::to_string(k.bad_secondary) + ", unrecoverable " + std::to_string(k.unrecoverable) +
           (repair ? "; repaired " + std::to_string(k.repaired) + " (repair)" : std::string(" (check)"));
    else
      d += repair ? " chunks differed and were rewritten from the primary (repair)"
                  : " chunks differ between the legs (check)";
    post(Event::mismatches_found, img, d);
  }
}

}  // namespace fusemirror::core
