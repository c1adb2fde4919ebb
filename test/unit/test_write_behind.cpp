// Unit tests for core::WriteBehind and the set-wide WriteBehindExecutor (issue 12 §3
// "Threads"): a bounded number of threads whatever the number of images, overlap order per
// image, round-robin between images, drop_all/resume/drain, and what happens when no thread
// can be created (in the queue, and in Image's write paths).
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/image.hpp"
#include "core/write_behind.hpp"
#include "image_fixture.hpp"
#include "test_helpers.hpp"
#include "utils/crash_point.hpp"
#include "utils/result.hpp"
#include "utils/thread_pool.hpp"

using namespace fusemirror;
using core::WriteBehind;
using core::WriteBehindExecutor;

namespace {

// Threads of this process now (/proc/self/task).
unsigned thread_count() {
  unsigned n = 0;
  DIR* d = ::opendir("/proc/self/task");
  REQUIRE(d != nullptr);
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// A gate the test opens: operations block in it until then.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard lk(mu);
      open = true;
    }
    cv.notify_all();
  }
};

// An op over [off, off+len) that records (tag) in `log` when it runs.
WriteBehind::Op make_op(std::uint64_t off, std::size_t len, std::function<std::error_code()> run,
                        std::function<void(bool)> done = {}) {
  WriteBehind::Op op;
  op.off = off;
  op.data.assign(len, std::byte{1});
  op.run = [run = std::move(run)](const WriteBehind::Op&) { return run(); };
  op.done = std::move(done);
  return op;
}

// An op over [off, off+len) that blocks in `gate` until the test opens it.
WriteBehind::Op gated_op(std::uint64_t off, std::size_t len, Gate& gate, std::error_code result = {}) {
  return make_op(off, len, [&gate, result] {
    gate.wait();
    return result;
  });
}

// A writer that submits `op` on its own thread; `returned` once submit came back.
struct Writer {
  std::atomic<bool> returned{false};
  std::thread t;
  Writer(WriteBehind& q, WriteBehind::Op op)
      : t([this, &q, op = std::move(op)]() mutable {
          CHECK(q.submit(std::move(op)));
          returned = true;
        }) {}
  ~Writer() {
    if (t.joinable()) t.join();
  }
  void join() { t.join(); }
};

struct FaultScope {  // active fault points for one test case
  explicit FaultScope(const std::string& names) { utils::set_fault_points(names); }
  ~FaultScope() { utils::set_fault_points(""); }
};

}  // namespace

