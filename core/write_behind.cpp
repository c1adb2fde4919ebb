#include "core/write_behind.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <new>

#include "utils/thread_pool.hpp"

namespace fusemirror::core {

// ------------------------------------------------------------------ WriteBehindExecutor

WriteBehindExecutor::WriteBehindExecutor(unsigned workers) : max_(workers ? workers : 1) {
  threads_.reserve(max_);
}

WriteBehindExecutor::~WriteBehindExecutor() {
  bool abandoned = false;
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    abandoned = abandoned_;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    // A worker stuck in a hung secondary would never be joined (the process exits).
    if (abandoned)
      t.detach();
    else
      t.join();
  }
}

unsigned WriteBehindExecutor::started() const {
  std::lock_guard lk(mu_);
  return static_cast<unsigned>(threads_.size());
}

bool WriteBehindExecutor::ensure_started() noexcept {
  if (any_started_.load(std::memory_order_acquire)) return true;
  std::lock_guard lk(mu_);
  // All workers at once, at the first use: a thread limit is met here, never in the
  // middle of a write whose primary leg is done (the caller writes inline then).
  utils::start_threads(threads_, max_, [this] { worker(); }, &warned_, "write-behind",
                "secondary writes are made synchronously");
  if (threads_.empty()) return false;
  any_started_.store(true, std::memory_order_release);
  return true;
}

void WriteBehindExecutor::schedule(WriteBehind* q) noexcept {
  {
    std::lock_guard lk(mu_);
    if (q->in_ready_ || q->detached_) return;
    try {
      ready_.push_back(q);
    } catch (...) {
      // No memory for the list: a worker leaving this queue, or the next submit, puts it
      // on again; the ops wait meanwhile (drain and the queue limit still bound them).
      return;
    }
    q->in_ready_ = true;
  }
  cv_.notify_one();
}

void WriteBehindExecutor::detach(WriteBehind* q, bool wait) {
  std::unique_lock lk(mu_);
  q->detached_ = true;
  if (q->in_ready_) {
    ready_.erase(std::find(ready_.begin(), ready_.end(), q));
    q->in_ready_ = false;
  }
  if (wait)
    left_cv_.wait(lk, [&] { return q->inside_ == 0; });
  else if (q->inside_)
    abandoned_ = true;
}

void WriteBehindExecutor::worker() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stopping_ || !ready_.empty(); });
    if (stopping_) return;
    WriteBehind* q = ready_.front();
    ready_.pop_front();
    q->in_ready_ = false;
    ++q->inside_;  // detach(q, true) waits for this to drop: q stays alive meanwhile
    lk.unlock();
    q->run_one();
    lk.lock();
    if (--q->inside_ == 0) left_cv_.notify_all();
  }
}

// -------------------------------------------------------------------------- WriteBehind

WriteBehind::WriteBehind(WriteBehindExecutor& executor, std::uint32_t limit, LagBound bound,
                         std::chrono::microseconds merge_after)
    : exec_(executor), limit_(limit ? limit : 1), bound_(bound), merge_after_(merge_after) {}

WriteBehind::~WriteBehind() { stop(); }

void WriteBehind::stop() {
  {
    std::lock_guard lk(mu_);
    if (abandoned_) return;  // its stuck workers may still come back: leave it as it is
    stopping_ = true;
  }
  cv_.notify_all();
  // Running operations finish; no worker takes a new one (run_one sees stopping_).
  exec_.detach(this, true);
  // Whatever is left was never written to the secondary: its bits stay set.
  std::list<Entry> left;
  {
    std::lock_guard lk(mu_);
    left.swap(queue_);
    bytes_ = 0;
  }
  cv_.notify_all();
  for (auto& e : left)
    if (e.op.done) e.op.done(false);
}

