#!/bin/bash
# t_crashpoints — SIGKILL of the daemon at each named crash point (utils/crash_point.hpp,
# test builds: -DFUSEMIRROR_CRASH_POINTS=ON) under a verifying write load.
#
# For every point, FM_CRASHPOINT_ROUNDS rounds (default 3; test/reliability/run --long
# raises it). Each round mounts a 32 MiB image with FM_CRASH_AT=POINT FM_CRASH_SKIP=random,
# drives the load the point needs until the daemon kills itself, then, offline:
#   * bitmapcheck: every chunk where the legs differ has its bit set (or the header is
#     untrusted, i.e. a full resync);
#   * verify: every acknowledged (fsync'ed) write is on the primary — 0 bytes lost;
#   * cksumcheck: no checksum a mount would trust accuses a leg (docs/write-path.md §9);
# then remounts without crash point, waits for the resync, checks that it copied no more
# than dirty chunks x chunk size, unmounts and compares the legs byte for byte.
#
# Loads:   bitmap.*, image.*        fm_crashwriter (random 4 KiB writes, fsync every 8)
#          writebehind.*            the same on a second set created with --write-behind 256
#          sweep.*, checksums.*     a burst of writes, then idle time (daemon_sleep 1)
#          resync.*                 a plain kill -9 under load first (dirty bitmap), then the
#                                   mount with the crash point resyncs and dies mid-copy
#          al.after_activate        fm_crashwriter (an extent of the activity log activated)
#          al.after_retire          a burst, then idle (idle extents retire at a sweep)
# Both sets run with the activity log on (docs/write-path.md §3b) and a bound of 4 extents
# of 4 MiB: the 32 MiB image has 8, so about half the writes activate an extent and push
# another out (its never-written chunks cleared at once) — the log's paths run all the time.
# A round whose point is not reached within its time (the skip count too high for the
# load) is killed with plain SIGKILL instead and counted as "not reached"; every point must
# be reached at least once.
. "$(dirname "$0")/lib.sh"

CW=${FM_CRASHWRITER:-$(dirname "$FUSEMIRROR")/../test/tools/fm_crashwriter}
[[ -x $CW ]] || fail "fm_crashwriter not found at $CW (set FM_CRASHWRITER)"
CK=${FM_CKSUMCHECK:-$(dirname "$FUSEMIRROR")/../test/tools/fm_cksumcheck}
[[ -x $CK ]] || fail "fm_cksumcheck not found at $CK (set FM_CKSUMCHECK)"
ROUNDS=${FM_CRASHPOINT_ROUNDS:-3}
BLOCKS=8192 # a 32 MiB image of 4 KiB blocks
CS=65536
POINTS=(bitmap.after_set bitmap.before_flush bitmap.after_flush
  image.after_primary image.before_secondary image.after_legs
  writebehind.before_secondary resync.mid_copy sweep.before_clear checksums.before_sync
  sweep.after_checksums sweep.after_clear al.after_activate al.after_retire)
[[ -n ${FM_CRASHPOINTS:-} ]] && read -r -a POINTS <<<"$FM_CRASHPOINTS"

# The build must have the crash points: the binary carries the point names.
grep -q 'bitmap.after_set' "$FUSEMIRROR" ||
  fail "$FUSEMIRROR has no crash points: build with -DFUSEMIRROR_CRASH_POINTS=ON"

P1=$PRI S1=$SEC                           # synchronous set
P2=$FM_TMP/primary-wb S2=$FM_TMP/secondary-wb # write-behind set
mkdir -p "$P2" "$S2"
fm_create "$P1" "$S1" --chunk-size 64K --daemon-sleep 1
fm_create "$P2" "$S2" --chunk-size 64K --daemon-sleep 1 --write-behind 256
for p in "$P1" "$P2"; do
  jq '.al_extents = 4 | .al_extent_size = 4194304' "$p/.fusemirror/config.json" >"$FM_TMP/config.json"
  cat "$FM_TMP/config.json" >"$p/.fusemirror/config.json"
  fm_mount "$p" "$MNT"
  truncate -s $((BLOCKS * 4096)) "$MNT/disk.img"
  sync
  fm_unmount "$MNT"
done

# cp_mount SRC [VAR=VALUE...] — like fm_mount, with extra environment for the daemon, but a
# daemon that dies before the mount is live (a crash point on the mount path) is not a
# failure: returns 1 then. Sets DPID.
cp_mount() {
  local src=$1 mnt
  shift
  mnt=$(realpath -m -- "$MNT")
  FM_NDAEMON=$((FM_NDAEMON + 1))
  local log=$FM_TMP/logs/daemon.$FM_NDAEMON.log
  env --default-signal=INT,QUIT "$@" "$FUSEMIRROR" mount "$src" "$mnt" -f </dev/null >"$log" 2>&1 &
  DPID=$!
  FM_DAEMON_PIDS+=("$DPID")
  echo "$DPID" >>"$FM_TMP/logs/pids"
  FM_PID[$mnt]=$DPID
  FM_MOUNTS+=("$mnt")
  local deadline=$((SECONDS + 20))
  while ! fm_is_mounted "$mnt"; do
    if ! fm_alive "$DPID"; then
      _fm_wait_pid "$DPID" 5 || true
      unset "FM_PID[$mnt]"
      return 1
    fi
    ((SECONDS < deadline)) || fail "fusemirror mount $src: not mounted after 20s"
    sleep 0.05
  done
  return 0
}

