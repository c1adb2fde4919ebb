// core/write_behind.hpp — the bounded queues of secondary writes in write-behind mode, and
// the set-wide workers that run them.
//
// md's "asynchronous writes ... acknowledged before they reach the secondary": a write is
// acknowledged once the primary holds it and its bits are durable; its data is copied
// into its image's queue and written to the secondary later by a worker. At most `limit`
// writes of one image are outstanding (queued or running); a writer blocks while its
// image's queue is full.
//
// Threads: one WriteBehindExecutor per mirror set owns every write-behind thread — at most
// its `workers` (kDefaultWorkers), however many images there are. A queue with an
// operation that may run puts itself on the executor's ready list (once); a worker takes
// the list's first queue, claims one runnable operation of it, and, if that queue has
// more, puts it back at the end before running the one it took. So images are served
// round-robin, one operation per turn, and one image still gets several workers when it
// alone has work. The workers start at the first submit (images are loaded before the
// daemon forks, and threads do not survive fork()).
//
// Order: an operation never starts while an older operation of the same queue whose byte
// range overlaps it is queued or running, so overlapping writes reach the secondary in
// the order the primary got them; disjoint writes run concurrently.
//
// The lag bound (docs/config.md max_lag_bytes, max_lag_seconds; the secondary's RPO): a
// writer also waits while the outstanding bytes plus its own would pass `max_bytes`, or while
// the oldest outstanding operation is older than `max_seconds` — the way it waits for a full
// queue, so under writes faster than the secondary the backlog stays within the bound and
// the writers go at the secondary's pace. An operation never waits for an empty queue: one
// larger than max_bytes goes alone. The bound does not hold writers while the queue drops
// (the secondary failed: drop_all) or stops; a hung secondary holds them until the image
// degrades (its request timeout), as a full queue does.
//
// Merging: while the queue's runs take `merge_after` or longer (a moving average: the
// secondary is far away or slow) and the queue is backed up (three quarters full, or
// writers held by the lag bound: the secondary sets the pace, not the writers), a worker
// that claims an operation marked `merge` also claims the queued `merge` operations that
// continue it byte for byte (each runnable by the order rule above), up to kMaxMerge bytes,
// and runs them as one: the first one's `run` on an operation holding their data end to
// end. A sequential stream through a loop device arrives in 512 KiB writes (the loop
// queue's 128 segments); over a link with latency L each worker then carries up to
// kMaxMerge instead of 512 KiB per L. Against a fast secondary, or while the writers set
// the pace, the joined copy costs more than the fewer requests save (performance.md
// "WAN"), hence the two conditions; `merge_after` 0 merges whenever a follower is queued.
// Operations marked `merge` in one queue must all write `data` at `off` to the same
// target; each still gets its own `done`, with the merged write's result.
//
// Each operation's `done(ok)` callback runs on a worker once the secondary completed it
// (ok) or it was dropped or failed (!ok): the image ends the write in its bitmap there,
// so a chunk stays dirty until every queued write to it reached the secondary.
//
// Lock order: a WriteBehind's mu_ may be held when taking its executor's mu_, never the
// reverse (workers drop the executor's lock before entering a queue).
//
// Thread safety: all members of both classes may be called concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace fusemirror::core {

class WriteBehind;

class WriteBehindExecutor {
 public:
  // The daemon's write-behind thread bound (docs/design.md, "Threads").
  static constexpr unsigned kDefaultWorkers = 32;

  explicit WriteBehindExecutor(unsigned workers = kDefaultWorkers);
  // Joins the workers. REQUIRES: every queue on this executor was stopped (or abandoned).
  ~WriteBehindExecutor();
  WriteBehindExecutor(const WriteBehindExecutor&) = delete;
  WriteBehindExecutor& operator=(const WriteBehindExecutor&) = delete;

  unsigned max_workers() const { return max_; }
  // Workers running now (0 before the first submit; fewer than max_workers() when
  // thread creation failed).
  unsigned started() const;

 private:
  friend class WriteBehind;
  // Starts the workers at the first use; when none could be started, tries again at the
  // next. Returns whether at least one runs. Never throws.
  bool ensure_started() noexcept;
  // `q` may have a runnable operation: put it on the ready list unless it is there.
  void schedule(WriteBehind* q) noexcept;
  // `q` stops: it is taken off the ready list and never put back; with `wait`, returns
  // once no worker is inside it.
  void detach(WriteBehind* q, bool wait);
  void worker();

  const unsigned max_;
  std::atomic<bool> any_started_{false};  // fast path of ensure_started()
  mutable std::mutex mu_;
  std::condition_variable cv_;        // a queue is ready / stopping
  std::condition_variable left_cv_;   // a worker left a queue (detach waits)
  std::deque<WriteBehind*> ready_;    // guarded by mu_: round-robin order
  bool stopping_ = false;             // guarded by mu_
  bool abandoned_ = false;            // guarded by mu_: a queue left workers stuck inside
  bool warned_ = false;               // guarded by mu_: creation failure logged
  std::vector<std::thread> threads_;  // guarded by mu_ (reserved: never reallocates)
};

// Write-behind's lag bound; 0 = none for either.
struct WriteBehindLagBound {
  std::uint64_t max_bytes = 0;
  double max_seconds = 0;
};

