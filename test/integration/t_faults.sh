#!/bin/bash
# t_faults — the fault matrix (issue 7 part 2). Every cell ends in "legs identical after
# re-add/resync" or a clear, expected error; never silent divergence. Faults are injected by
# fm_faultfs (test/tools/fm_faultfs.cpp), a FUSE pass-through put under a leg or the bitmap
# directory, switched at run time through MOUNT/.faultfs.
#
#   sec-eio-write     secondary write → EIO: user writes succeed, degraded once, events
#                     bumped, bits kept; fault cleared, re-add copies <= dirty chunks
#   sec-eio-resync    secondary write → EIO while a re-add resync runs (fusemirror's resync
#                     reads only the primary, so the secondary's fault is on write): degraded
#                     again; fault cleared, re-add, identical
#   sec-enospc        secondary ENOSPC after 1 MiB (fail_after_bytes): as EIO, one log line
#                     naming "No space left on device"
#   sec-vanish        the faultfs under the secondary is lazily unmounted (fusermount3 -uz):
#                     detected (time printed), writes go on; it comes back, re-add, identical
#   pri-eio-mirror    primary reads → EIO, role mirror: in-sync chunks are served from the
#                     secondary (data correct, status secondary_reads > 0)
#   pri-eio-backup    the same with role backup: the read fails with EIO
#   bitmap-eio        bitmap_dir on a faultfs, fail_write=EIO: the data write is refused
#                     (EIO), neither backing file changes; the error stays (sticky) after the
#                     fault is cleared, until a remount; then writes work, legs identical
#   bitmap-*          truncated, bit-flipped, foreign set UUID, older events, newer format
#                     version (fields edited with test/reliability/fm_bmedit, CRC fixed): each
#                     with a planted difference on the secondary in a chunk whose bit is
#                     clear; the mount must not trust the bitmap (full resync, logged) and
#                     the legs end identical
#   config-*          bad values in config.json: mount refused naming the key, nothing changed
#   swapped           a config with primary and secondary swapped, and the secondary given
#                     as the source: mount refused, nothing changed
# A table of the cells is printed at the end.
. "$(dirname "$0")/lib.sh"

FM_FAULTFS=${FM_FAULTFS:-$(dirname "$FUSEMIRROR")/../test/tools/fm_faultfs}
[[ -x $FM_FAULTFS ]] || fail "fm_faultfs not found at $FM_FAULTFS (set FM_FAULTFS)"
BMEDIT=$FM_SRC_ROOT/test/reliability/fm_bmedit
fm_rand >/dev/null
CS=65536
MATRIX=()
cell() { MATRIX+=("$(printf '%-20s | %-62s | %s' "$1" "$2" "$3")"); }

# ------------------------------------------------------------------ fm_faultfs instances
declare -A FFPID=()
# ff_start NAME — fm_faultfs over $FM_TMP/NAME.bk at $FM_TMP/NAME; prints nothing.
ff_start() {
  local name=$1 bk=$FM_TMP/$1.bk mp=$FM_TMP/$1
  mkdir -p "$bk" "$mp"
  chmod 755 "$bk" "$mp"
  fm_bg env --default-signal=INT,QUIT "$FM_FAULTFS" "$bk" "$mp" -f 2>>"$FM_TMP/logs/faultfs.$name.log"
  FFPID[$name]=$FM_LAST_BG
  fm_track_mount "$mp"
  fm_wait_for "faultfs $name" 20 fm_is_mounted "$mp" || fail "fm_faultfs $name did not mount"
}
# ff_stop_all — stop every fm_faultfs (refuse() would take their mounts for strays)
ff_stop_all() {
  local name
  for name in "${!FFPID[@]}"; do
    fm_bg_stop "${FFPID[$name]}"
    fm_wait_for "faultfs $name gone" 10 bash -c '! awk -v m="$0" '"'"'$5 == m { f = 1 } END { exit !f }'"'"' /proc/self/mountinfo' "$FM_TMP/$name" ||
      fail "fm_faultfs $name still mounted after it was stopped"
  done
  FFPID=()
}
ctl() { # ctl NAME key=value...
  local name=$1
  shift
  printf '%s\n' "$*" >"$FM_TMP/$name/.faultfs" || fail "writing '$*' to $name/.faultfs failed"
}

