// core/fresh_hashes.hpp — the checksums of chunks that a direct write covered whole, taken
// from the write's own buffer, kept until the sweep records them (docs/write-path.md §9.2,
// "Hashes from the write").
//
// Why: the sweep hashes every chunk whose bit it clears, reading the primary. After a
// buffered write that read hits the page cache; after a direct write (which leaves nothing
// there) it goes to the disk, and competes with the user's own reads: a sequential read
// right after a sequential write ran at 0.59× the plain file's speed (docs/performance.md
// "Direct writes"). A direct write's request thread hashes its buffer while the two leg
// writes are in flight, so the sweep reads nothing for those chunks.
//
// The one rule that keeps an entry true: an entry for chunk c is the hash of what the
// primary holds in c, whenever anyone holding a range lock over c looks. So every change
// to the primary's bytes — every write, truncate, fallocate, repair — calls forget() for
// its range under its range lock before it changes a byte, and only a direct write that
// the primary took whole calls put(), still under its range lock. The entries live in
// memory only: a crash loses them, and the sweep then reads, as it always did; nothing
// durable depends on them.
//
// Bounded: at most `max_entries` (a write past the bound leaves its chunks to be read).
// Thread safety: every member may be called concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace fusemirror::core {

class FreshHashes {
 public:
  // The default bound: 4 GiB of chunks, between 4,096 and 1,048,576 entries (about 40 bytes
  // each: at most ~40 MiB, 2.6 MiB at the default 64 KiB chunks).
  static std::size_t default_bound(std::uint64_t chunk_size);

  FreshHashes(std::uint64_t chunk_size, std::size_t max_entries)
      : cs_(chunk_size), max_(max_entries) {}

  // Whether [off, off + len) covers at least one chunk whole.
  bool covers_whole(std::uint64_t off, std::uint64_t len) const { return first_whole(off) < end_whole(off + len); }
  // Pure, no lock: the entries (core/chunk_check.hpp's hash) of the chunks that
  // [off, off + data.size()) covers whole, in order, into `out`; returns the first one's
  // index (none: out is empty).
  std::uint64_t hash_whole(std::span<const std::byte> data, std::uint64_t off, std::vector<std::uint64_t>& out) const;

  // REQUIRES: the range lock over [off, off + len), the primary holding those bytes
  // (written whole). The chunks it covers whole take `hashes` (from hash_whole(), for
  // chunks first...); any other chunk it touches is forgotten.
  void put(std::uint64_t off, std::uint64_t len, std::uint64_t first, const std::vector<std::uint64_t>& hashes);
  // REQUIRES: the range lock over [off, off + len) (len may reach past any end). Before any
  // byte of the primary in the range changes.
  void forget(std::uint64_t off, std::uint64_t len);
  // The entry of chunk c, removed (the sweep, under c's range lock).
  std::optional<std::uint64_t> take(std::uint64_t c);

  std::size_t size() const { return n_.load(std::memory_order_relaxed); }
  // Chunks whose sweep took their hash from here instead of reading the primary.
  std::uint64_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  // The chunks a range [off, end) covers whole: [first_whole(off), end_whole(end)).
  std::uint64_t first_whole(std::uint64_t off) const { return (off + cs_ - 1) / cs_; }
  std::uint64_t end_whole(std::uint64_t end) const { return end / cs_; }
  void erase_locked(std::uint64_t first, std::uint64_t end);  // chunks [first, end)
  void publish_locked();

  const std::uint64_t cs_;
  const std::size_t max_;
  std::mutex mu_;
  std::unordered_map<std::uint64_t, std::uint64_t> map_;  // chunk -> entry; guarded by mu_
  std::atomic<std::size_t> n_{0};       // map_.size(), read without the lock
  std::atomic<std::uint64_t> used_{0};
};

}  // namespace fusemirror::core
