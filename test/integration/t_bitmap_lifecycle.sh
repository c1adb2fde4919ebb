#!/bin/bash
# t_bitmap_lifecycle — the write-intent bitmap over a mount's life (daemon sleep 1 s):
#   * images adopted at create, and images copied into PRIMARY behind the daemon's back,
#     are copied to SECONDARY after mount (initial resync), visible in status;
#   * while writes run: status dirty_chunks > 0 and examine-bitmap shows dirty bits;
#   * ~3x daemon sleep after the writes stop: dirty_chunks == 0, examine-bitmap 0 dirty;
#   * after unmount: examine-bitmap State clean, 0 dirty;
#   * a resync leaves neither leg's page cache full (drop-behind);
#   * `bitmap` switched off and on: clean under "none" comes back with every bit clear (no
#     resync), a crash under "none" comes back all dirty.
. "$(dirname "$0")/lib.sh"

SLEEP=1
CHUNK=65536

# img_get NAME JQ — a field of image NAME from status --json (on $MNT)
img_get() { fm_image_json "$MNT" "$1" | jq -r "$2"; }

# resynced NAME — status says NAME is fully in sync
resynced() { fm_image_is "$MNT" "$1" '.dirty_chunks == 0 and .sync.action == "idle" and .state == "clean"'; }

examine_dirty() { # examine_dirty BITMAP → dirty count
  local out
  out=$(fm_examine "$1")
  read -r _ d < <(fm_examine_bits "$out")
  printf '%s\n' "$d"
}

# ------------------------------------------------------------------ adopted at create
FM_CONTEXT="adopt at create"
truncate -s 8M "$PRI/adopt.img"
pwrite_rand "$PRI/adopt.img" 0 1048576
pwrite_rand "$PRI/adopt.img" $((5 * 1048576)) $((512 * 1024))
mkdir -p "$PRI/sub"
pwrite_rand "$PRI/sub/adopt2.img" 0 $((300 * 1024 + 7))

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep "$SLEEP"
[[ $(stat -c %a "$PRI/.fusemirror/config.json") == 600 ]] ||
  soft_fail "config.json mode is $(stat -c %a "$PRI/.fusemirror/config.json"), want 600"
[[ -f $SEC/.fusemirror/member.json ]] || soft_fail "create did not write $SEC/.fusemirror/member.json"

# if create already wrote the adopted images' bitmaps, they must be all dirty
bm=$(fm_bitmap_path "$PRI" adopt.img)
if [[ -f $bm ]]; then
  out=$(fm_examine "$bm")
  read -r total dirty < <(fm_examine_bits "$out")
  ((total == 8 * 1048576 / CHUNK)) || soft_fail "adopted bitmap has $total bits, want $((8 * 1048576 / CHUNK))"
  ((dirty == total)) || soft_fail "adopted bitmap has $dirty of $total dirty, want all dirty"
  st=$(fm_examine_field "$out" State)
  [[ $st != clean ]] || soft_fail "adopted bitmap (all dirty) has State clean"
fi

fm_mount "$PRI" "$MNT"
for name in adopt.img sub/adopt2.img; do
  fm_wait_for "resync of $name" 30 resynced "$name" ||
    fail "adopted $name not in sync 30s after mount: $(fm_image_json "$MNT" "$name")"
  assert_same "$PRI/$name" "$SEC/$name"
  cmp -s "$MNT/$name" "$PRI/$name" || fail "$name reads differently through the mount"
done
[[ $(img_get adopt.img .size) == $((8 * 1048576)) ]] || soft_fail "status size of adopt.img is $(img_get adopt.img .size)"
[[ $(img_get adopt.img .chunk_size) == "$CHUNK" ]] || soft_fail "status chunk_size of adopt.img is $(img_get adopt.img .chunk_size)"
[[ $(img_get adopt.img .total_chunks) == $((8 * 1048576 / CHUNK)) ]] || soft_fail "status total_chunks of adopt.img is $(img_get adopt.img .total_chunks)"