TEST_SUITE("write_behind") {
  TEST_CASE("400 queues on one executor: the thread count stays at the executor's bound") {
    constexpr unsigned kWorkers = 8, kQueues = 400, kOpsEach = 6;
    std::thread([] {}).join();  // a sanitizer's runtime starts its own thread at the first one
    const unsigned before = thread_count();
    WriteBehindExecutor exec(kWorkers);
    std::vector<std::unique_ptr<WriteBehind>> queues;
    for (unsigned i = 0; i < kQueues; ++i)
      queues.push_back(std::make_unique<WriteBehind>(exec, 64));
    CHECK(thread_count() == before);  // lazily: nothing before the first submit
    std::atomic<unsigned> ran{0}, ok{0}, peak_threads{0};
    for (unsigned i = 0; i < kQueues; ++i)
      for (unsigned k = 0; k < kOpsEach; ++k)
        REQUIRE(queues[i]->submit(make_op(
            k * 4096, 4096,
            [&] {
              ++ran;
              std::this_thread::sleep_for(std::chrono::microseconds(200));
              return std::error_code{};
            },
            [&](bool good) {
              if (good) ++ok;
              const unsigned t = thread_count();
              unsigned p = peak_threads.load();
              while (t > p && !peak_threads.compare_exchange_weak(p, t)) {
              }
            })));
    for (auto& q : queues) CHECK(q->drain(60));
    CHECK(ran == kQueues * kOpsEach);
    CHECK(ok == kQueues * kOpsEach);
    CHECK(exec.started() == kWorkers);
    CHECK(thread_count() <= before + kWorkers);
    CHECK(peak_threads.load() <= before + kWorkers);
    queues.clear();
    CHECK(thread_count() <= before + kWorkers);
  }

  TEST_CASE("overlapping writes keep submission order per queue, across many queues") {
    constexpr unsigned kQueues = 40, kOpsEach = 50;
    WriteBehindExecutor exec(6);
    std::vector<std::unique_ptr<WriteBehind>> queues;
    std::vector<std::mutex> mus(kQueues);
    for (unsigned i = 0; i < kQueues; ++i) queues.push_back(std::make_unique<WriteBehind>(exec, 8));
    // Each queue: ops on 4 byte ranges, some overlapping two ranges; ops on one range must
    // run in submission order. Record (range, seq) per queue.
    std::vector<std::map<std::uint64_t, std::vector<unsigned>>> per_block(kQueues);
    for (unsigned k = 0; k < kOpsEach; ++k)
      for (unsigned i = 0; i < kQueues; ++i) {
        const std::uint64_t block = (k * 7 + i) % 4;
        const std::size_t len = (k % 3 == 0) ? 8192 : 4096;  // every third spans two blocks
        REQUIRE(queues[i]->submit(make_op(block * 4096, len, [&, i, k, block, len] {
          std::this_thread::sleep_for(std::chrono::microseconds((k * 37 + i * 11) % 300));
          std::lock_guard lk(mus[i]);
          for (std::uint64_t b = block; b < block + len / 4096; ++b) per_block[i][b].push_back(k);
          return std::error_code{};
        })));
      }
    for (auto& q : queues) CHECK(q->drain(60));
    for (unsigned i = 0; i < kQueues; ++i)
      for (auto& entry : per_block[i]) {  // no structured binding: clang 14 cannot CAPTURE one
        const auto& block = entry.first;
        const auto& seqs = entry.second;
        CAPTURE(i);
        CAPTURE(block);
        CHECK(std::is_sorted(seqs.begin(), seqs.end()));
      }
  }

  TEST_CASE("disjoint writes of one queue still run on several workers") {
    WriteBehindExecutor exec(4);
    WriteBehind q(exec, 16);
    std::atomic<int> running{0}, peak{0};
    for (unsigned k = 0; k < 16; ++k)
      REQUIRE(q.submit(make_op(k * 4096, 4096, [&] {
        const int now = ++running;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        --running;
        return std::error_code{};
      })));
    CHECK(q.drain(30));
    CHECK(peak.load() >= 2);
    CHECK(peak.load() <= 4);
  }

  TEST_CASE("round-robin: a busy queue does not starve another one") {
    WriteBehindExecutor exec(1);
    WriteBehind a(exec, 64), b(exec, 64);
    Gate gate;
    std::mutex mu;
    std::vector<char> ran;
    auto rec = [&](char who) {
      std::lock_guard lk(mu);
      ran.push_back(who);
    };
    REQUIRE(a.submit(make_op(0, 4096, [&] {
      gate.wait();
      rec('a');
      return std::error_code{};
    })));
    for (unsigned k = 1; k < 30; ++k)
      REQUIRE(a.submit(make_op(k * 4096, 4096, [&] {
        rec('a');
        return std::error_code{};
      })));
    REQUIRE(b.submit(make_op(0, 4096, [&] {
      rec('b');
      return std::error_code{};
    })));
    gate.release();
    CHECK(a.drain(30));
    CHECK(b.drain(30));
    REQUIRE(ran.size() == 31);
    const auto pos = std::find(ran.begin(), ran.end(), 'b') - ran.begin();
    CHECK(pos <= 3);  // not behind a's 29 queued writes
  }

  // What merged runs did: (offset, bytes, data intact) per run, in the order they ran.
  struct RunLog {
    std::mutex mu;
    struct Run {
      std::uint64_t off;
      std::size_t len;
      bool data_ok;
    };
    std::vector<Run> runs;
    std::error_code result;
    // An op marked `merge` whose bytes are (its offset / 4096 + i) & 0xff; its run checks
    // the bytes of the (maybe joined) op it is given the same way, and records it.
    WriteBehind::Op op(std::uint64_t off, std::size_t len, std::atomic<int>* good = nullptr,
                       std::atomic<int>* bad = nullptr) {
      WriteBehind::Op o;
      o.off = off;
      o.data.resize(len);
      for (std::size_t i = 0; i < len; ++i) o.data[i] = pattern(off + i);
      o.merge = true;
      o.run = [this](const WriteBehind::Op& x) {
        bool ok = true;
        for (std::size_t i = 0; i < x.data.size(); ++i) ok = ok && x.data[i] == pattern(x.off + i);
        std::lock_guard lk(mu);
        runs.push_back({x.off, x.data.size(), ok});
        return result;
      };
      o.done = [good, bad](bool ok) {
        if (good && ok) ++*good;
        if (bad && !ok) ++*bad;
      };
      return o;
    }
    static std::byte pattern(std::uint64_t at) { return static_cast<std::byte>((at / 4096 * 7 + at % 251) & 0xff); }
  };

  TEST_CASE("merge: writes that continue one another, queued behind a busy worker, run as one") {
    WriteBehindExecutor exec(1);
    WriteBehind q(exec, 64, {}, std::chrono::microseconds(0));  // merge whatever the run time
    Gate gate;
    REQUIRE(q.submit(gated_op(64 << 20, 4096, gate)));  // the one worker is busy
    RunLog log;
    std::atomic<int> good{0}, bad{0};
    constexpr std::size_t kPiece = 512 << 10;
    // Ten pieces of one stream (5 MiB), one that continues nothing, and one that continues
    // the stream but is not marked `merge`.
    for (std::uint64_t k = 0; k < 10; ++k) REQUIRE(q.submit(log.op(k * kPiece, kPiece, &good, &bad)));
    REQUIRE(q.submit(log.op(32 << 20, 8192, &good, &bad)));
    auto plain = log.op(10 * kPiece, 4096, &good, &bad);
    plain.merge = false;
    REQUIRE(q.submit(std::move(plain)));
    gate.release();
    CHECK(q.drain(30));
    CHECK(good == 12);
    CHECK(q.merged() == 8);  // 7 joined the first run, 1 the second
    CHECK(bad == 0);
    std::lock_guard lk(log.mu);
    REQUIRE(log.runs.size() == 4);
    // At most kMaxMerge bytes a run: eight pieces, then the last two, then the others alone.
    CHECK(log.runs[0].off == 0);
    CHECK(log.runs[0].len == WriteBehind::kMaxMerge);
    CHECK(log.runs[1].off == 8 * kPiece);
    CHECK(log.runs[1].len == 2 * kPiece);
    CHECK(log.runs[2].off == (32u << 20));
    CHECK(log.runs[3].off == 10 * kPiece);
    CHECK(log.runs[3].len == 4096);
    for (const auto& r : log.runs) CHECK(r.data_ok);  // the joined bytes are each write's own
  }

  TEST_CASE("merge: a failed merged write fails every write in it") {
    WriteBehindExecutor exec(1);
    WriteBehind q(exec, 16, {}, std::chrono::microseconds(0));
    Gate gate;
    REQUIRE(q.submit(gated_op(64 << 20, 4096, gate)));
    RunLog log;
    log.result = std::make_error_code(std::errc::io_error);
    std::atomic<int> good{0}, bad{0};
    for (std::uint64_t k = 0; k < 4; ++k) REQUIRE(q.submit(log.op(k * 65536, 65536, &good, &bad)));
    gate.release();
    CHECK(q.drain(30));
    CHECK(good == 0);
    CHECK(bad == 4);
    std::lock_guard lk(log.mu);
    CHECK(log.runs.size() == 1);
  }

  TEST_CASE("merge: a write that overlaps an older one still running is not merged, and waits") {
    WriteBehindExecutor exec(2);
    WriteBehind q(exec, 16, {}, std::chrono::microseconds(0));
    Gate gate;
    std::atomic<bool> older_done{false};
    // The older write [512K, 516K) blocks on worker 1; [0, 512K) is free to run, but the
    // write that continues it, [512K, 1M), overlaps the older one: it must not join, and
    // must run after the older one ended.
    REQUIRE(q.submit(make_op(
        512 << 10, 4096,
        [&] {
          gate.wait();
          older_done = true;
          return std::error_code{};
        })));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // worker 1 is inside it
    RunLog log;
    std::atomic<bool> follower_after{false};
    REQUIRE(q.submit(log.op(0, 512 << 10)));
    auto follower = log.op(512 << 10, 512 << 10);
    follower.done = [&](bool) { follower_after = older_done.load(); };
    REQUIRE(q.submit(std::move(follower)));
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard lk(log.mu);
        if (!log.runs.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    gate.release();
    CHECK(q.drain(30));
    CHECK(follower_after);
    std::lock_guard lk(log.mu);
    REQUIRE(log.runs.size() == 2);
    CHECK(log.runs[0].off == 0);
    CHECK(log.runs[0].len == (512u << 10));
    CHECK(log.runs[1].off == (512u << 10));
  }

  TEST_CASE("merge: only while the runs are slow and the queue is backed up (the default policy)") {
    // A stream of four writes queued behind one busy op. Busy runs of 60 ms make the
    // average slow (over kMergeAfter), of 1 ms not; with a limit of 5 the four writes are a
    // backlog when the first is claimed (three quarters full), with 64 not. Only slow and backed up merges.
    struct Case {
      int busy_ms;
      std::uint32_t limit;
      std::size_t runs;
    };
    for (const Case c : {Case{1, 5, 4}, Case{60, 64, 4}, Case{60, 5, 1}}) {
      CAPTURE(c.busy_ms);
      CAPTURE(c.limit);
      WriteBehindExecutor exec(1);
      WriteBehind q(exec, c.limit);
      RunLog log;
      Gate gate;
      // Two busy runs: the first sets the average, the second holds the worker while the
      // stream is queued.
      REQUIRE(q.submit(make_op(64 << 20, 4096, [&c] {
        std::this_thread::sleep_for(std::chrono::milliseconds(c.busy_ms));
        return std::error_code{};
      })));
      CHECK(q.drain(30));
      REQUIRE(q.submit(make_op(65 << 20, 4096, [&gate, &c] {
        gate.wait();
        std::this_thread::sleep_for(std::chrono::milliseconds(c.busy_ms));
        return std::error_code{};
      })));
      for (std::uint64_t k = 0; k < 4; ++k) REQUIRE(q.submit(log.op(k * 65536, 65536)));
      gate.release();
      CHECK(q.drain(30));
      std::lock_guard lk(log.mu);
      CHECK(log.runs.size() == c.runs);
      CHECK(q.merged() == 4 - c.runs);
    }
  }

  TEST_CASE("drop_all drops queued writes (done(false)), resume runs them again") {
    WriteBehindExecutor exec(2);
    WriteBehind q(exec, 8);
    std::atomic<int> ran{0}, good{0}, bad{0};
    auto op = [&](std::uint64_t off) {
      return make_op(
          off, 4096,
          [&] {
            ++ran;
            return std::error_code{};
          },
          [&](bool ok) { ++(ok ? good : bad); });
    };
    q.drop_all();
    for (unsigned k = 0; k < 5; ++k) REQUIRE(q.submit(op(k * 4096)));
    CHECK(q.drain(30));
    CHECK(ran == 0);
    CHECK(bad == 5);
    q.resume();
    for (unsigned k = 0; k < 5; ++k) REQUIRE(q.submit(op(k * 4096)));
    CHECK(q.drain(30));
    CHECK(ran == 5);
    CHECK(good == 5);
  }

  TEST_CASE("drain times out while a write is stuck, wait_range_idle waits for its range") {
    WriteBehindExecutor exec(2);
    WriteBehind q(exec, 8);
    Gate gate;
    std::atomic<bool> done{false};
    REQUIRE(q.submit(make_op(
        0, 4096,
        [&] {
          gate.wait();
          return std::error_code{};
        },
        [&](bool) { done = true; })));
    CHECK_FALSE(q.drain(0.05));
    CHECK(q.outstanding() == 1);
    q.wait_range_idle(8192, 16384);  // disjoint: returns at once
    std::thread opener([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      gate.release();
    });
    q.wait_range_idle(0, 4096);
    CHECK(done);
    CHECK(q.drain(30));
    CHECK(q.outstanding() == 0);
    CHECK(q.peak() == 1);
    opener.join();
  }

  TEST_CASE("a full queue blocks the writer until a write completes") {
    WriteBehindExecutor exec(1);
    WriteBehind q(exec, 2);
    Gate gate;
    for (unsigned k = 0; k < 2; ++k)
      REQUIRE(q.submit(make_op(k * 4096, 4096, [&] {
        gate.wait();
        return std::error_code{};
      })));
    CHECK(q.full_waits() == 0);
    std::atomic<bool> third{false};
    std::thread writer([&] {
      CHECK(q.submit(make_op(8192, 4096, [] { return std::error_code{}; })));
      third = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(third);
    CHECK(q.outstanding() == 2);
    // The writer waits: counted once; the lag is the oldest write's age.
    CHECK(q.full_waits() == 1);
    CHECK(q.lag_seconds() >= 0.04);
    CHECK(q.lag_seconds() < 30);
    gate.release();
    writer.join();
    CHECK(third);
    CHECK(q.drain(30));
    CHECK(q.peak() == 2);
    CHECK(q.full_waits() == 1);
    CHECK(q.lag_seconds() == 0);  // nothing outstanding
  }

  TEST_CASE("lag bound in bytes: the writer that would pass it waits, counted and timed") {
    WriteBehindExecutor exec(4);
    WriteBehind q(exec, 64, WriteBehind::LagBound{3 * 4096, 0});
    Gate gate;
    for (unsigned k = 0; k < 3; ++k) REQUIRE(q.submit(gated_op(k * 4096, 4096, gate)));
    CHECK(q.lag_stats().bytes == 3 * 4096);
    CHECK(q.lag_stats().holds == 0);
    Writer writer(q, make_op(3 * 4096, 4096, [] { return std::error_code{}; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(80));
    CHECK_FALSE(writer.returned);  // the queue has room (64): only the bound holds it
    auto st = q.lag_stats();
    CHECK(st.held_now == 1);
    CHECK(st.holds == 1);
    CHECK(st.bytes == 3 * 4096);
    CHECK(q.full_waits() == 0);
    gate.release();
    writer.join();
    CHECK(writer.returned);
    CHECK(q.drain(30));
    st = q.lag_stats();
    CHECK(st.held_now == 0);
    CHECK(st.holds == 1);
    CHECK(st.held_seconds >= 0.05);
    CHECK(st.bytes == 0);
  }

  TEST_CASE("lag bound in bytes holds under writers faster than the secondary; unbounded it does not") {
    // 4 writers of 64 KiB writes, a secondary taking 2 ms per write on 2 workers: the queue
    // (limit 256 = 16 MiB) would hold far more than 256 KiB without the bound.
    constexpr std::uint64_t kBound = 256 << 10;
    for (const std::uint64_t bound : {kBound, std::uint64_t{0}}) {
      CAPTURE(bound);
      WriteBehindExecutor exec(2);
      WriteBehind q(exec, 256, WriteBehind::LagBound{bound, 0});
      std::atomic<std::uint64_t> peak{0};
      std::atomic<bool> stop{false};
      std::thread sampler([&] {
        while (!stop) {
          const std::uint64_t b = q.lag_stats().bytes;
          std::uint64_t p = peak.load();
          while (b > p && !peak.compare_exchange_weak(p, b)) {
          }
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      });
      std::vector<std::thread> writers;
      for (unsigned w = 0; w < 4; ++w)
        writers.emplace_back([&, w] {
          for (unsigned k = 0; k < 40; ++k)
            CHECK(q.submit(make_op((w * 40 + k) * (64 << 10), 64 << 10, [] {
              std::this_thread::sleep_for(std::chrono::milliseconds(2));
              return std::error_code{};
            })));
        });
      for (auto& t : writers) t.join();
      CHECK(q.drain(60));
      stop = true;
      sampler.join();
      if (bound) {
        CHECK(peak.load() <= bound);
        CHECK(peak.load() >= bound / 2);  // the bound was reached: the test would see a breach
        CHECK(q.lag_stats().holds > 0);
      } else {
        CHECK(peak.load() > 4 * kBound);  // what the bound prevents
        CHECK(q.lag_stats().holds == 0);
      }
    }
  }

  TEST_CASE("lag bound in bytes: a write larger than the bound goes alone, never waits for nothing") {
    WriteBehindExecutor exec(2);
    WriteBehind q(exec, 64, WriteBehind::LagBound{8192, 0});
    Gate gate;
    REQUIRE(q.submit(gated_op(0, 65536, gate)));  // larger than the bound, queue empty: queued
    CHECK(q.lag_stats().bytes == 65536);
    Writer writer(q, make_op(65536, 4096, [] { return std::error_code{}; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(writer.returned);
    gate.release();
    writer.join();
    CHECK(q.drain(30));
  }

  TEST_CASE("lag bound in seconds: held while the oldest write is older than the bound") {
    WriteBehindExecutor exec(2);
    WriteBehind q(exec, 64, WriteBehind::LagBound{0, 0.1});
    Gate gate;
    REQUIRE(q.submit(gated_op(0, 4096, gate)));
    // Younger than the bound: not held.
    REQUIRE(q.submit(make_op(4096, 4096, [] { return std::error_code{}; })));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    Writer writer(q, make_op(8192, 4096, [] { return std::error_code{}; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(writer.returned);
    CHECK(q.lag_stats().held_now == 1);
    CHECK(q.lag_stats().seconds >= 0.15);
    gate.release();  // the oldest reaches the secondary: the lag drops, the writer goes on
    writer.join();
    CHECK(writer.returned);
    CHECK(q.drain(30));
    CHECK(q.lag_stats().holds == 1);
  }

  TEST_CASE("drop_all (the secondary failed) releases the writers the lag bound holds") {
    WriteBehindExecutor exec(1);
    WriteBehind q(exec, 64, WriteBehind::LagBound{4096, 0});
    Gate gate;
    std::atomic<unsigned> dropped{0};
    REQUIRE(q.submit(gated_op(0, 4096, gate, utils::errno_code(EIO))));
    Writer writer(q, make_op(4096, 4096, [] { return std::error_code{}; }, [&](bool ok) {
      if (!ok) ++dropped;
    }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(writer.returned);
    q.drop_all();  // the running write is stuck in a dead link: the writer must not wait for it
    writer.join();
    CHECK(writer.returned);
    CHECK(q.lag_stats().held_now == 0);
    gate.release();
    CHECK(q.drain(30));
    CHECK(dropped == 1);
  }

  TEST_CASE("stop ends queued writes as not written; stopping one queue leaves the others") {
    WriteBehindExecutor exec(1);
    auto a = std::make_unique<WriteBehind>(exec, 8);
    WriteBehind b(exec, 8);
    Gate gate;
    std::atomic<int> a_bad{0}, b_good{0};
    REQUIRE(a->submit(make_op(0, 4096, [&] {
      gate.wait();
      return std::error_code{};
    })));
    for (unsigned k = 0; k < 3; ++k)  // behind the first one (overlapping): still queued
      REQUIRE(a->submit(make_op(
          0, 4096, [] { return std::error_code{}; }, [&](bool ok) { a_bad += !ok; })));
    std::thread stopper([&] { a.reset(); });  // waits for the running write
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    gate.release();
    stopper.join();
    CHECK(a_bad == 3);
    REQUIRE(b.submit(make_op(
        0, 4096, [] { return std::error_code{}; }, [&](bool ok) { b_good += ok; })));
    CHECK(b.drain(30));
    CHECK(b_good == 1);
  }

#ifdef FUSEMIRROR_CRASH_POINTS
  TEST_CASE("no thread can be created: submit refuses, the op is left to the caller") {
    FaultScope faults("thread.create");
    const unsigned before = thread_count();
    WriteBehindExecutor exec(4);
    WriteBehind q(exec, 8);
    bool ran = false, done = false;
    auto op = make_op(
        0, 4096,
        [&] {
          ran = true;
          return std::error_code{};
        },
        [&](bool) { done = true; });
    CHECK_FALSE(q.submit(std::move(op)));
    CHECK(exec.started() == 0);
    CHECK(thread_count() == before);
    // The op is intact: the caller can run it.
    REQUIRE(op.run);
    CHECK(op.data.size() == 4096);
    CHECK_FALSE(op.run(op));
    CHECK(ran);
    CHECK_FALSE(done);
    // The limit gone, the next submit starts the workers.
    utils::set_fault_points("");
    CHECK(q.submit(make_op(0, 4096, [] { return std::error_code{}; })));
    CHECK(q.drain(30));
    CHECK(exec.started() == 4);
  }

  TEST_CASE("ThreadPool: no thread can be created, submit returns false and never throws") {
    FaultScope faults("thread.create");
    utils::ThreadPool pool(4);
    bool ran = false;
    CHECK_FALSE(pool.submit([&] { ran = true; }));
    CHECK_FALSE(ran);
    CHECK(pool.started() == 0);
  }
#endif

}  // TEST_SUITE("write_behind")

#ifdef FUSEMIRROR_CRASH_POINTS
// ----------------------------------------------------------------- Image write paths

namespace {

constexpr std::uint64_t kCs = fmtest::kImageChunk;

struct ImageFixture : fmtest::ImageFixture {
  explicit ImageFixture(std::uint32_t write_behind, std::uint64_t size = 4 * kCs)
      : fmtest::ImageFixture(size, options(write_behind)) {}
  static core::ImageOptions options(std::uint32_t write_behind) {
    core::ImageOptions io;
    io.write_behind = write_behind;
    return io;
  }
};

}  // namespace

TEST_SUITE("write_behind") {
  TEST_CASE(
      "Image, write-behind, no thread can be created: the write succeeds, both legs have it") {
    FaultScope faults("thread.create");
    ImageFixture f(64);
    auto data = fmtest::pattern(3 * 4096, 5);
    auto r = f.img->write(data, 4096);
    REQUIRE(r);
    CHECK(*r == data.size());
    CHECK(f.img->secondary_ok());
    CHECK(f.img->status().bitmap.unsynced_chunks == 0);
    CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
  }

  TEST_CASE(
      "Image, write-behind, the copy cannot be queued: the write succeeds, the chunk is unsynced") {
    FaultScope faults("writebehind.enqueue");
    ImageFixture f(64);
    auto data = fmtest::pattern(4096, 6);
    auto r = f.img->write(data, 2 * kCs + 100);
    REQUIRE(r);
    CHECK(*r == data.size());
    CHECK(f.img->secondary_ok());
    const auto st = f.img->status();
    CHECK(st.bitmap.unsynced_chunks == 1);
    CHECK(st.wb_outstanding == 0);
    CHECK(fmtest::read_bytes(f.ppath) != fmtest::read_bytes(f.spath));
    // Resync copies it: the legs agree.
    utils::set_fault_points("");
    std::vector<std::byte> buf(1 << 20);
    std::uint64_t copied = 0, from = 0;
    while (from < f.img->total_chunks()) {
      auto n = f.img->resync_step(from, 1 << 20, buf, &copied);
      REQUIRE(n);
      from = *n;
    }
    CHECK(f.img->status().bitmap.unsynced_chunks == 0);
    CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
  }

  TEST_CASE("Image, synchronous, no pool thread can be created: large writes and fsync succeed") {
    FaultScope faults("thread.create");
    ImageFixture f(0);
    auto data = fmtest::pattern(3 * kCs, 7);  // above the inline size: the pool path
    auto r = f.img->write(data, 0);
    REQUIRE(r);
    CHECK(*r == data.size());
    CHECK_FALSE(f.img->fsync(false));
    CHECK_FALSE(f.img->truncate(2 * kCs));
    CHECK(f.img->secondary_ok());
    CHECK(f.img->status().bitmap.unsynced_chunks == 0);
    CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
  }

}  // TEST_SUITE("write_behind")
#endif
