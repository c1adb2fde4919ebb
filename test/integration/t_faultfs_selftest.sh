#!/bin/bash
# t_faultfs_selftest — the test fixture fm_faultfs (a fault-injecting FUSE pass-through,
# test/tools/fm_faultfs.cpp) does what the fault tests rely on:
#   - pass-through: data, sparse maps (punch hole, zero range), truncate, O_DIRECT, names,
#     modes, statfs, xattrs and SEEK_DATA/SEEK_HOLE match the backing directory;
#   - the control file MNT/.faultfs reads back settings and exact counters, is not listed,
#     and refuses bad input;
#   - delay_ms_write / delay_ms_fsync slow each request (and concurrent writes to one file
#     overlap), fail_write / fail_read / fail_fsync return the errno asked for,
#     fail_after_bytes gives a short write then ENOSPC, short_write forces short writes,
#     hang blocks writes until released, FAULTFS_* variables set initial values;
#   - it unmounts cleanly on SIGTERM.
# Binary: FM_FAULTFS, default $(dirname "$FUSEMIRROR")/../test/tools/fm_faultfs (compiled
# into the temp dir if missing).
. "$(dirname "$0")/lib.sh"

FM_FAULTFS=${FM_FAULTFS:-$(dirname "$FUSEMIRROR")/../test/tools/fm_faultfs}
if [[ ! -x $FM_FAULTFS ]]; then
  fm_log "$FM_FAULTFS not built; compiling it"
  FM_FAULTFS=$FM_TMP/fm_faultfs
  # shellcheck disable=SC2046
  c++ -std=c++20 -O2 -o "$FM_FAULTFS" "$FM_SRC_ROOT/test/tools/fm_faultfs.cpp" \
    $(pkg-config --cflags --libs fuse3) -pthread || fail "cannot build fm_faultfs"
fi

fm_rand >/dev/null # make the random source once, in this shell (not in a $(...) subshell)

BK=$FM_TMP/backing # the backing directory
FF=$FM_TMP/faultfs # the fm_faultfs mount
mkdir -p "$BK" "$FF"
FF_PID=""
FF_LOG=$FM_TMP/logs/faultfs.log

# ff_mount [VAR=VALUE...] — starts fm_faultfs BK FF -f (with those environment variables)
ff_mount() {
  fm_bg env --default-signal=INT,QUIT "$@" "$FM_FAULTFS" "$BK" "$FF" -f 2>>"$FF_LOG"
  FF_PID=$FM_LAST_BG
  fm_track_mount "$FF"
  local deadline=$((SECONDS + 20))
  until fm_is_mounted "$FF"; do
    fm_alive "$FF_PID" || fail "fm_faultfs exited before mounting: $(tail -n 5 "$FF_LOG")"
    ((SECONDS < deadline)) || fail "fm_faultfs: not mounted after 20s"
    sleep 0.1
  done
}

# ff_stop — SIGTERM to the fm_faultfs we started; it must exit and leave no mount
ff_stop() {
  fm_bg_stop "$FF_PID"
  local deadline=$((SECONDS + 10))
  while fm_is_mounted "$FF"; do
    ((SECONDS < deadline)) || fail "$FF still mounted after fm_faultfs (pid $FF_PID) exited"
    sleep 0.1
  done
}

