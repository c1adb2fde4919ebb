#!/bin/bash
# t_thread_bound — the daemon's thread count is bounded whatever the number of images, and
# no thread limit makes a write fail or leaves the legs different (issue 12 §3 "Threads";
# docs/design.md "Threads", docs/reliability.md "Hostile users").
#
#   a) write-behind set (limit 64): 400 images created and written through the mount by 16
#      writers at once; the daemon's threads (/proc/PID/task), sampled throughout, never
#      exceed the documented bound (134: 1 main + 64 FUSE + 32 leg pool + 32 write-behind +
#      sweeper + resync + progress + link keeper + heap trimmer); `fusemirror wait`, then every image's legs are equal
#      byte for byte. (Before: 32 threads per image, 12,808 for 400.)
#   b) test builds: FM_FAULT=thread.create — no thread can be created in the leg pool or the
#      write-behind executor: every write still succeeds (the secondary is written on the
#      caller's thread), nothing is degraded, `wait` returns and the legs are equal.
#   c) test builds: FM_FAULT=writebehind.enqueue — the secondary's copy can never be queued
#      after the primary took the write: every write still succeeds, the chunks are left
#      unsynced and the resync copies them; `wait` returns only when the legs are equal.
. "$(dirname "$0")/lib.sh"

BOUND=134
NIMG=${FM_THREAD_IMAGES:-400}

threads_of() { ls "/proc/$1/task" 2>/dev/null | wc -l; }

# write_images MNT N WRITERS — N images of 64 KiB (+ one 4 KiB overwrite each), written by
# WRITERS processes at once.
write_images() {
  local mnt=$1 n=$2 writers=$3
  mkdir -p "$FM_TMP/src"
  seq 1 "$n" | xargs -P "$writers" -I{} sh -c '
    head -c 65536 /dev/urandom >"$1/img{}.raw" || exit 1
    dd if=/dev/urandom of="$1/img{}.raw" bs=4k seek=3 count=1 conv=notrunc status=none || exit 1
  ' sh "$mnt" || fail "writing $n images through $mnt failed"
}

# legs_equal PRIMARY SECONDARY N — every image identical on both legs.
legs_equal() {
  local p=$1 s=$2 n=$3 i bad=0
  for ((i = 1; i <= n; i++)); do
    cmp -s -- "$p/img$i.raw" "$s/img$i.raw" || { bad=$((bad + 1)); ((bad <= 3)) && fm_log "img$i.raw differs"; }
  done
  ((bad == 0)) || soft_fail "$bad of $n images differ between $p and $s"
}

# sum_field MNT JQ — the sum of a numeric field over every image.
sum_field() { fm_status_json "$1" | jq "[.sets[].images[] | $2] | add // 0"; }

# ------------------------------------------------------------------ a) 400 images, bounded
FM_CONTEXT="a: $NIMG images"
fm_create "$PRI" "$SEC" --write-behind 64 >/dev/null
fm_mount "$PRI" "$MNT"
PID=$(fm_daemon_pid "$MNT")
PEAK_FILE=$FM_TMP/logs/peak
( peak=0
  while fm_alive "$PID" && [[ ! -e $FM_TMP/logs/stop-sampling ]]; do
    t=$(threads_of "$PID"); ((t > peak)) && { peak=$t; echo "$peak" >"$PEAK_FILE"; }
    sleep 0.05
  done ) &
SAMPLER=$!
T0=$SECONDS
write_images "$MNT" "$NIMG" 16
touch "$FM_TMP/logs/stop-sampling"
wait "$SAMPLER" || true
NOW=$(threads_of "$PID")
PEAK=$(cat "$PEAK_FILE" 2>/dev/null || echo 0)
fm_log "$NIMG images written in $((SECONDS - T0))s; daemon threads: now $NOW, peak $PEAK (bound $BOUND)"
((NOW <= BOUND)) || soft_fail "the daemon has $NOW threads after $NIMG write-behind images (bound $BOUND)"
((PEAK <= BOUND)) || soft_fail "the daemon peaked at $PEAK threads while $NIMG images were written (bound $BOUND)"
fm_timeout 120 "$FUSEMIRROR" wait "$MNT" || fail "fusemirror wait failed"
[[ $(sum_field "$MNT" 'select(.secondary_ok | not) | 1') == 0 ]] || soft_fail "an image is degraded"
legs_equal "$PRI" "$SEC" "$NIMG"
NOW=$(threads_of "$PID")
((NOW <= BOUND)) || soft_fail "the daemon has $NOW threads after wait (bound $BOUND)"
fm_unmount "$MNT"
legs_equal "$PRI" "$SEC" "$NIMG"