# ------------------------------------------------------------------ dirty while writing
FM_CONTEXT="write loop"
truncate -s 16M "$MNT/busy.img"
writer() {
  trap - ERR
  set +e
  while :; do
    pwrite_rand "$MNT/busy.img" $(((RANDOM % 256) * CHUNK + RANDOM % 1000)) $((4096 + RANDOM % 60000))
    sleep 0.05
  done
}
fm_bg writer
wpid=$FM_LAST_BG
busy_bm=$(fm_bitmap_path "$PRI" busy.img)

seen_status=0 seen_exam=0 seen_active=0
deadline=$((SECONDS + 15))
while ((SECONDS < deadline)) && ((seen_status == 0 || seen_exam == 0)); do
  j=$(fm_image_json "$MNT" busy.img)
  d=$(jq -r .dirty_chunks <<<"$j")
  if ((d > 0)); then
    seen_status=$d
    [[ $(jq -r .state <<<"$j") == active ]] && seen_active=1
  fi
  if [[ -f $busy_bm ]]; then
    out=$(fm_examine "$busy_bm")
    read -r _ ed < <(fm_examine_bits "$out")
    if ((ed > 0)); then
      seen_exam=$ed
      st=$(fm_examine_field "$out" State)
      [[ $st != clean ]] || soft_fail "examine-bitmap State is 'clean' with $ed dirty bits while mounted and writing"
    fi
  fi
  sleep 0.2
done
fm_alive "$wpid" || fail "the write loop died"
((seen_status > 0)) || fail "status --json never showed dirty_chunks > 0 for busy.img during writes"
((seen_exam > 0)) || fail "examine-bitmap $busy_bm never showed dirty bits during writes"
((seen_active)) || soft_fail "status state was never 'active' while busy.img had dirty chunks"
fm_log "during writes: status dirty=$seen_status, examine-bitmap dirty=$seen_exam"

# ------------------------------------------------------------------ clear when idle
FM_CONTEXT="idle"
fm_bg_stop "$wpid"
t0=$SECONDS
limit=$((3 * SLEEP + 2))
clean_status() { [[ $(img_get busy.img .dirty_chunks) == 0 ]]; }
clean_exam() { [[ $(examine_dirty "$busy_bm") == 0 ]]; }
if fm_wait_for "dirty_chunks == 0" "$limit" clean_status; then
  fm_log "status dirty_chunks reached 0 after $((SECONDS - t0))s idle"
elif fm_wait_for "dirty_chunks == 0 (late)" 30 clean_status; then
  soft_fail "dirty_chunks reached 0 only after $((SECONDS - t0))s idle (daemon sleep ${SLEEP}s, limit ${limit}s)"
else
  fail "dirty_chunks still $(img_get busy.img .dirty_chunks) after $((SECONDS - t0))s idle"
fi
if fm_wait_for "examine-bitmap 0 dirty" "$limit" clean_exam; then
  :
elif fm_wait_for "examine-bitmap 0 dirty (late)" 30 clean_exam; then
  soft_fail "examine-bitmap showed 0 dirty only after $((SECONDS - t0))s idle"
else
  fail "examine-bitmap still shows $(examine_dirty "$busy_bm") dirty bits after $((SECONDS - t0))s idle"
fi
[[ $(img_get busy.img .state) == clean ]] || soft_fail "status state of idle busy.img is '$(img_get busy.img .state)', want clean"
assert_same "$PRI/busy.img" "$SEC/busy.img"

# one more burst, then unmount right away: unmount must leave everything clean
pwrite_rand "$MNT/busy.img" 0 $((1048576 + 5))
pwrite_rand "$MNT/adopt.img" $((3 * 1048576)) 4096

