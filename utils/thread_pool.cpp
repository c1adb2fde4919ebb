#include "utils/thread_pool.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cerrno>
#include <new>
#include <system_error>

#include "utils/crash_point.hpp"

namespace fusemirror::utils {

std::thread try_start_thread(std::function<void()> fn) noexcept {
  try {
    if (FM_FAULT_POINT("thread.create"))
      throw std::system_error(EAGAIN, std::generic_category(), "fault point thread.create");
    return std::thread(std::move(fn));
  } catch (...) {
    return {};
  }
}

ThreadPool::ThreadPool(unsigned threads)
    : threads_(threads ? threads : 1), st_(new State), pid_(::getpid()) {
  st_.load()->workers.reserve(threads_);  // start_locked() never reallocates
}

ThreadPool::~ThreadPool() {
  State* s = st_.load();
  // In a forked child that never used the pool, s is the parent's: its threads are not
  // here to join (abandoned, as state() would).
  if (pid_.load() != ::getpid()) return;
  {
    std::lock_guard lk(s->mu);
    s->stop = true;
  }
  s->cv.notify_all();
  for (auto& t : s->workers) t.join();
  delete s;
}

ThreadPool::State* ThreadPool::state() noexcept {
  const pid_t me = ::getpid();
  if (pid_.load(std::memory_order_acquire) == me) return st_.load(std::memory_order_acquire);
  std::lock_guard lk(fork_mu_);
  if (pid_.load(std::memory_order_acquire) != me) {
    // Forked since this state was made: its workers, and whatever they held, stayed in the
    // parent. Its tasks were queued by the parent's threads (on their stacks): dropped.
    State* fresh = new (std::nothrow) State;
    if (!fresh) return nullptr;
    try {
      fresh->workers.reserve(threads_);
    } catch (...) {
      delete fresh;
      return nullptr;
    }
    st_.store(fresh, std::memory_order_release);  // the old one is leaked on purpose
    pid_.store(me, std::memory_order_release);
  }
  return st_.load(std::memory_order_acquire);
}

void ThreadPool::start_locked(State& s) noexcept {
  start_threads(s.workers, threads_, [&s] { run(s); }, &s.warned, "thread pool",
                "secondary legs run on the caller's thread");
}

bool start_threads(std::vector<std::thread>& threads, std::size_t n, const std::function<void()>& body,
                   bool* warned, const char* what, const char* consequence) noexcept {
  while (threads.size() < n) {
    std::thread t = try_start_thread(body);
    if (!t.joinable()) break;
    threads.push_back(std::move(t));  // reserved: cannot throw
  }
  if (threads.size() < n && !*warned) {
    *warned = true;
    try {
      spdlog::warn("{}: only {} of {} threads could be started; {}", what, threads.size(), n,
                   threads.empty() ? consequence : "the others are not retried");
    } catch (...) {
    }
  }
  return !threads.empty();
}

bool ThreadPool::submit(std::function<void()> task) noexcept {
  State* s = state();
  if (!s) return false;
  {
    std::lock_guard lk(s->mu);
    // All workers at the first use; when none could start, again at every use.
    if (s->workers.empty()) start_locked(*s);
    if (s->workers.empty()) return false;
    try {
      s->queue.push_back(std::move(task));
    } catch (...) {
      return false;
    }
  }
  s->cv.notify_one();
  return true;
}

unsigned ThreadPool::started() const {
  if (pid_.load(std::memory_order_acquire) != ::getpid()) return 0;  // forked, not used since
  State* s = st_.load(std::memory_order_acquire);
  std::lock_guard lk(s->mu);
  return static_cast<unsigned>(s->workers.size());
}

void ThreadPool::run(State& s) {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lk(s.mu);
      s.cv.wait(lk, [&] { return s.stop || !s.queue.empty(); });
      if (s.queue.empty()) return;
      task = std::move(s.queue.front());
      s.queue.pop_front();
    }
    task();
  }
}

}  // namespace fusemirror::utils
