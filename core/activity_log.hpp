// core/activity_log.hpp — the activity log of a write-intent bitmap: which extents are hot.
//
// DRBD's activity log, fitted to md's bitmap (docs/write-path.md §3b). The image is cut
// into extents of `extent_chunks` chunks (config al_extent_size, default 4 MiB). When a
// write needs a bitmap flush anyway (its chunk's bit is clear), Bitmap sets the bits of its
// whole extent in that flush and the extent becomes *active*: later writes to any chunk of
// it find their bit durably set and need no flush, and the sweep never clears a bit of an
// active extent. At most `max_extents` (config al_extents) are active; this unit owns that
// set and its order:
//
//   * touch(r): every write (hot path included) makes the extents holding its chunks the
//     most recently written; an extent that was not active is activated (callback); when
//     the set exceeds its bound, the least recently written extents are retired (callback);
//   * end_period(): called by each sweep — an extent no write touched during the whole
//     period that just ended retires. So an idle image converges to a clean bitmap exactly
//     as fast as without the log (md's two sweeps), and its checksums get recorded;
//   * retire_all(): clean close;
//   * adopt(e): activates an extent no write touched yet, only while the set has room —
//     a cold burst's or a dense group's neighbours (docs/write-path.md §3b
//     "Activation in a burst").
//
// What activation and retirement do to the bits is Bitmap's business (core/bitmap.cpp):
// this unit knows extents and their order only — no file, no bits, no md rules.
//
// Memory: one list node and one hash entry per active extent (about 80 bytes): 80 KiB at
// the default bound of 1024 extents.
//
// Thread safety: none of its own. Every member REQUIRES the owning Bitmap's mutex held.
#pragma once

#include <cstdint>
#include <functional>
#include <iterator>
#include <list>
#include <unordered_map>

#include "core/bitmap_pages.hpp"

namespace fusemirror::core {

class ActivityLog {
 public:
  using OnExtent = std::function<void(std::uint64_t extent)>;
  // Extents per aligned group that a cold burst activates together (Bitmap::al_adopt_locked).
  static constexpr std::uint64_t kBurstGroup = 64;
  // Active extents of a group from which a writer alone activates the rest (a dense group):
  // a quarter, so that an adoption at most quadruples what a power cut resyncs there.
  static constexpr std::uint64_t kDenseAt = kBurstGroup / 4;

  // `max_extents` 0: the log is off (md's rules alone). `extent_chunks` >= 1.
  void configure(std::uint64_t extent_chunks, std::uint64_t max_extents);
  bool enabled() const { return max_ != 0; }
  std::uint64_t extent_chunks() const { return extent_chunks_; }
  std::uint64_t max_extents() const { return max_; }
  std::uint64_t active() const { return index_.size(); }
  bool is_active(std::uint64_t extent) const { return index_.count(extent) != 0; }
  // How many of the `count` extents from `first` on are active.
  std::uint64_t active_in(std::uint64_t first, std::uint64_t count) const;

  std::uint64_t extent_of(std::uint64_t chunk) const { return chunk / extent_chunks_; }
  // The chunks of `extent`, cut at `limit` (the cover); empty past it.
  ChunkRange chunks_of(std::uint64_t extent, std::uint64_t limit) const;

  // The extents holding the chunks of r (non-empty) become the most recently written, in
  // this period. `activated(e)` is called for each of them that was not active, then
  // `retired(e)` for each extent pushed out beyond the bound, least recently written first
  // (an extent of r itself only when r spans more extents than the bound).
  // A template: it runs on every write, and a std::function of the caller's lambdas would
  // allocate each time.
  template <class Activated, class Retired>
  void touch(ChunkRange r, Activated&& activated, Retired&& retired) {
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
    while (index_.size() > max_) retired(pop_lru());
  }
  // Extent `e` becomes active ahead of any write into it, when it is not active and the set
  // has room: it never pushes another extent out. It goes to the back of the order, as if
  // last written in the period before this one: the first to go when the set is over its
  // bound, and retired when this period ends unless a write touches it first (end_period
  // needs only that every extent of the current period is in front of every older one).
  // `activated(e)` is called; true when it was activated.
  template <class Activated>
  bool adopt(std::uint64_t e, Activated&& activated) {
    if (!enabled() || index_.size() >= max_ || index_.count(e) != 0) return false;
    lru_.push_back(Entry{e, period_ == 0 ? 0 : period_ - 1});
    index_.emplace(e, std::prev(lru_.end()));
    activated(e);
    return true;
  }
  // A sweep period ended: every extent not touched during it is retired (`retired(e)`).
  void end_period(const OnExtent& retired);
  // Retires `extent` now when it is active (`retired(e)`); true when it was.
  bool retire(std::uint64_t extent, const OnExtent& retired);
  // Retires every active extent.
  void retire_all(const OnExtent& retired);
  // The cover shrank to `chunks`: extents wholly past it are forgotten (their bits were
  // dropped with the pages), without a callback.
  void drop_past(std::uint64_t chunks);

  std::uint64_t memory_bytes() const;

 private:
  // Removes the least recently written extent (REQUIRES: one is active); returns it.
  std::uint64_t pop_lru();

  struct Entry {
    std::uint64_t extent = 0;
    std::uint64_t period = 0;  // the period of its last write
  };
  using List = std::list<Entry>;
  List lru_;  // front: most recently written
  std::unordered_map<std::uint64_t, List::iterator> index_;
  std::uint64_t extent_chunks_ = 1;
  std::uint64_t max_ = 0;
  std::uint64_t period_ = 0;
};

}  // namespace fusemirror::core
