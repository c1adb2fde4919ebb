// core/bitmap_pages.cpp — sparse bit storage by page; see bitmap_pages.hpp.
#include "core/bitmap_pages.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace fusemirror::core {

static_assert(std::endian::native == std::endian::little,
              "bit words are copied to the file as little-endian bytes");

namespace {

using Words = BitmapPages::Words;

std::uint64_t popcount(std::uint64_t x) { return static_cast<std::uint64_t>(std::popcount(x)); }

// Calls f(page, first word, last word + 1, mask of the first word, mask of the last word)
// for every page touched by the chunk range r (non-empty).
template <typename F>
void for_pages(ChunkRange r, F&& f) {
  for (std::uint64_t p = r.first / kBitsPerPage; p * kBitsPerPage < r.end; ++p) {
    const std::uint64_t lo = std::max(r.first, p * kBitsPerPage) - p * kBitsPerPage;
    const std::uint64_t hi = std::min(r.end, (p + 1) * kBitsPerPage) - p * kBitsPerPage;  // > lo
    const std::size_t w0 = lo / 64, w1 = (hi - 1) / 64 + 1;
    const std::uint64_t m0 = ~0ull << (lo % 64);
    const std::uint64_t m1 = (hi % 64) ? ((1ull << (hi % 64)) - 1) : ~0ull;
    f(p, w0, w1, m0, m1);
  }
}
inline std::uint64_t mask_of(std::size_t i, std::size_t w0, std::size_t w1, std::uint64_t m0,
                             std::uint64_t m1) {
  std::uint64_t m = ~0ull;
  if (i == w0) m &= m0;
  if (i + 1 == w1) m &= m1;
  return m;
}

// Word i of pg's vector k less the words of the vectors in `minus`.
std::uint64_t word_less(const BitmapPages::Page& pg, BitmapPages::Vec k, unsigned minus,
                        std::size_t i) {
  if (!pg.v[k]) return 0;
  std::uint64_t x = (*pg.v[k])[i];
  for (unsigned j = 0; j < BitmapPages::kVecs; ++j)
    if ((minus & (1u << j)) && pg.v[j]) x &= ~(*pg.v[j])[i];
  return x;
}

}  // namespace

bool BitmapPages::test(Vec k, std::uint64_t c) const {
  const Page* pg = find(c / kBitsPerPage);
  if (!pg || !pg->v[k]) return false;
  const std::uint64_t i = c % kBitsPerPage;
  return ((*pg->v[k])[i / 64] >> (i % 64)) & 1;
}

std::uint64_t BitmapPages::set_range(Vec k, ChunkRange r,
                                     const std::function<void(std::uint64_t)>& changed) {
  if (r.empty()) return 0;
  std::uint64_t added = 0;
  for_pages(
      r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
        Page& pg = pages_[p];
        if (!pg.v[k]) {
          pg.v[k] = std::make_unique<Words>(Words{});
          ++vectors_;
        }
        Words& w = *pg.v[k];
        std::uint64_t page_added = 0;
        for (std::size_t i = w0; i < w1; ++i) {
          const std::uint64_t m = mask_of(i, w0, w1, m0, m1);
          page_added += popcount(m & ~w[i]);
          w[i] |= m;
        }
        added += page_added;
        if (changed && page_added) changed(p);
      });
  count_[k] += added;
  return added;
}

bool BitmapPages::all_set(Vec k, ChunkRange r) const {
  if (r.empty()) return true;
  bool all = true;
  for_pages(
      r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
        if (!all) return;
        const Page* pg = find(p);
        if (!pg || !pg->v[k]) {
          all = false;
          return;
        }
        for (std::size_t i = w0; i < w1 && all; ++i) {
          const std::uint64_t m = mask_of(i, w0, w1, m0, m1);
          all = ((*pg->v[k])[i] & m) == m;
        }
      });
  return all;
}

bool BitmapPages::any_set(Vec k, ChunkRange r) const {
  if (r.empty()) return false;
  bool any = false;
  for_pages(
      r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
        if (any) return;
        const Page* pg = find(p);
        if (!pg || !pg->v[k]) return;
        for (std::size_t i = w0; i < w1 && !any; ++i)
          any = ((*pg->v[k])[i] & mask_of(i, w0, w1, m0, m1)) != 0;
      });
  return any;
}

