// Unit tests for core::BitmapPages, the sparse page store under core::Bitmap (no file, no lock).
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "core/bitmap_pages.hpp"

using namespace fusemirror;
using core::BitmapPages;
using core::kBitsPerPage;

namespace {
constexpr auto kDirty = BitmapPages::kDirty;
constexpr auto kRecent = BitmapPages::kRecent;
constexpr auto kUnsynced = BitmapPages::kUnsynced;
constexpr auto kOndisk = BitmapPages::kOndisk;
}  // namespace

TEST_CASE("BitmapPages: set, test, clear and next over sparse pages") {
  BitmapPages s;
  CHECK(s.pages() == 0);
  CHECK(s.memory_bytes() == 0);
  const std::uint64_t far = 1000 * kBitsPerPage + 5;  // page 1000; pages 1..999 never exist
  CHECK(s.set_range(kUnsynced, {3, 5}) == 2);
  CHECK(s.set_range(kUnsynced, {far, far + 1}) == 1);
  CHECK(s.set_range(kUnsynced, {4, 6}) == 1);  // 4 was set already
  CHECK(s.pages() == 2);
  CHECK(s.count(kUnsynced) == 4);
  CHECK(s.test(kUnsynced, 5));
  CHECK_FALSE(s.test(kDirty, 5));
  CHECK_FALSE(s.test(kUnsynced, far - 1));

  const std::uint64_t limit = 2000 * kBitsPerPage;
  CHECK(s.next_set(kUnsynced, 0, limit) == 3);
  CHECK(s.next_set(kUnsynced, 6, limit) == far);
  CHECK(s.next_set(kUnsynced, far + 1, limit) == limit);
  CHECK(s.next_set(kUnsynced, 6, far) == far);  // the limit bounds the answer
  CHECK(s.next_set(kDirty, 0, limit) == limit);

  CHECK(s.all_set(kUnsynced, {3, 6}));
  CHECK_FALSE(s.all_set(kUnsynced, {2, 6}));
  CHECK(s.any_set(kUnsynced, {0, kBitsPerPage * 2000}));
  CHECK_FALSE(s.any_set(kUnsynced, {6, far}));

  CHECK(s.clear(kUnsynced, 4));
  CHECK_FALSE(s.clear(kUnsynced, 4));                 // already clear
  CHECK_FALSE(s.clear(kUnsynced, 7 * kBitsPerPage));  // absent page
  CHECK(s.count(kUnsynced) == 3);
  CHECK(s.next_set(kUnsynced, 4, limit) == 5);
}

TEST_CASE("BitmapPages: a range across pages, and the pages that changed") {
  BitmapPages s;
  std::vector<std::uint64_t> changed;
  const core::ChunkRange r{kBitsPerPage - 10, 2 * kBitsPerPage + 10};
  CHECK(s.set_range(kDirty, r, [&](std::uint64_t p) { changed.push_back(p); }) ==
        kBitsPerPage + 20);
  CHECK(changed == std::vector<std::uint64_t>{0, 1, 2});
  changed.clear();
  // Only the page that gains a bit is reported.
  CHECK(s.set_range(kDirty, {0, kBitsPerPage}, [&](std::uint64_t p) { changed.push_back(p); }) ==
        kBitsPerPage - 10);
  CHECK(changed == std::vector<std::uint64_t>{0});
  CHECK(s.count(kDirty) == 2 * kBitsPerPage + 10);
  CHECK(s.all_set(kDirty, {0, 2 * kBitsPerPage + 10}));
}

TEST_CASE("BitmapPages: memory returns to 0 when everything is cleared") {
  BitmapPages s;
  s.set_range(kDirty, {10, 20});
  s.set_range(kRecent, {10, 20});
  s.set_range(kDirty, {5 * kBitsPerPage, 5 * kBitsPerPage + 3});
  const std::uint64_t held = s.memory_bytes();
  CHECK(held >= 3 * sizeof(BitmapPages::Words));
  for (std::uint64_t c = 10; c < 20; ++c) s.clear(kDirty, c);
  for (std::uint64_t c = 0; c < 3; ++c) s.clear(kDirty, 5 * kBitsPerPage + c);
  CHECK(s.count(kDirty) == 0);
  CHECK(s.memory_bytes() == held);  // a clear frees nothing by itself
  s.tidy(0);                        // as a flush does once it wrote the zeros
  s.tidy(5);
  CHECK(s.pages() == 1);  // page 0 still holds recent bits
  s.reset(kRecent);       // the sweep's new period: idle pages are tidied
  CHECK(s.count(kRecent) == 0);
  CHECK(s.pages() == 0);
  CHECK(s.memory_bytes() == 0);
}

