#!/bin/bash
# t_operator — the operator's interface (docs/quickstart.md §3, docs/operations.md §2):
#   1. `status --json` during a throttled resync shows done_bytes moving; the text form and
#      the md-sysfs-style files under MOUNT/.fusemirror/images/ show the same numbers;
#      sync_speed_max is a live tunable; `status --watch` redraws on a tty, prints once off it;
#      `fusemirror wait` returns when a resync, check or re-add is done (not while queued or
#      running), gives up at --timeout naming what runs, refuses a degraded or unknown image;
#      `wait --clean` also waits for the sweeper.
#   2. a non-owner (uid 65534) may read the control files but not write them, on a mount
#      made with -o allow_other.
#   3. rescale-bitmap on planted bit patterns (written through the mount, daemon killed -9
#      so the bits stay): examine-bitmap shows the new chunk size and the dirty count the
#      collapse (OR) / expand (copy) rule predicts; refused while mounted and for a bitmap
#      whose set cannot be found; the set mounts and resyncs with the rescaled bitmap.
#   4. `mount -t fuse.fusemirror` (through /sbin/mount.fuse.fusemirror from a temp-prefix
#      `cmake --install`), an fstab line (mount -T FILE), mount.fuse3's form, -o passed through.
#   5. --help of every subcommand, the man page, and the CPack .deb's contents.
. "$(dirname "$0")/lib.sh"

command -v setpriv >/dev/null || fail "missing setpriv (util-linux)"
F=$FUSEMIRROR
BUILD_DIR=$(dirname "$(dirname "$FUSEMIRROR")")
# the control files must be reachable by uid 65534 (mktemp -d makes FM_TMP 0700)
chmod 0755 "$FM_TMP"

# ------------------------------------------------------------------ 1. resync progress
FM_CONTEXT="progress"
# An adopted 64 MiB image of random data: create marks it all dirty, the mount copies it.
head -c $((64 << 20)) /dev/urandom >"$PRI/big.img"
fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$PRI/.fusemirror/config.json" '.resync_max_rate = 2097152 | .resync_min_rate = 0'
fm_mount "$PRI" "$MNT" -o allow_other
CTL=$MNT/.fusemirror/images/big.img
TOTAL=$((64 << 20))

img() { fm_image_json "$MNT" big.img; }
fm_wait_for "resync running" 10 bash -c "[[ \$(cat '$CTL/sync_action') == resync ]]" ||
  fail "sync_action never became resync: $(img)"
