#!/bin/bash
# t_crash — SIGKILL of the daemon at random moments under a verifying write load.
#
# Each round: mount, start fm_crashwriter (random 4 KiB writes, fsync every 8, each fsync'd
# write recorded as acknowledged outside the mount), kill -9 the daemon after a random
# delay, then, offline:
#   * bitmapcheck: every chunk where primary and secondary differ has its bit set and is
#     not spared by the activity log's record (docs/write-path.md §3d);
#   * verify: every acknowledged write is on the primary (bytes lost must be 0);
# then remount, wait for the resync, check it copied no more than the dirty chunks (set and
# not spared), and unmount: the two legs must be byte-identical. Over all rounds the record
# must have spared some chunks: the log's whole extents are not what a kill costs.
# FM_CRASH_KILLS sets the number of rounds (default 25; the long suite runs 500).
. "$(dirname "$0")/lib.sh"

CW=${FM_CRASHWRITER:-$(dirname "$FUSEMIRROR")/../test/tools/fm_crashwriter}
[[ -x $CW ]] || fail "fm_crashwriter not found at $CW (set FM_CRASHWRITER)"
KILLS=${FM_CRASH_KILLS:-25}
BLOCKS=16384 # a 64 MiB image of 4 KiB blocks
CS=65536

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_mount "$PRI" "$MNT"
truncate -s $((BLOCKS * 4096)) "$MNT/disk.img"
sync
fm_unmount "$MNT"

ACK=$FM_TMP/acks
: >"$ACK"
BM=$(fm_bitmap_path "$PRI" disk.img)
total_checked=0 total_dirty_bytes=0 total_copied=0 full_resyncs=0 max_differing=0 total_spared=0
for round in $(seq 1 "$KILLS"); do
  fm_mount "$PRI" "$MNT"
  pid=$(fm_daemon_pid "$MNT")
  "$CW" write "$MNT/disk.img" "$ACK" --blocks $BLOCKS --seed "$round" --sync-every 8 &
  wpid=$!
  # 0.1 .. 1.6 s of load, sometimes with the sweeper's clearing in between (daemon sleep 1 s)
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.1 + (r % 150) / 100 }')"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  unset "FM_PID[$(realpath -m -- "$MNT")]"
  wait "$wpid" 2>/dev/null || true
  fm_timeout 20 fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || fail "cannot unmount the dead mount"

  # The md invariant, checked on the files as the kill left them.
  out=$("$CW" bitmapcheck "$PRI/disk.img" "$SEC/disk.img" "$BM") ||
    fail "round $round: a chunk differs between the legs with its bit clear: $out"
  read -r _ differing _ unmarked _ dirty _ _ _ spared <<<"$out" || true
  [[ $spared =~ ^[0-9]+$ ]] && total_spared=$((total_spared + spared))
  [[ $out == *untrusted* ]] && full_resyncs=$((full_resyncs + 1))
  ((differing > max_differing)) && max_differing=$differing
  vout=$("$CW" verify "$PRI/disk.img" "$ACK") || fail "round $round: acknowledged writes lost: $vout"
  read -r _ checked _ lost _ _ <<<"$vout"
  total_checked=$checked

  # Remount: resync copies the dirty chunks only; then the legs are identical.
  fm_mount "$PRI" "$MNT"
  fm_wait_for "resync" 60 bash -c '"$0" status "$1" --json | jq -e "[.sets[].images[] | select(.unsynced_chunks > 0 or .sync.action != \"idle\")] | length == 0" >/dev/null' "$FUSEMIRROR" "$MNT" ||
    fail "round $round: resync did not finish in 60s"
  copied=$(fm_image_json "$MNT" disk.img | jq -r .sync.copied_bytes)
  if [[ $dirty =~ ^[0-9]+$ ]]; then
    ((copied <= dirty * CS)) || fail "round $round: resync copied $copied bytes > $dirty dirty chunks x $CS"
    total_dirty_bytes=$((total_dirty_bytes + dirty * CS))
  fi
  total_copied=$((total_copied + copied))
  fm_unmount "$MNT"
  cmp "$PRI/disk.img" "$SEC/disk.img" || fail "round $round: legs differ after resync"
done

fm_log "crash points tried: $KILLS kills; acknowledged writes checked: $total_checked; bytes lost: 0;" \
  "mismatching bytes after resync: 0; resync copied $total_copied bytes for $total_dirty_bytes bytes of" \
  "dirty chunks (image $((BLOCKS * 4096)) bytes x $KILLS rounds); untrusted-bitmap full resyncs: $full_resyncs;" \
  "most chunks differing at a kill: $max_differing; chunks spared by the activity log's record: $total_spared"
((KILLS < 5 || total_spared > 0)) || fail "the activity log's record spared no chunk in $KILLS kills"
fm_pass
