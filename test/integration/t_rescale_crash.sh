#!/bin/bash
# t_rescale_crash — SIGKILL of `rescale-bitmap` at its named crash points (test builds):
# before the rename the old bitmap stays, whole and trusted; after it the new one is in
# place. Either way the set then mounts, resyncs exactly the dirty chunks and ends with
# identical legs. Needs a build with -DFUSEMIRROR_CRASH_POINTS=ON (skips otherwise).
. "$(dirname "$0")/lib.sh"
fm_rand >/dev/null

F=$FUSEMIRROR
fm_create "$PRI" "$SEC" --chunk-size 4K --daemon-sleep 60
# Exact bits to rescale: without the activity log (it would set the whole 1 MiB as one extent).
jq '.al_extents = 0' "$PRI/.fusemirror/config.json" >"$FM_TMP/config.json" && cat "$FM_TMP/config.json" >"$PRI/.fusemirror/config.json"
fm_mount "$PRI" "$MNT"
truncate -s 1M "$MNT/disk.img"
for c in 0 1 17 100 255; do pwrite_rand "$MNT/disk.img" $((c * 4096)) 4096; done
BM=$(fm_bitmap_path "$PRI" disk.img)
pid=$(fm_daemon_pid "$MNT")
kill -KILL "$pid" # no clean shutdown: the 5 bits stay set on disk
_fm_wait_pid "$pid" 10 || fail "daemon $pid survived kill -9"
unset "FM_PID[$(realpath -m -- "$MNT")]"
fm_timeout 20 fusermount3 -u "$MNT" || umount -l "$MNT"
[[ $(fm_examine_bits "$(fm_examine "$BM")") == "256 5" ]] || fail "planted bits: $(fm_examine_bits "$(fm_examine "$BM")")"
# Plant a difference on the secondary in a dirty chunk: the resync must repair it.
printf 'DIFFERENT' | dd of="$SEC/disk.img" bs=1 seek=$((17 * 4096 + 10)) conv=notrunc status=none

rc=0
FM_CRASH_AT=rescale.before_rename "$F" rescale-bitmap "$BM" --chunk-size 64K >/dev/null 2>&1 || rc=$?
if ((rc == 0)); then
  echo "rescale-bitmap did not stop at rescale.before_rename: not a crash-point build" >&2
  exit 77
fi
((rc == 137)) || fail "rescale-bitmap at rescale.before_rename exited $rc, want 137 (SIGKILL)"
out=$(fm_examine "$BM")
[[ $(fm_examine_field "$out" Chunksize) == "4 KiB" ]] || fail "killed before the rename, the chunk size changed: $out"
[[ $(fm_examine_bits "$out") == "256 5" ]] || fail "killed before the rename, the bits changed: $(fm_examine_bits "$out")"

rc=0
FM_CRASH_AT=rescale.after_rename "$F" rescale-bitmap "$BM" --chunk-size 64K >/dev/null 2>&1 || rc=$?
((rc == 137)) || fail "rescale-bitmap at rescale.after_rename exited $rc, want 137"
out=$(fm_examine "$BM")
[[ $(fm_examine_field "$out" Chunksize) == "64 KiB" ]] || fail "killed after the rename, the chunk size is not the new one: $out"
# 4K chunks {0,1} {17} {100} {255} -> 64K chunks 0, 1, 6, 15
[[ $(fm_examine_bits "$out") == "16 4" ]] || fail "killed after the rename: $(fm_examine_bits "$out"), want 16 4"

# A temp file left by the kill before the rename must not be taken for an image's bitmap.
fm_mount "$PRI" "$MNT"
fm_wait_for "resync" 60 bash -c '"$0" status "$1" --json | jq -e "[.sets[].images[] | select(.unsynced_chunks > 0 or .sync.action != \"idle\")] | length == 0" >/dev/null' "$FUSEMIRROR" "$MNT" ||
  fail "resync did not finish"
copied=$(fm_image_json "$MNT" disk.img | jq -r .sync.copied_bytes)
((copied <= 4 * 65536)) || fail "resync copied $copied bytes for 4 dirty 64K chunks"
fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"
fm_log "rescale crash points: before_rename keeps the old bitmap, after_rename has the new one; resync copied $copied bytes; legs identical"
fm_pass