# after_kill — the daemon DPID is dead (or being killed): reap it, drop the dead mount.
after_kill() {
  local mnt
  mnt=$(realpath -m -- "$MNT")
  kill -KILL "$DPID" 2>/dev/null || true
  _fm_wait_pid "$DPID" 10 || fail "daemon $DPID did not die"
  unset "FM_PID[$mnt]"
  if [[ -n ${WPID:-} ]]; then
    kill -KILL "$WPID" 2>/dev/null || true
    wait "$WPID" 2>/dev/null || true
    WPID=""
  fi
  if fm_is_mounted "$MNT"; then
    fm_timeout 20 fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || fail "cannot unmount the dead mount"
  fi
}

# wait_dead SECS — waits for DPID to kill itself; returns 1 if it still runs after SECS.
wait_dead() {
  local deadline=$((SECONDS + $1))
  while fm_alive "$DPID"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
  return 0
}

writer() { # writer SEED [ARGS...] — background fm_crashwriter on the mounted image
  local seed=$1
  shift
  "$CW" write "$MNT/disk.img" "$ACK" --blocks $BLOCKS --seed "$seed" --sync-every 8 "$@" \
    2>>"$FM_TMP/logs/writer.err" &
  WPID=$!
}

resynced() {
  "$FUSEMIRROR" status "$MNT" --json 2>/dev/null |
    jq -e '[.sets[].images[] | select(.unsynced_chunks > 0 or .sync.action != "idle")] | length == 0' >/dev/null
}

tried=0 reached=0 not_reached=0 total_checked=0 lost_bytes=0 total_dirty_bytes=0 total_copied=0
untrusted=0 max_differing=0 mount_kills=0 seed=1000 cksum_entries=0
declare -A POINT_HITS=()
NACK=0
new_ack() { NACK=$((NACK + 1)); ACK=$FM_TMP/logs/acks.$NACK; : >"$ACK"; }

# check_round SRC SEC ROUNDNAME — the offline checks, remount, resync, compare.
check_round() {
  local p=$1 s=$2 what=$3 out vout checked lost differing dirty copied
  local bm
  bm=$(fm_bitmap_path "$p" disk.img)
  out=$("$CW" bitmapcheck "$p/disk.img" "$s/disk.img" "$bm") ||
    fail "$what: a chunk differs between the legs with its bit clear: $out"
  dirty=""
  read -r _ differing _ _ _ dirty _ _ <<<"$out" || true
  if [[ $out == *untrusted* ]]; then
    untrusted=$((untrusted + 1))
    dirty=""
  else
    ((differing > max_differing)) && max_differing=$differing
  fi
  # docs/write-path.md §9.1 (C): a trusted checksum never accuses a leg.
  local ck
  ck=$("$CK" "$p/disk.img" "$s/disk.img" "$bm" "${bm%.fmbm}.fmck") ||
    fail "$what: a checksum accuses a leg after the crash: $ck"
  [[ $ck =~ ^entries\ ([0-9]+) ]] && cksum_entries=$((cksum_entries + BASH_REMATCH[1]))
  vout=$("$CW" verify "$p/disk.img" "$ACK") || fail "$what: acknowledged writes lost: $vout"
  read -r _ checked _ lost _ _ <<<"$vout"
  total_checked=$((total_checked + checked))
  lost_bytes=$((lost_bytes + lost * 4096))
  cp_mount "$p" || fail "$what: the mount after the crash died: $(tail -n 5 "$FM_TMP/logs/daemon.$FM_NDAEMON.log")"
  fm_wait_for "resync" 60 resynced || fail "$what: resync did not finish in 60s"
  copied=$(fm_image_json "$MNT" disk.img | jq -r .sync.copied_bytes)
  if [[ $dirty =~ ^[0-9]+$ ]]; then
    ((copied <= dirty * CS)) || fail "$what: resync copied $copied bytes > $dirty dirty chunks x $CS"
    total_dirty_bytes=$((total_dirty_bytes + dirty * CS))
    total_copied=$((total_copied + copied))
  fi
  fm_unmount "$MNT"
  local c
  c=$(cmp -l "$p/disk.img" "$s/disk.img" 2>/dev/null | wc -l) || true
  ((c == 0)) || fail "$what: $c bytes differ between the legs after resync"
  cmp -s "$p/disk.img" "$s/disk.img" || fail "$what: legs differ after resync (size?)"
  ck=$("$CK" "$p/disk.img" "$s/disk.img" "$bm" "${bm%.fmbm}.fmck") ||
    fail "$what: a checksum accuses a leg after the resync and a clean unmount: $ck"
}

