// utils/heap_trim.hpp — hands the heap's free memory back to the kernel when the process
// goes quiet after work.
//
// glibc keeps what a thread frees in that thread's arena, and hands it back only from the
// top of a heap. A daemon whose request threads come and go with the load keeps the peak
// of a burst for good: a mount that took 5 s of 1 MiB writes at queue depth 32 stayed at
// 135–220 MiB resident, idle, where it had started at 7 MiB (docs/performance.md
// "Thread churn"). malloc_trim(0) returns every whole free page of every arena
// (madvise(MADV_DONTNEED)); doing it only once the process has gone quiet means no burst
// pays for faulting the pages in again.
//
// One thread: every `period` it reads the process's CPU time (getrusage RUSAGE_SELF, all
// threads), and trims once when the last period used at most `quiet_cpu` after at least
// `busy_cpu` was used since the last trim. Then it waits for the next burst.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <condition_variable>
#include <thread>

namespace fusemirror::utils {

struct TrimPolicy {
  std::chrono::milliseconds period{2000};
  std::chrono::microseconds quiet_cpu{20'000};   // 1 % of a 2 s period
  std::chrono::microseconds busy_cpu{200'000};   // a burst worth trimming after
};

// The decision, alone: `last` = CPU used in the period that just ended, `since` = CPU used
// since the last trim (or the start), `last` included.
bool should_trim(std::chrono::microseconds last, std::chrono::microseconds since, const TrimPolicy& p);

// The process's CPU time so far (user + system, all threads).
std::chrono::microseconds process_cpu();

class HeapTrimmer {
 public:
  using CpuSource = std::function<std::chrono::microseconds()>;
  using Trim = std::function<void()>;
  // `cpu` and `trim` default to process_cpu and malloc_trim(0) (tests inject their own).
  explicit HeapTrimmer(TrimPolicy p = {}, CpuSource cpu = {}, Trim trim = {});
  ~HeapTrimmer() { stop(); }
  HeapTrimmer(const HeapTrimmer&) = delete;
  HeapTrimmer& operator=(const HeapTrimmer&) = delete;

  // Starts the thread (after a daemon's fork: threads do not survive it). Idempotent.
  void start();
  void stop();
  std::uint64_t trims() const;

 private:
  void run(std::stop_token st);

  TrimPolicy policy_;
  CpuSource cpu_;
  Trim trim_;
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::uint64_t trims_ = 0;  // guarded by mu_
  std::jthread thread_;
};

}  // namespace fusemirror::utils