FM_CONTEXT="unmount"
fm_unmount "$MNT"
declare -A events1=()
for name in adopt.img sub/adopt2.img busy.img; do
  bm=$(fm_bitmap_path "$PRI" "$name")
  [[ -f $bm ]] || fail "no bitmap $bm after unmount"
  out=$(fm_examine "$bm")
  st=$(fm_examine_field "$out" State)
  [[ $st == clean ]] || fail "examine-bitmap $name after unmount: State '$st', want clean"
  read -r total dirty < <(fm_examine_bits "$out")
  ((dirty == 0)) || fail "examine-bitmap $name after unmount: $dirty dirty bits, want 0"
  [[ $(fm_examine_field "$out" Magic) == FMBITMAP ]] || soft_fail "examine-bitmap Magic is '$(fm_examine_field "$out" Magic)'"
  [[ $(fm_examine_field "$out" UUID) != "" ]] || soft_fail "examine-bitmap shows no UUID"
  [[ $(fm_examine_field "$out" Version) == 1.0 ]] || soft_fail "examine-bitmap Version is '$(fm_examine_field "$out" Version)', want 1.0"
  [[ $(fm_examine_field "$out" "Write Mode") == Normal ]] || soft_fail "examine-bitmap Write Mode is '$(fm_examine_field "$out" "Write Mode")', want Normal (synchronous)"
  [[ $(fm_examine_field "$out" Chunksize) == "64 KiB" ]] || soft_fail "examine-bitmap Chunksize is '$(fm_examine_field "$out" Chunksize)', want '64 KiB'"
  [[ $(fm_examine_field "$out" "Daemon sleep") == "${SLEEP}s" ]] || soft_fail "examine-bitmap Daemon sleep is '$(fm_examine_field "$out" "Daemon sleep")', want '${SLEEP}s'"
  events1[$name]=$(fm_examine_field "$out" Events)
  ec=$(fm_examine_field "$out" "Events Cleared")
  [[ ${events1[$name]} =~ ^[0-9]+$ && $ec =~ ^[0-9]+$ ]] || soft_fail "examine-bitmap Events '${events1[$name]}' / Events Cleared '$ec' not numbers"
  size=$(stat -c %s "$PRI/$name")
  ssz=$(fm_examine_field "$out" "Sync Size")
  [[ ${ssz%% *} == "$size" ]] ||
    soft_fail "examine-bitmap $name Sync Size '$(fm_examine_field "$out" "Sync Size")' does not show the image size $size"
  ((total == (size + CHUNK - 1) / CHUNK)) || soft_fail "examine-bitmap $name: $total bits for $size bytes at 64 KiB chunks"
  assert_same "$PRI/$name" "$SEC/$name"
done

# ------------------------------------------------------------------ behind the daemon's back
FM_CONTEXT="behind the back"
pwrite_rand "$PRI/behind.img" 0 $((2 * 1048576 + 333))
mkdir -p "$PRI/sub/deeper"
truncate -s 1G "$PRI/sub/deeper/sparse.img"
pwrite_rand "$PRI/sub/deeper/sparse.img" $((700 * 1048576)) 70000
# 64 MiB of data for the resync's drop-behind: the copy must leave neither leg's page cache
# full (docs/write-path.md, "Resync's drop-behind"). Its pages written here are dropped
# first, so that only the resync could have cached them.
dd if=/dev/urandom of="$PRI/big.img" bs=1M count=64 conv=fsync status=none || fail "writing big.img failed"
dd if="$PRI/big.img" iflag=nocache count=0 status=none
fm_mount "$PRI" "$MNT"
for name in behind.img sub/deeper/sparse.img big.img; do
  fm_wait_for "resync of $name" 60 resynced "$name" ||
    fail "$name (copied into the primary while unmounted) not in sync 60s after mount: $(fm_image_json "$MNT" "$name")"
  if [[ $name == big.img ]]; then
    # Before assert_same, whose reads fill the cache. The last copies' writeback may still
    # be settling: at most 4 MiB of 64 may stay.
    for leg in "$PRI" "$SEC"; do
      cached=$(fincore -nb -o RES "$leg/big.img")
      ((cached <= 4 << 20)) || fail "after the resync, $cached bytes of $leg/big.img are in the page cache (expected at most 4 MiB of 64)"
    done
  fi
  assert_same "$PRI/$name" "$SEC/$name"
done
# the images that were clean stay clean: no resync of them
for name in adopt.img busy.img; do
  j=$(fm_image_json "$MNT" "$name")
  jq -e '.dirty_chunks == 0' >/dev/null <<<"$j" || soft_fail "$name was clean at unmount but shows dirty after remount: $j"
  # Opened, so that this mount assembles it (an image no one opens stays as its clean close
  # left it: the scan does not load it, issue 12 §3), and its Events grow below.
  head -c 1 "$MNT/$name" >/dev/null || soft_fail "reading $name through the mount failed"