# round POINT N
round() {
  local point=$1 n=$2 p=$P1 s=$S1 skip limit=15 what="$point round $n"
  FM_CONTEXT=$what
  [[ $point == writebehind.* ]] && { p=$P2; s=$S2; }
  # One acknowledgement log per writer run: fm_crashwriter numbers generations from
  # time(NULL) << 20, so two runs that start within the same second reuse generations and
  # a shared log would report a later run's smaller generation as "lost".
  new_ack
  seed=$((seed + 1))
  case $point in
    bitmap.after_set | image.*) skip=$((RANDOM % 400)) ;;
    al.after_activate) skip=$((RANDOM % 30)) ;;
    al.after_retire) skip=0 ;;
    writebehind.*) skip=$((RANDOM % 400)) ;;
    bitmap.*) skip=$((RANDOM % 30)) ;;
    sweep.* | checksums.*) skip=0 ;; # one clearing sweep may clear every candidate: the first pass only
    resync.*) skip=$((RANDOM % 3)) ;;
  esac
  if [[ $point == resync.* ]]; then
    # a dirty bitmap first: plain kill -9 under load
    cp_mount "$p" || fail "$what: plain mount died"
    writer "$seed"
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.4 + (r % 80) / 100 }')"
    after_kill
    local v
    v=$("$CW" verify "$p/disk.img" "$ACK") || fail "$what: acknowledged writes lost after the plain kill: $v"
    total_checked=$((total_checked + $(awk '{ print $2 }' <<<"$v")))
    new_ack
    seed=$((seed + 1))
  fi
  tried=$((tried + 1))
  local hit=1
  if ! cp_mount "$p" FM_CRASH_AT="$point" FM_CRASH_SKIP="$skip"; then
    mount_kills=$((mount_kills + 1)) # died on the mount path: a kill all the same
  else
    case $point in
      sweep.* | checksums.* | al.after_retire)
        # a burst, then idle: the sweeper clears after two idle periods of 1 s. The image
        # is held open meanwhile (the last close would clear the bits itself, no sweep).
        exec {HOLD}<"$MNT/disk.img"
        writer "$seed" --max-writes $((200 + RANDOM % 2000))
        wait "$WPID" 2>/dev/null || true
        WPID=""
        ;;
      *) writer "$seed" ;;
    esac
    if ! wait_dead "$limit"; then
      hit=0
      fm_log "$what: point not reached in ${limit}s (skip $skip); plain SIGKILL"
    fi
  fi
  after_kill
  if [[ -n ${HOLD:-} ]]; then
    exec {HOLD}<&-
    HOLD=""
  fi
  if ((hit)); then
    reached=$((reached + 1))
    POINT_HITS[$point]=$((${POINT_HITS[$point]:-0} + 1))
    # The daemon must have died by SIGKILL at the point (not by some other crash).
    local log=$FM_TMP/logs/daemon.$FM_NDAEMON.log
    if grep -qiE 'AddressSanitizer|terminate called|Segmentation|assert' "$log"; then
      fail "$what: the daemon died of something else: $(tail -n 5 "$log")"
    fi
  else
    not_reached=$((not_reached + 1))
  fi
  check_round "$p" "$s" "$what"
}

for n in $(seq 1 "$ROUNDS"); do
  for point in "${POINTS[@]}"; do
    round "$point" "$n"
  done
done
FM_CONTEXT=""

for point in "${POINTS[@]}"; do
  ((${POINT_HITS[$point]:-0} > 0)) || soft_fail "crash point $point was never reached in $ROUNDS round(s)"
done
full_logged=0
for p in "$P1" "$P2"; do
  n=$(grep -c 'full resync' "$p/.fusemirror/fusemirror.log" 2>/dev/null) || n=0
  full_logged=$((full_logged + n))
done
summary="crash points: ${#POINTS[@]} points x $ROUNDS rounds = $tried kills ($reached at the point, $mount_kills of them on the mount path, $not_reached not reached: plain SIGKILL);"
summary+=" acknowledged writes checked: $total_checked; bytes lost: $lost_bytes; mismatching bytes after resync: 0;"
summary+=" resync copied $total_copied bytes for $total_dirty_bytes bytes of dirty chunks;"
summary+=" untrusted-bitmap rounds: $untrusted; full resyncs logged: $full_logged; most chunks differing at a kill: $max_differing;"
summary+=" trusted checksums checked after the kills: $cksum_entries, accusing a leg: 0"
fm_log "$summary"
hits=""
for point in "${POINTS[@]}"; do hits+=" $point=${POINT_HITS[$point]:-0}"; done
fm_log "hits per point:$hits"
echo "SUMMARY crashpoints kills=$tried reached=$reached not_reached=$not_reached acked=$total_checked lost_bytes=$lost_bytes mismatch_bytes=0 resync_bytes=$total_copied dirty_bytes=$total_dirty_bytes untrusted=$untrusted full_resyncs=$full_logged"
fm_pass
