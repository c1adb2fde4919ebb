#!/bin/bash
# t_degraded — a failing secondary never fails the user's write; the image goes degraded,
# bits accumulate, and re-adding the secondary resyncs only what the bitmap says.
#
#   a) ENOSPC: the secondary is a directory on an ext4 (loop device) with a filler file
#      leaving 24 MiB free; a 40 MiB image written through the mount (16 MiB, in sync, then
#      24 MiB more) fills it. Every write succeeds, the image is degraded, the log has
#      exactly one degrade line for it. The filler is then deleted (online resize2fs is not
#      permitted in this container), `re-add` resyncs: copied bytes <= the dirty chunks
#      measured before the re-add x chunk size; the legs are identical.
#   b) vanishing secondary: `umount -l` of the ext4 under the secondary while writes run
#      (docs/operations.md §3.2: open descriptors keep writing into the detached file system).
#      The daemon must notice within seconds (degraded), writes go on succeeding; the ext4
#      is mounted again at the same place, `re-add` resyncs, the legs are identical.
#      Prints the time it took to detect the lost secondary.
#   c) operator fail / re-add: fail, write 3 chunks, re-add: a bitmap-based resync copies
#      only those 3 chunks; the legs are identical.
#   d) ENOSPC on the primary (a small tmpfs): the user gets ENOSPC, the secondary stays in
#      service (not degraded), and the legs converge again without a remount (the chunk
#      the failed write touched is resynced from the primary); after a remount they are
#      identical in any case.
. "$(dirname "$0")/lib.sh"

CS=65536
FM=$FUSEMIRROR

# img_get MNT NAME JQ — one field of an image's status
img_get() { fm_image_json "$1" "$2" | jq -r "$3"; }