J1=$(img)
[[ $(jq -r .sync.action <<<"$J1") == resync ]] || fail "status --json: sync.action not resync: $J1"
[[ $(jq -r .sync.total_bytes <<<"$J1") == "$TOTAL" ]] || soft_fail "sync.total_bytes $(jq -r .sync.total_bytes <<<"$J1"), want $TOTAL"
d1=$(jq -r .sync.done_bytes <<<"$J1")
sleep 2.5
J2=$(img)
T=$("$F" status "$MNT")
J3=$(img)
d2=$(jq -r .sync.done_bytes <<<"$J2")
d3=$(jq -r .sync.done_bytes <<<"$J3")
fm_log "done_bytes $d1 -> $d2 -> $d3 of $TOTAL"
((d2 > d1)) || soft_fail "done_bytes did not move during the resync: $d1 -> $d2"
((d3 < TOTAL)) || soft_fail "resync finished too fast to watch (max rate not applied?): $J3"
[[ $(jq -r .state <<<"$J2") == resyncing ]] || soft_fail "state during resync: $(jq -r .state <<<"$J2")"
((${#d3} > 0 && $(jq -r '.sync.speed // 0' <<<"$J3") > 0)) || soft_fail "no sync.speed in status during the resync: $J3"
jq -e '.sync.eta_seconds >= 0 and .sync.started > 0' >/dev/null <<<"$J3" || soft_fail "no sync.eta_seconds/started: $J3"

# The text form: the same image, state, size, chunk count and a progress between J2 and J3.
printf '%s\n' "$T" >"$FM_TMP/logs/status.txt"
grep -qE "^  big\.img : resyncing raid1 \[UU\] 64 MiB$" <<<"$T" || soft_fail "text status image line: $T"
total_chunks=$(jq -r .total_chunks <<<"$J2")
grep -qE "bitmap: [0-9]+/$total_chunks chunks dirty, 64 KiB chunk" <<<"$T" || soft_fail "text bitmap line: $T"
pline=$(grep -E '\] +resync = ' <<<"$T" || true)
if [[ $pline =~ resync\ =\ ([0-9.]+)%\ \(.*/64\ MiB\)\ finish=([0-9.]+(s|min|h))\ speed=([0-9.]+\ [KMG]?i?B/s) ]]; then
  pct=${BASH_REMATCH[1]}
  awk -v p="$pct" -v a="$d2" -v b="$d3" -v t="$TOTAL" \
    'BEGIN { exit !(p + 0.05 >= 100 * a / t - 0.05 && p - 0.05 <= 100 * b / t + 0.05) }' ||
    soft_fail "text progress $pct% is not between the JSON's $d2 and $d3 of $TOTAL"
else
  soft_fail "no progress line with finish= and speed= in the text status: $T"
fi

# The md-sysfs-style files say the same.
sc=$(cat "$CTL/sync_completed")
[[ $sc =~ ^([0-9]+)\ /\ $TOTAL$ ]] || soft_fail "sync_completed '$sc', want 'DONE / $TOTAL'"
((${BASH_REMATCH[1]:-0} >= d3)) || soft_fail "sync_completed ${BASH_REMATCH[1]:-?} went back from $d3"
[[ $(cat "$CTL/state") == resyncing ]] || soft_fail "state file: $(cat "$CTL/state")"
[[ $(cat "$CTL/secondary") == recovering ]] || soft_fail "secondary file during resync: $(cat "$CTL/secondary")"
[[ $(cat "$CTL/degraded") == 0 ]] || soft_fail "degraded file: $(cat "$CTL/degraded")"
(($(cat "$CTL/sync_speed") > 0)) || soft_fail "sync_speed file: $(cat "$CTL/sync_speed")"
[[ $(cat "$CTL/sync_speed_max") == 2097152 ]] || soft_fail "sync_speed_max: $(cat "$CTL/sync_speed_max"), want the config's 2097152"
ls "$MNT/.fusemirror/images" | grep -qx big.img || soft_fail "images/ does not list big.img"
[[ $(ls "$CTL" | tr '\n' ' ') == *"mismatch_cnt"*"sync_action"*"sync_speed_max"* ]] || soft_fail "attribute listing: $(ls "$CTL")"

# status --watch: one snapshot when stdout is not a terminal, redraws on one.
out=$(fm_timeout 10 "$F" status --watch 0.3 "$MNT") || soft_fail "status --watch off a tty did not exit by itself"
(($(grep -c Personalities <<<"$out") == 1)) || soft_fail "status --watch off a tty printed $(grep -c Personalities <<<"$out") snapshots"
[[ $out != *$'\033'* ]] || soft_fail "status --watch off a tty printed escape codes"
script -qfec "timeout 1.5 $F status --watch 0.3 $MNT" /dev/null >"$FM_TMP/logs/watch.tty" </dev/null || true
n=$(grep -c "Every 0.3s" "$FM_TMP/logs/watch.tty" || true)
((n >= 2)) || soft_fail "status --watch on a tty redrew $n times in 1.5 s"

# ------------------------------------------------------------------ 2. non-owner refused
FM_CONTEXT="non-owner"
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
nobody cat "$CTL/state" >/dev/null || soft_fail "uid 65534 cannot read $CTL/state"
nobody cat "$MNT/.fusemirror/status.json" | jq -e . >/dev/null || soft_fail "uid 65534 cannot read status.json"
for f in sync_action secondary sync_speed_max; do
  before=$(cat "$CTL/$f")
  case $f in sync_action) v=idle ;; secondary) v=fail ;; *) v=1 ;; esac
  if nobody sh -c "echo $v > '$CTL/$f'" 2>"$FM_TMP/logs/nobody.err"; then
    soft_fail "uid 65534 wrote '$v' to $f"
  else
    grep -qi "permission denied" "$FM_TMP/logs/nobody.err" || soft_fail "uid 65534 writing $f: $(cat "$FM_TMP/logs/nobody.err")"
  fi
  [[ $f == sync_action || $(cat "$CTL/$f") == "$before" ]] || soft_fail "$f changed after a refused write"
