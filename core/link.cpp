#include "core/link.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <vector>

namespace fusemirror::core {

namespace {

using Clock = std::chrono::steady_clock;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

double reconnect_delay(double min_s, double max_s, std::uint32_t tries) {
  const double d = min_s * std::pow(2.0, static_cast<double>(std::min<std::uint32_t>(tries, 64)) - 1);
  return std::clamp(d, min_s, max_s);
}

void LinkKeeper::start() {
  if (min_s_ <= 0) return;
  thread_ = std::jthread([this](std::stop_token st) { main(st); });
}

void LinkKeeper::stop() { thread_ = {}; }

void LinkKeeper::main(std::stop_token st) {
  std::mutex m;
  std::condition_variable_any cv;
  while (!st.stop_requested()) {
    {
      std::unique_lock lk(m);
      cv.wait_for(lk, st, std::chrono::milliseconds(250), [] { return false; });
    }
    if (st.stop_requested()) return;
    tick();
  }
}

void LinkKeeper::tick() {
  if (min_s_ <= 0) return;
  std::lock_guard t(tick_mu_);
  const auto now = Clock::now();
  std::vector<std::shared_ptr<Image>> due;
  {
    std::lock_guard lk(mu_);
    // Back in service (the operator's re-add, or a try below), held, or gone: forgotten.
    std::erase_if(entries_, [](const auto& kv) {
      auto img = kv.second.img.lock();
      return !img || img->secondary_ok() || img->held_out();
    });
    for (auto& img : table_.snapshot()) {
      if (img->secondary_ok() || img->held_out()) continue;
      auto [it, fresh] = entries_.try_emplace(img.get());
      if (fresh) {
        it->second.img = img;
        it->second.since = static_cast<std::int64_t>(std::time(nullptr));
        it->second.next = now + seconds(min_s_);
        spdlog::warn("{}: link to the secondary lost; reconnecting in {} s", img->name(), min_s_);
      } else if (it->second.next <= now) {
        due.push_back(std::move(img));
      }
    }
  }
  // The tries run without mu_ (a try may wait up to secondary_timeout): status() answers
  // meanwhile.
  for (auto& img : due) {
    std::string why;
    const std::error_code ec = reconnect_(img, &why);
    std::lock_guard lk(mu_);
    auto it = entries_.find(img.get());
    if (it == entries_.end()) continue;
    Entry& e = it->second;
    if (!ec) {
      spdlog::info("{}: link to the secondary restored after {} failed tries ({} s down)", img->name(), e.tries,
                   static_cast<std::int64_t>(std::time(nullptr)) - e.since);
      entries_.erase(it);
      continue;
    }
    ++e.tries;
    e.last_error = why.empty() ? ec.message() : why;
    const double wait = reconnect_delay(min_s_, max_s_, e.tries);
    e.next = Clock::now() + seconds(wait);
    spdlog::warn("{}: reconnect try {} failed: {}; next try in {} s", img->name(), e.tries, e.last_error, wait);
  }
}

LinkStatus LinkKeeper::status(const Image& img) const {
  LinkStatus l;
  if (img.secondary_ok()) return l;
  if (img.held_out() || min_s_ <= 0) {
    l.state = LinkStatus::State::down;
    l.reason = img.held_out() ? "held out until re-add (failed by the operator)"
                              : "automatic reconnect off (reconnect_min 0): re-add by hand";
    return l;
  }
  l.state = LinkStatus::State::connecting;
  std::lock_guard lk(mu_);
  if (auto it = entries_.find(&img); it != entries_.end()) {
    l.since = it->second.since;
    l.tries = it->second.tries;
    l.reason = it->second.last_error;
    l.next_try_s = std::max(0.0, std::chrono::duration<double>(it->second.next - Clock::now()).count());
  }
  return l;
}

}  // namespace fusemirror::core