std::uint64_t BitmapPages::clear_range(Vec k, ChunkRange r) {
  if (r.empty() || count_[k] == 0) return 0;
  std::uint64_t gone = 0;
  for_pages(
      r, [&](std::uint64_t p, std::size_t w0, std::size_t w1, std::uint64_t m0, std::uint64_t m1) {
        Page* pg = find(p);
        if (!pg || !pg->v[k]) return;
        Words& w = *pg->v[k];
        for (std::size_t i = w0; i < w1; ++i) {
          const std::uint64_t m = mask_of(i, w0, w1, m0, m1);
          gone += popcount(m & w[i]);
          w[i] &= ~m;
        }
      });
  count_[k] -= gone;
  return gone;
}

bool BitmapPages::clear(Vec k, std::uint64_t c) {
  Page* pg = find(c / kBitsPerPage);
  if (!pg || !pg->v[k]) return false;
  const std::uint64_t i = c % kBitsPerPage, m = 1ull << (i % 64);
  std::uint64_t& w = (*pg->v[k])[i / 64];
  if (!(w & m)) return false;
  w &= ~m;
  --count_[k];
  return true;
}

void BitmapPages::load(Vec k, std::uint64_t p, const Words& w) {
  std::uint64_t n_set = 0;
  for (auto x : w) n_set += popcount(x);
  if (!n_set) return;
  pages_[p].v[k] = std::make_unique<Words>(w);
  ++vectors_;
  count_[k] += n_set;
}

void BitmapPages::copy(Vec from, Vec to) {
  for (auto& [p, pg] : pages_) {
    if (pg.v[to]) --vectors_;
    pg.v[to].reset();
    if (pg.v[from]) {
      pg.v[to] = std::make_unique<Words>(*pg.v[from]);
      ++vectors_;
    }
  }
  count_[to] = count_[from];
}

void BitmapPages::reset(Vec k) {
  std::vector<std::uint64_t> idle;
  for (auto& [p, pg] : pages_) {
    if (pg.v[k]) {
      pg.v[k].reset();
      --vectors_;
    }
    if (!pg.v[kDirty] && !pg.v[kUnsynced] && !pg.queued) idle.push_back(p);
  }
  count_[k] = 0;
  for (auto p : idle) tidy(p);
}

bool BitmapPages::drop_past(std::uint64_t chunks) {
  bool rewrite = false;
  for (auto it = pages_.lower_bound(chunks / kBitsPerPage); it != pages_.end();) {
    const std::uint64_t p = it->first;
    Page& pg = it->second;
    const std::uint64_t keep = chunks > p * kBitsPerPage ? chunks - p * kBitsPerPage : 0;
    std::uint64_t gone[kVecs] = {};
    for (unsigned k = 0; k < kVecs; ++k) {
      if (!pg.v[k]) continue;
      Words& w = *pg.v[k];
      for (std::size_t i = keep / 64; i < kWords; ++i) {
        const std::uint64_t m = (i == keep / 64) ? (~0ull << (keep % 64)) : ~0ull;
        gone[k] += popcount(w[i] & m);
        w[i] &= ~m;
      }
      count_[k] -= gone[k];
    }
    if (keep == 0) {
      // Wholly past the end: freed, queued or not (the commit skips an index it no
      // longer finds, and cuts the file to the new cover).
      for (auto& v : pg.v) vectors_ -= v ? 1 : 0;
      it = pages_.erase(it);
      continue;
    }
    if (gone[kDirty]) rewrite = true;  // the kept part of the page is rewritten
    tidy(p);
    it = pages_.upper_bound(p);
  }
  return rewrite;
}

void BitmapPages::tidy(std::uint64_t p) {
  auto it = pages_.find(p);
  if (it == pages_.end()) return;
  Page& pg = it->second;
  bool empty = true;
  for (auto& v : pg.v) {
    if (!v) continue;
    if (std::all_of(v->begin(), v->end(), [](std::uint64_t x) { return x == 0; })) {
      v.reset();
      --vectors_;
    } else {
      empty = false;
    }
  }
  if (empty && !pg.queued) pages_.erase(it);
}

