#include "utils/thread_pool.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
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

ThreadPool::ThreadPool(unsigned threads) : threads_(threads ? threads : 1) {
  workers_.reserve(threads_);  // start_locked() never reallocates
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::start_locked() noexcept {
  start_threads(workers_, threads_, [this] { run(); }, &warned_, "thread pool",
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
  {
    std::lock_guard lk(mu_);
    // All workers at the first use; when none could start, again at every use.
    if (workers_.empty()) start_locked();
    if (workers_.empty()) return false;
    try {
      queue_.push_back(std::move(task));
    } catch (...) {
      return false;
    }
  }
  cv_.notify_one();
  return true;
}

unsigned ThreadPool::started() const {
  std::lock_guard lk(mu_);
  return static_cast<unsigned>(workers_.size());
}

void ThreadPool::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace fusemirror::utils
