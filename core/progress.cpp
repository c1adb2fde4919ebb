#include "core/progress.hpp"

#include <condition_variable>
#include <ctime>
#include <set>

namespace fusemirror::core {

namespace {
constexpr auto kWindow = std::chrono::seconds(10);  // speed = progress over the last 10 s
}

void ProgressTracker::start(std::function<void()> sample, std::chrono::milliseconds period) {
  thread_ = std::jthread([sample = std::move(sample), period](std::stop_token st) {
    std::mutex m;
    std::condition_variable_any cv;
    while (!st.stop_requested()) {
      sample();
      std::unique_lock lk(m);
      cv.wait_for(lk, st, period, [] { return false; });
    }
  });
}

void ProgressTracker::stop() { thread_ = {}; }

void ProgressTracker::sample_locked(const std::string& name, SyncAction action, std::uint64_t done,
                                    std::uint64_t total) {
  const auto now = std::chrono::steady_clock::now();
  Track& t = tracks_[name];
  // A new pass: another action, another total, or progress that went backwards.
  if (t.action != action || t.total != total || (!t.samples.empty() && done < t.samples.back().second)) {
    t = Track{action, total, static_cast<std::int64_t>(std::time(nullptr)), {}};
  }
  t.samples.emplace_back(now, done);
  while (t.samples.size() > 2 && now - t.samples.front().first > kWindow) t.samples.pop_front();
}

PassRate ProgressTracker::rate_locked(const Track& t) const {
  PassRate r;
  r.started = t.started;
  if (t.samples.size() < 2) return r;
  const auto& [t0, d0] = t.samples.front();
  const auto& [t1, d1] = t.samples.back();
  const double secs = std::chrono::duration<double>(t1 - t0).count();
  if (secs < 0.2) return r;
  r.speed = static_cast<double>(d1 - d0) / secs;
  if (r.speed > 0) r.eta = static_cast<double>(t.total - std::min(t.total, d1)) / r.speed;
  return r;
}

void ProgressTracker::sample(std::vector<ImageStatus>& images) {
  std::lock_guard lk(mu_);
  std::set<std::string> running;
  for (ImageStatus& s : images) {
    if (s.action == SyncAction::idle) continue;
    running.insert(s.name);
    sample_locked(s.name, s.action, s.sync_done_bytes, s.sync_total_bytes);
    s.rate = rate_locked(tracks_[s.name]);
  }
  std::erase_if(tracks_, [&](const auto& kv) { return !running.count(kv.first); });
}

std::optional<PassRate> ProgressTracker::rate(const std::string& name) {
  std::lock_guard lk(mu_);
  auto it = tracks_.find(name);
  if (it == tracks_.end()) return std::nullopt;
  return rate_locked(it->second);
}

}  // namespace fusemirror::core
