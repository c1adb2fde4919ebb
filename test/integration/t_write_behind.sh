#!/bin/bash
# t_write_behind — write-behind mode (docs/write-path.md; docs/reliability.md invariant 7)
# with the secondary a directory inside an fm_faultfs mount (a slow / hung / failing
# secondary, switched at run time through FF/.faultfs).
#
#   a) speed: with delay_ms_write=5 at the secondary, 2000 random 4 KiB O_DSYNC writes
#      through a write-behind mount (N=256) run at least 3x faster than through a
#      synchronous mount; after the queue drains and the bits clear, the legs are identical.
#   b) bounded: with hang=1, writes go on until N are outstanding, then the writer blocks;
#      status shows outstanding == limit (never more) and the fixture never has more than
#      N writes in flight; hang=0 -> drains -> identical.
#   c) order: 200 overlapping writes (fio, 4-16 KiB at 1 KiB alignment in 32 KiB), queued
#      behind each other at a slow secondary -> the secondary ends equal to the primary.
#   d) crash: hang=1, a full queue under fm_crashwriter, kill -9 the daemon; offline the
#      bitmap covers every differing chunk and no acknowledged write is lost; remount
#      (hang released): the resync copies only dirty chunks and the legs are identical.
#   e) backup role: reads through the mount never reach the secondary (reads counter at the
#      fixture stays 0, secondary_reads 0).
#   f) a failing secondary (fail_write=EIO) while writes are queued: user writes succeed,
#      the image goes degraded, the queue drops to 0 outstanding, bits stay set; re-add
#      after clearing the fault -> identical.
#   g) unmount drains: ~300 writes queued at 20 ms each, `fusemirror unmount` waits and the
#      legs are identical and clean; with hang=1 and drain_timeout=2 the unmount returns in
#      about 2 s, the bits stay set, and the next mount resyncs to identical; a clean
#      drained unmount leaves nothing to resync at the next mount.
#   h) fsync_waits_for_secondary=true: fsync returns only when the queue has reached the
#      secondary; truncate (shrink, regrow) while writes are queued; SIGTERM drains.
#   i) a secondary on FUSE is written whole: one 1 MiB write reaches fm_faultfs as at most
#      8 requests (not 16 leg_write_piece pieces), synchronous and write-behind.
#
# Binaries: FM_FAULTFS, FM_CRASHWRITER (default: beside FUSEMIRROR's build dir).
. "$(dirname "$0")/lib.sh"

FM_FAULTFS=${FM_FAULTFS:-$(dirname "$FUSEMIRROR")/../test/tools/fm_faultfs}
[[ -x $FM_FAULTFS ]] || fail "fm_faultfs not found at $FM_FAULTFS (set FM_FAULTFS)"
CW=${FM_CRASHWRITER:-$(dirname "$FUSEMIRROR")/../test/tools/fm_crashwriter}
[[ -x $CW ]] || fail "fm_crashwriter not found at $CW (set FM_CRASHWRITER)"
command -v fio >/dev/null || fail "fio is missing (see test/integration/PACKAGES)"

fm_rand >/dev/null # the random source, made once in this shell
CS=65536

# ---------------------------------------------------------------------------- the fixture
BK=$FM_TMP/backing # fm_faultfs's backing directory
FF=$FM_TMP/faultfs # its mount; secondaries are directories in it
mkdir -p "$BK" "$FF"
FF_PID=""
FF_LOG=$FM_TMP/logs/faultfs.log