done
nobody sh -c "echo 'sync-action big.img idle' > '$MNT/.fusemirror/control'" 2>/dev/null &&
  soft_fail "uid 65534 wrote to the control file"
[[ $(cat "$CTL/sync_action") == resync ]] || soft_fail "the resync stopped after refused writes"

# `fusemirror wait` (mdadm --wait): gives up at its timeout naming what is still running,
# refuses an image the set does not have and a negative timeout.
expect_fail "wait during a throttled resync" "still not in sync after 0.5s \(big\.img: resync at [0-9.]+%\)" \
  "$F" wait "$MNT" big.img --timeout 0.5
expect_fail "wait for an unknown image" "no image 'nope\.img' in this set \(images: big\.img\)" "$F" wait "$MNT" nope.img
expect_fail "wait --timeout -1" "--timeout: .* not a number of seconds" "$F" wait "$MNT" --timeout -1
# A check requested during the resync is queued behind it, and status says so.
echo check >"$CTL/sync_action"
[[ $(img | jq -c .sync.pending) == '["check"]' ]] || soft_fail "a check queued behind the resync: sync.pending $(img | jq -c .sync.pending)"

# The owner's writes work: a bad value is refused, then the max rate lifted live.
if sh -c "echo bogus > '$CTL/sync_action'" 2>/dev/null; then soft_fail "sync_action accepted 'bogus'"; fi
echo 0 >"$CTL/sync_speed_max"
[[ $(cat "$CTL/sync_speed_max") == 0 ]] || soft_fail "sync_speed_max did not take 0"
fm_timeout 60 "$F" wait "$MNT" || fail "wait after sync_speed_max=0: exit $?: $(img)"
[[ $(cat "$CTL/sync_action") == idle && $(img | jq .unsynced_chunks) == 0 ]] ||
  fail "wait returned before the resync was done: $(img)"
checks_done() { grep -c "big.img: check done: mismatch_cnt 0" "$PRI/.fusemirror/fusemirror.log" || true; }
[[ $(checks_done) == 1 && $(img | jq -c .sync.pending) == '[]' ]] ||
  soft_fail "wait returned before the queued check ran ($(checks_done) checks done): $(img)"
[[ $(cat "$CTL/sync_completed") == none ]] || soft_fail "sync_completed after the resync: $(cat "$CTL/sync_completed")"
[[ $(cat "$CTL/secondary") == in_sync ]] || soft_fail "secondary after the resync: $(cat "$CTL/secondary")"
# A check at 32 MiB/s (2 s): wait returns when it is done, not while it is queued or running.
echo 33554432 >"$CTL/sync_speed_max"
echo check >"$CTL/sync_action"
t0=$(date +%s%N)
fm_timeout 60 "$F" wait "$MNT" big.img || soft_fail "wait for the check: exit $?"
waited_ms=$((($(date +%s%N) - t0) / 1000000))
[[ $(cat "$CTL/sync_action") == idle ]] || soft_fail "wait returned during the check ($(cat "$CTL/sync_action"))"
[[ $(checks_done) == 2 ]] ||
  soft_fail "wait returned ${waited_ms} ms after the check started, and the log has $(checks_done) 'check done' lines, want 2"
