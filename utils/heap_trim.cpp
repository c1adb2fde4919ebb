#include "utils/heap_trim.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <fstream>

namespace fusemirror::utils {
namespace {

using std::chrono::microseconds;

microseconds to_us(const timeval& tv) {
  return std::chrono::seconds(tv.tv_sec) + microseconds(tv.tv_usec);
}

// Resident set size in KiB (/proc/self/statm), 0 when unreadable: for the log line only.
long rss_kib() {
  std::ifstream f("/proc/self/statm");
  long size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace

bool should_trim(microseconds last, microseconds since, const TrimPolicy& p) {
  return last <= p.quiet_cpu && since >= p.busy_cpu;
}

microseconds process_cpu() {
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) != 0) return microseconds(0);
  return to_us(ru.ru_utime) + to_us(ru.ru_stime);
}

HeapTrimmer::HeapTrimmer(TrimPolicy p, CpuSource cpu, Trim trim)
    : policy_(p), cpu_(cpu ? std::move(cpu) : CpuSource(process_cpu)), trim_(std::move(trim)) {
  if (!trim_) {
    trim_ = [] {
      const long before = rss_kib();
      ::malloc_trim(0);
      spdlog::info("quiet after a burst: heap trimmed, resident {} KiB -> {} KiB", before, rss_kib());
    };
  }
}

void HeapTrimmer::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void HeapTrimmer::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  cv_.notify_all();
  thread_.join();
}

std::uint64_t HeapTrimmer::trims() const {
  std::lock_guard lk(mu_);
  return trims_;
}

void HeapTrimmer::run(std::stop_token st) {
  microseconds prev = cpu_(), at_trim = prev;
  std::unique_lock lk(mu_);
  while (!st.stop_requested()) {
    cv_.wait_for(lk, st, policy_.period, [] { return false; });
    if (st.stop_requested()) break;
    const microseconds now = cpu_();
    if (should_trim(now - prev, now - at_trim, policy_)) {
      lk.unlock();
      trim_();
      lk.lock();
      ++trims_;
      // The trim's own CPU is not a burst.
      at_trim = cpu_();
      prev = at_trim;
      continue;
    }
    prev = now;
  }
}

}  // namespace fusemirror::utils