# ------------------------------------------------------------------ status helpers
img() { fm_image_json "$MNT" disk.img; }
in_sync() { fm_image_is "$MNT" disk.img '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }
is_clean() { fm_image_is "$MNT" disk.img '.state == "clean" and .dirty_chunks == 0'; }
is_degraded() { fm_image_is "$MNT" disk.img '.secondary_ok == false'; }
degrade_lines() { grep -c -- "\] disk.img: secondary failed on" "$1" || true; }

# write_image — 4 MiB of random data through the mount, then wait until clean
DATA=$FM_TMP/logs/data.bin
head -c $((4 << 20)) "$(fm_rand)" >"$DATA"
write_image() {
  dd if="$DATA" of="$MNT/disk.img" bs=1M conv=fsync status=none || fail "writing the image failed"
  fm_wait_for "clean" 15 is_clean || fail "not clean 15 s after writing: $(img)"
}
# sec_set N — P=$FM_TMP/pN, a new set whose secondary is the fm_faultfs mount ffsN
sec_set() {
  ff_start "ffs$1"
  P=$FM_TMP/p$1
  mkdir -p "$P"
  fm_create "$P" "$FM_TMP/ffs$1" --chunk-size 64K --daemon-sleep 1
}
# wwrite OFF LEN — a write through the mount that must succeed (fsync'ed)
wwrite() {
  dd if="$(fm_rand)" of="$MNT/disk.img" bs="$2" count=1 iflag=skip_bytes skip=$((RANDOM * 64)) \
    oflag=seek_bytes seek="$1" conv=notrunc,fsync status=none || fail "write of $2 bytes at $1 through the mount failed"
}
# readd_and_check P S_FILE DIRTY COPIED0 — re-add, wait, copied <= dirty chunks, unmount, same
readd_and_check() {
  local p=$1 sfile=$2 dirty=$3 copied0=$4 copied
  fm_cli re-add "$MNT" disk.img
  fm_wait_for "resync" 60 in_sync || fail "resync after re-add did not finish: $(img)"
  copied=$(($(img | jq -r .sync.copied_bytes) - copied0))
  ((copied <= dirty * CS)) || fail "re-add copied $copied bytes > $dirty dirty chunks x $CS"
  fm_unmount "$MNT"
  assert_same "$p/disk.img" "$sfile"
  RESULT_COPIED=$copied
}

# ====================================================================== sec-eio-write
FM_CONTEXT=sec-eio-write
sec_set 1
fm_mount "$P" "$MNT"
write_image
ev0=$(img | jq -r .events)
ctl ffs1 fail_write=EIO
for i in 3 17 40; do wwrite $((i * CS + 100)) 4096; done
fm_wait_for "degraded" 5 is_degraded || fail "not degraded after secondary EIO: $(img)"
J=$(img)
ev1=$(jq -r .events <<<"$J")
# Written chunks only: the activity log's never-written chunks (logged_chunks) were equal on
# both legs and may clear while degraded (docs/write-path.md §3b); written ones may not.
dirty=$(jq -r '.dirty_chunks - .logged_chunks' <<<"$J")
((ev1 > ev0)) || soft_fail "events not bumped on degrade ($ev0 -> $ev1)"
((dirty >= 3)) || fail "only $dirty chunks dirty after 3 writes while degraded"
sleep 2.2 # two sweeps: nothing written may be cleared while degraded
d2=$(img | jq -r '.dirty_chunks - .logged_chunks')
((d2 >= dirty)) || fail "written bits cleared while degraded ($dirty -> $d2)"
n=$(degrade_lines "$P/.fusemirror/fusemirror.log")
((n == 1)) || soft_fail "want one degrade log line, got $n"
cmp -n $((4 << 20)) "$MNT/disk.img" "$P/disk.img" || fail "mount and primary differ"
ctl ffs1 fail_write=0
readd_and_check "$P" "$FM_TMP/ffs1.bk/disk.img" "$d2" "$(img | jq -r .sync.copied_bytes)"
cell sec-eio-write "writes ok, degraded (1 log line), events $ev0->$ev1, $d2 dirty" "identical after re-add ($RESULT_COPIED bytes copied)"

# ====================================================================== sec-eio-resync
FM_CONTEXT=sec-eio-resync
sec_set 2
# resync works in steps of up to 4 MiB and sleeps to keep the rate: 16 MiB at 2 MiB/s
fm_json_edit "$P/.fusemirror/config.json" '.resync_max_rate = 2097152 | .resync_min_rate = 65536'
fm_mount "$P" "$MNT"
write_image
fm_cli fail "$MNT" disk.img
dd if="$(fm_rand)" of="$MNT/disk.img" bs=1M count=16 conv=notrunc,fsync status=none || fail "write while failed"
fm_cli re-add "$MNT" disk.img
sleep 0.7
st=$(img | jq -r '.sync.action + " " + (.sync.done_bytes|tostring) + "/" + (.sync.total_bytes|tostring)')
ctl ffs2 fail_write=EIO
fm_wait_for "degraded during resync" 15 is_degraded || fail "a secondary write error during resync did not degrade: $(img)"
grep -qE 'disk.img: secondary failed on (resync write|write)' "$P/.fusemirror/fusemirror.log" ||
  soft_fail "no 'secondary failed on resync write' log line: $(grep 'secondary failed' "$P/.fusemirror/fusemirror.log")"
ctl ffs2 fail_write=0
d=$(img | jq -r .dirty_chunks)
readd_and_check "$P" "$FM_TMP/ffs2.bk/disk.img" "$d" "$(img | jq -r .sync.copied_bytes)"
cell sec-eio-resync "EIO mid-resync (at $st): degraded again" "identical after 2nd re-add ($RESULT_COPIED bytes)"

# ====================================================================== sec-enospc
FM_CONTEXT=sec-enospc
sec_set 3
fm_mount "$P" "$MNT"
write_image
ctl ffs3 fail_after_bytes=1048576
dd if="$(fm_rand)" of="$MNT/disk.img" bs=64K count=48 conv=notrunc,fsync status=none ||
  fail "3 MiB write failed: a full secondary must not fail the user's write"
fm_wait_for "degraded" 5 is_degraded || fail "not degraded after secondary ENOSPC: $(img)"
LOG=$P/.fusemirror/fusemirror.log
n=$(degrade_lines "$LOG")
((n == 1)) || soft_fail "want one degrade log line, got $n"
grep -q 'secondary failed on .*No space left on device' "$LOG" || soft_fail "degrade line does not say ENOSPC"
ctl ffs3 fail_after_bytes=0
d=$(img | jq -r .dirty_chunks)
readd_and_check "$P" "$FM_TMP/ffs3.bk/disk.img" "$d" "$(img | jq -r .sync.copied_bytes)"
cell sec-enospc "writes ok, degraded, 1 line 'No space left on device'" "identical after re-add ($RESULT_COPIED bytes, $d dirty)"

# ====================================================================== sec-vanish
FM_CONTEXT=sec-vanish
sec_set 4
fm_mount "$P" "$MNT"
write_image
t0=$(date +%s%N)
fusermount3 -uz "$FM_TMP/ffs4" || fail "fusermount3 -uz of the secondary's faultfs failed"
wwrite $((5 * CS)) 8192
fm_wait_for "degraded" 10 is_degraded || fail "vanished secondary not detected in 10 s: $(img)"
detect_ms=$((($(date +%s%N) - t0) / 1000000))
wwrite $((9 * CS)) 8192
old=${FFPID[ffs4]}
ff_start ffs4 # back, at the same path, over the same backing directory
d=$(img | jq -r .dirty_chunks)
readd_and_check "$P" "$FM_TMP/ffs4.bk/disk.img" "$d" "$(img | jq -r .sync.copied_bytes)"
fm_bg_stop "$old"
fm_log "sec-vanish: detected in $detect_ms ms"
cell sec-vanish "writes ok, detected in ${detect_ms} ms, degraded" "identical after return + re-add ($RESULT_COPIED bytes)"

# ====================================================================== primary EIO on read
pri_read_case() { # pri_read_case ROLE
  local role=$1 name=ffp_$1
  FM_CONTEXT=pri-eio-$role
  ff_start "$name"
  local S=$FM_TMP/s_$role
  mkdir -p "$S"
  fm_create "$FM_TMP/$name" "$S" --chunk-size 64K --daemon-sleep 1 --role "$role"
  fm_mount "$FM_TMP/$name" "$MNT"
  write_image
  fm_unmount "$MNT"
  fm_mount "$FM_TMP/$name" "$MNT"
  # Opened before the fault: the scan does not open an image closed clean (issue 12 §3),
  # and an image first opened while its primary fails reads cannot be (its bitmap is there).
  head -c 1 "$MNT/disk.img" >/dev/null || fail "reading disk.img before the fault failed"
  ctl "$name" fail_read=EIO
  local err=$FM_TMP/logs/read.$role.err rc=0
  dd if="$MNT/disk.img" of="$FM_TMP/logs/read.$role" bs=64K status=none 2>"$err" || rc=$?
  local sr
  sr=$(img | jq -r '.secondary_reads // 0')
  ctl "$name" fail_read=0
  if [[ $role == mirror ]]; then
    ((rc == 0)) || fail "role mirror: read failed (exit $rc: $(cat "$err")) though every chunk is in sync"
    cmp "$DATA" "$FM_TMP/logs/read.$role" || fail "role mirror: data read from the secondary is wrong"
    ((sr > 0)) || fail "role mirror: status secondary_reads is $sr, want > 0"
    cell pri-eio-mirror "primary read EIO: in-sync chunks read from the secondary" "data correct, secondary_reads=$sr"
  else
    ((rc != 0)) || fail "role backup: the read succeeded though the primary fails reads (secondary_reads=$sr)"
    grep -qi 'Input/output error' "$err" || fail "role backup: want EIO, got: $(cat "$err")"
    ((sr == 0)) || fail "role backup: secondary_reads=$sr, want 0"
    cell pri-eio-backup "primary read EIO, role backup: never read the secondary" "read fails with EIO (clear error)"
  fi
  fm_unmount "$MNT"
  assert_same "$FM_TMP/$name.bk/disk.img" "$S/disk.img"
}
pri_read_case mirror
pri_read_case backup

# ====================================================================== bitmap unwritable
FM_CONTEXT=bitmap-eio
ff_start ffb
P=$FM_TMP/p6 S=$FM_TMP/s6
mkdir -p "$P" "$S"
fm_create "$P" "$S" --chunk-size 64K --daemon-sleep 1 --bitmap-dir "$FM_TMP/ffb"
fm_mount "$P" "$MNT"
write_image
h0=$(md5sum <"$P/disk.img")
hs0=$(md5sum <"$S/disk.img")
ctl ffb fail_write=EIO
err=$FM_TMP/logs/bm.err
rc=0
dd if="$(fm_rand)" of="$MNT/disk.img" bs=4096 count=1 oflag=seek_bytes seek=$((20 * CS)) conv=notrunc,fsync status=none 2>"$err" || rc=$?
((rc != 0)) || fail "a data write succeeded while the bitmap could not be written (data without intent)"
grep -qi 'Input/output error' "$err" || soft_fail "want EIO for the refused write, got: $(cat "$err")"
[[ $(md5sum <"$P/disk.img") == "$h0" ]] || fail "the primary changed although the write was refused"
[[ $(md5sum <"$S/disk.img") == "$hs0" ]] || fail "the secondary changed although the write was refused"
grep -q 'bitmap write failed' "$P/.fusemirror/fusemirror.log" || soft_fail "no 'bitmap write failed' log line"
ctl ffb fail_write=0
rc=0
dd if="$(fm_rand)" of="$MNT/disk.img" bs=4096 count=1 oflag=seek_bytes seek=$((21 * CS)) conv=notrunc,fsync status=none 2>"$err" || rc=$?
sticky=$([[ $rc != 0 ]] && echo "sticky: still EIO after the fault cleared" || echo "NOT sticky")
((rc != 0)) || soft_fail "the bitmap error is not sticky: a write succeeded after the fault was cleared, before a remount (operations.md §3.4 says sticky)"
[[ $(md5sum <"$P/disk.img") == "$h0" || $rc == 0 ]] || fail "the primary changed by a refused write"
fm_unmount "$MNT"
fm_mount "$P" "$MNT"
wwrite $((22 * CS)) 4096
fm_wait_for "resync" 30 in_sync || fail "not in sync after the remount: $(img)"
fm_unmount "$MNT"
assert_same "$P/disk.img" "$S/disk.img"
cell bitmap-eio "write refused with EIO, legs untouched; $sticky" "remount: writes work, identical"

# ====================================================================== bitmap corruptions
P=$FM_TMP/p7 S=$FM_TMP/s7
mkdir -p "$P" "$S"
fm_create "$P" "$S" --chunk-size 64K --daemon-sleep 1
fm_mount "$P" "$MNT"
write_image
fm_unmount "$MNT"
BM=$(fm_bitmap_path "$P" disk.img)
LOG=$P/.fusemirror/fusemirror.log
bitmap_case() { # bitmap_case NAME CMD... — CMD damages $BM
  local name=$1
  shift
  FM_CONTEXT=bitmap-$name
  local before
  before=$(grep -c 'full resync' "$LOG" || true)
  # a difference the bitmap does not know about: only a full resync repairs it. The
  # secondary's mtime is kept, so its record (ino, size, mtime) still matches and only the
  # bitmap's damage can trigger the full resync.
  plant
  "$@" || fail "damaging the bitmap failed: $*"
  fm_mount "$P" "$MNT"
  fm_wait_for "resync" 30 in_sync || fail "resync did not finish: $(img)"
  local copied reason
  copied=$(img | jq -r .sync.copied_bytes)
  fm_unmount "$MNT"
  local after
  after=$(grep -c 'full resync' "$LOG" || true)
  reason=$(grep 'full resync' "$LOG" | tail -n 1 | sed -E 's/.*(not trusted: |full resync: )//' | cut -c1-60)
  if ((after <= before)); then
    soft_fail "the damaged bitmap ($name) was trusted: no full resync logged"
    reason="TRUSTED (no full resync)"
  fi
  if ! cmp -s "$P/disk.img" "$S/disk.img"; then
    soft_fail "$name: legs differ after the mount: the damaged bitmap hid a difference (silent divergence)"
    cell "bitmap-$name" "full resync, logged" "FAIL: legs differ ($reason)"
    touch -r "$S/disk.img" "$FM_TMP/logs/mtime.ref" # repair by hand for the next case
    cat "$P/disk.img" >"$S/disk.img"
    touch -r "$FM_TMP/logs/mtime.ref" "$S/disk.img"
    return 0
  fi
  cell "bitmap-$name" "not trusted: full resync ($copied bytes), logged" "identical; log: $reason"
}
plant() {
  touch -r "$S/disk.img" "$FM_TMP/logs/mtime.ref"
  pwrite_rand "$S/disk.img" $((7 * CS + 512)) 1024
  touch -r "$FM_TMP/logs/mtime.ref" "$S/disk.img"
}
# control: an intact bitmap is trusted, so the planted difference survives the mount (the
# documented limit of operations.md §5.2: only check finds it). Proves the cells below can fail.
FM_CONTEXT=bitmap-control
before=$(grep -c 'full resync' "$LOG" || true)
plant
fm_mount "$P" "$MNT"
fm_wait_for "resync" 30 in_sync || fail "resync did not finish: $(img)"
fm_unmount "$MNT"
after=$(grep -c 'full resync' "$LOG" || true)
((after == before)) || fail "control: an intact bitmap led to a full resync: $(grep 'full resync' "$LOG" | tail -n 1)"
cmp -s "$P/disk.img" "$S/disk.img" && fail "control: the planted difference vanished without a full resync"
cell bitmap-control "intact bitmap + hidden difference: trusted, no full resync" "difference stays (as documented; check finds it)"
touch -r "$S/disk.img" "$FM_TMP/logs/mtime.ref"
cat "$P/disk.img" >"$S/disk.img"
touch -r "$FM_TMP/logs/mtime.ref" "$S/disk.img"
uuid_hex=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
bitmap_case truncated truncate -s 2000 "$BM"
bitmap_case bit-flipped "$BMEDIT" "$BM" flip 50
bitmap_case foreign "$BMEDIT" "$BM" set set_uuid "$uuid_hex"
old_events() { "$BMEDIT" "$BM" set events 1 && "$BMEDIT" "$BM" set events_cleared 1; }
bitmap_case older-events old_events
bitmap_case newer-version "$BMEDIT" "$BM" set version_major 2
FM_CONTEXT=""

# ====================================================================== bad config values
ff_stop_all
P=$FM_TMP/p8 S=$FM_TMP/s8
mkdir -p "$P" "$S"
fm_create "$P" "$S" --chunk-size 64K --daemon-sleep 1
CFG=$P/.fusemirror/config.json
cp -p "$CFG" "$FM_TMP/logs/config.orig"
config_case() { # config_case NAME JQ REGEX
  FM_CONTEXT=config-$1
  cat "$FM_TMP/logs/config.orig" >"$CFG"
  fm_json_edit "$CFG" "$2"
  local n=${#FM_SOFT_FAILS[@]}
  refuse "config $1" "$3" "$FUSEMIRROR" mount "$P" "$MNT"
  if ((${#FM_SOFT_FAILS[@]} == n)); then
    cell "config-$1" "mount refused naming the key" "refused: $(cut -c1-70 <<<"${FM_LAST_STDERR#fusemirror: }")"
  else
    cell "config-$1" "mount refused naming the key" "FAIL: ${FM_SOFT_FAILS[-1]:0:70}"
  fi
}
config_case chunk_size '.chunk_size = 5000' chunk_size
config_case daemon_sleep '.daemon_sleep = 0' daemon_sleep
config_case write_behind '.write_behind = 20000' write_behind
config_case role '.role = "primary"' role
config_case rates '.resync_min_rate = 10485760 | .resync_max_rate = 1048576' resync_m
config_case unknown-key '.chunksize = 65536' chunksize
config_case format '.format = 2' format
config_case uuid '.uuid = "not-a-uuid"' uuid
config_case same-dirs ".secondary = \"$P\"" secondary
config_case relative '.primary = "relative/p"' primary
config_case bitmap-type '.bitmap = "yes"' bitmap
# a number no double holds (found by fuzz_config): a clear error naming the file, not a
# library exception text
FM_CONTEXT=config-overflow
sed -E 's/"daemon_sleep": *[0-9.]+/"daemon_sleep": 1e400/' "$FM_TMP/logs/config.orig" >"$CFG"
grep -q 1e400 "$CFG" || fail "could not plant 1e400 in the config"
n=${#FM_SOFT_FAILS[@]}
refuse "config overflow" "config .*config\.json" "$FUSEMIRROR" mount "$P" "$MNT"
if ((${#FM_SOFT_FAILS[@]} == n)); then
  cell config-overflow "daemon_sleep 1e400: refused naming the file" "refused: $(cut -c1-70 <<<"${FM_LAST_STDERR#fusemirror: }")"
else
  cell config-overflow "daemon_sleep 1e400: refused naming the file" "FAIL: ${FM_LAST_STDERR:0:70}"
fi
cat "$FM_TMP/logs/config.orig" >"$CFG"

# ====================================================================== swapped directories
FM_CONTEXT=swapped
fm_mount "$P" "$MNT"
write_image
fm_unmount "$MNT"
jq --arg p "$S" --arg s "$P" '.primary = $p | .secondary = $s' "$CFG" >"$FM_TMP/logs/swapped.json"
n=${#FM_SOFT_FAILS[@]}
refuse "swapped config" "" "$FUSEMIRROR" mount "$FM_TMP/logs/swapped.json" "$MNT"
r1=$(cut -c1-60 <<<"${FM_LAST_STDERR#fusemirror: }")
refuse "secondary as source" "" "$FUSEMIRROR" mount "$S" "$MNT"
r2=$(cut -c1-50 <<<"${FM_LAST_STDERR#fusemirror: }")
if ((${#FM_SOFT_FAILS[@]} == n)); then
  cell swapped "mount refused, nothing changed" "refused: $r1 / $r2"
else
  cell swapped "mount refused, nothing changed" "FAIL: ${FM_SOFT_FAILS[-1]:0:70}"
fi
assert_same "$P/disk.img" "$S/disk.img"
FM_CONTEXT=""

printf '\nfault matrix:\n%-20s | %-62s | %s\n' cell "what happened" outcome
printf '%s\n' "${MATRIX[@]}"
echo
fm_pass