TEST_CASE("BitmapPages: a queued page is kept when tidied empty") {
  BitmapPages s;
  s.set_range(kDirty, {1, 2});
  s.page(0).queued = true;
  s.clear(kDirty, 1);
  s.tidy(0);
  CHECK(s.pages() == 1);  // the flush still has to write its zeros
  CHECK(s.memory_bytes() < sizeof(BitmapPages::Words));
  s.find(0)->queued = false;
  s.tidy(0);
  CHECK(s.pages() == 0);
  CHECK(s.memory_bytes() == 0);
}

TEST_CASE("BitmapPages: drop past an end") {
  BitmapPages s;
  s.set_range(kDirty, {0, 3 * kBitsPerPage});
  s.set_range(kUnsynced, {kBitsPerPage + 100, kBitsPerPage + 200});
  s.page(2).queued = true;  // freed all the same: wholly past the end
  const std::uint64_t end = kBitsPerPage + 150;
  CHECK(s.drop_past(end));  // the kept page lost dirty bits: its image must be rewritten
  CHECK(s.pages() == 2);
  CHECK(s.find(2) == nullptr);
  CHECK(s.count(kDirty) == end);
  CHECK(s.count(kUnsynced) == 50);
  CHECK(s.test(kDirty, end - 1));
  CHECK_FALSE(s.test(kDirty, end));
  CHECK(s.next_set(kUnsynced, end, 10 * kBitsPerPage) == 10 * kBitsPerPage);
  // At a page boundary with nothing past it, nothing is left to rewrite.
  CHECK_FALSE(s.drop_past(kBitsPerPage));
  CHECK(s.pages() == 1);
  CHECK(s.count(kDirty) == kBitsPerPage);
  CHECK_FALSE(s.drop_past(0));
  CHECK(s.pages() == 0);
  CHECK(s.count(kDirty) == 0);
  CHECK(s.count(kUnsynced) == 0);
  CHECK(s.memory_bytes() == 0);
}

TEST_CASE("BitmapPages: copy, less and for_each_still") {
  BitmapPages s;
  s.set_range(kDirty, {0, 8});
  s.set_range(kDirty, {3 * kBitsPerPage, 3 * kBitsPerPage + 2});
  s.copy(kDirty, kUnsynced);
  CHECK(s.count(kUnsynced) == 10);
  CHECK(s.test(kUnsynced, 3 * kBitsPerPage + 1));
  s.clear(kUnsynced, 2);
  s.clear(kUnsynced, 3);
  s.set_range(kRecent, {3, 4});
  const unsigned minus = BitmapPages::vecs(kRecent) | BitmapPages::vecs(kUnsynced);
  const BitmapPages::Snapshot cand = s.less(kDirty, minus);
  REQUIRE(cand.size() == 1);  // page 3 is all unsynced: left out
  CHECK(cand[0].first == 0);
  CHECK(cand[0].second[0] == 0b0100);
  s.set_range(kDirty, {5, 6});  // set bits after the snapshot are not reported
  s.clear(kUnsynced, 5);
  std::vector<std::uint64_t> seen;
  s.for_each_still(cand, kDirty, minus, [&](std::uint64_t c) { seen.push_back(c); });
  CHECK(seen == std::vector<std::uint64_t>{2});
  s.set_range(kUnsynced, {2, 3});  // now waiting for resync: no longer reported
  seen.clear();
  s.for_each_still(cand, kDirty, minus, [&](std::uint64_t c) { seen.push_back(c); });
  CHECK(seen.empty());
}

TEST_CASE("BitmapPages: a durable image sets ondisk, less what was cleared meanwhile") {
  BitmapPages s;
  s.set_range(kDirty, {0, 4});
  const std::vector<std::byte> img = s.image(0);
  CHECK(img.size() == 4096);
  CHECK(img[0] == std::byte{0x0F});
  CHECK(s.image(9) == std::vector<std::byte>(4096));
  s.clear(kDirty, 1);  // cleared after the snapshot: not on disk as a 1
  s.set_durable(0, img);
  CHECK(s.count(kOndisk) == 3);
  CHECK(s.all_set(kOndisk, {2, 4}));
  CHECK_FALSE(s.test(kOndisk, 1));
  CHECK(s.clear(kOndisk, 0));
  CHECK(s.count(kOndisk) == 2);
}

TEST_CASE("BitmapPages: load keeps nothing for a zero page") {
  BitmapPages s;
  BitmapPages::Words w{};
  s.load(kDirty, 4, w);
  CHECK(s.pages() == 0);
  w[1] = 0b101;
  s.load(kDirty, 4, w);
  CHECK(s.count(kDirty) == 2);
  CHECK(s.test(kDirty, 4 * kBitsPerPage + 64));
  CHECK(s.test(kDirty, 4 * kBitsPerPage + 66));
  CHECK(s.page(4).gen == 0);
  s.page(4).gen = 7;
  CHECK(s.max_gen({4 * kBitsPerPage, 4 * kBitsPerPage + 1}) == 7);
  CHECK(s.max_gen({0, 4 * kBitsPerPage}) == 0);
}