ff_mount() {
  fm_bg env --default-signal=INT,QUIT "$FM_FAULTFS" "$BK" "$FF" -f 2>>"$FF_LOG"
  FF_PID=$FM_LAST_BG
  fm_track_mount "$FF"
  local deadline=$((SECONDS + 20))
  until fm_is_mounted "$FF"; do
    fm_alive "$FF_PID" || fail "fm_faultfs exited before mounting: $(tail -n 5 "$FF_LOG")"
    ((SECONDS < deadline)) || fail "fm_faultfs: not mounted after 20s"
    sleep 0.1
  done
}
ff_stop() {
  fm_bg_stop "$FF_PID"
  local deadline=$((SECONDS + 10))
  while fm_is_mounted "$FF"; do
    ((SECONDS < deadline)) || fail "$FF still mounted after fm_faultfs (pid $FF_PID) exited"
    sleep 0.1
  done
}
ctl() { printf '%s\n' "$*" >"$FF/.faultfs" || fail "writing '$*' to .faultfs failed"; }
ffget() { awk -F= -v k="$1" '$1 == k { print $2; f = 1 } END { exit !f }' "$FF/.faultfs" ||
  fail "no key $1 in .faultfs"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# assert_drained PRI SECFILE AFTER — after a stop that drained the queue (set unmounted):
# the legs are identical and the bitmap has no dirty bit
assert_drained() {
  assert_same "$1/disk.img" "$2"
  local dirty
  read -r _ dirty <<<"$(fm_examine_bits "$(fm_examine "$(fm_bitmap_path "$1" disk.img)")")"
  ((dirty == 0)) || soft_fail "after $3 the bitmap still has $dirty dirty chunks"
}

# ---------------------------------------------------------------------------- status helpers
img() { fm_image_json "$1" "$2"; }                 # img MNT NAME — the image's status JSON
img_get() { fm_image_json "$1" "$2" | jq -r "$3"; } # img_get MNT NAME JQ
# jqtest MNT NAME JQ_BOOL — quietly true when the image's status satisfies JQ_BOOL
jqtest() {
  local j
  j=$(fm_image_json_try "$1" "$2") || return 1
  jq -e "$3" >/dev/null <<<"$j"
}
drained() { jqtest "$1" "$2" '.write_behind.outstanding == 0'; }
is_clean() { jqtest "$1" "$2" '.secondary_ok and .write_behind.outstanding == 0 and .unsynced_chunks == 0 and .sync.action == "idle" and .dirty_chunks == 0 and .state == "clean"'; }
in_sync() { jqtest "$1" "$2" '.secondary_ok and .unsynced_chunks == 0 and .sync.action == "idle"'; }
# wait_clean MNT NAME SECS — queue drained, then every bit cleared (daemon sleep 1 s)
wait_clean() {
  fm_wait_for "drain" "$3" drained "$1" "$2" ||
    fail "$2: write-behind queue not drained in $3 s: $(img "$1" "$2")"
  fm_wait_for "clean" "$3" is_clean "$1" "$2" ||
    fail "$2: not clean $3 s after the queue drained: $(img "$1" "$2")"
}
# new_set NAME ARGS... — primary $FM_TMP/p_NAME, secondary $FF/s_NAME, mount $FM_TMP/m_NAME
new_set() {
  local n=$1
  shift
  mkdir -p "$FM_TMP/p_$n" "$FF/s_$n" "$FM_TMP/m_$n"
  fm_create "$FM_TMP/p_$n" "$FF/s_$n" --chunk-size 64K --daemon-sleep 1 "$@" >/dev/null
}

ff_mount

# ====================================================================== a) speed
FM_CONTEXT="a: speed"
new_set wb --write-behind 256
new_set sy
fio_rand() { # fio_rand FILE — 2000 random 4 KiB O_DSYNC writes in 32 MiB; prints ms
  local t0
  t0=$(now_ms)
  fm_timeout 120 fio --name=wb --filename="$1" --rw=randwrite --bs=4k --size=32m \
    --number_ios=2000 --ioengine=psync --sync=dsync --randseed=42 --end_fsync=1 \
    --output="$FM_TMP/logs/fio.$(basename "$(dirname "$1")").log" >/dev/null ||
    fail "fio on $1 failed: $(tail -n 5 "$FM_TMP/logs/fio.$(basename "$(dirname "$1")").log")"
  echo $(($(now_ms) - t0))
}
declare -A T=()
for s in wb sy; do
  fm_mount "$FM_TMP/p_$s" "$FM_TMP/m_$s"
  truncate -s 32M "$FM_TMP/m_$s/disk.img"
  wait_clean "$FM_TMP/m_$s" disk.img 30
  ctl "reset=1 delay_ms_write=5"
  T[$s]=$(fio_rand "$FM_TMP/m_$s/disk.img")
  fm_log "$s: 2000 x 4K random O_DSYNC writes, secondary +5 ms/write: ${T[$s]} ms" \
    "(fixture writes $(ffget writes), in flight peak $(ffget inflight_writes_peak))"
  if [[ $s == wb ]]; then
    j=$(img "$FM_TMP/m_wb" disk.img)
    fm_log "wb: status right after fio: $(jq -c '{write_behind, dirty_chunks, state}' <<<"$j")"
    peak=$(jq -r .write_behind.peak <<<"$j")
    ((peak <= 256)) || soft_fail "write_behind.peak $peak > limit 256"
  fi
  wait_clean "$FM_TMP/m_$s" disk.img 60
  ctl delay_ms_write=0
  fm_unmount "$FM_TMP/m_$s"
  assert_same "$FM_TMP/p_$s/disk.img" "$BK/s_$s/disk.img"
done
((T[wb] * 3 <= T[sy])) ||
  soft_fail "write-behind took ${T[wb]} ms, synchronous ${T[sy]} ms: want write-behind >= 3x faster"
fm_assert_log_clean "$FM_TMP/p_wb"

# ====================================================================== b) bounded
FM_CONTEXT="b: bounded"
LIM=64
new_set bd --write-behind $LIM
M=$FM_TMP/m_bd
fm_mount "$FM_TMP/p_bd" "$M"
truncate -s 16M "$M/disk.img"
pwrite_rand "$M/disk.img" 0 4096 # opens the image (its record on the secondary is written)
wait_clean "$M" disk.img 30
ctl "reset=1 hang=1"
head -c $((300 * 4096)) "$FM_RAND" >"$FM_TMP/logs/bd.src"
# 300 4K writes, one write(2) each (the mount is write-through)
fm_bg dd if="$FM_TMP/logs/bd.src" of="$M/disk.img" bs=4K count=300 conv=notrunc status=none
DDPID=$FM_LAST_BG
fm_wait_for "queue full" 30 jqtest "$M" disk.img ".write_behind.outstanding == $LIM" ||
  fail "outstanding never reached the limit $LIM with a hung secondary: $(img "$M" disk.img)"
max_out=0
for _ in $(seq 1 10); do
  o=$(img_get "$M" disk.img .write_behind.outstanding)
  ((o > max_out)) && max_out=$o
  sleep 0.15
done
j=$(img "$M" disk.img)
fm_log "hung secondary: $(jq -c '{write_behind, dirty_chunks, state}' <<<"$j"); fixture: hung $(ffget hung)," \
  "in flight peak $(ffget inflight_writes_peak)"
((max_out == LIM)) || soft_fail "outstanding with a hung secondary: max $max_out, want exactly $LIM"
(($(jq -r .write_behind.limit <<<"$j") == LIM)) || soft_fail "write_behind.limit is not $LIM: $j"
(($(jq -r .write_behind.peak <<<"$j") <= LIM)) || soft_fail "write_behind.peak above the limit: $j"
(($(ffget inflight_writes_peak) <= LIM)) || soft_fail "the fixture saw $(ffget inflight_writes_peak) writes in flight > $LIM"
fm_alive "$DDPID" || soft_fail "the writer finished 300 writes although only $LIM may be outstanding"
# the writer is blocked: the primary holds at most LIM (+1 in submit) of its blocks
nprim=$({ cmp -l "$FM_TMP/logs/bd.src" <(dd if="$FM_TMP/p_bd/disk.img" bs=4K count=300 status=none) 2>/dev/null || true; } |
  awk '{ k = int(($1 - 1) / 4096); if (!(k in b)) { b[k] = 1; n++ } } END { print n + 0 }')
written=$((300 - nprim))
fm_log "blocks on the primary while hung: $written of 300 (limit $LIM)"
((written <= LIM + 2)) || soft_fail "$written writes reached the primary with a hung secondary, limit $LIM"
ctl hang=0
fm_timeout 60 tail --pid="$DDPID" -f /dev/null || fail "the writer did not finish after hang=0"
wait "$DDPID" || soft_fail "dd through the mount failed"
wait_clean "$M" disk.img 60
(($(img_get "$M" disk.img .write_behind.peak) <= LIM)) || soft_fail "peak above the limit after the run"
fm_unmount "$M"
cmp -n $((300 * 4096)) "$FM_TMP/logs/bd.src" "$FM_TMP/p_bd/disk.img" || soft_fail "the primary lacks the data written"
assert_same "$FM_TMP/p_bd/disk.img" "$BK/s_bd/disk.img"
fm_assert_log_clean "$FM_TMP/p_bd"

# ====================================================================== c) order
FM_CONTEXT="c: order"
new_set or --write-behind 256
M=$FM_TMP/m_or
fm_mount "$FM_TMP/p_or" "$M"
truncate -s 1M "$M/disk.img"
pwrite_rand "$M/disk.img" 0 4096
wait_clean "$M" disk.img 30
ctl "reset=1 delay_ms_write=5"
# 200 writes of 4..16 KiB at 1 KiB-aligned random offsets within the first 32 KiB (so they
# overlap, partly and wholly), each with fresh random data, from one process so they queue
# far faster than the secondary takes them
fm_timeout 120 fio --name=order --filename="$M/disk.img" --rw=randwrite --bsrange=4k-16k \
  --blockalign=1k --size=32k --io_size=64m --number_ios=200 --norandommap --randrepeat=0 --refill_buffers \
  --ioengine=psync --output="$FM_TMP/logs/fio.order.log" >/dev/null ||
  fail "the overlapping writer failed: $(tail -n 5 "$FM_TMP/logs/fio.order.log")"
cp "$FM_TMP/p_or/disk.img" "$FM_TMP/logs/order.expect" # what the primary got, last write last
j=$(img "$M" disk.img)
fm_log "after 200 overlapping writes: $(jq -c '{write_behind, dirty_chunks}' <<<"$j"), fixture writes $(ffget writes)"
wait_clean "$M" disk.img 60
(($(img_get "$M" disk.img .write_behind.peak) >= 10)) ||
  soft_fail "the overlapping writes barely queued behind each other (peak < 10): the order was not exercised"
ctl delay_ms_write=0
fm_unmount "$M"
cmp "$FM_TMP/logs/order.expect" "$FM_TMP/p_or/disk.img" || soft_fail "the primary changed after the writes ended"
assert_same "$FM_TMP/p_or/disk.img" "$BK/s_or/disk.img"
fm_assert_log_clean "$FM_TMP/p_or"

# ====================================================================== d) crash
FM_CONTEXT="d: crash"
LIM=64
BLOCKS=16384 # 64 MiB
new_set cr --write-behind $LIM
M=$FM_TMP/m_cr
PC=$FM_TMP/p_cr
fm_mount "$PC" "$M"
truncate -s $((BLOCKS * 4096)) "$M/disk.img"
pwrite_rand "$M/disk.img" 0 4096
sync
wait_clean "$M" disk.img 30
ACK=$FM_TMP/logs/acks
: >"$ACK"
ctl "reset=1 hang=1"
"$CW" write "$M/disk.img" "$ACK" --blocks $BLOCKS --seed 3 --sync-every 8 2>"$FM_TMP/logs/cw.err" &
CWPID=$!
fm_wait_for "queue full" 30 jqtest "$M" disk.img ".write_behind.outstanding == $LIM" ||
  fail "outstanding never reached $LIM under fm_crashwriter with a hung secondary: $(img "$M" disk.img)"
sleep 0.5
j=$(img "$M" disk.img)
fm_log "before the kill: $(jq -c '{write_behind, dirty_chunks}' <<<"$j"), acknowledged $(wc -l <"$ACK")"
(($(jq -r .write_behind.outstanding <<<"$j") == LIM)) || soft_fail "outstanding not at the limit before the kill: $j"
fm_kill9_daemon "$M" "$CWPID"
ctl hang=0
sleep 0.5 # let the fixture finish (or interrupt) the requests the dead daemon left
BM=$(fm_bitmap_path "$PC" disk.img)
out=$("$CW" bitmapcheck "$PC/disk.img" "$BK/s_cr/disk.img" "$BM") ||
  soft_fail "a chunk differs between the legs with its bit clear: $out"
fm_log "offline after the kill: $out"
vout=$("$CW" verify "$PC/disk.img" "$ACK") || soft_fail "acknowledged writes lost: $vout"
fm_log "verify: $vout"
read -r _ acked _ <<<"$vout"
((acked > 0)) || soft_fail "no write was acknowledged before the kill (fsync waited for the hung secondary?)"
ex=$(fm_examine "$BM")
read -r _ dirty <<<"$(fm_examine_bits "$ex")"
fm_log "examine-bitmap: $dirty dirty chunks"
((dirty > 0)) || soft_fail "no dirty chunk in the bitmap after a kill with $LIM queued writes"
ctl "reset=1"
fm_mount "$PC" "$M"
fm_wait_for "resync" 60 in_sync "$M" disk.img || fail "resync did not finish in 60 s: $(img "$M" disk.img)"
copied=$(img_get "$M" disk.img .sync.copied_bytes)
fm_log "resync copied $copied bytes for $dirty dirty chunks ($((dirty * CS)) bytes)"
((copied <= dirty * CS)) || soft_fail "resync copied $copied bytes > $dirty dirty chunks x $CS"
((copied > 0)) || soft_fail "resync copied nothing although $dirty chunks were dirty"
wait_clean "$M" disk.img 60
fm_unmount "$M"
assert_same "$PC/disk.img" "$BK/s_cr/disk.img"
vout=$("$CW" verify "$BK/s_cr/disk.img" "$ACK") || soft_fail "the resynced secondary lacks acknowledged writes: $vout"

# ====================================================================== e) backup role
FM_CONTEXT="e: backup role"
new_set bk --write-behind 16 --role backup
M=$FM_TMP/m_bk
fm_mount "$FM_TMP/p_bk" "$M"
[[ $(fm_status_json "$M" | jq -r '.sets[0].role') == backup ]] || soft_fail "status does not show role backup"
head -c $((4 << 20)) "$FM_RAND" >"$M/disk.img"
wait_clean "$M" disk.img 30
ctl reset=1
for _ in 1 2 3 4 5; do
  echo 3 >/proc/sys/vm/drop_caches
  cmp "$M/disk.img" "$FM_TMP/p_bk/disk.img" || soft_fail "the image reads differently through the mount"
  dd if="$M/disk.img" of=/dev/null bs=1M iflag=direct status=none 2>/dev/null || true
done
r=$(ffget reads)
((r == 0)) || soft_fail "role backup: the fixture counted $r reads of the secondary (want 0)"
sr=$(img_get "$M" disk.img .secondary_reads)
((sr == 0)) || soft_fail "role backup: status secondary_reads=$sr (want 0)"
fm_log "backup role: 5 full reads through the mount, fixture reads $r, secondary_reads $sr"
fm_unmount "$M"
assert_same "$FM_TMP/p_bk/disk.img" "$BK/s_bk/disk.img"

# ====================================================================== f) failing secondary
FM_CONTEXT="f: failing secondary"
new_set fl --write-behind 64
M=$FM_TMP/m_fl
fm_mount "$FM_TMP/p_fl" "$M"
truncate -s 16M "$M/disk.img"
pwrite_rand "$M/disk.img" 0 4096
wait_clean "$M" disk.img 30
ctl "reset=1 delay_ms_write=200" # slow enough that the queue is seen full
head -c $((400 * 4096)) "$FM_RAND" >"$FM_TMP/logs/fl.src"
# one 4K write per 4K block across 400 blocks (25 chunks)
fm_bg dd if="$FM_TMP/logs/fl.src" of="$M/disk.img" bs=4K count=400 conv=notrunc status=none
DDPID=$FM_LAST_BG
fm_wait_for "queue busy" 30 jqtest "$M" disk.img '.write_behind.outstanding >= 16' ||
  fail "the queue never filled with a slow secondary: $(img "$M" disk.img)"
ctl fail_write=5
fm_timeout 60 tail --pid="$DDPID" -f /dev/null || fail "the writer did not finish with a failing secondary"
rc=0
wait "$DDPID" || rc=$?
((rc == 0)) || soft_fail "a user write failed (dd exit $rc) because the secondary failed"
fm_wait_for "degraded" 30 jqtest "$M" disk.img '.state == "degraded" and (.secondary_ok | not)' ||
  soft_fail "the image did not go degraded: $(img "$M" disk.img)"
fm_wait_for "queue dropped" 30 drained "$M" disk.img ||
  soft_fail "the queue of a failed secondary did not drop to 0: $(img "$M" disk.img)"
j=$(img "$M" disk.img)
fm_log "after fail_write=EIO: $(jq -c '{state, write_behind, dirty_chunks, unsynced_chunks}' <<<"$j"); fixture injected $(ffget injected)"
(($(jq -r .dirty_chunks <<<"$j") > 0)) || soft_fail "no dirty chunk while degraded: $j"
sleep 2 # two daemon sleeps: nothing written may clear while degraded (the activity log's
# never-written chunks, logged_chunks, may: docs/write-path.md §3b)
written() { jq -r '.dirty_chunks - .logged_chunks' <<<"$1"; }
(($(written "$(img "$M" disk.img)") >= $(written "$j"))) || soft_fail "written bits cleared while degraded"
cmp -n $((400 * 4096)) "$FM_TMP/logs/fl.src" "$M/disk.img" || soft_fail "the mount does not read back what was written"
grep -q 'secondary failed' "$FM_TMP/p_fl/.fusemirror/fusemirror.log" || soft_fail "no log line for the failed secondary"
ctl "fail_write=0 delay_ms_write=0"
fm_cli re-add "$M" disk.img
fm_wait_for "resync after re-add" 60 in_sync "$M" disk.img ||
  fail "resync after re-add did not finish: $(img "$M" disk.img)"
wait_clean "$M" disk.img 60
fm_unmount "$M"
assert_same "$FM_TMP/p_fl/disk.img" "$BK/s_fl/disk.img"

# ====================================================================== g) drain at unmount
FM_CONTEXT="g: drain at unmount"
new_set dr --write-behind 512
M=$FM_TMP/m_dr
PD=$FM_TMP/p_dr
fm_mount "$PD" "$M"
truncate -s 16M "$M/disk.img"
pwrite_rand "$M/disk.img" 0 4096
wait_clean "$M" disk.img 30
ctl "reset=1 delay_ms_write=20"
dd if="$FM_RAND" of="$M/disk.img" bs=4K count=300 conv=notrunc status=none || fail "dd failed"
q=$(img_get "$M" disk.img .write_behind.outstanding)
fm_log "queued at unmount: $q writes (fixture has $(ffget writes) so far)"
((q >= 100)) || soft_fail "only $q writes queued before the unmount (want ~300): the drain is not exercised"
t0=$(now_ms)
fm_unmount "$M"
t=$(($(now_ms) - t0))
fm_log "unmount with $q queued writes at 20 ms: ${t} ms; fixture writes $(ffget writes)"
assert_drained "$PD" "$BK/s_dr/disk.img" "a drained unmount"
ctl delay_ms_write=0
fm_assert_log_clean "$PD"

FM_CONTEXT="g: drain timeout"
fm_json_edit "$PD/.fusemirror/config.json" '.drain_timeout = 2'
fm_mount "$PD" "$M"
# the unmount above drained the queue and left a clean bitmap: this mount has nothing to
# resync (in particular no "full resync" because the secondary changed after the record)
fm_wait_for "idle" 30 in_sync "$M" disk.img || fail "mount after a clean unmount: never in sync: $(img "$M" disk.img)"
copied=$(img_get "$M" disk.img .sync.copied_bytes)
full=$(grep -c 'full resync' "$PD/.fusemirror/fusemirror.log" || true)
((copied == 0 && full == 0)) || soft_fail "the mount after a drained clean unmount resynced: copied $copied bytes," \
  "log: $(grep 'full resync' "$PD/.fusemirror/fusemirror.log" | tail -n 1)"
pwrite_rand "$M/disk.img" 0 4096
wait_clean "$M" disk.img 30
ctl "reset=1 hang=1"
dd if="$FM_RAND" of="$M/disk.img" bs=4K count=100 skip=300 seek=300 conv=notrunc status=none || fail "dd failed"
q=$(img_get "$M" disk.img .write_behind.outstanding)
((q > 0)) || soft_fail "nothing queued with a hung secondary"
t0=$(now_ms)
rc=0
fm_timeout 15 "$FUSEMIRROR" unmount "$M" 2>"$FM_TMP/logs/unmount.err" || rc=$?
t=$(($(now_ms) - t0))
fm_log "unmount with $q writes stuck at a hung secondary, drain_timeout 2: exit $rc after ${t} ms: $(cat "$FM_TMP/logs/unmount.err")"
((rc == 0)) || soft_fail "fusemirror unmount with a hung secondary and drain_timeout=2: exit $rc after ${t} ms (want 0 after ~2 s): $(cat "$FM_TMP/logs/unmount.err")"
((t >= 1500 && t <= 8000)) || soft_fail "unmount with drain_timeout=2 took ${t} ms (want ~2000)"
timely=1
((rc == 0 && t <= 8000)) || timely=0
pid=$(fm_daemon_pid "$M")
if ! _fm_wait_pid "$pid" 5; then
  timely=0
  soft_fail "the daemon (pid $pid) is still running 5 s after the unmount with a hung secondary"
  ctl hang=0
  _fm_wait_pid "$pid" 30 || { kill -KILL "$pid"; _fm_wait_pid "$pid" 10 || true; }
fi
unset "FM_PID[$(realpath -m -- "$M")]"
fm_is_mounted "$M" && { soft_fail "$M still mounted"; fm_timeout 20 fusermount3 -u "$M" || umount -l "$M"; }
ctl hang=0
sleep 0.5
grep -q 'not drained' "$PD/.fusemirror/fusemirror.log" || soft_fail "no log line about the drain timeout"
read -r _ dirty <<<"$(fm_examine_bits "$(fm_examine "$(fm_bitmap_path "$PD" disk.img)")")"
fm_log "after the timed-out drain: $dirty dirty chunks"
# (when the unmount hung, hang=0 above let the queue drain: then nothing need stay dirty)
((dirty > 0 || !timely)) || soft_fail "the drain timed out but the bitmap has no dirty chunk"
fm_mount "$PD" "$M"
fm_wait_for "resync" 60 in_sync "$M" disk.img || fail "resync did not finish: $(img "$M" disk.img)"
copied=$(img_get "$M" disk.img .sync.copied_bytes)
fm_log "after the timed-out drain: resync copied $copied bytes for $dirty dirty chunks"
((copied <= dirty * CS || !timely)) || soft_fail "resync copied $copied bytes > $dirty dirty chunks x $CS"
wait_clean "$M" disk.img 60
fm_unmount "$M"
assert_same "$PD/disk.img" "$BK/s_dr/disk.img"

# ====================================================================== h) fsync, truncate, SIGTERM
FM_CONTEXT="h: fsync_waits_for_secondary"
new_set fs --write-behind 256
PF=$FM_TMP/p_fs
M=$FM_TMP/m_fs
fm_json_edit "$PF/.fusemirror/config.json" '.fsync_waits_for_secondary = true'
fm_mount "$PF" "$M"
truncate -s 8M "$M/disk.img"
pwrite_rand "$M/disk.img" 0 4096
wait_clean "$M" disk.img 30
ctl "reset=1 delay_ms_write=20"
# 200 writes (~250 ms at the secondary with 16 writers), then one fsync: with
# fsync_waits_for_secondary the fsync returns only once the secondary has every write
t0=$(now_ms)
dd if="$FM_RAND" of="$M/disk.img" bs=4K count=200 conv=notrunc,fsync status=none || fail "dd failed"
t=$(($(now_ms) - t0))
j=$(img "$M" disk.img)
fm_log "fsync_waits_for_secondary: 200 writes + fsync in ${t} ms; then $(jq -c .write_behind <<<"$j"), fixture writes $(ffget writes)"
(($(jq -r .write_behind.outstanding <<<"$j") == 0)) || soft_fail "fsync returned with writes still queued: $j"
cmp -n $((200 * 4096)) "$PF/disk.img" "$BK/s_fs/disk.img" ||
  soft_fail "fsync_waits_for_secondary: after fsync returned the secondary lacks written data"

FM_CONTEXT="h: truncate while queued"
# writes queued at the slow secondary, then a shrink and a regrow through the mount, then
# more writes: the size changes are ordered after the queued writes on the secondary
dd if="$FM_RAND" of="$M/disk.img" bs=4K count=200 seek=1000 conv=notrunc status=none || fail "dd failed"
truncate -s $((3000 * 4096)) "$M/disk.img" # cuts off part of what is still queued
truncate -s 8M "$M/disk.img"
dd if="$FM_RAND" of="$M/disk.img" bs=4K count=100 skip=500 seek=2950 conv=notrunc status=none || fail "dd failed"
wait_clean "$M" disk.img 60
fm_unmount "$M"
assert_same "$PF/disk.img" "$BK/s_fs/disk.img"

FM_CONTEXT="h: SIGTERM drains"
fm_mount "$PF" "$M"
pwrite_rand "$M/disk.img" 0 4096
wait_clean "$M" disk.img 30
dd if="$FM_RAND" of="$M/disk.img" bs=4K count=200 skip=77 conv=notrunc status=none || fail "dd failed"
q=$(img_get "$M" disk.img .write_behind.outstanding)
fm_log "SIGTERM with $q writes queued at 20 ms"
fm_signal_daemon "$M" TERM
assert_drained "$PF" "$BK/s_fs/disk.img" "SIGTERM drained the queue"
ctl delay_ms_write=0
fm_assert_log_clean "$PF"

# ====================================================================== i) whole writes to a FUSE secondary
# leg_write_piece (64 KiB by default) cuts leg writes into pieces on local disk file
# systems only (utils::local_disk_fs): this secondary is on FUSE, where each piece would be
# one more request paying the secondary's latency (docs/performance.md "Write-behind and
# leg pieces"). One 1 MiB write through the mount reaches it as one pwrite's requests, at
# least 128 KiB each — never as 16 of 64 KiB — synchronous and write-behind alike.
for n in wi si; do
  FM_CONTEXT="i: whole writes to a FUSE secondary ($n)"
  if [[ $n == wi ]]; then new_set "$n" --write-behind 256; else new_set "$n"; fi
  fm_mount "$FM_TMP/p_$n" "$FM_TMP/m_$n"
  truncate -s 8M "$FM_TMP/m_$n/disk.img"
  wait_clean "$FM_TMP/m_$n" disk.img 30
  ctl "reset=1"
  dd if="$FM_RAND" of="$FM_TMP/m_$n/disk.img" bs=1M count=1 seek=2 conv=notrunc status=none || fail "dd failed"
  fm_wait_for "drain" 30 drained "$FM_TMP/m_$n" disk.img || fail "queue not drained: $(img "$FM_TMP/m_$n" disk.img)"
  w=$(ffget writes) b=$(ffget bytes_written)
  fm_log "$n: one 1 MiB write reached the FUSE secondary as $w write requests, $b bytes"
  ((b == 1048576)) || soft_fail "$n: the secondary got $b bytes for one 1 MiB write"
  ((w >= 1 && w <= 8)) || soft_fail "$n: one 1 MiB write reached the FUSE secondary as $w requests (pieces?)"
  wp=$(fm_image_json "$FM_TMP/m_$n" disk.img | jq -c .write_pieces)
  [[ $wp == '{"primary":65536,"secondary":0}' ]] || soft_fail "$n: status write_pieces $wp: want 64 KiB on the local primary, 0 on FUSE"
  fm_unmount "$FM_TMP/m_$n"
  assert_same "$FM_TMP/p_$n/disk.img" "$BK/s_$n/disk.img"
done

FM_CONTEXT="teardown"
ff_stop
fm_pass
