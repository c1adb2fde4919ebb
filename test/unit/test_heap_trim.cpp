// Unit tests for utils::HeapTrimmer (utils/heap_trim.hpp): the heap is trimmed once when
// the process goes quiet after a burst, never during one, and not again until the next.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "utils/heap_trim.hpp"

using namespace fusemirror;
using namespace std::chrono_literals;
using std::chrono::microseconds;

TEST_CASE("heap trim: the decision") {
  const utils::TrimPolicy p;  // quiet <= 20 ms of CPU in a period, after >= 200 ms
  CHECK(utils::should_trim(0us, 200ms, p));
  CHECK(utils::should_trim(20ms, 5s, p));
  CHECK_FALSE(utils::should_trim(21ms, 5s, p));       // still busy
  CHECK_FALSE(utils::should_trim(0us, 199ms, p));     // nothing worth trimming after
  CHECK_FALSE(utils::should_trim(500ms, 500ms, p));   // the burst itself
}

TEST_CASE("heap trim: once after each burst, when quiet") {
  // While `busy`, every reading of the CPU time finds 50 ms more: each period is busy
  // however the threads are scheduled.
  std::atomic<long> cpu_us{0};
  std::atomic<bool> busy{false};
  std::atomic<int> trimmed{0};
  utils::TrimPolicy p;
  p.period = 5ms;
  utils::HeapTrimmer t(
      p, [&] { return microseconds(busy ? cpu_us += 50'000 : cpu_us.load()); }, [&] { trimmed.fetch_add(1); });
  t.start();
  auto wait_trims = [&](std::uint64_t n) {
    for (int i = 0; i < 400 && t.trims() < n; ++i) std::this_thread::sleep_for(5ms);
    return t.trims();
  };
  // Quiet from the start, no burst: no trim.
  std::this_thread::sleep_for(50ms);
  CHECK(t.trims() == 0);
  // A burst: never trimmed while it lasts.
  busy = true;
  std::this_thread::sleep_for(60ms);
  CHECK(t.trims() == 0);
  busy = false;
  // Quiet again: one trim.
  CHECK(wait_trims(1) == 1);
  std::this_thread::sleep_for(50ms);
  CHECK(t.trims() == 1);
  CHECK(trimmed.load() == 1);
  // A second burst, a second trim.
  cpu_us += 1'000'000;
  CHECK(wait_trims(2) == 2);
  t.stop();
  CHECK(trimmed.load() == 2);
}

TEST_CASE("heap trim: the process's CPU time moves forward with work") {
  const auto before = utils::process_cpu();
  volatile unsigned long x = 0;
  const auto until = std::chrono::steady_clock::now() + 30ms;
  while (std::chrono::steady_clock::now() < until) x = x + 1;
  CHECK(utils::process_cpu() > before);
}
