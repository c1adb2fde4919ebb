// core/activity_log.cpp — the hot extents of a bitmap, in LRU order; see activity_log.hpp.
#include "core/activity_log.hpp"

#include <algorithm>

namespace fusemirror::core {

void ActivityLog::configure(std::uint64_t extent_chunks, std::uint64_t max_extents) {
  extent_chunks_ = std::max<std::uint64_t>(1, extent_chunks);
  max_ = max_extents;
  lru_.clear();
  index_.clear();
}

ChunkRange ActivityLog::chunks_of(std::uint64_t extent, std::uint64_t limit) const {
  const std::uint64_t first = extent * extent_chunks_;
  if (first >= limit) return {first, first};
  return {first, std::min(limit, first + extent_chunks_)};
}

void ActivityLog::touch(ChunkRange r, const OnExtent& activated, const OnExtent& retired) {
  if (!enabled() || r.empty()) return;
  for (std::uint64_t e = extent_of(r.first); e <= extent_of(r.end - 1); ++e) {
    auto it = index_.find(e);
    if (it != index_.end()) {
      // Most recently written: to the front (no allocation on the hot path).
      lru_.splice(lru_.begin(), lru_, it->second);
      it->second->period = period_;
      continue;
    }
    lru_.push_front(Entry{e, period_});
    index_.emplace(e, lru_.begin());
    activated(e);
  }
  while (index_.size() > max_) {
    const std::uint64_t e = lru_.back().extent;
    index_.erase(e);
    lru_.pop_back();
    retired(e);
  }
}

void ActivityLog::end_period(const OnExtent& retired) {
  // The list is in order of last write: the extents idle for the whole period are at its
  // back, and their periods are all older than the one ending.
  while (!lru_.empty() && lru_.back().period < period_) {
    const std::uint64_t e = lru_.back().extent;
    index_.erase(e);
    lru_.pop_back();
    retired(e);
  }
  ++period_;
}

bool ActivityLog::retire(std::uint64_t extent, const OnExtent& retired) {
  auto it = index_.find(extent);
  if (it == index_.end()) return false;
  lru_.erase(it->second);
  index_.erase(it);
  retired(extent);
  return true;
}

void ActivityLog::retire_all(const OnExtent& retired) {
  while (!lru_.empty()) {
    const std::uint64_t e = lru_.back().extent;
    index_.erase(e);
    lru_.pop_back();
    retired(e);
  }
}

void ActivityLog::drop_past(std::uint64_t chunks) {
  for (auto it = lru_.begin(); it != lru_.end();) {
    if (it->extent * extent_chunks_ >= chunks) {
      index_.erase(it->extent);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

std::uint64_t ActivityLog::memory_bytes() const {
  // A list node (two pointers + the entry) and a hash node (next pointer, key, iterator,
  // cached hash) per extent, plus the bucket array.
  constexpr std::uint64_t kNode = 2 * sizeof(void*) + sizeof(Entry);
  constexpr std::uint64_t kHashNode = sizeof(void*) + sizeof(std::uint64_t) + sizeof(List::iterator) + sizeof(std::size_t);
  if (index_.empty()) return 0;
  return index_.size() * (kNode + kHashNode) + index_.bucket_count() * sizeof(void*);
}

}  // namespace fusemirror::core