((waited_ms >= 1000)) || soft_fail "wait for a 2 s check returned after ${waited_ms} ms"
[[ $(cat "$CTL/mismatch_cnt") == 0 ]] || soft_fail "mismatch_cnt after check: $(cat "$CTL/mismatch_cnt")"
echo 0 >"$CTL/sync_speed_max"
echo fail >"$CTL/secondary"
[[ $(cat "$CTL/secondary") == faulty && $(cat "$CTL/degraded") == 1 ]] || soft_fail "secondary after 'fail': $(cat "$CTL/secondary")"
# Degraded: nothing brings it in sync but a re-add, so wait says so instead of hanging.
expect_fail "wait on a degraded image" "big\.img is degraded .*fusemirror re-add $MNT big\.img" \
  "$F" wait "$MNT"
echo re-add >"$CTL/secondary"
fm_timeout 30 "$F" wait "$MNT" big.img || soft_fail "wait after re-add: exit $?"
[[ $(cat "$CTL/secondary") == in_sync ]] || soft_fail "secondary after re-add + wait: $(cat "$CTL/secondary")"
# --clean: also until the sweeper cleared every bit (daemon sleep 1 s here).
pwrite_rand "$MNT/big.img" $((5 << 20)) 8192
(($(img | jq .dirty_chunks) > 0)) || soft_fail "no dirty bit right after a write: $(img)"
fm_timeout 30 "$F" wait --clean "$MNT" || soft_fail "wait --clean: exit $?"
[[ $(img | jq .dirty_chunks) == 0 ]] || soft_fail "wait --clean returned with dirty bits: $(img)"

# rescale-bitmap is refused while the set is mounted (its lock is held).
FM_CONTEXT="rescale"
BIG_BM=$(fm_bitmap_path "$PRI" big.img)
expect_fail "rescale of a mounted set" "mounted|unmount" "$F" rescale-bitmap "$BIG_BM" --chunk-size 4K
fm_unmount "$MNT"
assert_same "$PRI/big.img" "$SEC/big.img"

# ------------------------------------------------------------------ 3. rescale
P3=$FM_TMP/p3 S3=$FM_TMP/s3 M3=$FM_TMP/m3
mkdir -p "$P3" "$S3" "$M3"
fm_create "$P3" "$S3" --chunk-size 4K --daemon-sleep 60
# Exact bits to rescale: without the activity log (it would set the whole 1 MiB as one extent).
jq '.al_extents = 0' "$P3/.fusemirror/config.json" >"$FM_TMP/config.json" && cat "$FM_TMP/config.json" >"$P3/.fusemirror/config.json"
fm_mount "$P3" "$M3"
truncate -s 1M "$M3/disk.img"          # 256 chunks of 4K, none dirty
for c in 0 1 17 100 255; do pwrite_rand "$M3/disk.img" $((c * 4096)) 4096; done
pwrite_rand "$M3/disk.img" $((40 * 4096 + 4000)) 200   # spans chunks 40 and 41
BM=$(fm_bitmap_path "$P3" disk.img)
read -r t d < <(fm_examine_bits "$(fm_examine "$BM")")
[[ "$t $d" == "256 7" ]] || fail "planted bits: examine-bitmap says $t bits, $d dirty; want 256 7"
# kill -9: no clean shutdown, so the bits stay set on disk
pid=$(fm_daemon_pid "$M3")
kill -KILL "$pid"
_fm_wait_pid "$pid" 10 || fail "daemon $pid survived kill -9"
unset "FM_PID[$M3]"
fm_timeout 20 fusermount3 -u "$M3" || umount -l "$M3"
out=$(fm_examine "$BM")
ev0=$(fm_examine_field "$out" Events)
[[ $(fm_examine_bits "$out") == "256 7" ]] || fail "bits after kill -9: $(fm_examine_bits "$out")"