# The fault points exist in test builds only (-DFUSEMIRROR_CRASH_POINTS=ON).
if ! grep -q 'writebehind.enqueue' "$FUSEMIRROR"; then
  fm_log "no fault points in $FUSEMIRROR (not a -DFUSEMIRROR_CRASH_POINTS=ON build): b) and c) skipped"
  fm_pass
fi

# ------------------------------------------- b) no thread can be created: writes go inline
FM_CONTEXT="b: thread.create"
P2=$FM_TMP/p2 S2=$FM_TMP/s2 M2=$FM_TMP/m2
mkdir -p "$P2" "$S2" "$M2"
fm_create "$P2" "$S2" --write-behind 64 >/dev/null
FM_FAULT=thread.create fm_mount "$P2" "$M2"
PID=$(fm_daemon_pid "$M2")
BASE=$(threads_of "$PID")
write_images "$M2" 50 8
# Large writes (above the inline size) and fsync go through the leg pool's path too.
dd if=/dev/urandom of="$M2/img1.raw" bs=256k count=4 conv=notrunc,fsync status=none ||
  fail "a 256 KiB write with no thread available failed"
NOW=$(threads_of "$PID")
fm_log "threads with thread creation failing: $NOW (before the writes: $BASE)"
# libfuse's own threads (1 + 64) and the four jthreads (sweeper, resync, progress, heap
# trimmer) are not ours to fail; the leg pool
# and the write-behind workers could not start.
((NOW <= 69)) || soft_fail "$NOW threads although none could be created (before the writes: $BASE)"
fm_timeout 60 "$FUSEMIRROR" wait "$M2" || fail "fusemirror wait failed"
[[ $(sum_field "$M2" 'select(.secondary_ok | not) | 1') == 0 ]] || soft_fail "an image is degraded"
legs_equal "$P2" "$S2" 50
grep -q "write-behind: only .* threads could be started" "$P2/.fusemirror/fusemirror.log" ||
  soft_fail "the daemon's log does not say the write-behind workers could not be started"
fm_unmount "$M2"

# ------------------------------------- c) the copy cannot be queued: unsynced, then resync
FM_CONTEXT="c: writebehind.enqueue"
P3=$FM_TMP/p3 S3=$FM_TMP/s3 M3=$FM_TMP/m3
mkdir -p "$P3" "$S3" "$M3"
fm_create "$P3" "$S3" --write-behind 64 >/dev/null
FM_FAULT=writebehind.enqueue fm_mount "$P3" "$M3"
write_images "$M3" 50 8
UNSYNCED=$(sum_field "$M3" '.unsynced_chunks')
fm_timeout 120 "$FUSEMIRROR" wait "$M3" || fail "fusemirror wait failed"
COPIED=$(sum_field "$M3" '.sync.copied_bytes')
fm_log "unsynced chunks right after the writes: $UNSYNCED; resync copied $COPIED bytes"
((UNSYNCED > 0 || COPIED > 0)) || soft_fail "no chunk was left for resync although no copy could be queued"
((COPIED >= 50 * 65536)) || soft_fail "resync copied $COPIED bytes, less than the 50 images written"
[[ $(sum_field "$M3" 'select(.secondary_ok | not) | 1') == 0 ]] || soft_fail "an image is degraded"
[[ $(sum_field "$M3" '.unsynced_chunks') == 0 ]] || soft_fail "unsynced chunks left after wait"
legs_equal "$P3" "$S3" 50
fm_unmount "$M3"
legs_equal "$P3" "$S3" 50

fm_pass
