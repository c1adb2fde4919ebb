// core/bitmap_pages.hpp — the bits of a write-intent bitmap, stored sparsely by page.
//
// Owns: the page map and the six bit vectors each page may hold, the count of set bits
// per vector, and the memory they take. It knows nothing of the file, of generations or
// of the md rules: Bitmap (core/bitmap.hpp) decides which bits to set and clear, and
// BitmapCommit (core/bitmap_commit.hpp) writes the dirty vector to the file.
//
// Memory (docs/reliability.md §8): the vectors are sparse, by 4 KiB bitmap page (32768 chunks, one
// page of the file), as md allocates its counter pages lazily. A page exists only while
// one of its vectors has a set bit or it is queued for a flush; within a page each vector's
// 4 KiB of words exists only while it has a set bit (tidy() frees what is left at zero;
// nothing else frees, so a clear inside a queued page never loses the page the flush will
// write). Ordered by page index, so next_set() skips absent pages.
//
// The vectors: dirty (the bits the file holds), recent (written this sweep period),
// unsynced (waiting for resync), ondisk (bits known to be 1 on disk *and* in every page
// image a pending flush may still write — see set_durable()), active (chunks of an extent
// of the activity log: never cleared by a sweep) and logged (set by the activity log alone:
// clean when their extent was activated and not written since — core/activity_log.hpp).
//
// Thread safety: none of its own. Every member REQUIRES the owning Bitmap's mutex held.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace fusemirror::core {

struct ChunkRange {
  std::uint64_t first = 0;  // first chunk
  std::uint64_t end = 0;    // one past the last chunk
  bool empty() const { return first >= end; }
};

inline constexpr std::uint64_t kBitsPerPage = 4096 * 8;

// Pages needed to hold `chunks` bits.
inline std::uint64_t pages_for(std::uint64_t chunks) {
  return (chunks + kBitsPerPage - 1) / kBitsPerPage;
}

class BitmapPages {
 public:
  static constexpr std::size_t kWords = 4096 / 8;  // words per bitmap page
  using Words = std::array<std::uint64_t, kWords>;
  // Some bits of some pages, by page index (see less()).
  using Snapshot = std::vector<std::pair<std::uint64_t, Words>>;
  enum Vec : unsigned { kDirty, kRecent, kUnsynced, kOndisk, kActive, kLogged, kVecs };
  // A set of vectors, as a mask: vecs(kRecent) | vecs(kUnsynced).
  static constexpr unsigned vecs(Vec k) { return 1u << k; }

  struct Page {
    std::array<std::unique_ptr<Words>, kVecs> v;  // absent vector: all zero
    // The group commit's tags, kept here to need one lookup (BitmapCommit sets them);
    // the store reads only `queued`: a queued page is never freed.
    std::uint64_t gen = 0;  // generation of its last change
    bool queued = false;    // listed in the commit's dirty page queue
  };

  Page* find(std::uint64_t p) {
    auto it = pages_.find(p);
    return it == pages_.end() ? nullptr : &it->second;
  }
  const Page* find(std::uint64_t p) const {
    auto it = pages_.find(p);
    return it == pages_.end() ? nullptr : &it->second;
  }
  // Page p, created (empty) when absent.
  Page& page(std::uint64_t p) { return pages_[p]; }
  // Calls f(p) for every page held, in order. f may create or change pages, never erase.
  void for_each_index(const std::function<void(std::uint64_t)>& f) const {
    for (const auto& [p, pg] : pages_) f(p);
  }

  bool test(Vec k, std::uint64_t c) const;
  // ORs [r.first, r.end) into vector k (creating what it needs); returns bits newly set.
  // `changed` (when given) is called, in page order, for each page that gained a bit.
  std::uint64_t set_range(Vec k, ChunkRange r,
                          const std::function<void(std::uint64_t)>& changed = nullptr);
  bool all_set(Vec k, ChunkRange r) const;
  bool any_set(Vec k, ChunkRange r) const;
  // Clears bit c of vector k; true when it was set. Frees nothing (see tidy()).
  bool clear(Vec k, std::uint64_t c);
  // Clears the bits of r in vector k; returns how many were set. Frees nothing.
  std::uint64_t clear_range(Vec k, ChunkRange r);
  // Vector k of page p becomes `w` (nothing is allocated when w is all zero).
  // REQUIRES: vector k of page p absent.
  void load(Vec k, std::uint64_t p, const Words& w);
  // Vector `to` becomes a copy of vector `from`, on every page.
  void copy(Vec from, Vec to);
  // Vector k is cleared everywhere, its words freed; then every page left with no dirty
  // and no unsynced vector and not queued is tidied.
  void reset(Vec k);
  // Drops every bit at or past chunk `chunks`: pages wholly past it are freed, queued or
  // not. True when the page holding `chunks` kept part of its bits and lost a dirty one
  // (its file image has to be rewritten).
  bool drop_past(std::uint64_t chunks);
  // Frees page p's all-zero vectors, and the page when nothing is left and not queued.
  void tidy(std::uint64_t p);

  // The first bit of vector k at or past `from` and below `limit`, or `limit` when none.
  std::uint64_t next_set(Vec k, std::uint64_t from, std::uint64_t limit) const;
  // Words [first_word, first_word + out.size()) of vector k (64 chunks a word, counted
  // from chunk 0), zeros where absent: a window that need not align with the pages.
  void copy_words(Vec k, std::uint64_t first_word, std::span<std::uint64_t> out) const;
  // For each page with a bit of vector k outside the vectors of `minus`: those bits.
  Snapshot less(Vec k, unsigned minus) const;
  // Calls f(chunk) for every bit of `snap` (a result of less()) still set in vector k and
  // still outside the vectors of `minus`. f may clear bits; it may not erase pages.
  void for_each_still(const Snapshot& snap, Vec k, unsigned minus,
                      const std::function<void(std::uint64_t)>& f) const;

  // Page p's dirty vector as the 4096 bytes of the file's page (zeros when absent).
  std::vector<std::byte> image(std::uint64_t p) const;
  // `image` (from image(p)) is durable in the file: ondisk |= image & dirty, so a bit
  // cleared in memory since the snapshot stays clear there.
  void set_durable(std::uint64_t p, const std::vector<std::byte>& image);
  // The newest `gen` among the pages held in r (non-empty); 0 when none.
  std::uint64_t max_gen(ChunkRange r) const;

  std::uint64_t count(Vec k) const { return count_[k]; }
  std::uint64_t pages() const { return pages_.size(); }
  // Heap bytes held: map nodes and allocated vectors.
  std::uint64_t memory_bytes() const;

 private:
  std::map<std::uint64_t, Page> pages_;
  std::uint64_t vectors_ = 0;                 // allocated Words, for memory_bytes
  std::array<std::uint64_t, kVecs> count_{};  // set bits per vector
};

}  // namespace fusemirror::core