# 4K -> 64K: chunks {0,1} {17} {40,41} {100} {255} -> 64K chunks 0, 1, 2, 6, 15
"$F" rescale-bitmap "$BM" --chunk-size 64K >"$FM_TMP/logs/rescale.out" || fail "rescale-bitmap 64K failed"
grep -q "4 KiB -> 64 KiB, 256 -> 16 bits, 7 -> 5 dirty" "$FM_TMP/logs/rescale.out" ||
  soft_fail "rescale-bitmap output: $(cat "$FM_TMP/logs/rescale.out")"
out=$(fm_examine "$BM")
[[ $(fm_examine_field "$out" Chunksize) == "64 KiB" ]] || soft_fail "Chunksize after rescale: $(fm_examine_field "$out" Chunksize)"
[[ $(fm_examine_bits "$out") == "16 5" ]] || soft_fail "after 4K->64K: $(fm_examine_bits "$out"), want 16 5"
[[ $(fm_examine_field "$out" Events) == $((ev0 + 1)) ]] || soft_fail "events $(fm_examine_field "$out" Events), want $((ev0 + 1))"
[[ $(fm_examine_field "$out" "Sync Size") == 1048576* ]] || soft_fail "Sync Size changed: $(fm_examine_field "$out" "Sync Size")"
ls -a "$(dirname "$BM")" | grep -q rescale && soft_fail "temp file left: $(ls -a "$(dirname "$BM")")"
# 64K -> 16K: every bit copied to its 4 children
"$F" rescale-bitmap "$BM" --chunk-size 16K --primary "$P3" >/dev/null || fail "rescale-bitmap 16K failed"
out=$(fm_examine "$BM")
[[ $(fm_examine_field "$out" Chunksize) == "16 KiB" ]] || soft_fail "Chunksize: $(fm_examine_field "$out" Chunksize)"
[[ $(fm_examine_bits "$out") == "64 20" ]] || soft_fail "after 64K->16K: $(fm_examine_bits "$out"), want 64 20"
# same size: nothing to do
"$F" rescale-bitmap "$BM" --chunk-size 16K | grep -q "nothing to do" || soft_fail "same chunk size was not a no-op"
# bad input
expect_fail "bad chunk size" "chunk" "$F" rescale-bitmap "$BM" --chunk-size 3000
expect_fail "chunk size too small" "chunk" "$F" rescale-bitmap "$BM" --chunk-size 2K
cp "$BM" "$FM_TMP/loose.fmbm"
expect_fail "a bitmap without a set" "--primary|--force" "$F" rescale-bitmap "$FM_TMP/loose.fmbm" --chunk-size 4K
"$F" rescale-bitmap "$FM_TMP/loose.fmbm" --chunk-size 4K --force >/dev/null || soft_fail "--force did not rescale a loose bitmap"
[[ $(fm_examine_bits "$(fm_examine "$FM_TMP/loose.fmbm")") == "256 80" ]] || soft_fail "loose 16K->4K: want 256 80"
expect_fail "another set's bitmap" "another|belongs|set" "$F" rescale-bitmap "$FM_TMP/loose.fmbm" --chunk-size 8K --primary "$PRI"
printf 'not a bitmap at all, just text\n' >"$FM_TMP/bad.fmbm"
expect_fail "not a bitmap" "magic|truncated|shorter" "$F" rescale-bitmap "$FM_TMP/bad.fmbm" --chunk-size 8K --force

# The set mounts with the rescaled bitmap and resyncs its dirty chunks.
fm_mount "$P3" "$M3"
fm_wait_for "resync after rescale" 60 bash -c "[[ \$('$F' status '$M3' --json | jq -r '.sets[0].images[0].sync.action') == idle ]]" ||
  soft_fail "no idle after the remount"
j=$(fm_image_json "$M3" disk.img)
[[ $(jq -r .chunk_size <<<"$j") == 16384 ]] || soft_fail "mounted chunk_size $(jq -r .chunk_size <<<"$j"), want 16384"
fm_unmount "$M3"
assert_same "$P3/disk.img" "$S3/disk.img"

