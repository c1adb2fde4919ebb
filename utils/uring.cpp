#include "utils/uring.hpp"

#include <liburing.h>
#include <pthread.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "utils/io.hpp"

namespace fusemirror::utils {
namespace {

std::atomic<bool> g_allowed{true};
std::atomic<std::uint64_t> g_made{0};

// Rings of threads that ended, kept for the next thread that needs one. libfuse ends idle
// request threads and starts new ones as the load comes and goes; making a ring costs
// io_uring_setup and three mappings, and ending one unmaps them, which flushes the TLB of
// every CPU running another of the daemon's threads (an interprocessor interrupt each):
// about 5 % of the daemon's CPU at qd32 before rings were kept (docs/performance.md
// "Thread churn"). A ring is not tied to the thread that made it (no
// IORING_SETUP_SINGLE_ISSUER); each thread that submits gets its own kernel worker pool.
// A process's kept rings are its own: a forked child starts with an empty store (the
// parent's rings are mapped into it too, and the parent's store may have been locked by
// another thread at the fork; both are abandoned there, never used).
class RingStore {
 public:
  static constexpr std::size_t kKeep = 64;  // libfuse's request threads at most (main.cpp)
  // A kept ring, or null.
  io_uring* take() {
    std::lock_guard lk(mu_);
    if (free_.empty()) return nullptr;
    io_uring* r = free_.back();
    free_.pop_back();
    return r;
  }
  // Keeps `r` (a ring of this process with nothing in flight), or closes it.
  void give(io_uring* r) {
    {
      std::lock_guard lk(mu_);
      if (free_.size() < kKeep) {
        free_.push_back(r);
        return;
      }
    }
    io_uring_queue_exit(r);
    delete r;
  }

 private:
  std::mutex mu_;
  std::vector<io_uring*> free_;
};
// One per thread: made (or taken from the store) at the thread's first pwrite_pair, given
// to the store when the thread ends.
struct Ring {
  io_uring* ring = nullptr;
  bool tried = false;
  bool used_last = false;
  ~Ring();
  io_uring* get();
  // Closes this thread's ring; the thread writes with pwrite from now on.
  void drop() {
    io_uring_queue_exit(ring);
    delete ring;
    ring = nullptr;
  }
};
thread_local Ring t_ring;

// Never destroyed: threads may end (and give their rings back) while the process exits.
RingStore* g_store = nullptr;
std::once_flag g_store_once;
// Runs in a forked child, on its only thread, the one that forked. That thread's ring is
// the parent's (its submission queue mapped shared): unmapped and closed here (the
// parent's ring is not affected: mappings and descriptors are per process), and the
// thread makes or takes another at its next write. The store starts empty.
void fresh_rings_in_child() {
  g_store = new RingStore;
  if (t_ring.ring != nullptr) t_ring.drop();
  t_ring.tried = false;
}
// Registers the fork handler before the process's first ring exists.
RingStore& ring_store() {
  std::call_once(g_store_once, [] {
    g_store = new RingStore;
    ::pthread_atfork(nullptr, nullptr, fresh_rings_in_child);
  });
  return *g_store;
}

Ring::~Ring() {
  if (ring != nullptr) ring_store().give(ring);
}

io_uring* Ring::get() {
  if (!tried) {
    tried = true;
    ring = ring_store().take();
    if (ring == nullptr) {
      auto* r = new (std::nothrow) io_uring{};
      if (r != nullptr && io_uring_queue_init(4, r, 0) == 0) {
        ring = r;
        g_made.fetch_add(1, std::memory_order_relaxed);
      } else {
        delete r;
      }
    }
  }
  return ring;
}

// Finishes a write that completed short (or not at all: from == 0) with pwrite.
void finish(int fd, std::span<const std::byte> data, std::uint64_t off, std::size_t from, std::error_code& ec,
            std::size_t& done) {
  std::size_t more = 0;
  ec = pwrite_all(fd, data.subspan(from), off + from, &more);
  done = from + more;
}

}  // namespace

void set_uring_allowed(bool allowed) { g_allowed.store(allowed, std::memory_order_relaxed); }
bool uring_used_last() { return t_ring.used_last; }
std::uint64_t uring_rings_made() { return g_made.load(std::memory_order_relaxed); }

PairWrite pwrite_pair(int fd0, int fd1, std::span<const std::byte> data, std::uint64_t off,
                      const std::function<void()>& meanwhile) {
  PairWrite r;
  const int fds[2] = {fd0, fd1};
  const int n = fd1 >= 0 ? 2 : 1;
  io_uring* ring = g_allowed.load(std::memory_order_relaxed) && !data.empty() ? t_ring.get() : nullptr;
  t_ring.used_last = false;
  int submitted = 0;
  bool ran = false;
  if (ring != nullptr) {
    for (int i = 0; i < n; ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);  // 4 entries, at most 2 queued: never null
      io_uring_prep_write(sqe, fds[i], data.data(), static_cast<unsigned>(data.size()), off);
      io_uring_sqe_set_data64(sqe, static_cast<__u64>(i));
    }
    // Entries are consumed in order: the first `submitted` are in flight.
    submitted = std::max(io_uring_submit(ring), 0);
    if (submitted > 0 && meanwhile) {
      meanwhile();
      ran = true;
    }
    long res[2] = {0, 0};
    for (int k = 0; k < submitted; ++k) {
      io_uring_cqe* cqe = nullptr;
      int w;
      do w = io_uring_wait_cqe(ring, &cqe);
      while (w == -EINTR || w == -EAGAIN || w == -EBUSY);
      if (w < 0) {
        // A write in flight whose completion cannot be read: its buffer cannot be given
        // back, and its result is unknown. Not seen on any kernel; stop rather than guess.
        spdlog::critical("io_uring: cannot read a write's completion: {}", std::strerror(-w));
        std::abort();
      }
      res[io_uring_cqe_get_data64(cqe) & 1] = cqe->res;
      io_uring_cqe_seen(ring, cqe);
    }
    for (int i = 0; i < submitted; ++i) {
      if (res[i] < 0 && res[i] != -EINTR && res[i] != -EAGAIN) {
        r.ec[i] = std::error_code(static_cast<int>(-res[i]), std::generic_category());
        continue;
      }
      const auto got = res[i] < 0 ? std::size_t{0} : static_cast<std::size_t>(res[i]);
      if (got == data.size()) r.done[i] = got;
      else finish(fds[i], data, off, got, r.ec[i], r.done[i]);  // short: the rest with pwrite
    }
    t_ring.used_last = submitted == n;
    if (submitted < n) {
      // The entries not taken would go out with this ring's next submit: the ring goes,
      // with them, and this thread writes with pwrite from now on.
      t_ring.drop();
    }
  }
  for (int i = submitted; i < n; ++i) finish(fds[i], data, off, 0, r.ec[i], r.done[i]);
  if (!ran && meanwhile) meanwhile();
  return r;
}

}  // namespace fusemirror::utils