std::uint64_t BitmapPages::next_set(Vec k, std::uint64_t from, std::uint64_t limit) const {
  // In page order, absent pages skipped: O(pages holding bits), not O(image size).
  for (auto it = pages_.lower_bound(from / kBitsPerPage); it != pages_.end(); ++it) {
    const std::uint64_t base = it->first * kBitsPerPage;
    if (base >= limit) break;
    if (!it->second.v[k]) continue;
    const Words& w = *it->second.v[k];
    const std::size_t start = from > base ? (from - base) / 64 : 0;
    for (std::size_t i = start; i < kWords; ++i) {
      std::uint64_t bits = w[i];
      if (from > base && i == start) bits &= ~0ull << ((from - base) % 64);
      if (bits)
        return std::min(limit, base + i * 64 + static_cast<std::uint64_t>(std::countr_zero(bits)));
    }
  }
  return limit;
}

void BitmapPages::copy_words(Vec k, std::uint64_t first_word, std::span<std::uint64_t> out) const {
  std::fill(out.begin(), out.end(), 0);
  for (std::size_t i = 0; i < out.size();) {
    const std::uint64_t w = first_word + i;
    const std::size_t in_page = static_cast<std::size_t>(w % kWords);
    const std::size_t n = std::min(out.size() - i, kWords - in_page);
    if (const Page* pg = find(w / kWords); pg && pg->v[k])
      std::copy_n(pg->v[k]->begin() + in_page, n, out.begin() + i);
    i += n;
  }
}

BitmapPages::Snapshot BitmapPages::less(Vec k, unsigned minus) const {
  // Kept only for pages that have some: memory stays proportional to the set bits.
  Snapshot out;
  for (const auto& [p, pg] : pages_) {
    if (!pg.v[k]) continue;
    Words c{};
    bool any = false;
    for (std::size_t i = 0; i < kWords; ++i) {
      c[i] = word_less(pg, k, minus, i);
      any |= c[i] != 0;
    }
    if (any) out.emplace_back(p, c);
  }
  return out;
}

void BitmapPages::for_each_still(const Snapshot& snap, Vec k, unsigned minus,
                                 const std::function<void(std::uint64_t)>& f) const {
  for (const auto& [p, c] : snap) {
    const Page* pg = find(p);
    if (!pg || !pg->v[k]) continue;
    for (std::size_t i = 0; i < kWords; ++i) {
      // Each word is read before f changes it: f may clear the bits it is called for.
      std::uint64_t bits = c[i] & word_less(*pg, k, minus, i);
      while (bits) {
        const std::uint64_t chunk =
            p * kBitsPerPage + i * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
        bits &= bits - 1;
        f(chunk);
      }
    }
  }
}

std::vector<std::byte> BitmapPages::image(std::uint64_t p) const {
  std::vector<std::byte> bytes(4096);
  const Page* pg = find(p);
  if (pg && pg->v[kDirty]) std::memcpy(bytes.data(), pg->v[kDirty]->data(), 4096);
  return bytes;
}

void BitmapPages::set_durable(std::uint64_t p, const std::vector<std::byte>& image) {
  Page* pg = find(p);
  if (!pg || !pg->v[kDirty]) return;
  Words words;
  std::memcpy(words.data(), image.data(), 4096);
  const Words& d = *pg->v[kDirty];
  bool any = false;
  for (std::size_t i = 0; i < kWords && !any; ++i) any = (words[i] & d[i]) != 0;
  if (!any) return;
  if (!pg->v[kOndisk]) {
    pg->v[kOndisk] = std::make_unique<Words>(Words{});
    ++vectors_;
  }
  Words& o = *pg->v[kOndisk];
  for (std::size_t i = 0; i < kWords; ++i) {
    count_[kOndisk] += popcount(words[i] & d[i] & ~o[i]);
    o[i] |= words[i] & d[i];
  }
}

std::uint64_t BitmapPages::max_gen(ChunkRange r) const {
  std::uint64_t gen = 0;
  for (auto it = pages_.lower_bound(r.first / kBitsPerPage);
       it != pages_.end() && it->first <= (r.end - 1) / kBitsPerPage; ++it)
    gen = std::max(gen, it->second.gen);
  return gen;
}

std::uint64_t BitmapPages::memory_bytes() const {
  // A std::map node: the value plus three pointers and a colour, rounded.
  constexpr std::uint64_t kNode = sizeof(std::pair<const std::uint64_t, Page>) + 32;
  return pages_.size() * kNode + vectors_ * sizeof(Words);
}

}  // namespace fusemirror::core
