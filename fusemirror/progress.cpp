#include "fusemirror/progress.hpp"

#include <condition_variable>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

namespace fusemirror::fuse {

namespace {
constexpr auto kWindow = std::chrono::seconds(10);  // speed = progress over the last 10 s
}

ProgressTracker& ProgressTracker::instance() {
  static ProgressTracker t;
  return t;
}

void ProgressTracker::start(core::MirrorSet* set, std::chrono::milliseconds period) {
  thread_ = std::jthread([this, set, period](std::stop_token st) {
    std::mutex m;
    std::condition_variable_any cv;
    while (!st.stop_requested()) {
      try {
        (void)augment(set->status_json());
      } catch (...) {
        // a status that does not parse is skipped; the next sample tries again
      }
      std::unique_lock lk(m);
      cv.wait_for(lk, st, period, [] { return false; });
    }
  });
}

void ProgressTracker::stop() { thread_ = {}; }

void ProgressTracker::sample_locked(const std::string& name, const std::string& action,
                                    std::uint64_t done, std::uint64_t total) {
  const auto now = std::chrono::steady_clock::now();
  Track& t = tracks_[name];
  // A new pass: another action, another total, or progress that went backwards.
  if (t.action != action || t.total != total || (!t.samples.empty() && done < t.samples.back().second)) {
    t = Track{action, total, static_cast<std::int64_t>(std::time(nullptr)), {}};
  }
  t.samples.emplace_back(now, done);
  while (t.samples.size() > 2 && now - t.samples.front().first > kWindow) t.samples.pop_front();
}

ProgressTracker::Rate ProgressTracker::rate_locked(const Track& t) const {
  Rate r;
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

std::string ProgressTracker::augment(const std::string& status_json) {
  auto j = nlohmann::json::parse(status_json);
  std::lock_guard lk(mu_);
  std::set<std::string> running;
  for (auto& img : j["images"]) {
    auto& sy = img["sync"];
    const std::string name = img["name"].get<std::string>();
    const std::string action = sy["action"].get<std::string>();
    if (action == "idle") continue;
    running.insert(name);
    sample_locked(name, action, sy["done_bytes"].get<std::uint64_t>(), sy["total_bytes"].get<std::uint64_t>());
    const Rate r = rate_locked(tracks_[name]);
    sy["started"] = r.started;
    sy["speed"] = static_cast<std::uint64_t>(r.speed);
    if (r.eta >= 0) sy["eta_seconds"] = static_cast<std::uint64_t>(r.eta + 0.5);
  }
  std::erase_if(tracks_, [&](const auto& kv) { return !running.count(kv.first); });
  return j.dump(2) + "\n";
}

std::optional<ProgressTracker::Rate> ProgressTracker::rate(const std::string& name) {
  std::lock_guard lk(mu_);
  auto it = tracks_.find(name);
  if (it == tracks_.end()) return std::nullopt;
  return rate_locked(it->second);
}

}  // namespace fusemirror::fuse
