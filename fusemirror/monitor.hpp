// fusemirror/monitor.hpp — `fusemirror monitor`, modelled on `mdadm --monitor`.
//
// Watches mounted sets through MOUNT/.fusemirror/events (core/events.hpp): every poll it
// reads the daemon's event ring and reports each event numbered after the last one it
// reported, so nothing that happened between two polls is missed; when more happened
// than the ring holds, it reports EventsLost with how many. Its own events:
//   DegradedArray      at start (and for a set first seen later, from the daemon's ring):
//                      one per degraded image, as mdadm reports an array it first sees
//   DeviceDisappeared  the mount went away, or its daemon no longer answers (an error, or
//                      no answer within --timeout, 10 s); reported once, until it answers
//                      again (the same daemon: its events since, nothing lost)
//   EventsLost         the ring overflowed between two polls
// A remount (another daemon: the events file's start id changed) is reported from its
// first event on.
//
// Each event goes to --program (run as PROGRAM EVENT MOUNT IMAGE [DETAIL], IMAGE "" for a
// set-wide event: execvp, no shell, one at a time, at most 60 s each), to syslog(3) with
// --syslog (facility daemon; Fail, DegradedArray, DeviceDisappeared at LOG_CRIT), or,
// with neither, to stdout: "TIME EVENT MOUNT IMAGE DETAIL", names as utils::field().
//
// Exit status, as mdadm's: 0 after --oneshot, and when every named mount is unmounted or
// its daemon dead (one that only does not answer is waited for; --scan keeps waiting for
// sets to appear); 1 when a named mount is not a
// fusemirror mount at start (with the reason); 2 on a usage error (main.cpp).
#pragma once

#include <string>
#include <vector>

namespace fusemirror::cli {

struct MonitorOptions {
  std::vector<std::string> mounts;  // absolute mount points
  bool scan = false;                // also every fusemirror mount, as they come and go
  std::string program;              // run once per event
  bool syslog = false;
  bool oneshot = false;
  double delay = 1.0;     // seconds between polls
  double timeout = 10.0;  // seconds without an answer before DeviceDisappeared
};

int monitor(const MonitorOptions& o);

}  // namespace fusemirror::cli
