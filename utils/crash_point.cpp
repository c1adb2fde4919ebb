#include "utils/crash_point.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace fusemirror::utils {

void crash_point(const char* name) {
  static const char* target = std::getenv("FM_CRASH_AT");
  static const long skip = [] {
    const char* s = std::getenv("FM_CRASH_SKIP");
    return s ? std::strtol(s, nullptr, 10) : 0L;
  }();
  static std::atomic<long> hits{0};
  if (!target || std::strcmp(target, name) != 0) return;
  if (hits.fetch_add(1) >= skip) ::kill(::getpid(), SIGKILL);
}

namespace {

std::mutex fault_mu;
std::string fault_names;                 // guarded by fault_mu: ",a,b," (empty: none)
std::atomic<bool> faults_active{false};  // fast path: nothing configured

void set_fault_points_locked(const std::string& names) {
  fault_names = names.empty() ? std::string() : "," + names + ",";
  faults_active.store(!names.empty(), std::memory_order_release);
}

// FM_FAULT is read once, before any fault point is evaluated.
[[maybe_unused]] const bool fault_env_loaded = [] {
  const char* s = std::getenv("FM_FAULT");
  std::lock_guard lk(fault_mu);
  set_fault_points_locked(s ? s : "");
  return true;
}();

}  // namespace

bool fault_point(const char* name) {
  if (!faults_active.load(std::memory_order_acquire)) return false;
  std::lock_guard lk(fault_mu);
  return fault_names.find("," + std::string(name) + ",") != std::string::npos;
}

void set_fault_points(const std::string& names) {
  std::lock_guard lk(fault_mu);
  set_fault_points_locked(names);
}

}  // namespace fusemirror::utils
