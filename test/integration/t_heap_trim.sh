#!/bin/bash
# t_heap_trim — the daemon hands a burst's memory back once it is quiet, and threads that
# come and go with the load do not each make an io_uring ring (docs/performance.md
# "Thread churn"; docs/design.md §5).
#
# 1 MiB random writes at queue depth 32 through `losetup --direct-io=on` for 3 s: libfuse
# starts request threads for the burst and ends most of them after it, and glibc keeps
# what they freed in its arenas (before the trim: 135–220 MiB resident, idle, for good;
# 7 MiB before the burst). Within 20 s of the burst's end the daemon must be back under
# 64 MiB resident (the idle bound of docs/performance.md), the log says it trimmed, and
# the legs are equal byte for byte.
. "$(dirname "$0")/lib.sh"

command -v fio >/dev/null || fail "fio is not installed (test/integration/PACKAGES)"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

fm_create "$PRI" "$SEC" >/dev/null
fm_mount "$PRI" "$MNT"
PID=$(fm_daemon_pid "$MNT")
truncate -s 512M "$MNT/img" || fail "truncate through the mount failed"
loop_attach "$MNT/img" --direct-io=on
DEV=$FM_LAST_LOOP
BEFORE=$(rss_kib "$PID")
fio --name=burst --filename="$DEV" --rw=randwrite --bs=1M --iodepth=32 --ioengine=libaio \
  --direct=1 --runtime=3 --time_based --randrepeat=0 --output-format=terse >/dev/null ||
  fail "fio through $DEV failed"
AFTER=$(rss_kib "$PID")
T0=$SECONDS
# Both within the 20 s: a burst that left less than the bound resident must still be
# trimmed (the trimmer acts once the daemon is quiet, not at once).
trimmed() { grep -q 'heap trimmed' "$PRI/.fusemirror/fusemirror.log"; }
while { (($(rss_kib "$PID") > 64 * 1024)) || ! trimmed; } && ((SECONDS - T0 < 20)); do sleep 0.5; done
QUIET=$(rss_kib "$PID")
fm_log "resident KiB: before the burst $BEFORE, right after it $AFTER, $((SECONDS - T0)) s later $QUIET"
((QUIET <= 64 * 1024)) || soft_fail "the daemon is still at $QUIET KiB resident 20 s after the burst (bound 65536)"
trimmed || soft_fail "the log does not say the heap was trimmed within 20 s of the burst"
fm_alive "$PID" || fail "the daemon died"
loop_detach "$DEV"
fm_unmount "$MNT"
cmp -- "$PRI/img" "$SEC/img" || soft_fail "the legs differ after the burst"
fm_pass