# in_sync MNT NAME — the image's secondary is in service and nothing is left to resync
in_sync() { fm_image_is "$1" "$2" '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }

# is_clean MNT NAME — in sync and every bit cleared
is_clean() { fm_image_is "$1" "$2" '.state == "clean" and .dirty_chunks == 0'; }

is_degraded() { fm_image_is "$1" "$2" '.state == "degraded" and .secondary_ok == false'; }

# mkext4 NAME SIZE — an ext4 file system on a loop device over $FM_TMP/NAME.fs, mounted at
# $FM_TMP/NAME (tracked); sets LOOP.
mkext4() {
  local name=$1 size=$2
  truncate -s "$size" "$FM_TMP/$name.fs"
  mkfs.ext4 -q -F -m 0 "$FM_TMP/$name.fs" || fail "mkfs.ext4 $FM_TMP/$name.fs failed"
  loop_attach "$FM_TMP/$name.fs"
  LOOP=$FM_LAST_LOOP
  mkdir -p "$FM_TMP/$name"
  mount -t ext4 "$LOOP" "$FM_TMP/$name" || fail "mount $LOOP on $FM_TMP/$name failed"
  fm_track_mount "$FM_TMP/$name"
}

# degrade_lines LOG NAME — how many times the daemon logged NAME going degraded
degrade_lines() { grep -c -- "\] $(re_quote "$2"): secondary failed on" "$1" || true; }

# ====================================================================== a) ENOSPC
FM_CONTEXT="ENOSPC"
mkext4 fsA 72M
LOOPA=$LOOP
PA=$FM_TMP/pA
SA=$FM_TMP/fsA/sec
mkdir -p "$PA" "$SA"
chmod 755 "$PA" "$SA"
# a filler leaves 24 MiB free on the secondary's file system
avail=$(($(stat -f -c '%a * %S' "$FM_TMP/fsA")))
fallocate -l $((avail - (24 << 20))) "$FM_TMP/fsA/filler" || fail "fallocate of the filler failed"
fm_log "ENOSPC: the secondary's file system has $(($(stat -f -c '%a * %S' "$FM_TMP/fsA") >> 20)) MiB free"
fm_create "$PA" "$SA" --chunk-size 64K --daemon-sleep 1
LOGA=$PA/.fusemirror/fusemirror.log
fm_mount "$PA" "$MNT"

SRC=$FM_TMP/logs/src40.bin
head -c $((40 << 20)) /dev/urandom >"$SRC"
# the first 16 MiB fit, and their bits are cleared
dd if="$SRC" of="$MNT/disk.img" bs=1M count=16 conv=fsync status=none || fail "dd of 16 MiB failed"
fm_wait_for "clean" 15 is_clean "$MNT" disk.img || fail "not clean after 16 MiB: $(fm_image_json "$MNT" disk.img)"
# 24 MiB more into 8 MiB of free space: the secondary runs out of space half way.
dd if="$SRC" of="$MNT/disk.img" bs=1M skip=16 seek=16 conv=fsync,notrunc status=none ||
  fail "dd of 40 MiB through the mount failed: a full secondary must not fail the user's write"
cmp "$SRC" "$MNT/disk.img" || fail "the mount does not read back what was written"
cmp "$SRC" "$PA/disk.img" || fail "the primary does not hold what was written"
# a few more writes while degraded: they succeed too
for i in 1 2 3; do
  dd if="$SRC" of="$MNT/disk.img" bs=64K count=1 skip=$i seek=$((i * 7)) conv=notrunc,fsync status=none ||
    fail "write $i while degraded failed"
  dd if="$MNT/disk.img" of=/dev/null bs=64K count=1 skip=$((i * 7)) status=none
done
dd if="$SRC" of="$FM_TMP/logs/expect.bin" bs=1M status=none
for i in 1 2 3; do
  dd if="$SRC" of="$FM_TMP/logs/expect.bin" bs=64K count=1 skip=$i seek=$((i * 7)) conv=notrunc status=none
done
cmp "$FM_TMP/logs/expect.bin" "$PA/disk.img" || fail "the primary lost writes made while degraded"

fm_wait_for "degraded" 10 is_degraded "$MNT" disk.img ||
  fail "the image is not degraded after the secondary ran out of space: $(fm_image_json "$MNT" disk.img)"
n=$(degrade_lines "$LOGA" disk.img)
((n == 1)) || fail "want exactly one degrade line for disk.img in $LOGA, got $n:
$(grep -- 'secondary failed' "$LOGA" | head -n 5)"
grep -q -- "disk.img: secondary failed on .*No space left on device" "$LOGA" ||
  soft_fail "the degrade line does not name the reason (No space left on device): $(grep -- 'secondary failed' "$LOGA")"
# degraded: bits only accumulate, the sweeper clears nothing
sleep 2.5
J=$(fm_image_json "$MNT" disk.img)
dirty=$(jq -r .dirty_chunks <<<"$J")
written=$(jq -r '.dirty_chunks - .logged_chunks' <<<"$J") # the activity log's own aside
total=$(jq -r .total_chunks <<<"$J")
copied0=$(jq -r .sync.copied_bytes <<<"$J")
fm_log "ENOSPC: degraded with $dirty of $total chunks dirty"
((dirty > 0)) || fail "degraded after writes, but dirty_chunks is 0: $J"
((written <= 24 * 16 + 3)) || soft_fail "$written chunks written and dirty, but only 24 MiB (384 chunks) + 3 chunks were written since the image was clean"
[[ $(jq -r .state <<<"$J") == degraded ]] || fail "state is not degraded 2.5 s later: $J"

# make room
rm -f "$FM_TMP/fsA/filler"
fm_cli re-add "$MNT" disk.img
fm_wait_for "resync after re-add" 60 in_sync "$MNT" disk.img ||
  fail "resync after re-add did not finish in 60 s: $(fm_image_json "$MNT" disk.img)"
copied=$(($(img_get "$MNT" disk.img .sync.copied_bytes) - copied0))
fm_log "ENOSPC: re-add resync copied $copied bytes for $dirty dirty chunks ($((dirty * CS)) bytes)"
((copied <= dirty * CS)) || fail "re-add resync copied $copied bytes > $dirty dirty chunks x $CS"
((copied > 0)) || fail "re-add resync copied nothing, but the secondary missed writes"
if grep -q -- "disk.img: re-add: full resync" "$LOGA"; then
  soft_fail "re-add after ENOSPC did a full resync; the bitmap covers everything: $(grep -- 'full resync' "$LOGA")"
fi
n=$(degrade_lines "$LOGA" disk.img)
((n == 1)) || soft_fail "want still one degrade line after the re-add, got $n"
fm_wait_for "clean" 15 is_clean "$MNT" disk.img ||
  soft_fail "not clean 15 s after the resync: $(fm_image_json "$MNT" disk.img)"
fm_unmount "$MNT"
assert_same "$PA/disk.img" "$SA/disk.img"
cmp "$FM_TMP/logs/expect.bin" "$SA/disk.img" || fail "the secondary does not hold the data written"
umount "$FM_TMP/fsA" || fail "umount $FM_TMP/fsA failed"
loop_detach "$LOOPA"
rm -f "$FM_TMP/fsA.fs" "$SRC"

# ====================================================================== b) vanishing secondary
FM_CONTEXT="vanished"
mkext4 fsB 64M
LOOPB=$LOOP
PB=$FM_TMP/pB
SB=$FM_TMP/fsB/sec
mkdir -p "$PB" "$SB"
chmod 755 "$PB" "$SB"
fm_create "$PB" "$SB" --chunk-size 64K --daemon-sleep 1
LOGB=$PB/.fusemirror/fusemirror.log
fm_mount "$PB" "$MNT"
truncate -s 8M "$MNT/disk.img"
pwrite_rand "$MNT/disk.img" 0 $((1 << 20))
sync -f "$MNT/disk.img"
fm_wait_for "clean" 15 is_clean "$MNT" disk.img || fail "not clean before the fault: $(fm_image_json "$MNT" disk.img)"

# a writer: one 4 KiB write + fsync every ~20 ms; it stops at the first failed write
WLOG=$FM_TMP/logs/writer.log
writer() {
  local i=0 off
  while [[ ! -e $FM_TMP/stop.writer ]]; do
    off=$(((RANDOM % 2048) * 4096))
    dd if=/dev/urandom of="$MNT/disk.img" bs=4096 count=1 oflag=seek_bytes seek=$off \
      conv=notrunc,fsync status=none 2>>"$WLOG" || { echo "write $i at $off failed" >>"$WLOG"; exit 1; }
    i=$((i + 1))
    sleep 0.02
  done
  echo "$i writes" >>"$WLOG"
}
fm_bg writer
WPID=$FM_LAST_BG
sleep 1
t0=$(date +%s.%N)
umount -l "$FM_TMP/fsB" || fail "umount -l $FM_TMP/fsB failed"
fm_wait_for "degraded" 10 is_degraded "$MNT" disk.img ||
  fail "the secondary's file system was unmounted, but the image is not degraded 10 s later: $(fm_image_json "$MNT" disk.img)"
t1=$(date +%s.%N)
detect=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
fm_log "time to detect the lost secondary: ${detect} s (status poll granularity 0.2 s)"
awk -v d="$detect" 'BEGIN { exit !(d <= 5) }' || soft_fail "detecting the lost secondary took $detect s (> 5 s)"
grep -q -- "the secondary directory vanished or was replaced" "$LOGB" ||
  soft_fail "no log line about the vanished secondary in $LOGB"
sleep 1.5 # writes go on while degraded
touch "$FM_TMP/stop.writer"
wrc=0
wait "$WPID" || wrc=$?
((wrc == 0)) || fail "a user write failed after the secondary vanished: $(tail -n 3 "$WLOG")"
fm_log "writer: $(tail -n 1 "$WLOG")"
dirty=$(img_get "$MNT" disk.img .dirty_chunks)
copied0=$(img_get "$MNT" disk.img .sync.copied_bytes)
((dirty > 0)) || fail "degraded with writes, but dirty_chunks is 0"
# re-add while the secondary is still gone: refused, nothing changes
if fm_timeout 30 "$FM" re-add "$MNT" disk.img 2>"$FM_TMP/logs/readd.err"; then
  fail "re-add succeeded while the secondary's file system was unmounted"
fi
is_degraded "$MNT" disk.img || fail "a refused re-add changed the state: $(fm_image_json "$MNT" disk.img)"
# an empty directory in its place (not a member of the set): refused too
mkdir -m 755 "$SB"
if fm_timeout 30 "$FM" re-add "$MNT" disk.img 2>"$FM_TMP/logs/readd.err"; then
  fail "re-add onto an empty stand-in directory (no member.json) succeeded"
fi
is_degraded "$MNT" disk.img || fail "a refused re-add changed the state: $(fm_image_json "$MNT" disk.img)"
[[ -z $(ls -A "$SB") ]] || fail "a refused re-add wrote into the stand-in directory: $(ls -A "$SB")"
rmdir "$SB"
# the file system comes back at the same place
mount -t ext4 "$LOOPB" "$FM_TMP/fsB" || fail "mount $LOOPB on $FM_TMP/fsB again failed"
fm_cli re-add "$MNT" disk.img
fm_wait_for "resync after re-add" 60 in_sync "$MNT" disk.img ||
  fail "resync after re-add did not finish in 60 s: $(fm_image_json "$MNT" disk.img)"
copied=$(($(img_get "$MNT" disk.img .sync.copied_bytes) - copied0))
fm_log "vanished: re-add resync copied $copied bytes for $dirty dirty chunks ($((dirty * CS)) bytes)"
((copied <= dirty * CS)) || soft_fail "re-add resync copied $copied bytes > $dirty dirty chunks x $CS"
# new writes after the re-add reach the remounted secondary
pwrite_rand "$MNT/disk.img" $((7 << 20)) 8192
fm_unmount "$MNT"
assert_same "$PB/disk.img" "$SB/disk.img"
umount "$FM_TMP/fsB" || fail "umount $FM_TMP/fsB failed"
loop_detach "$LOOPB"
rm -f "$FM_TMP/fsB.fs"

# ====================================================================== c) operator fail / re-add
FM_CONTEXT="fail/re-add"
PC=$FM_TMP/pC
SC=$FM_TMP/sC
mkdir -p "$PC" "$SC"
chmod 755 "$PC" "$SC"
fm_create "$PC" "$SC" --chunk-size 64K --daemon-sleep 1
LOGC=$PC/.fusemirror/fusemirror.log
fm_mount "$PC" "$MNT"
truncate -s 4M "$MNT/disk.img"
pwrite_rand "$MNT/disk.img" 0 $((4 << 20))
sync -f "$MNT/disk.img"
fm_wait_for "clean" 15 is_clean "$MNT" disk.img || fail "not clean before fail: $(fm_image_json "$MNT" disk.img)"
ev0=$(img_get "$MNT" disk.img .events)
fm_cli fail "$MNT" disk.img
is_degraded "$MNT" disk.img || fail "state after fail: $(fm_image_json "$MNT" disk.img)"
ev1=$(img_get "$MNT" disk.img .events)
((ev1 > ev0)) || soft_fail "events did not move on fail ($ev0 -> $ev1)"
expect_fail "fail of a failed secondary" "" "$FM" fail "$MNT" disk.img || true
expect_fail "sync-action check while degraded" "" "$FM" sync-action "$MNT" disk.img check || true
sec_before=$(md5sum <"$SC/disk.img")
# 3 chunks: 5, 20 (a partial write) and 40 (a write crossing no boundary)
pwrite_rand "$MNT/disk.img" $((5 * CS)) 4096
pwrite_rand "$MNT/disk.img" $((20 * CS + 100)) 1000
pwrite_rand "$MNT/disk.img" $((40 * CS)) $CS
sync -f "$MNT/disk.img"
sleep 2.5 # two sweeps: nothing may be cleared while degraded
[[ $(md5sum <"$SC/disk.img") == "$sec_before" ]] || fail "the failed secondary was written to"
# The activity log sets the rest of their extent too (logged_chunks: set, never written);
# the chunks actually written are the others.
dirty=$(($(img_get "$MNT" disk.img .dirty_chunks) - $(img_get "$MNT" disk.img .logged_chunks)))
((dirty == 3)) || fail "want 3 written dirty chunks while degraded, got $dirty"
copied0=$(img_get "$MNT" disk.img .sync.copied_bytes)
fm_cli re-add "$MNT" disk.img
expect_fail "re-add of an in-service secondary" "" "$FM" re-add "$MNT" disk.img || true
fm_wait_for "resync after re-add" 30 in_sync "$MNT" disk.img ||
  fail "resync after re-add did not finish: $(fm_image_json "$MNT" disk.img)"
copied=$(($(img_get "$MNT" disk.img .sync.copied_bytes) - copied0))
fm_log "fail/re-add: resync copied $copied bytes for 3 dirty chunks"
((copied <= 3 * CS)) || fail "re-add resync copied $copied bytes, want <= 3 x $CS"
((copied > 0)) || fail "re-add resync copied nothing"
grep -q -- "disk.img: re-add: full resync" "$LOGC" && soft_fail "operator re-add did a full resync: $(grep -- 'full resync' "$LOGC")"
grep -q -- "disk.img: secondary re-added; bitmap-based resync of 3 chunks" "$LOGC" ||
  soft_fail "no 'bitmap-based resync of 3 chunks' line in $LOGC: $(grep -- 're-added' "$LOGC")"
fm_wait_for "clean" 15 is_clean "$MNT" disk.img || soft_fail "not clean after re-add: $(fm_image_json "$MNT" disk.img)"
fm_unmount "$MNT"
assert_same "$PC/disk.img" "$SC/disk.img"

# ====================================================================== d) primary ENOSPC
FM_CONTEXT="primary ENOSPC"
PD=$FM_TMP/pD
SD=$FM_TMP/sD
mkdir -p "$PD" "$SD" "$FM_TMP/bmD"
mount -t tmpfs -o size=8m,mode=755 fm-test-pD "$PD" || fail "mount tmpfs on $PD failed"
fm_track_mount "$PD"
chmod 755 "$SD"
fm_create "$PD" "$SD" --chunk-size 64K --daemon-sleep 1 --bitmap-dir "$FM_TMP/bmD"
LOGD=$PD/.fusemirror/fusemirror.log
# a filler (hidden from the mount in the metadata directory) leaves ~2 MiB free
avail=$(($(stat -f -c '%a * %S' "$PD")))
fallocate -l $((avail - (2 << 20))) "$PD/.fusemirror/filler" || fail "fallocate of the filler failed"
fm_mount "$PD" "$MNT"
err=$FM_TMP/logs/dd.err
if dd if=/dev/urandom of="$MNT/disk.img" bs=64K count=64 conv=fsync status=none 2>"$err"; then
  fail "4 MiB into a primary with 2 MiB free succeeded"
fi
grep -qi "no space left" "$err" || soft_fail "the user's error is not ENOSPC: $(cat "$err")"
J=$(fm_image_json "$MNT" disk.img)
fm_log "after the primary ENOSPC: $(jq -c '{state, secondary_ok, dirty_chunks, unsynced_chunks, action: .sync.action}' <<<"$J")"
[[ $(jq -r .secondary_ok <<<"$J") == true ]] || soft_fail "a primary error degraded the secondary: $J"
rm -f "$PD/.fusemirror/filler"
if fm_wait_for "legs converge" 10 is_clean "$MNT" disk.img; then
  cmp "$PD/disk.img" "$SD/disk.img" || soft_fail "clean after the primary ENOSPC, but the legs differ"
else
  J=$(fm_image_json "$MNT" disk.img)
  soft_fail "10 s after a failed primary write the image is still '$(jq -r .state <<<"$J")' with" \
    "$(jq -r .unsynced_chunks <<<"$J") unsynced chunk(s) and sync.action '$(jq -r .sync.action <<<"$J")'" \
    "(no resync queued); legs: primary $(stat -c %s "$PD/disk.img") bytes, secondary $(stat -c %s "$SD/disk.img") bytes"
fi
fm_unmount "$MNT"
fm_mount "$PD" "$MNT"
fm_wait_for "resync" 30 in_sync "$MNT" disk.img || fail "resync after remount did not finish: $(fm_image_json "$MNT" disk.img)"
fm_unmount "$MNT"
assert_same "$PD/disk.img" "$SD/disk.img"
umount "$PD" || fail "umount $PD failed"

fm_pass
