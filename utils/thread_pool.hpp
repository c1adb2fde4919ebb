// utils/thread_pool.hpp — a fixed pool of worker threads running queued tasks.
// Thread-safe. The threads start on the first submit (so a pool made before a daemon's
// fork() is usable after it). Destruction finishes queued tasks, then joins.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fusemirror::utils {

class ThreadPool {
 public:
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void submit(std::function<void()> task);

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stop_ = false;                        // guarded by mu_
  unsigned threads_;
  std::vector<std::thread> workers_;         // guarded by mu_ (started lazily)
};

// A one-shot completion flag a submitter waits on.
class Completion {
 public:
  void done() {
    std::lock_guard lk(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace fusemirror::utils