ctl() { printf '%s\n' "$*" >"$FF/.faultfs" || fail "writing '$*' to .faultfs failed"; }
get() { # get KEY — its value from .faultfs
  local v
  v=$(awk -F= -v k="$1" '$1 == k { print $2; found = 1 } END { exit !found }' "$FF/.faultfs") ||
    fail "no key $1 in .faultfs: $(tr '\n' ' ' <"$FF/.faultfs")"
  printf '%s\n' "$v"
}
want() { # want KEY VALUE [WHY]
  local v
  v=$(get "$1")
  [[ $v == "$2" ]] || soft_fail "${3:-counter} $1=$v, want $2"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

ff_mount
FM_CONTEXT="mount"
awk -v m="$FF" '$5 == m { for (i = 7; $i != "-"; i++); print $(i + 1) }' /proc/self/mountinfo |
  grep -qx 'fuse.fm_faultfs' || soft_fail "mount type is not fuse.fm_faultfs: $(grep " $FF " /proc/self/mountinfo)"

# ---------------------------------------------------------------- control file
FM_CONTEXT="control"
for k in delay_ms_write delay_ms_read delay_ms_fsync fail_write fail_read fail_fsync \
  fail_after_bytes hang reads writes fsyncs bytes_written bytes_read; do
  want "$k" 0 "fresh mount:"
done
[[ -f $FF/.faultfs ]] || soft_fail ".faultfs is not a regular file"
[[ -z $(find "$FF" -mindepth 1 -maxdepth 1 -name .faultfs) ]] || soft_fail ".faultfs is listed by readdir"
ctl "delay_ms_read=7 fail_fsync=ENOSPC"
want delay_ms_read 7 "after set:"
want fail_fsync 28 "after set (by name):"
ctl $'delay_ms_read=0\nfail_fsync=0'
want delay_ms_read 0 "after multi-line set:"
for bad in "bogus=1" "fail_write=abc" "hang=2" "writes=5" "delay_ms_write"; do
  if printf '%s\n' "$bad" >"$FF/.faultfs" 2>/dev/null; then
    soft_fail "control write '$bad' was accepted"
  fi
done
if printf 'fail_write=5 bogus=1\n' >"$FF/.faultfs" 2>/dev/null; then soft_fail "a write with one bad token was accepted"; fi
want fail_write 0 "a rejected write changed nothing:"

# ---------------------------------------------------------------- pass-through
FM_CONTEXT="pass-through"
pwrite_rand "$FF/img" 0 100000
pwrite_rand "$FF/img" $((3 << 20)) 65536 # leaves a hole
pwrite_rand "$FF/img" 12345 777
cmp "$FF/img" "$BK/img" || fail "img reads differently through the mount"
assert_same "$FF/img" "$BK/img" # also SEEK_DATA/SEEK_HOLE through the mount
fallocate -p -o 16384 -l 65536 "$FF/img" || fail "punch hole through the mount failed"
map=$(fm_sparse_map "$BK/img")
grep -q '^0 16384$' <<<"$map" || soft_fail "punch hole did not reach the backing file: $map"
assert_same "$FF/img" "$BK/img"
fallocate -z -o $((3 << 20)) -l 8192 "$FF/img" || fail "zero range through the mount failed"
assert_same "$FF/img" "$BK/img"
fallocate -n -o $((5 << 20)) -l 4096 "$FF/img" || fail "fallocate keep-size failed"
fallocate -o $((6 << 20)) -l 4096 "$FF/img" || fail "fallocate (mode 0) failed"
[[ $(stat -c %s "$BK/img") == $(((6 << 20) + 4096)) ]] || soft_fail "fallocate mode 0 did not extend the backing file"
truncate -s $((2 << 20)) "$FF/img"
[[ $(stat -c %s "$BK/img") == $((2 << 20)) ]] || soft_fail "truncate (shrink) did not reach the backing file"
truncate -s $((8 << 20)) "$FF/img"
assert_same "$FF/img" "$BK/img"
dd if="$(fm_rand)" of="$FF/direct" bs=64K count=8 oflag=direct status=none || fail "O_DIRECT write failed"
cmp "$FF/direct" "$BK/direct" || fail "O_DIRECT write differs in the backing file"
mkdir "$FF/d"
mv "$FF/direct" "$FF/d/moved"
[[ -f $BK/d/moved && ! -e $BK/direct ]] || soft_fail "rename did not reach the backing dir"
chmod 0640 "$FF/d/moved"
[[ $(stat -c %a "$BK/d/moved") == 640 ]] || soft_fail "chmod did not reach the backing file"
echo direct >"$BK/behind" # changes behind the mount are seen at once
[[ $(cat "$FF/behind") == direct ]] || soft_fail "a file made in the backing dir is not visible"
rm "$FF/d/moved" "$FF/behind"
rmdir "$FF/d"
[[ ! -e $BK/d ]] || soft_fail "rmdir did not reach the backing dir"
[[ $(stat -f -c '%b %S' "$FF") == $(stat -f -c '%b %S' "$BK") ]] || soft_fail "statfs differs from the backing fs"
if command -v python3 >/dev/null; then
  python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.fm", b"v1")' "$FF/img" 2>/dev/null &&
    { [[ $(python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.fm").decode())' "$BK/img") == v1 ]] ||
      soft_fail "setxattr did not reach the backing file"; }
fi
assert_tree_same "$FF" "$BK"

# ---------------------------------------------------------------- counters
FM_CONTEXT="counters"
ctl reset=1
dd if="$(fm_rand)" of="$FF/c" bs=4K count=10 conv=fsync status=none || fail "dd write failed"
dd if="$FF/c" of=/dev/null bs=4K count=10 status=none || fail "dd read failed"
want writes 10
want bytes_written 40960
want reads 10
want bytes_read 40960
want fsyncs 1
want injected 0
cmp "$FF/c" "$BK/c" || fail "c differs"

# ---------------------------------------------------------------- delays
FM_CONTEXT="delay"
ctl "reset=1 delay_ms_write=20"
t0=$(now_ms)
dd if=/dev/zero of="$FF/slow" bs=4K count=50 oflag=dsync status=none || fail "slow dd failed"
t=$(($(now_ms) - t0))
fm_log "50 x 4K dsync writes with delay_ms_write=20: ${t} ms"
((t >= 1000)) || soft_fail "50 writes at 20 ms took ${t} ms, want >= 1000"
want writes 50
ctl "delay_ms_write=0 delay_ms_fsync=300"
t0=$(now_ms)
dd if=/dev/zero of="$FF/slow" bs=4K count=1 conv=notrunc,fsync status=none || fail "dd fsync failed"
t=$(($(now_ms) - t0))
((t >= 300)) || soft_fail "an fsync with delay_ms_fsync=300 took ${t} ms"
ctl "delay_ms_fsync=0 delay_ms_read=300"
t0=$(now_ms)
dd if="$FF/slow" of=/dev/null bs=4K count=1 status=none || fail "dd read failed"
t=$(($(now_ms) - t0))
((t >= 300)) || soft_fail "a read with delay_ms_read=300 took ${t} ms"
# concurrent writes to one file overlap (8 x 500 ms would take 4 s one after another)
ctl "delay_ms_read=0 delay_ms_write=500 reset=1"
t0=$(now_ms)
pids=()
for i in 0 1 2 3 4 5 6 7; do
  dd if=/dev/zero of="$FF/slow" bs=4K count=1 seek=$i conv=notrunc status=none &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || soft_fail "a concurrent write failed"; done
t=$(($(now_ms) - t0))
fm_log "8 concurrent writes to one file at 500 ms: ${t} ms, peak in flight $(get inflight_writes_peak)"
((t < 2500)) || soft_fail "8 concurrent 500 ms writes to one file took ${t} ms: they do not overlap"
(($(get inflight_writes_peak) >= 2)) || soft_fail "inflight_writes_peak $(get inflight_writes_peak), want >= 2"
ctl delay_ms_write=0

# ---------------------------------------------------------------- errors
FM_CONTEXT="errors"
cp "$BK/c" "$FM_TMP/logs/c.before"
ctl "reset=1 fail_write=5"
expect_fail "write with fail_write=5" "input/output error" \
  dd if=/dev/urandom of="$FF/c" bs=4K count=1 conv=notrunc status=none
ctl "fail_write=28"
expect_fail "write with fail_write=28" "no space left on device" \
  dd if=/dev/urandom of="$FF/c" bs=4K count=1 conv=notrunc status=none
expect_fail "fallocate with fail_write=28" "no space left on device" \
  fallocate -p -o 0 -l 4096 "$FF/c"
cmp "$FF/c" "$FM_TMP/logs/c.before" || soft_fail "a failed write changed the file"
want injected 3
want bytes_written 0
ctl "fail_write=0 fail_read=EIO"
expect_fail "read with fail_read=EIO" "input/output error" dd if="$FF/c" of=/dev/null bs=4K count=1 status=none
ctl "fail_read=0 fail_fsync=5"
expect_fail "fsync with fail_fsync=5" "input/output error" \
  dd if=/dev/zero of="$FF/c" bs=4K count=1 conv=notrunc,fsync status=none
ctl "fail_fsync=0"
# fail_after_bytes: 2 full 4K writes, a short one to 10000 bytes, then ENOSPC
ctl "fail_after_bytes=10000"
want fail_after_left 10000 "fail_after_bytes set:"
expect_fail "write past fail_after_bytes" "no space left on device" \
  dd if="$(fm_rand)" of="$FF/full" bs=4096 count=5 status=none
[[ $(stat -c %s "$BK/full") == 10000 ]] || soft_fail "after fail_after_bytes=10000 the file is $(stat -c %s "$BK/full") bytes"
want fail_after_left 0 "fail_after_bytes spent:"
ctl "fail_after_bytes=0 reset=1 short_write=1000"
dd if="$FM_RAND" of="$FF/short" bs=4096 count=1 status=none || fail "dd with short writes failed"
cmp -n 4096 "$FF/short" "$FM_RAND" || soft_fail "short writes: data differs"
want writes 5 "short_write=1000, one 4096-byte write:"
ctl short_write=0

# ---------------------------------------------------------------- hang
FM_CONTEXT="hang"
ctl "reset=1 hang=1"
dd if=/dev/zero of="$FF/hung" bs=4K count=1 status=none &
HPID=$!
sleep 1
fm_alive "$HPID" || soft_fail "a write completed while hang=1"
want hung 1 "while hung:"
ctl hang=0
rc=0
fm_timeout 10 tail --pid="$HPID" -f /dev/null || rc=$?
((rc == 0)) || fail "the hung write did not finish within 10s of hang=0"
wait "$HPID" || soft_fail "the released write failed"
want hung 0 "after release:"
[[ $(stat -c %s "$BK/hung") == 4096 ]] || soft_fail "the released write did not land"

# ---------------------------------------------------------------- environment, unmount
FM_CONTEXT="env"
ff_stop
ff_mount FAULTFS_FAIL_WRITE=ENOSPC FAULTFS_DELAY_MS_FSYNC=3
want fail_write 28 "FAULTFS_FAIL_WRITE=ENOSPC:"
want delay_ms_fsync 3 "FAULTFS_DELAY_MS_FSYNC=3:"
expect_fail "write with FAULTFS_FAIL_WRITE" "no space left on device" \
  dd if=/dev/zero of="$FF/c" bs=4K count=1 conv=notrunc status=none
ff_stop
fm_pass
