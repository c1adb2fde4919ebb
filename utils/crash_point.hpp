// utils/crash_point.hpp — named crash points for the fault suites (RocksDB's
// TEST_KILL_RANDOM / TEST_SYNC_POINT idea).
//
// Compiled in only when FUSEMIRROR_CRASH_POINTS is defined (cmake -DFUSEMIRROR_CRASH_POINTS=ON,
// the test build); in a release build FM_CRASH_POINT is nothing at all.
// At run time, FM_CRASH_AT=NAME makes the process SIGKILL itself at the (FM_CRASH_SKIP+1)-th
// time it passes the point NAME. Every point name is listed in docs/reliability.md.
//
// Fault points are the same idea for failures the process survives: FM_FAULT=NAME[,NAME...]
// makes FM_FAULT_POINT(NAME) true every time it is evaluated (the caller then behaves as if
// the operation at that point failed, e.g. a thread could not be created). In a release
// build FM_FAULT_POINT is the constant false.
#pragma once

#include <string>

namespace fusemirror::utils {

void crash_point(const char* name);

// True when `name` is among the active fault points (FM_FAULT, or set_fault_points()).
bool fault_point(const char* name);
// Replaces the active fault points (a comma-separated list; "" for none). For unit tests.
void set_fault_points(const std::string& names);

}  // namespace fusemirror::utils

#ifdef FUSEMIRROR_CRASH_POINTS
#define FM_CRASH_POINT(name) ::fusemirror::utils::crash_point(name)
#define FM_FAULT_POINT(name) ::fusemirror::utils::fault_point(name)
#else
#define FM_FAULT_POINT(name) false
#define FM_CRASH_POINT(name) \
  do {                       \
  } while (0)
#endif
