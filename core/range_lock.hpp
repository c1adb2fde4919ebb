// core/range_lock.hpp — exclusive locks on byte ranges of one image.
//
// Overlapping writes, truncates, fallocates and resync copies hold the lock on their
// range while they touch either leg, so both legs apply overlapping changes in the same
// order (md gets this from the block layer's request ordering; a file system does not).
// Thread-safe. Not re-entrant: a holder must not lock an overlapping range again.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

namespace fusemirror::core {

class RangeLock {
 public:
  static constexpr std::uint64_t kEnd = std::numeric_limits<std::uint64_t>::max();

  class Guard {
   public:
    Guard(RangeLock* l, std::uint64_t id) : l_(l), id_(id) {}
    Guard(Guard&& o) noexcept : l_(o.l_), id_(o.id_) { o.l_ = nullptr; }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() {
      if (l_) l_->unlock(id_);
    }

   private:
    RangeLock* l_;
    std::uint64_t id_;
  };

  // Blocks until [begin, end) overlaps no held range, then holds it.
  Guard lock(std::uint64_t begin, std::uint64_t end) {
    std::unique_lock lk(mu_);
    if (end <= begin) end = begin + 1;
    cv_.wait(lk, [&] {
      for (const auto& h : held_)
        if (begin < h.end && h.begin < end) return false;
      return true;
    });
    const std::uint64_t id = ++next_id_;
    held_.push_back({begin, end, id});
    return Guard(this, id);
  }

 private:
  struct Held {
    std::uint64_t begin, end, id;
  };
  void unlock(std::uint64_t id) {
    {
      std::lock_guard lk(mu_);
      for (auto it = held_.begin(); it != held_.end(); ++it)
        if (it->id == id) {
          held_.erase(it);
          break;
        }
    }
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Held> held_;  // guarded by mu_
  std::uint64_t next_id_ = 0;  // guarded by mu_
};

}  // namespace fusemirror::core
