// Unit tests for core::RangeLock.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "core/range_lock.hpp"

using namespace fusemirror;
using core::RangeLock;
using namespace std::chrono_literals;

namespace {

// Starts a thread that locks [b, e), sets `got`, then waits for `release` before unlocking.
std::thread locker(RangeLock& l, std::uint64_t b, std::uint64_t e, std::atomic<bool>& got,
                   std::atomic<bool>& release) {
  return std::thread([&l, b, e, &got, &release] {
    auto g = l.lock(b, e);
    got = true;
    while (!release.load()) std::this_thread::sleep_for(1ms);
  });
}

bool wait_for(const std::atomic<bool>& flag, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Holds [hb, he) in this thread; checks whether another thread's lock of [b, e) blocks.
bool blocks(std::uint64_t hb, std::uint64_t he, std::uint64_t b, std::uint64_t e) {
  RangeLock l;
  std::atomic<bool> got{false}, release{true};
  bool blocked;
  {
    std::optional<RangeLock::Guard> g(l.lock(hb, he));
    std::thread t = locker(l, b, e, got, release);
    std::this_thread::sleep_for(50ms);
    blocked = !got.load();
    g.reset();  // the guard dies: the waiter must now get its range
    CHECK(wait_for(got, 5000ms));
    t.join();
  }
  return blocked;
}

}  // namespace

TEST_SUITE("range_lock") {

TEST_CASE("overlapping ranges exclude each other until the guard dies") {
  CHECK(blocks(0, 100, 50, 150));       // partial overlap
  CHECK(blocks(50, 150, 0, 100));       // from the other side
  CHECK(blocks(0, 100, 0, 100));        // identical
  CHECK(blocks(0, 1000, 10, 20));       // contained
  CHECK(blocks(10, 20, 0, 1000));       // containing
  CHECK(blocks(99, 100, 0, 100));       // one shared byte
  CHECK(blocks(0, RangeLock::kEnd, 1ull << 62, (1ull << 62) + 1));  // whole-file lock
  CHECK(blocks(5, 5, 5, 6));            // an empty range counts as one byte
}

TEST_CASE("non-overlapping ranges proceed concurrently") {
  CHECK_FALSE(blocks(0, 100, 100, 200));  // adjacent, half-open
  CHECK_FALSE(blocks(100, 200, 0, 100));
  CHECK_FALSE(blocks(0, 10, 1000, 2000));
  CHECK_FALSE(blocks(RangeLock::kEnd - 10, RangeLock::kEnd, 0, 10));
}

TEST_CASE("many threads on disjoint ranges all hold at once") {
  RangeLock l;
  constexpr int kN = 8;
  std::atomic<int> holding{0};
  std::atomic<bool> all{false}, release{false};
  std::vector<std::thread> ts;
  for (int i = 0; i < kN; ++i)
    ts.emplace_back([&, i] {
      auto g = l.lock(static_cast<std::uint64_t>(i) * 10, static_cast<std::uint64_t>(i) * 10 + 10);
      if (++holding == kN) all = true;
      while (!release.load()) std::this_thread::sleep_for(1ms);
    });
  CHECK(wait_for(all, 5000ms));
  release = true;
  for (auto& t : ts) t.join();
  CHECK(holding == kN);
}

TEST_CASE("overlapping holders are serialised (never two inside at once)") {
  RangeLock l;
  std::atomic<int> inside{0}, max_inside{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 6; ++i)
    ts.emplace_back([&, i] {
      for (int k = 0; k < 20; ++k) {
        // Every range contains byte 500.
        auto g = l.lock(static_cast<std::uint64_t>(i) * 50, 501 + static_cast<std::uint64_t>(i) * 10);
        const int now = ++inside;
        int m = max_inside.load();
        while (now > m && !max_inside.compare_exchange_weak(m, now)) {}
        std::this_thread::sleep_for(100us);
        --inside;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(max_inside == 1);
}

TEST_CASE("a moved guard unlocks once") {
  RangeLock l;
  {
    auto g1 = l.lock(0, 10);
    RangeLock::Guard g2(std::move(g1));
  }
  std::atomic<bool> got{false}, release{true};
  std::thread t = locker(l, 0, 10, got, release);
  CHECK(wait_for(got, 5000ms));
  t.join();
}

}  // TEST_SUITE
