// utils/thread_pool.hpp — a fixed pool of worker threads running queued tasks.
// Thread-safe. The threads start on the first submit. A pool used before a fork() (a
// daemon's set opened, and its images loaded, before it daemonizes) is usable in the
// child: threads do not survive a fork, so the child's first call finds the pool's pid
// changed and starts over with a fresh queue, lock, condition variable and workers,
// abandoning the parent's (never joined, never freed: their threads do not exist there,
// and a condition variable whose waiters vanished can swallow a later signal).
// Destruction finishes queued tasks, then joins.
//
// Thread creation can fail (RLIMIT_NPROC, pid_max, cgroup pids.max, no memory): submit()
// never throws for that. The threads that could be started serve the queue; when none
// could, submit() returns false and the caller runs the task itself (creation is retried
// at the next submit).
#pragma once

#include <sys/types.h>

#include <atomic>
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

  // Queues `task`. Returns false, with `task` not queued and never to run, when no worker
  // thread exists and none could be created, or the queue could not grow: the caller runs
  // it inline then. Never throws.
  [[nodiscard]] bool submit(std::function<void()> task) noexcept;

  // Threads running now (at most the constructor's count).
  unsigned started() const;

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> queue;  // guarded by mu
    bool stop = false;                        // guarded by mu
    bool warned = false;                      // guarded by mu: creation failure logged
    std::vector<std::thread> workers;         // guarded by mu (started lazily)
  };
  static void run(State& s);
  // This process's state: a fresh one after a fork (above). Null only when a child could
  // not allocate it (submit() then returns false: the caller runs the task).
  State* state() noexcept;
  // Starts the missing workers, as many as can be. REQUIRES s.mu.
  void start_locked(State& s) noexcept;

  unsigned threads_;
  std::mutex fork_mu_;          // serialises the switch to a fresh state in a child
  std::atomic<State*> st_;
  std::atomic<pid_t> pid_;      // the process st_ belongs to
};

// Starts `fn` on a new std::thread, or returns an empty one when the thread cannot be
// created (std::system_error, or the fault point "thread.create" in test builds).
std::thread try_start_thread(std::function<void()> fn) noexcept;

// Starts threads running `body` until `threads` holds `n` (REQUIRES: capacity reserved for
// `n`, so nothing reallocates or throws) or one cannot be created. The first time it falls
// short (`*warned` false), logs "WHAT: only K of N threads could be started; CONSEQUENCE".
// Returns whether any thread runs.
bool start_threads(std::vector<std::thread>& threads, std::size_t n, const std::function<void()>& body,
                   bool* warned, const char* what, const char* consequence) noexcept;

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