bool WriteBehind::submit(Op&& op) noexcept {
  // No worker, no queue: an operation queued with nobody to run it would never end.
  if (!exec_.ensure_started()) return false;
  std::unique_lock lk(mu_);
  const std::size_t n = op.data.size();
  if (queue_.size() >= limit_ && !stopping_) ++full_waits_;
  // Held by the lag bound: counted once, and timed for status. Completions (run_one),
  // drop_all and stop wake the waiters; the bound is looked at again each time.
  bool held = false;
  std::chrono::steady_clock::time_point t0;
  cv_.wait(lk, [&] {
    if (stopping_) return true;
    if (queue_.size() >= limit_) return false;
    if (!over_lag_locked(n)) return true;
    if (!held) {
      held = true;
      ++holds_;
      ++held_now_;
      t0 = std::chrono::steady_clock::now();
    }
    return false;
  });
  if (held) {
    --held_now_;
    held_ += std::chrono::steady_clock::now() - t0;
  }
  if (stopping_) {
    lk.unlock();
    if (op.done) op.done(false);
    return true;
  }
  try {
    queue_.emplace_back();  // the only allocation; `op` is untouched if it throws
  } catch (...) {
    return false;
  }
  queue_.back().op = std::move(op);  // noexcept: vector and std::function moves
  queue_.back().queued = std::chrono::steady_clock::now();
  bytes_ += n;
  if (queue_.size() > peak_) peak_ = static_cast<std::uint32_t>(queue_.size());
  lk.unlock();
  exec_.schedule(this);
  return true;
}

bool WriteBehind::over_lag_locked(std::size_t bytes) const {
  // Nothing outstanding: never held (a write larger than the bound goes alone); nor while
  // the queue drops or stops (the secondary is out: nothing would ever release the writer).
  if (queue_.empty() || dropping_ || stopping_) return false;
  if (bound_.max_bytes && bytes_ + bytes > bound_.max_bytes) return true;
  if (bound_.max_seconds > 0 &&
      std::chrono::steady_clock::now() - queue_.front().queued >= std::chrono::duration<double>(bound_.max_seconds))
    return true;
  return false;
}

bool WriteBehind::blocked_locked(std::list<Entry>::iterator it) {
  const std::uint64_t b = it->op.off, e = it->op.off + std::max<std::size_t>(it->op.data.size(), 1);
  for (auto older = queue_.begin(); older != it; ++older) {
    const std::uint64_t ob = older->op.off,
                        oe = older->op.off + std::max<std::size_t>(older->op.data.size(), 1);
    // An op without data (truncate-like, run set) orders against everything.
    if (!older->op.data.size() || !it->op.data.size() || (b < oe && ob < e)) return true;
  }
  return false;
}

std::list<WriteBehind::Entry>::iterator WriteBehind::next_runnable_locked(
    std::list<Entry>::iterator from) {
  for (auto it = from; it != queue_.end(); ++it)
    if (!it->running && !blocked_locked(it)) return it;
  return queue_.end();
}

std::vector<std::list<WriteBehind::Entry>::iterator> WriteBehind::claim_followers_locked(
    std::list<Entry>::iterator it) {
  // One pass per follower: a stream's writes are queued in order, so the next one is
  // usually right behind. A follower never overlaps the run it joins (it starts where the
  // run ends), so the order rule is the same as for running it alone.
  std::vector<std::list<Entry>::iterator> with;
  std::uint64_t end = it->op.off + it->op.data.size();
  std::size_t total = it->op.data.size();
  for (bool found = true; found && total < kMaxMerge;) {
    found = false;
    for (auto f = std::next(it); f != queue_.end(); ++f) {
      if (f->running || !f->op.merge || f->op.off != end || f->op.data.empty() ||
          total + f->op.data.size() > kMaxMerge || blocked_locked(f))
        continue;
      try {
        with.push_back(f);
      } catch (const std::bad_alloc&) {
        return with;  // no memory for the list: what was claimed runs merged, the rest alone
      }
      f->running = true;
      end += f->op.data.size();
      total += f->op.data.size();
      found = true;
      break;
    }
  }
  return with;
}

bool WriteBehind::run_merged(const std::list<Entry>::iterator& it,
                             const std::vector<std::list<Entry>::iterator>& with, std::error_code& ec) {
  Op joined;
  try {
    std::size_t n = it->op.data.size();
    for (const auto& f : with) n += f->op.data.size();
    joined.data.reserve(n);
  } catch (const std::bad_alloc&) {
    return false;
  }
  joined.off = it->op.off;
  joined.data.insert(joined.data.end(), it->op.data.begin(), it->op.data.end());
  for (const auto& f : with) joined.data.insert(joined.data.end(), f->op.data.begin(), f->op.data.end());
  ec = it->op.run(joined);
  return true;
}