# ------------------------------------------------------------------ 4. mount -t fuse.fusemirror
FM_CONTEXT="mount helper"
PREFIX=$FM_TMP/prefix
if [[ -f $BUILD_DIR/cmake_install.cmake ]]; then
  cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$FM_TMP/logs/install.log" 2>&1 || fail "cmake --install: $(tail -5 "$FM_TMP/logs/install.log")"
  [[ -x $PREFIX/bin/fusemirror ]] || fail "cmake --install did not install bin/fusemirror"
  [[ -f $PREFIX/share/man/man1/fusemirror.1 ]] || soft_fail "cmake --install did not install the man page"
  [[ -f $PREFIX/share/doc/fusemirror/examples/fusemirror@.service ]] || soft_fail "no systemd unit example installed"
  for h in mount.fusemirror mount.fuse.fusemirror; do
    [[ -L $PREFIX/sbin/$h && $(readlink -f "$PREFIX/sbin/$h") == "$(readlink -f "$PREFIX/bin/fusemirror")" ]] ||
      soft_fail "cmake --install: sbin/$h is not a link to bin/fusemirror"
  done
  HELPER=$PREFIX/sbin/mount.fuse.fusemirror
else
  mkdir -p "$PREFIX/sbin"
  ln -s "$FUSEMIRROR" "$PREFIX/sbin/mount.fuse.fusemirror"
  HELPER=$PREFIX/sbin/mount.fuse.fusemirror
fi
"$HELPER" --help | grep -q "mount -t fuse.fusemirror" || soft_fail "mount.fuse.fusemirror --help"

P4=$FM_TMP/p4 S4=$FM_TMP/s4 M4=$FM_TMP/m4
mkdir -p "$P4" "$S4" "$M4"
fm_create "$P4" "$S4" --daemon-sleep 1
# mount(8) looks for helpers in /sbin only: link ours there for the test, and remove the link
# in cleanup (wrapping lib.sh's cleanup).
SBIN_LINK=""
if [[ ! -e /sbin/mount.fuse.fusemirror ]]; then
  ln -s "$HELPER" /sbin/mount.fuse.fusemirror
  SBIN_LINK=/sbin/mount.fuse.fusemirror
  eval "$(declare -f _fm_cleanup | sed '1s/_fm_cleanup/_fm_cleanup_lib/')"
  _fm_cleanup() {
    [[ -n $SBIN_LINK && -L $SBIN_LINK ]] && rm -f "$SBIN_LINK"
    _fm_cleanup_lib
  }
else
  fm_log "note: /sbin/mount.fuse.fusemirror exists already ($(readlink -f /sbin/mount.fuse.fusemirror)); testing with it"
fi
check_helper_mount() { # WHAT: the mount at M4 is live, a fusemirror set, noatime passed through
  local what=$1
  fm_is_mounted "$M4" || { soft_fail "$what: $M4 not mounted"; return 0; }
  awk -v m="$M4" '$5 == m' /proc/self/mountinfo | grep -q " - fuse.fusemirror " || soft_fail "$what: fs type: $(awk -v m="$M4" '$5 == m' /proc/self/mountinfo)"
  awk -v m="$M4" '$5 == m { print $6 }' /proc/self/mountinfo | grep -q noatime || soft_fail "$what: -o noatime not passed through"
  printf '%s\n' "$what" >"$M4/$what.img"
  [[ $(cat "$S4/$what.img" 2>/dev/null) == "$what" ]] || soft_fail "$what: write not mirrored"
  fm_timeout 60 "$F" unmount "$M4" || soft_fail "$what: fusemirror unmount failed"
  fm_is_mounted "$M4" && { fusermount3 -u "$M4" || umount -l "$M4"; }
  return 0
}
fm_timeout 30 mount -t fuse.fusemirror -o noatime "$P4" "$M4" || soft_fail "mount -t fuse.fusemirror failed"
check_helper_mount mount-t
printf '# test fstab\nfusemirror#%s %s fuse.fusemirror noauto,noatime,_netdev,x-test.opt 0 0\n' "$P4" "$M4" >"$FM_TMP/fstab"
fm_timeout 30 mount -T "$FM_TMP/fstab" "$M4" || soft_fail "mount via an fstab line failed"
check_helper_mount fstab
# mount.fuse3's form: `fusemirror SOURCE MOUNTPOINT -o OPTIONS`
fm_timeout 30 "$PREFIX/bin/fusemirror" "$P4" "$M4" -o rw,noatime,nofail || soft_fail "fusemirror SOURCE MNT -o OPTS failed"
check_helper_mount mount-fuse3-form
expect_fail "helper: missing mount point" "PRIMARY and MOUNTPOINT" "$HELPER" "$P4"
assert_same "$P4/mount-t.img" "$S4/mount-t.img"

