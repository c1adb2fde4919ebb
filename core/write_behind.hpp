// core/write_behind.hpp — the bounded queue of secondary writes in write-behind mode.
//
// md's "asynchronous writes ... acknowledged before they reach the secondary": a write is
// acknowledged once the primary holds it and its bits are durable; its data is copied
// into the queue and written to the secondary by a few worker threads. At most `limit`
// writes are outstanding (queued or running); a writer blocks while the queue is full.
//
// Order: an operation never starts while an older operation whose byte range overlaps
// it is queued or running, so overlapping writes reach the secondary in the order the
// primary got them; disjoint writes run concurrently.
//
// Each operation's `done(ok)` callback runs on a worker once the secondary completed it
// (ok) or it was dropped or failed (!ok): the image ends the write in its bitmap there,
// so a chunk stays dirty until every queued write to it reached the secondary.
//
// Thread safety: all members may be called concurrently.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace fusemirror::core {

class WriteBehind {
 public:
  struct Op {
    std::uint64_t off = 0;
    std::vector<std::byte> data;
    // Runs the operation against the secondary (a pwrite of `data` unless set).
    std::function<std::error_code(const Op&)> run;
    std::function<void(bool ok)> done;
  };

  WriteBehind(std::uint32_t limit, unsigned workers);
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // Queues `op`; blocks while `limit` operations are outstanding.
  void submit(Op op);
  // Blocks until nothing is outstanding, or `timeout_s` passed (returns false then).
  bool drain(double timeout_s);
  // From now on, queued operations are dropped (done(false)) instead of run: the
  // secondary failed and the bitmap keeps what they would have written.
  void drop_all();
  // Re-enables running after drop_all() (re-add).
  void resume();
  // Blocks until no outstanding operation overlaps [off, end).
  void wait_range_idle(std::uint64_t off, std::uint64_t end);
  // Stops the workers; REQUIRES drain() or drop_all() first if nothing may be lost.
  void stop();
  // After a drain timed out (a hung secondary): stops without joining the workers that are
  // stuck in the secondary; queued operations end as not written (their bits stay set).
  // REQUIRES: the process exits soon (unmount).
  void abandon();

  std::uint32_t limit() const { return limit_; }
  std::uint32_t outstanding() const;
  std::uint32_t peak() const;

 private:
  struct Entry {
    Op op;
    bool running = false;
  };
  void worker();
  std::list<Entry>::iterator next_runnable_locked();

  const std::uint32_t limit_;
  mutable std::mutex mu_;
  std::condition_variable cv_;        // work available / space available / drained
  std::list<Entry> queue_;            // guarded by mu_: oldest first
  bool dropping_ = false;             // guarded by mu_
  bool stopping_ = false;             // guarded by mu_
  std::uint32_t peak_ = 0;            // guarded by mu_
  const unsigned nworkers_;
  std::vector<std::thread> workers_;  // guarded by mu_ (started on first submit)
};

}  // namespace fusemirror::core