void WriteBehind::run_one() {
  std::unique_lock lk(mu_);
  if (stopping_) return;
  auto it = next_runnable_locked(queue_.begin());
  if (it == queue_.end()) return;  // another worker took it
  it->running = true;
  const bool drop = dropping_;
  std::vector<std::list<Entry>::iterator> with;
  if (it->op.merge && !drop && merge_now_locked()) with = claim_followers_locked(it);
  // Round-robin: back on the ready list, behind the other images, if more can run now
  // (the older entries are running or still blocked: the scan goes on after `it`).
  const bool more = next_runnable_locked(std::next(it)) != queue_.end();
  lk.unlock();
  if (more) exec_.schedule(this);
  // The entries stay in the queue, running, until erased below: their data is not touched
  // meanwhile, and younger writes that overlap them wait.
  auto end = [](Entry& e, bool ok) {
    if (e.op.done) e.op.done(ok);
  };
  std::error_code ec;
  bool merged = false;
  const auto t0 = std::chrono::steady_clock::now();
  if (drop) {
    end(*it, false);
  } else if (!with.empty() && run_merged(it, with, ec)) {
    merged = true;
    end(*it, !ec);
    for (const auto& f : with) end(*f, !ec);
  } else {
    end(*it, !it->op.run(it->op));
    for (const auto& f : with) end(*f, !f->op.run(f->op));
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  lk.lock();
  if (!drop) run_avg_ += (took - run_avg_) / 8;
  if (merged) merged_ += with.size();
  bytes_ -= it->op.data.size();
  queue_.erase(it);
  for (const auto& f : with) {
    bytes_ -= f->op.data.size();
    queue_.erase(f);
  }
  // Its end may have unblocked an overlapping younger operation.
  const bool unblocked = !stopping_ && next_runnable_locked(queue_.begin()) != queue_.end();
  lk.unlock();
  cv_.notify_all();
  if (unblocked) exec_.schedule(this);
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
    abandoned_ = true;
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->running) {
        ++it;
      } else {
        bytes_ -= it->op.data.size();
        left.splice(left.end(), queue_, it++);
      }
    }
  }
  cv_.notify_all();
  exec_.detach(this, false);
  for (auto& e : left)
    if (e.op.done) e.op.done(false);
}

bool WriteBehind::drain(double timeout_s) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return queue_.empty(); });
}

void WriteBehind::drop_all() {
  {
    std::lock_guard lk(mu_);
    dropping_ = true;
  }
  cv_.notify_all();  // writers held by the lag bound go on
}

void WriteBehind::resume() {
  std::lock_guard lk(mu_);
  dropping_ = false;
}

std::uint32_t WriteBehind::outstanding() const {
  std::lock_guard lk(mu_);
  return static_cast<uint32_t>(queue_.size());
}

std::uint32_t WriteBehind::peak() const {
  std::lock_guard lk(mu_);
  return peak_;
}

bool WriteBehind::merge_now_locked() const {
  if (merge_after_ == std::chrono::steady_clock::duration::zero()) return true;
  // Slow runs and a backlog: the secondary, not the writers, sets the pace. A queue
  // three quarters full, or writers held by the lag bound, is a backlog; below that the
  // writers are the bottleneck and a merge would only add its copy.
  const bool backlog = queue_.size() * 4 >= std::size_t{limit_} * 3 || held_now_ > 0;
  return backlog && run_avg_ >= merge_after_;
}

std::uint64_t WriteBehind::merged() const {
  std::lock_guard lk(mu_);
  return merged_;
}

std::uint64_t WriteBehind::full_waits() const {
  std::lock_guard lk(mu_);
  return full_waits_;
}

WriteBehind::LagStats WriteBehind::lag_stats() const {
  std::lock_guard lk(mu_);
  LagStats s;
  s.bytes = bytes_;
  if (!queue_.empty())
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - queue_.front().queued).count();
  s.held_now = held_now_;
  s.holds = holds_;
  s.held_seconds = std::chrono::duration<double>(held_).count();
  return s;
}

double WriteBehind::lag_seconds() const {
  std::lock_guard lk(mu_);
  if (queue_.empty()) return 0;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - queue_.front().queued).count();
}

}  // namespace fusemirror::core
