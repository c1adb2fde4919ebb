// utils/crash_point.hpp — named crash points for the fault suites (RocksDB's
// TEST_KILL_RANDOM / TEST_SYNC_POINT idea).
//
// Compiled in only when FUSEMIRROR_CRASH_POINTS is defined (cmake -DFUSEMIRROR_CRASH_POINTS=ON,
// the test build); in a release build FM_CRASH_POINT is nothing at all.
// At run time, FM_CRASH_AT=NAME makes the process SIGKILL itself at the (FM_CRASH_SKIP+1)-th
// time it passes the point NAME. Every point name is listed in docs/reliability.md.
#pragma once

namespace fusemirror::utils {

void crash_point(const char* name);

}  // namespace fusemirror::utils

#ifdef FUSEMIRROR_CRASH_POINTS
#define FM_CRASH_POINT(name) ::fusemirror::utils::crash_point(name)
#else
#define FM_CRASH_POINT(name) \
  do {                       \
  } while (0)
#endif
