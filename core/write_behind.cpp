#include "core/write_behind.hpp"

#include <algorithm>
#include <chrono>

namespace fusemirror::core {

WriteBehind::WriteBehind(std::uint32_t limit, unsigned workers)
    : limit_(limit ? limit : 1), nworkers_(workers ? workers : 1) {}

WriteBehind::~WriteBehind() { stop(); }

void WriteBehind::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
  // Whatever is left was never written to the secondary: its bits stay set.
  std::list<Entry> left;
  {
    std::lock_guard lk(mu_);
    left.swap(queue_);
  }
  for (auto& e : left)
    if (e.op.done) e.op.done(false);
}

void WriteBehind::submit(Op op) {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return queue_.size() < limit_ || stopping_; });
  if (stopping_) {
    lk.unlock();
    if (op.done) op.done(false);
    return;
  }
  // Workers start on first use: images are loaded before the daemon forks, and threads
  // do not survive fork().
  if (workers_.empty())
    for (unsigned i = 0; i < nworkers_; ++i) workers_.emplace_back([this] { worker(); });
  queue_.push_back(Entry{std::move(op), false});
  if (queue_.size() > peak_) peak_ = static_cast<std::uint32_t>(queue_.size());
  lk.unlock();
  cv_.notify_all();
}

std::list<WriteBehind::Entry>::iterator WriteBehind::next_runnable_locked() {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->running) continue;
    const std::uint64_t b = it->op.off, e = it->op.off + std::max<std::size_t>(it->op.data.size(), 1);
    bool blocked = false;
    for (auto older = queue_.begin(); older != it; ++older) {
      const std::uint64_t ob = older->op.off,
                          oe = older->op.off + std::max<std::size_t>(older->op.data.size(), 1);
      // An op without data (truncate-like, run set) orders against everything.
      if (!older->op.data.size() || !it->op.data.size() || (b < oe && ob < e)) {
        blocked = true;
        break;
      }
    }
    if (!blocked) return it;
  }
  return queue_.end();
}

void WriteBehind::worker() {
  std::unique_lock lk(mu_);
  for (;;) {
    std::list<Entry>::iterator it;
    cv_.wait(lk, [&] {
      if (stopping_) return true;
      it = next_runnable_locked();
      return it != queue_.end();
    });
    if (stopping_) return;
    it->running = true;
    const bool drop = dropping_;
    lk.unlock();
    bool ok = false;
    if (!drop) {
      std::error_code ec = it->op.run(it->op);
      ok = !ec;
    }
    if (it->op.done) it->op.done(ok);
    lk.lock();
    queue_.erase(it);
    cv_.notify_all();
  }
}

void WriteBehind::wait_range_idle(std::uint64_t off, std::uint64_t end) {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] {
    for (const auto& e : queue_) {
      const std::uint64_t b = e.op.off, x = e.op.off + std::max<std::size_t>(e.op.data.size(), 1);
      if (b < end && off < x) return false;
    }
    return true;
  });
}

void WriteBehind::abandon() {
  std::list<Entry> left;
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->running) {
        ++it;
      } else {
        left.splice(left.end(), queue_, it++);
      }
    }
  }
  cv_.notify_all();
  for (auto& t : workers_) t.detach();
  workers_.clear();
  for (auto& e : left)
    if (e.op.done) e.op.done(false);
}

bool WriteBehind::drain(double timeout_s) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return queue_.empty(); });
}

void WriteBehind::drop_all() {
  std::lock_guard lk(mu_);
  dropping_ = true;
}

void WriteBehind::resume() {
  std::lock_guard lk(mu_);
  dropping_ = false;
}

std::uint32_t WriteBehind::outstanding() const {
  std::lock_guard lk(mu_);
  return static_cast<std::uint32_t>(queue_.size());
}

std::uint32_t WriteBehind::peak() const {
  std::lock_guard lk(mu_);
  return peak_;
}

}  // namespace fusemirror::core
