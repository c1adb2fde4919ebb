// core/fresh_hashes.cpp — see fresh_hashes.hpp.
#include "core/fresh_hashes.hpp"

#include <algorithm>

#include "core/chunk_check.hpp"
#include "utils/crash_point.hpp"

namespace fusemirror::core {

std::size_t FreshHashes::default_bound(std::uint64_t chunk_size) {
  const std::uint64_t n = (4ull << 30) / std::max<std::uint64_t>(chunk_size, 1);
  return static_cast<std::size_t>(std::clamp<std::uint64_t>(n, 4096, 1u << 20));
}

std::uint64_t FreshHashes::hash_whole(std::span<const std::byte> data, std::uint64_t off,
                                      std::vector<std::uint64_t>& out) const {
  out.clear();
  const std::uint64_t first = first_whole(off), stop = end_whole(off + data.size());
  if (first >= stop) return first;
  ChunkHasher h;
  for (std::uint64_t c = first; c < stop; ++c) {
    h.reset();
    h.update(data.subspan(static_cast<std::size_t>(c * cs_ - off), static_cast<std::size_t>(cs_)));
    out.push_back(h.entry());
  }
  return first;
}

void FreshHashes::put(std::uint64_t off, std::uint64_t len, std::uint64_t first,
                      const std::vector<std::uint64_t>& hashes) {
  if (len == 0) return;
  std::lock_guard lk(mu_);
  // Every chunk the write touched loses what it had (the edges were written in part: their
  // old entries describe old bytes), then the whole ones take the write's.
  erase_locked(off / cs_, (off + len - 1) / cs_ + 1);
  for (std::size_t i = 0; i < hashes.size() && map_.size() < max_; ++i) map_[first + i] = hashes[i];
  publish_locked();
}

void FreshHashes::forget(std::uint64_t off, std::uint64_t len) {
  if (len == 0 || n_.load(std::memory_order_relaxed) == 0) return;  // the common case: nothing kept
  // Test builds only: FM_FAULT=fresh.keep_on_change keeps the entries a change made stale,
  // so that the power-cut canary shows the suite notices (docs/reliability.md §9).
  if (FM_FAULT_POINT("fresh.keep_on_change")) return;
  std::lock_guard lk(mu_);
  const std::uint64_t last = off + std::min(len, ~off) - 1;  // len may reach past any end
  erase_locked(off / cs_, last / cs_ + 1);
  publish_locked();
}

std::optional<std::uint64_t> FreshHashes::take(std::uint64_t c) {
  if (n_.load(std::memory_order_relaxed) == 0) return std::nullopt;
  std::lock_guard lk(mu_);
  auto it = map_.find(c);
  if (it == map_.end()) return std::nullopt;
  const std::uint64_t e = it->second;
  map_.erase(it);
  publish_locked();
  used_.fetch_add(1, std::memory_order_relaxed);
  return e;
}

void FreshHashes::erase_locked(std::uint64_t first, std::uint64_t end) {
  if (end - first <= map_.size()) {
    for (std::uint64_t c = first; c < end; ++c) map_.erase(c);
    return;
  }
  std::erase_if(map_, [&](const auto& kv) { return kv.first >= first && kv.first < end; });
}

void FreshHashes::publish_locked() {
  // Emptied: its buckets go too (a 2 GiB write's worth is 2.6 MiB of them).
  if (map_.empty()) map_ = {};
  n_.store(map_.size(), std::memory_order_relaxed);
}

}  // namespace fusemirror::core