done
fm_unmount "$MNT"
for name in adopt.img busy.img behind.img sub/deeper/sparse.img; do
  bm=$(fm_bitmap_path "$PRI" "$name")
  [[ -f $bm ]] || fail "no bitmap $bm after second unmount"
  out=$(fm_examine "$bm")
  st=$(fm_examine_field "$out" State)
  [[ $st == clean ]] || fail "examine-bitmap $name after second unmount: State '$st'"
  read -r _ dirty < <(fm_examine_bits "$out")
  ((dirty == 0)) || fail "examine-bitmap $name after second unmount: $dirty dirty"
  if [[ -n ${events1[$name]:-} ]]; then
    e2=$(fm_examine_field "$out" Events)
    e1=${events1[$name]}
    ((e2 > e1)) || soft_fail "$name: Events did not grow across a mount cycle (${events1[$name]} -> $e2)"
  fi
  assert_same "$PRI/$name" "$SEC/$name"
done

# ------------------------------------------------------------------ SIGTERM / SIGINT
# a -f daemon unmounts cleanly on SIGTERM and SIGINT: exit 0, mount gone, bitmaps clean
for sig in TERM INT; do
  FM_CONTEXT="SIG$sig"
  fm_mount "$PRI" "$MNT"
  pwrite_rand "$MNT/busy.img" $((3 * CHUNK + 5)) 70000
  pwrite_rand "$MNT/behind.img" 0 4096
  fm_signal_daemon "$MNT" "$sig"
  for name in busy.img behind.img; do
    out=$(fm_examine "$(fm_bitmap_path "$PRI" "$name")")
    st=$(fm_examine_field "$out" State)
    read -r _ dirty < <(fm_examine_bits "$out")
    [[ $st == clean && $dirty == 0 ]] || soft_fail "$name after SIG$sig: examine-bitmap State '$st', $dirty dirty; want clean, 0"
    assert_same "$PRI/$name" "$SEC/$name"
  done
done

# ------------------------------------------------------------------ --bitmap-dir
FM_CONTEXT="--bitmap-dir"
P2=$FM_TMP/p2 S2=$FM_TMP/s2 BD=$FM_TMP/bitmaps2 M2=$FM_TMP/m2
mkdir -p "$P2" "$S2" "$BD" "$M2"
pwrite_rand "$P2/pre.img" 0 200000
fm_create "$P2" "$S2" --chunk-size 64K --daemon-sleep "$SLEEP" --bitmap-dir "$BD"
fm_mount "$P2" "$M2"
mkdir -p "$M2/d"
pwrite_rand "$M2/d/new.img" 0 100000
j=$(fm_image_json "$M2" d/new.img)
[[ $(realpath -m "$(jq -r .bitmap_file <<<"$j")") == "$BD/d/new.img.fmbm" ]] ||
  soft_fail "with --bitmap-dir $BD, status bitmap_file of d/new.img is $(jq -r .bitmap_file <<<"$j")"
synced2() { [[ $(fm_image_json_try "$M2" pre.img | jq -r '.dirty_chunks == 0 and .sync.action == "idle"') == true ]]; }
fm_wait_for "resync of pre.img" 30 synced2 || fail "pre.img not resynced 30s after mount (--bitmap-dir set)"
fm_unmount "$M2"
for name in pre.img d/new.img; do
  [[ -f $BD/$name.fmbm ]] || soft_fail "with --bitmap-dir, no bitmap $BD/$name.fmbm"
  [[ ! -e $P2/.fusemirror/bitmaps/$name.fmbm ]] || soft_fail "with --bitmap-dir, a bitmap was also made in $P2/.fusemirror/bitmaps"
  if [[ -f $BD/$name.fmbm ]]; then
    out=$(fm_examine "$BD/$name.fmbm")
    [[ $(fm_examine_field "$out" State) == clean ]] || soft_fail "$BD/$name.fmbm after unmount: State $(fm_examine_field "$out" State)"
  fi
  assert_same "$P2/$name" "$S2/$name"
