#!/bin/bash
# t_nbd — an NBD secondary (issue 15): nbdkit's file plugin serving a directory on a unix
# socket in this test's temp dir (`dir=` serves each file under its name).
#   a) ext4 on a loop device over an image on the mount; unmount: the served file's first
#      SIZE bytes equal the primary, and its last 4096 bytes hold the identity record.
#   b) an image whose export is missing loads degraded, the reason in status and the
#      log; writes to it succeed. An image grown past its export degrades the same way.
#   c) the server killed mid-write: no user error, the image degraded with the reason;
#      the server started again + re-add: the export's identity record proves it is this
#      image's copy, so the catch-up copies only the dirty chunks; the legs end identical.
#      check finds a chunk changed on the server, repair rewrites it from the primary.
#   d) the export replaced by a stranger's file of the same name: the next load does a
#      full resync, the reason logged.
#   e) qemu-nbd (-x NAME) as the secondary of a write-behind set: the export equals the
#      primary after unmount (the queue drained to the export).
. "$(dirname "$0")/lib.sh"

command -v nbdkit >/dev/null || fail "missing nbdkit (see test/integration/PACKAGES)"
for c in mkfs.ext4 e2fsck; do command -v "$c" >/dev/null || fail "missing tool $c"; done

CS=65536
TAIL=4096
SRV=$FM_TMP/served
SOCK=$FM_TMP/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
mkdir -p "$SRV" "$PRI"
chmod 755 "$PRI"
LOG=$PRI/.fusemirror/fusemirror.log

# start_server — nbdkit in the foreground of a background job (its pid is ours: killed
# at exit by lib.sh, never by name); waits for the socket.
start_server() {
  rm -f "$SOCK"
  fm_bg nbdkit -U "$SOCK" -P "$FM_TMP/nbdkit.pid" -f file dir="$SRV"
  NBD_PID=$FM_LAST_BG
  fm_wait_for "nbdkit socket" 10 test -S "$SOCK" || fail "nbdkit did not create $SOCK"
}

