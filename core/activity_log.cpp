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

std::uint64_t ActivityLog::active_in(std::uint64_t first, std::uint64_t count) const {
  std::uint64_t n = 0;
  for (std::uint64_t e = first; e < first + count; ++e) n += index_.count(e);
  return n;
}

std::uint64_t ActivityLog::pop_lru() {
  const std::uint64_t e = lru_.back().extent;
  index_.erase(e);
  lru_.pop_back();
  return e;
}

void ActivityLog::end_period(const OnExtent& retired) {
  // The list is in order of last write: the extents idle for the whole period are at its
  // back, and their periods are all older than the one ending.
  while (!lru_.empty() && lru_.back().period < period_) retired(pop_lru());
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
  while (!lru_.empty()) retired(pop_lru());
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
