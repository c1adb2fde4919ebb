#!/bin/bash
# t_daemonized — the daemon as users start it: `fusemirror mount` without -f forks into the
# background after the set is opened. Every other test mounts with -f (no fork), so a state
# made before the fork and lost in it is only seen here.
#   a) images already in the primary before the first mount, no secondary copies and no
#      bitmaps (the natural first setup): loading them uses the leg pool before the fork.
#      Then fsync through the mount, a loop device's attach (which fsyncs), and writes
#      through it must all complete (they hung forever: the pool's workers stayed in the
#      parent), and both legs must end equal.
. "$(dirname "$0")/lib.sh"

SIZE=$((4 << 20))
fm_create "$PRI" "$SEC"
for n in a b c; do head -c "$SIZE" /dev/urandom >"$PRI/$n.img"; done

FM_CONTEXT="pre-placed images, daemonized mount"
mkdir -p "$MNT"
fm_step "mount $PRI $MNT (daemonized)"
fm_timeout 30 "$FUSEMIRROR" mount "$PRI" "$MNT" >"$FM_TMP/logs/daemonized.out" 2>&1 ||
  fail "daemonized mount failed: $(cat "$FM_TMP/logs/daemonized.out")"
pid=$(jq -r .pid "$MNT/.fusemirror/status.json")
[[ $pid =~ ^[0-9]+$ ]] || fail "no daemon pid in status.json"
FM_DAEMON_PIDS+=("$pid") # killed by pid at exit if still there (not our child: no exit status)

fm_timeout 20 dd if=/dev/urandom of="$MNT/a.img" bs=64K count=1 seek=1 conv=notrunc,fsync status=none ||
  fail "write + fsync through the daemonized mount did not complete"
loop_attach "$MNT/b.img" --direct-io=on
fm_timeout 20 dd if=/dev/urandom of="$FM_LAST_LOOP" bs=64K count=8 seek=3 oflag=direct conv=fsync status=none ||
  fail "writes through the loop device did not complete"
loop_detach "$FM_LAST_LOOP"
in_sync() { fm_image_is "$MNT" "$1" '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }
for n in a b c; do
  fm_wait_for "$n.img in sync" 30 in_sync "$n.img" || fail "$n.img not in sync: $(fm_image_json "$MNT" "$n.img")"
done
fm_unmount "$MNT"
gone() { [[ ! -d /proc/$pid ]]; }
fm_wait_for "daemon exit" 20 gone || fail "daemon pid $pid still running after unmount"
for n in a b c; do cmp "$PRI/$n.img" "$SEC/$n.img" || fail "$n.img: the legs differ"; done

fm_pass