img_get() { fm_image_json "$1" "$2" | jq -r "$3"; }
is_clean() { fm_image_is "$1" "$2" '.state == "clean" and .dirty_chunks == 0'; }
is_degraded() { fm_image_is "$1" "$2" '.state == "degraded" and .secondary_ok == false'; }
in_sync() { fm_image_is "$1" "$2" '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }

# same_prefix IMAGE — the served file's first SIZE bytes are the primary's
same_prefix() {
  local size
  size=$(stat -c %s "$PRI/$1")
  cmp -n "$size" "$PRI/$1" "$SRV/$1" || fail "$1: the export's first $size bytes differ from the primary"
}

start_server

# ====================================================================== a) ext4
FM_CONTEXT="ext4 over an NBD secondary"
SIZE=$((64 << 20))
truncate -s $((SIZE + TAIL)) "$SRV/fs.img"
truncate -s $(((32 << 20) + TAIL)) "$SRV/kill.img"
fm_create "$PRI" "$URI" --chunk-size 64K --daemon-sleep 1
jq -e --arg u "$URI" '.secondary == $u' "$PRI/.fusemirror/config.json" >/dev/null ||
  fail "config.json does not store the URI: $(cat "$PRI/.fusemirror/config.json")"
fm_mount "$PRI" "$MNT"
truncate -s "$SIZE" "$MNT/fs.img"
loop_attach "$MNT/fs.img"
loop=$FM_LAST_LOOP
fm_timeout 60 mkfs.ext4 -q -F -E nodiscard "$loop" || fail "mkfs.ext4 on $loop failed"
EXT=$FM_TMP/ext4
mkdir -p "$EXT"
mount -t ext4 -o discard "$loop" "$EXT" || fail "mount $loop failed"
fm_track_mount "$EXT"
fm_timeout 60 cp -a /usr/include/linux "$EXT/tree" || fail "cp into the ext4 failed"
find "$EXT/tree" -type f | awk 'NR % 2 == 0' | xargs -r -d '\n' rm -f
sync -f "$EXT"
fm_timeout 30 fstrim "$EXT" || true  # discard → punch hole → NBD zero
fm_timeout 30 cp -a /usr/include/linux "$EXT/tree2" || fail "second cp failed"
umount "$EXT"
loop_detach "$loop"
[[ $(img_get "$MNT" fs.img .secondary_ok) == true ]] || fail "fs.img degraded: $(fm_image_json "$MNT" fs.img)"

# ====================================================================== b) missing export
FM_CONTEXT="missing export"
truncate -s 1M "$MNT/missing.img"
pwrite_rand "$MNT/missing.img" 4096 65536   # the user's writes succeed
fm_wait_for "degraded" 10 is_degraded "$MNT" missing.img || fail "missing.img not degraded: $(fm_image_json "$MNT" missing.img)"
reason=$(img_get "$MNT" missing.img .degraded_reason)
[[ $reason == *"export missing.img missing on $URI"* ]] || fail "status gives no reason naming the export: '$reason'"
grep -q -- "export missing.img missing on $URI" "$LOG" || fail "the log does not say the export is missing"
fm_status_txt=$("$FUSEMIRROR" status "$MNT")
grep -q "degraded: .*export missing.img missing" <<<"$fm_status_txt" || fail "status text lacks the reason: $fm_status_txt"

# an image grown past its export: the truncate succeeds for the user, the image degrades
FM_CONTEXT="image past its export"
truncate -s $(((1 << 20) + TAIL)) "$SRV/small.img"
truncate -s 1M "$MNT/small.img"
pwrite_rand "$MNT/small.img" 0 65536
[[ $(img_get "$MNT" small.img .secondary_ok) == true ]] || fail "small.img degraded too early: $(fm_image_json "$MNT" small.img)"
truncate -s 2M "$MNT/small.img" || fail "growing small.img past its export failed for the user"
fm_wait_for "degraded" 10 is_degraded "$MNT" small.img || fail "small.img not degraded past its export"
reason=$(img_get "$MNT" small.img .degraded_reason)
[[ $reason == *"export small.img on $URI"* ]] || fail "degraded reason does not name the export: '$reason'"
grep -q -- "export small.img on $URI: 1048576 bytes available, the image needs 2097152" "$LOG" ||
  fail "the log does not say the export is too small"

fm_unmount "$MNT"
FM_CONTEXT="after unmount (a)"
same_prefix fs.img
fm_timeout 60 e2fsck -fn "$PRI/fs.img" >"$FM_TMP/logs/fsck.out" 2>&1 || fail "e2fsck of the primary failed"
magic=$(dd if="$SRV/fs.img" bs=1 skip="$SIZE" count=8 status=none)
[[ $magic == FMNBDREC ]] || fail "no identity record in the export's tail (got '$magic')"

# ====================================================================== c) server killed
FM_CONTEXT="server killed mid-write"
fm_mount "$PRI" "$MNT"
K=$MNT/kill.img
dd if=/dev/urandom of="$K" bs=1M count=32 conv=notrunc status=none || fail "filling kill.img failed"
fm_wait_for "clean" 20 is_clean "$MNT" kill.img || fail "kill.img not clean: $(fm_image_json "$MNT" kill.img)"
copied0=$(img_get "$MNT" kill.img .sync.copied_bytes)
# a writer rewriting 1 MiB runs while the server dies; it must see no error
fm_kill_under_writer "$K" 20 16 4 64 "$NBD_PID"
fm_wait_for "degraded" 10 is_degraded "$MNT" kill.img || fail "kill.img not degraded after the server died"
reason=$(img_get "$MNT" kill.img .degraded_reason)
[[ $reason == *"export kill.img on $URI"* ]] || fail "degraded reason does not name the export: '$reason'"
pwrite_rand "$K" $((20 << 20)) 65536       # bits accumulate while it is out
dirty=$(img_get "$MNT" kill.img .dirty_chunks)

start_server
fm_cli re-add "$MNT" kill.img
fm_wait_for "catch-up" 30 in_sync "$MNT" kill.img || fail "no catch-up: $(fm_image_json "$MNT" kill.img)"
copied=$(( $(img_get "$MNT" kill.img .sync.copied_bytes) - copied0 ))
fm_log "catch-up copied $copied bytes for $dirty dirty chunks (image 32 MiB)"
((copied > 0 && copied <= dirty * CS)) || fail "catch-up copied $copied bytes, want 1..$((dirty * CS)) (dirty chunks only)"
grep -q "kill.img: re-add: full resync" "$LOG" && fail "re-add did a full resync: $(grep 'full resync' "$LOG")"

# check and repair read the export as they read a file: a chunk changed on the server is
# found by check (nothing rewritten) and rewritten from the primary by repair
FM_CONTEXT="check/repair over NBD"
fm_wait_for "clean" 20 is_clean "$MNT" kill.img || fail "kill.img not clean after the catch-up"
run_action() { # run_action ACTION — sync-action on kill.img, then wait for its end line
  local n0
  n0=$(grep -cE -- "\] kill\.img: $1 (done|interrupted):" "$LOG" || true)
  fm_cli sync-action "$MNT" kill.img "$1"
  fm_wait_for "$1 end" 30 bash -c '(( $(grep -cE -- "\] kill\.img: $1 (done|interrupted):" "$2" || true) > $3 ))' \
    _ "$1" "$LOG" "$n0" || fail "$1 of kill.img did not end: $(fm_image_json "$MNT" kill.img)"
  fm_wait_for "idle" 10 fm_image_is "$MNT" kill.img '.sync.action == "idle"' || fail "not idle after $1"
}
dd if=/dev/urandom of="$SRV/kill.img" bs=64K count=1 seek=7 conv=notrunc status=none
run_action check
[[ $(img_get "$MNT" kill.img .mismatch_cnt) == 1 ]] || fail "check over NBD: mismatch_cnt $(img_get "$MNT" kill.img .mismatch_cnt), want 1"
cmp -s -n $((32 << 20)) "$PRI/kill.img" "$SRV/kill.img" && fail "check rewrote the export"
run_action repair
run_action check
[[ $(img_get "$MNT" kill.img .mismatch_cnt) == 0 ]] || fail "check after repair: mismatch_cnt $(img_get "$MNT" kill.img .mismatch_cnt)"
fm_unmount "$MNT"
same_prefix kill.img

# ====================================================================== d) a stranger's export
FM_CONTEXT="foreign export"
# The server now serves another file under the same name (same size, no record of ours).
cp --sparse=always "$SRV/kill.img" "$FM_TMP/kill.keep"
head -c $((32 << 20)) /dev/zero >"$SRV/kill.img.new"
truncate -s $(((32 << 20) + TAIL)) "$SRV/kill.img.new"
mv "$SRV/kill.img.new" "$SRV/kill.img"
fm_mount "$PRI" "$MNT"
fm_wait_for "full resync" 30 in_sync "$MNT" kill.img || fail "no resync of the foreign export"
grep -q "kill.img: full resync: the secondary has no record of this image" "$LOG" ||
  fail "the full resync's reason is not logged: $(grep kill.img "$LOG" | tail -n 3)"
fm_unmount "$MNT"
same_prefix kill.img

# ====================================================================== e) qemu-nbd, write-behind
FM_CONTEXT="qemu-nbd secondary with write-behind"
if command -v qemu-nbd >/dev/null; then
  P2=$FM_TMP/primary2
  SOCK2=$FM_TMP/qemu.sock
  mkdir -p "$P2"
  chmod 755 "$P2"
  truncate -s $(((16 << 20) + TAIL)) "$FM_TMP/q.export"
  fm_bg qemu-nbd -k "$SOCK2" -x q.img -f raw -t -e 4 "$FM_TMP/q.export"
  fm_wait_for "qemu-nbd socket" 10 test -S "$SOCK2" || fail "qemu-nbd did not create $SOCK2"
  fm_create "$P2" "nbd+unix:///?socket=$SOCK2" --chunk-size 64K --daemon-sleep 1 --write-behind 64
  fm_mount "$P2" "$MNT"
  dd if=/dev/urandom of="$MNT/q.img" bs=64K count=256 status=none || fail "writing q.img failed"
  pwrite_rand "$MNT/q.img" 12345 100000
  [[ $(img_get "$MNT" q.img .secondary_ok) == true ]] || fail "q.img degraded: $(fm_image_json "$MNT" q.img)"
  fm_unmount "$MNT"
  cmp -n $((16 << 20)) "$P2/q.img" "$FM_TMP/q.export" || fail "qemu-nbd's export differs from the primary"
else
  fm_log "qemu-nbd not installed: e) skipped"
fi

fm_pass