class WriteBehind {
 public:
  struct Op {
    std::uint64_t off = 0;
    std::vector<std::byte> data;
    // Runs the operation against the secondary (a pwrite of `data` unless set).
    std::function<std::error_code(const Op&)> run;
    std::function<void(bool ok)> done;
    // May be merged with the `merge` operations that continue it (see above).
    bool merge = false;
  };
  // The most bytes one merged run carries (an NBD request's bound, core/nbd_leg.cpp).
  static constexpr std::size_t kMaxMerge = 4u << 20;
  // The average run time from which operations are merged (see above).
  static constexpr std::chrono::microseconds kMergeAfter{5000};

  using LagBound = WriteBehindLagBound;
  // What the bound did, for status.
  struct LagStats {
    std::uint64_t bytes = 0;     // data bytes outstanding (queued or running)
    double seconds = 0;          // age of the oldest outstanding operation
    std::uint32_t held_now = 0;  // writers waiting on the bound now
    std::uint64_t holds = 0;     // submits that waited on the bound (cumulative)
    double held_seconds = 0;     // their waiting time, summed (completed waits)
  };

  // REQUIRES: `executor` outlives this queue.
  WriteBehind(WriteBehindExecutor& executor, std::uint32_t limit, LagBound bound = {},
              std::chrono::microseconds merge_after = kMergeAfter);
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // Queues `op`; blocks while `limit` operations are outstanding or the lag bound would be
  // passed (see above). Returns false, with `op`
  // untouched and not queued, when it cannot be queued (no worker thread could be
  // started, or no memory): the caller then writes the secondary itself. After stop(),
  // `op` ends at once as not written (done(false)) and true is returned. Never throws.
  [[nodiscard]] bool submit(Op&& op) noexcept;
  // Blocks until nothing is outstanding, or `timeout_s` passed (returns false then).
  bool drain(double timeout_s);
  // From now on, queued operations are dropped (done(false)) instead of run: the
  // secondary failed and the bitmap keeps what they would have written. Writers held by the
  // lag bound go on (the bound cannot apply to a secondary that is out).
  void drop_all();
  // Re-enables running after drop_all() (re-add).
  void resume();
  // Blocks until no outstanding operation overlaps [off, end).
  void wait_range_idle(std::uint64_t off, std::uint64_t end);
  // Stops: running operations finish, queued ones end as not written (done(false));
  // REQUIRES drain() or drop_all() first if nothing may be lost.
  void stop();
  // After a drain timed out (a hung secondary): stops without waiting for the workers that
  // are stuck in the secondary; queued operations end as not written (their bits stay set).
  // REQUIRES: the process exits soon (unmount).
  void abandon();

  std::uint32_t limit() const { return limit_; }
  std::uint32_t outstanding() const;
  std::uint32_t peak() const;
  // Submits that found the queue full and waited (cumulative).
  std::uint64_t full_waits() const;
  // Operations that ran joined to an older one's run (cumulative: requests saved).
  std::uint64_t merged() const;
  // Seconds since the oldest outstanding operation was queued (0 when none is).
  double lag_seconds() const;
  LagBound lag_bound() const { return bound_; }
  LagStats lag_stats() const;

 private:
  friend class WriteBehindExecutor;
  struct Entry {
    Op op;
    bool running = false;
    std::chrono::steady_clock::time_point queued{};
  };
  // Claims one runnable operation, runs it, retires it. Called by a worker.
  void run_one();
  // Whether a write of `bytes` must wait for the lag bound. REQUIRES mu_.
  bool over_lag_locked(std::size_t bytes) const;
  // The first entry at or after `from` that is not running and overlaps no older entry.
  std::list<Entry>::iterator next_runnable_locked(std::list<Entry>::iterator from);
  // Whether entry `it` overlaps an older entry (or is ordered against every one). REQUIRES mu_.
  bool blocked_locked(std::list<Entry>::iterator it);
  // Claims (marks running) the `merge` entries that continue `it` byte for byte and may run
  // now, up to kMaxMerge bytes in all, in the order they continue it. REQUIRES mu_.
  std::vector<std::list<Entry>::iterator> claim_followers_locked(std::list<Entry>::iterator it);
  // Whether a claim merges now (see "Merging" above). REQUIRES mu_.
  bool merge_now_locked() const;
  // Runs `it` and its claimed followers as one write; false when it could not be merged
  // (no memory for the joined data: the caller runs them one by one).
  static bool run_merged(const std::list<Entry>::iterator& it,
                         const std::vector<std::list<Entry>::iterator>& with, std::error_code& ec);

  WriteBehindExecutor& exec_;
  const std::uint32_t limit_;
  const LagBound bound_;
  const std::chrono::steady_clock::duration merge_after_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // space available / drained / range idle
  std::list<Entry> queue_;      // guarded by mu_: oldest first
  bool dropping_ = false;       // guarded by mu_
  bool stopping_ = false;       // guarded by mu_
  bool abandoned_ = false;      // guarded by mu_
  std::uint32_t peak_ = 0;      // guarded by mu_
  std::uint64_t full_waits_ = 0;  // guarded by mu_
  std::uint64_t merged_ = 0;      // guarded by mu_
  std::uint64_t bytes_ = 0;       // guarded by mu_: data bytes of queue_
  std::uint32_t held_now_ = 0;    // guarded by mu_
  std::uint64_t holds_ = 0;       // guarded by mu_
  std::chrono::steady_clock::duration held_{};  // guarded by mu_
  // Guarded by mu_: the moving average of the runs' durations (1/8 the newest).
  std::chrono::steady_clock::duration run_avg_{};
  // Guarded by exec_.mu_:
  bool in_ready_ = false;  // on the executor's ready list
  bool detached_ = false;  // stopped: never scheduled again
  unsigned inside_ = 0;    // workers in run_one()
};

}  // namespace fusemirror::core
