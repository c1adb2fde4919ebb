#include "utils/crash_point.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

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

}  // namespace fusemirror::utils