done
fm_assert_log_clean "$P2"

# ------------------------------------------------------------------ bitmap off, then on again
# An operator switches `bitmap` off and on. Closed clean under "none", the images must come
# back with every bit clear — no full resync, checksums kept — and their data in sync.
FM_CONTEXT="bitmap none -> on"
P3=$FM_TMP/p3 S3=$FM_TMP/s3 M3=$FM_TMP/m3
mkdir -p "$P3" "$S3" "$M3"
fm_create "$P3" "$S3" --chunk-size 64K --daemon-sleep "$SLEEP"
fm_json_edit "$P3/.fusemirror/config.json" '.bitmap = false'
fm_mount "$P3" "$M3"
pwrite_rand "$M3/sw.img" 0 $((4 * 1048576))
fm_unmount "$M3"
bm3=$(fm_bitmap_path "$P3" sw.img)
out=$(fm_examine "$bm3")
[[ $(fm_examine_field "$out" State) == "clean, no-bits" ]] ||
  soft_fail "after a clean unmount with bitmap none, examine-bitmap State is '$(fm_examine_field "$out" State)', want 'clean, no-bits'"
[[ $(fm_examine_field "$out" Bitmap) == *"every chunk in sync"* ]] ||
  soft_fail "examine-bitmap of a clean none bitmap says Bitmap '$(fm_examine_field "$out" Bitmap)'"
fm_json_edit "$P3/.fusemirror/config.json" '.bitmap = true'
n0=$(grep -c 'full resync\|resync started' "$P3/.fusemirror/fusemirror.log" || true)
fm_mount "$P3" "$M3"
cmp -s "$M3/sw.img" "$P3/sw.img" || fail "sw.img reads differently through the mount"
[[ $(fm_image_json "$M3" sw.img | jq -r .dirty_chunks) == 0 ]] ||
  fail "bitmap switched on after a clean none unmount: $(fm_image_json "$M3" sw.img | jq -c '{dirty_chunks, sync}')"
n1=$(grep -c 'full resync\|resync started' "$P3/.fusemirror/fusemirror.log" || true)
((n1 == n0)) || fail "bitmap switched on after a clean none unmount started a resync: $(tail -n 5 "$P3/.fusemirror/fusemirror.log")"
! grep -q 'checksums reset' "$P3/.fusemirror/fusemirror.log" || soft_fail "switching the bitmap on reset the checksums"
pwrite_rand "$M3/sw.img" $((1048576 + 4096)) 4096
fm_unmount "$M3"
out=$(fm_examine "$bm3")
read -r total dirty < <(fm_examine_bits "$out")
((total == 64 && dirty == 0)) || soft_fail "after the switch on and a clean unmount: $total bits, $dirty dirty (want 64, 0)"
[[ $(fm_examine_field "$out" State) == clean ]] || soft_fail "after the switch on, State '$(fm_examine_field "$out" State)'"
assert_same "$P3/sw.img" "$S3/sw.img"
# A crash under "none" (mounted, no clean unmount) must still mean all dirty once bits are on.
fm_json_edit "$P3/.fusemirror/config.json" '.bitmap = false'
fm_mount "$P3" "$M3"
pwrite_rand "$M3/sw.img" 0 4096
fm_kill9_daemon "$M3"
fm_json_edit "$P3/.fusemirror/config.json" '.bitmap = true'
fm_mount "$P3" "$M3"
fm_wait_for "resync after a crash under none" 30 \
  fm_image_is "$M3" sw.img '.dirty_chunks == 0 and .sync.action == "idle" and .state == "clean"' ||
  fail "sw.img not in sync 30 s after a crash under none: $(fm_image_json "$M3" sw.img)"
grep -q 'not shut down cleanly' "$P3/.fusemirror/fusemirror.log" ||
  soft_fail "the log does not say why the bitmap was not trusted after a crash under none"
fm_unmount "$M3"
assert_same "$P3/sw.img" "$S3/sw.img"

fm_assert_log_clean "$PRI"

fm_pass