# ------------------------------------------------------------------ 5. help, man page, .deb
FM_CONTEXT="docs"
MANTXT=$FM_TMP/logs/man.txt
if command -v man >/dev/null && command -v groff >/dev/null; then
  w=$(LC_ALL=C MANWIDTH=100 man --warnings -l "$FM_SRC_ROOT/docs/fusemirror.1" 2>&1 >"$MANTXT" || true)
  [[ -z $w ]] || soft_fail "man page warnings: $w"
  grep -q "MOUNT HELPER" "$MANTXT" || soft_fail "man page lacks MOUNT HELPER"
else
  cp "$FM_SRC_ROOT/docs/fusemirror.1" "$MANTXT"
  sed -i 's/\\-/-/g' "$MANTXT"
fi
"$F" --help >"$FM_TMP/logs/help" || soft_fail "fusemirror --help exit $?"
for sub in create mount unmount status wait examine-bitmap rescale-bitmap fail re-add sync-action monitor metrics; do
  grep -q "^  $sub" "$FM_TMP/logs/help" || soft_fail "--help does not list $sub"
  "$F" "$sub" --help >"$FM_TMP/logs/help.$sub" 2>&1 || soft_fail "$sub --help exit $?"
  grep -qi "usage" "$FM_TMP/logs/help.$sub" || soft_fail "$sub --help has no usage"
  grep -q "fusemirror $sub" "$MANTXT" || soft_fail "man page does not mention 'fusemirror $sub'"
done
grep -q -- "--watch" "$FM_TMP/logs/help.status" || soft_fail "status --help lacks --watch"
grep -q -- "--clean" "$FM_TMP/logs/help.wait" || soft_fail "wait --help lacks --clean"
grep -q -- "--chunk-size" "$FM_TMP/logs/help.rescale-bitmap" || soft_fail "rescale-bitmap --help lacks --chunk-size"
if command -v cpack >/dev/null && command -v dpkg-deb >/dev/null && [[ -f $BUILD_DIR/CPackConfig.cmake ]]; then
  (cd "$FM_TMP" && fm_timeout 120 cpack -G DEB --config "$BUILD_DIR/CPackConfig.cmake" -B "$FM_TMP/pkg") \
    >"$FM_TMP/logs/cpack.log" 2>&1 || soft_fail "cpack -G DEB failed: $(tail -5 "$FM_TMP/logs/cpack.log")"
  deb=$(ls "$FM_TMP"/pkg/*.deb 2>/dev/null | head -1)
  if [[ -n $deb ]]; then
    c=$(dpkg-deb -c "$deb")
    for p in ./usr/bin/fusemirror ./usr/sbin/mount.fuse.fusemirror ./usr/sbin/mount.fusemirror ./usr/share/man/man1/fusemirror.1; do
      grep -q " $p" <<<"$c" || soft_fail ".deb lacks $p"
    done
    dpkg-deb -f "$deb" Depends | grep -q libfuse3-3 || soft_fail ".deb Depends: $(dpkg-deb -f "$deb" Depends)"
  else
    soft_fail "cpack made no .deb: $(tail -5 "$FM_TMP/logs/cpack.log")"
  fi
fi

fm_pass
