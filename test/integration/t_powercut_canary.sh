#!/bin/bash
# t_powercut_canary — the power-cut suite can fail: a daemon broken on purpose (test builds:
# FM_FAULT=bitmap.late writes both legs before the bits are flushed, breaking intent before
# data; FM_FAULT=al.clear_written makes the activity log clear written chunks at retirement;
# FM_FAULT=checksums.keep_on_shrink keeps checksums a shrink invalidated; FM_FAULT=
# fresh.keep_on_change keeps the checksums a direct write took from its buffer after the
# chunk changed; FM_FAULT=al.burst_ondisk lets writes into extents a burst adopted skip the
# flush of their bits) must be caught by a
# CI-sized run of t_powercut.sh (offline checks only). Skips (77) on a build without crash
# points, where the fault
# point does not exist.
here=$(dirname "$0")
if ! grep -q "FUSEMIRROR_CRASH_POINTS:BOOL=ON" "$(dirname "${FUSEMIRROR:-/nonexistent}")/../CMakeCache.txt" 2>/dev/null; then
  echo "SKIP powercut_canary: not a build with -DFUSEMIRROR_CRASH_POINTS=ON" >&2
  exit 77
fi
# 1. bitmap.late, with the activity log off: with it on, only the first write into each
#    extent would be exposed (the next ones find their bits durable from that first flush),
#    and the canary would find one violation where it finds dozens.
FM_PC_WORKLOADS=randsync FM_PC_STATES=${FM_PC_STATES:-200} FM_PC_RECOVER_EVERY=0 FM_PC_AL_EXTENTS=0 \
  FM_PC_DAEMON_FAULT=bitmap.late FM_PC_EXPECT=violations bash "$here/t_powercut.sh" || exit $?
# 2. al.clear_written: a retirement of the activity log clears the written chunks too,
#    without a leg sync (docs/write-path.md §3b); the alevict workload retires all the time.
FM_PC_WORKLOADS=alevict FM_PC_STATES=${FM_PC_STATES:-200} FM_PC_RECOVER_EVERY=0 \
  FM_PC_DAEMON_FAULT=al.clear_written FM_PC_EXPECT=violations bash "$here/t_powercut.sh" || exit $?
# 3. checksums.keep_on_shrink: a shrink keeps the checksums of the chunks it changed
#    (invariant 9); the checksum check must accuse. Only the states cut between the shrink
#    and the next write or sweep of chunk 15 can: 1 to 6 of 40 in five runs, and none in
#    one CI run (seed 979390975). 400 states (~10 ms each) miss them with odds of about
#    (39/40)^400, under one in 20,000.
FM_PC_WORKLOADS=checksums FM_PC_STATES=${FM_PC_STATES:-400} FM_PC_RECOVER_EVERY=0 \
  FM_PC_DAEMON_FAULT=checksums.keep_on_shrink FM_PC_EXPECT=violations bash "$here/t_powercut.sh" || exit $?
# 4. fresh.keep_on_change: a change to the primary keeps the checksums a direct write took
#    from its buffer (write-path.md §9.2, "Hashes from the write"); the sweep then records
#    a stale one and the checksum check must accuse. The direct workload, swept clean four
#    times.
FM_PC_WORKLOADS=direct FM_PC_STATES=${FM_PC_STATES:-200} FM_PC_RECOVER_EVERY=0 \
  FM_PC_DAEMON_FAULT=fresh.keep_on_change FM_PC_EXPECT=violations bash "$here/t_powercut.sh" || exit $?
# 5. al.burst_ondisk: the extents a burst adopts count as durable before their flush
#    (write-path.md §3b "Activation in a burst"), so writes into them issue data with no
#    durable bit; the alburst workload (four writers into cold extents).
FM_PC_WORKLOADS=alburst FM_PC_STATES=${FM_PC_STATES:-200} FM_PC_RECOVER_EVERY=0 \
  FM_PC_DAEMON_FAULT=al.burst_ondisk FM_PC_EXPECT=violations exec bash "$here/t_powercut.sh"
