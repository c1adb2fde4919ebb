#!/bin/bash
# t_nbd_link — link loss and automatic catch-up over an NBD secondary (issue 15, item 4):
# nbdkit's file plugin serving a directory on a unix socket in this test's temp dir, with
# the error filter armed by a trigger file. The set keeps the product's default (the
# link reconnects by itself), with a short secondary_timeout and backoff.
#   a) the server killed mid-write: no user error, the image degraded at once; the link
#      shows "connecting" with its tries; the server started again: the catch-up starts
#      with no operator command, copies only the dirty chunks (counted), the legs end
#      identical. Meanwhile another image's export was replaced by a stranger's file of
#      the same name: its reconnect does a full resync, the reason logged.
#   b) a server that stops answering (SIGSTOP): a user write returns within the timeout,
#      the image degrades, the namespace still answers; SIGCONT: catch-up by itself.
#   c) the error filter failing 30% of the writes: no user error; the image degrades and
#      comes back by itself while the errors last; errors off: it ends identical.
#      `fail` by the operator: held out (link down), never retried; re-add brings it back.
#      Across a remount: an image lost by the link is retried (and caught up from the
#      bitmap); one failed by the operator stays out (the bitmap header's held flag).
#   d) fusemirror killed -9 with a full write-behind queue toward a slow server (nbdkit's
#      delay filter): 0 acknowledged bytes lost, the catch-up after the remount, identical.
#   e) sequential writes toward a slow server (100 ms a write) fill a queue longer than
#      the 32 write-behind workers: writes that continue one another go as one request
#      (`write_behind.merged` counts them); a second pass over the same range with other
#      data, queued behind the first, lands last: the export ends identical to the primary
#      and to the second pass.
. "$(dirname "$0")/lib.sh"

command -v nbdkit >/dev/null || fail "missing nbdkit (see test/integration/PACKAGES)"
CW=${FM_CRASHWRITER:-$(dirname "$FUSEMIRROR")/../test/tools/fm_crashwriter}
[[ -x $CW ]] || fail "fm_crashwriter not found at $CW (set FM_CRASHWRITER)"

CS=65536
TAIL=4096
SRV=$FM_TMP/served
SOCK=$FM_TMP/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
ERR_ON=$FM_TMP/errors-on # while it exists, the error filter fails 30% of the writes
mkdir -p "$SRV" "$PRI"
chmod 755 "$PRI"
LOG=$PRI/.fusemirror/fusemirror.log
export FM_AUTO_RECONNECT=1 # the product's default: reconnect by itself (lib.sh fm_create)

start_server() { # nbdkit in the foreground of a background job (its pid is ours)
  rm -f "$SOCK"
  fm_bg nbdkit -U "$SOCK" -f --filter=error file dir="$SRV" \
    error-pwrite=EIO error-pwrite-rate=30% error-pwrite-file="$ERR_ON"
  NBD_PID=$FM_LAST_BG
  fm_wait_for "nbdkit socket" 10 test -S "$SOCK" || fail "nbdkit did not create $SOCK"
}

img_get() { fm_image_json "$1" "$2" | jq -r "$3"; }
is_degraded() { fm_image_is "$1" "$2" '.secondary_ok == false'; }
in_sync() { fm_image_is "$1" "$2" '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }
same_prefix() { # same_prefix PRIMARY IMAGE — the served file's first SIZE bytes are the primary's
  local size
  size=$(stat -c %s "$1/$2")
  cmp -n "$size" "$1/$2" "$SRV/$2" || fail "$2: the export's first $size bytes differ from the primary"
}
since_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
# slow_set NAME IMAGE MIB WRITE_BEHIND — a set in $FM_TMP/NAME whose secondary is an export
# of $SRV behind nbdkit's delay filter (100 ms a write), IMAGE (MIB MiB) created through
# the mount at $MNT; sets P (the primary) and SLOW_PID.
slow_set() {
  local sock=$FM_TMP/$1.sock
  P=$FM_TMP/$1
  mkdir -p "$P"
  chmod 755 "$P"
  truncate -s $((($3 << 20) + TAIL)) "$SRV/$2"
  fm_bg nbdkit -U "$sock" -f --filter=delay file dir="$SRV" delay-write=100ms
  SLOW_PID=$FM_LAST_BG
  fm_wait_for "slow nbdkit socket" 10 test -S "$sock" || fail "nbdkit did not create $sock"
  fm_create "$P" "nbd+unix:///?socket=$sock" --chunk-size 64K --daemon-sleep 1 --write-behind "$4"
  fm_mount "$P" "$MNT"
  truncate -s $(($3 << 20)) "$MNT/$2"
}

start_server
fm_create "$PRI" "$URI" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$PRI/.fusemirror/config.json" '.secondary_timeout = 2 | .reconnect_min = 0.5 | .reconnect_max = 2'

# ====================================================================== a) server killed
FM_CONTEXT="server killed mid-write"
truncate -s $(((16 << 20) + TAIL)) "$SRV/k.img"
truncate -s $(((4 << 20) + TAIL)) "$SRV/d.img"
fm_mount "$PRI" "$MNT"
K=$MNT/k.img
dd if=/dev/urandom of="$K" bs=1M count=16 conv=notrunc,fsync status=none || fail "filling k.img failed"
dd if=/dev/urandom of="$MNT/d.img" bs=1M count=4 conv=notrunc,fsync status=none || fail "filling d.img failed"
is_clean() { fm_image_is "$1" "$2" '.state == "clean" and .dirty_chunks == 0'; }
fm_wait_for "clean" 20 is_clean "$MNT" k.img || fail "k.img not clean: $(fm_image_json "$MNT" k.img)"
fm_wait_for "in sync" 20 in_sync "$MNT" d.img || fail "d.img not in sync: $(fm_image_json "$MNT" d.img)"
[[ $(img_get "$MNT" k.img .link.state) == connected ]] || fail "link not connected: $(fm_image_json "$MNT" k.img)"
copied0=$(img_get "$MNT" k.img .sync.copied_bytes)
dcopied0=$(img_get "$MNT" d.img .sync.copied_bytes)
fm_kill_under_writer "$K" 20 4 8 32 "$NBD_PID"
t_kill=$FM_KILL_NS
fm_wait_for "degraded" 2 is_degraded "$MNT" k.img || fail "k.img not degraded: $(fm_image_json "$MNT" k.img)"
# within one daemon sweep (daemon_sleep 1 s): the log's time of the failure
t_fail=$(grep -m1 "k.img: secondary failed on" "$LOG" | cut -c1-23)
ms=$(($(date -d "$t_fail" +%s%3N) - t_kill / 1000000))
fm_log "k.img degraded $ms ms after the server died"
((ms <= 1500)) || fail "k.img degraded $ms ms after the server died, more than a sweep"
pwrite_rand "$K" $((10 << 20)) $((3 * CS)) # bits accumulate while the link is down
pwrite_rand "$MNT/d.img" 0 4096            # d.img learns of the loss by a write too
fm_wait_for "d.img degraded" 5 is_degraded "$MNT" d.img || fail "d.img not degraded"
connecting() { fm_image_is "$MNT" k.img '.link.state == "connecting" and .link.tries >= 2'; }
fm_wait_for "connecting, 2 tries" 10 connecting || fail "the link does not retry: $(fm_image_json "$MNT" k.img)"
reason=$(img_get "$MNT" k.img .link.reason)
[[ $reason == *"cannot connect to $URI for export k.img"* ]] || fail "the link's reason does not say why: '$reason'"
grep -q "link: connecting since .*, [0-9]* tries" <<<"$("$FUSEMIRROR" status "$MNT")" ||
  fail "status text lacks the link: $("$FUSEMIRROR" status "$MNT")"
dirty=$(img_get "$MNT" k.img .dirty_chunks)
# d.img's export replaced by a stranger's file of the same name (zeros, no record of ours)
head -c $((4 << 20)) /dev/zero >"$SRV/d.img.new"
truncate -s $(((4 << 20) + TAIL)) "$SRV/d.img.new"
mv "$SRV/d.img.new" "$SRV/d.img"

start_server
t_up=$(date +%s%N)
fm_wait_for "catch-up" 20 in_sync "$MNT" k.img || fail "no automatic catch-up: $(fm_image_json "$MNT" k.img)"
fm_log "k.img in sync $(since_ms "$t_up") ms after the server came back"
copied=$(($(img_get "$MNT" k.img .sync.copied_bytes) - copied0))
fm_log "catch-up copied $copied bytes for $dirty dirty chunks (image 16 MiB)"
((copied > 0 && copied <= dirty * CS)) || fail "catch-up copied $copied bytes, want 1..$((dirty * CS)) (the dirty chunks only)"
grep -q "k.img: secondary reconnected by itself; bitmap-based resync" "$LOG" || fail "no automatic bitmap-based reconnect logged"
grep -q "k.img: reconnect: full resync" "$LOG" && fail "k.img got a full resync: $(grep 'full resync' "$LOG")"
fm_wait_for "d.img resync" 20 in_sync "$MNT" d.img || fail "d.img not back: $(fm_image_json "$MNT" d.img)"
grep -q "d.img: reconnect: full resync: the secondary has no record of this image" "$LOG" ||
  fail "the stranger's export got no full resync with its reason: $(grep d.img "$LOG" | tail -n 3)"
dcopied=$(($(img_get "$MNT" d.img .sync.copied_bytes) - dcopied0))
((dcopied == 4 << 20)) || fail "d.img's full resync copied $dcopied bytes, want $((4 << 20))"
grep -q "SecondaryReconnected k.img automatic: bitmap-based" "$MNT/.fusemirror/events" ||
  fail "no SecondaryReconnected event for k.img: $(cat "$MNT/.fusemirror/events")"
[[ $(img_get "$MNT" k.img .link.state) == connected ]] || fail "link not connected after the catch-up"

# ====================================================================== b) a hung server
FM_CONTEXT="server stopped (SIGSTOP)"
kill -STOP "$NBD_PID"
t0=$(date +%s%N)
pwrite_rand "$K" $((4 << 20)) $CS # synchronous: waits for the secondary until its timeout
ms=$(since_ms "$t0")
fm_log "a write to the stopped server returned after $ms ms (secondary_timeout 2 s)"
((ms < 6000)) || fail "the write waited $ms ms for a stopped server"
fm_wait_for "degraded" 2 is_degraded "$MNT" k.img || fail "k.img not degraded after the timeout"
grep -Eq "export k.img on .*: [a-z ]+ got no answer within 2 s \(secondary_timeout\)" "$LOG" || fail "the timeout is not logged"
t0=$(date +%s%N)
ls "$MNT" >/dev/null && stat "$MNT/k.img" >/dev/null || fail "the namespace does not answer"
(($(since_ms "$t0") < 3000)) || fail "the namespace answered after $(since_ms "$t0") ms"
pwrite_rand "$K" $((6 << 20)) $CS # bits accumulate; no wait now (degraded)
# tries against the stopped server time out (each after secondary_timeout)
timed_out_try() { fm_image_is "$MNT" k.img '.link.state == "connecting" and (.link.reason // "" | contains("no answer within"))'; }
fm_wait_for "a timed-out try" 10 timed_out_try || fail "the link's reason does not name the timeout: $(img_get "$MNT" k.img .link)"
kill -CONT "$NBD_PID"
fm_wait_for "catch-up" 20 in_sync "$MNT" k.img || fail "no catch-up after SIGCONT: $(fm_image_json "$MNT" k.img)"

# ====================================================================== c) error filter
FM_CONTEXT="error filter (30% of writes fail)"
touch "$ERR_ON"
for i in $(seq 0 39); do
  dd if=/dev/urandom of="$K" bs=64K count=1 seek=$((i * 3)) conv=notrunc status=none ||
    fail "a user write failed while the server failed writes"
done
sync "$K"
n_fail=$(grep -c "k.img: secondary failed on" "$LOG")
fm_log "with 30% of the writes failing: $n_fail degradations logged so far"
fm_image_is "$MNT" k.img '.secondary_ok == false or .link.state != "connected" or .sync.action != "idle"' ||
  grep -q "k.img: .*Input/output error" "$LOG" || fail "no write failed on the server (error filter not armed?)"
rm -f "$ERR_ON"
fm_wait_for "catch-up" 30 in_sync "$MNT" k.img || fail "no catch-up after the errors stopped: $(fm_image_json "$MNT" k.img)"

# the operator's fail holds the image out: never retried, until re-add
FM_CONTEXT="fail by the operator"
fm_cli fail "$MNT" k.img
sleep 3 # longer than reconnect_max
fm_image_is "$MNT" k.img '.secondary_ok == false and .link.state == "down"' ||
  fail "a failed image came back by itself or is not shown down: $(fm_image_json "$MNT" k.img)"
[[ $(img_get "$MNT" k.img .link.reason) == "held out until re-add"* ]] || fail "no hold reason: $(img_get "$MNT" k.img .link)"
fm_cli re-add "$MNT" k.img
fm_wait_for "re-added" 20 in_sync "$MNT" k.img || fail "re-add did not bring k.img back"

# across a remount: lost by the link, it is retried after the remount; failed by the
# operator (the bitmap's held flag), it stays out until re-add
FM_CONTEXT="link lost, then a remount"
kill -KILL "$NBD_PID"
fm_bg_stop "$NBD_PID"
pwrite_rand "$K" $((2 << 20)) $CS
fm_wait_for "degraded" 2 is_degraded "$MNT" k.img || fail "k.img not degraded"
fm_unmount "$MNT"
fm_mount "$PRI" "$MNT"
fm_wait_for "connecting after the remount" 10 connecting || fail "not retried after the remount: $(fm_image_json "$MNT" k.img)"
start_server
fm_wait_for "catch-up after the remount" 20 in_sync "$MNT" k.img || fail "no catch-up after the remount: $(fm_image_json "$MNT" k.img)"
[[ $(grep -c "k.img: secondary reconnected by itself; bitmap-based" "$LOG") -ge 2 ]] ||
  fail "the catch-up after the remount was not bitmap-based: $(grep k.img "$LOG" | tail -n 4)"
FM_CONTEXT="fail by the operator, then a remount"
fm_cli fail "$MNT" k.img
fm_unmount "$MNT"
fm_mount "$PRI" "$MNT"
sleep 3
fm_image_is "$MNT" k.img '.secondary_ok == false and .link.state == "down"' ||
  fail "a held image came back by itself after the remount: $(fm_image_json "$MNT" k.img)"
fm_cli re-add "$MNT" k.img
fm_wait_for "re-added" 20 in_sync "$MNT" k.img || fail "re-add did not bring k.img back after the remount"
fm_unmount "$MNT"
same_prefix "$PRI" k.img
same_prefix "$PRI" d.img

# ====================================================================== d) kill -9, slow server
FM_CONTEXT="kill -9 with a full write-behind queue"
slow_set primary2 w.img 8 8
P2=$P
ACK=$FM_TMP/acks
: >"$ACK"
"$CW" write "$MNT/w.img" "$ACK" --blocks 2048 --seed 7 --sync-every 8 &
wpid=$!
full() { fm_image_is "$MNT" w.img '.write_behind.outstanding >= 8'; }
fm_wait_for "queue full" 10 full || fail "the write-behind queue never filled: $(fm_image_json "$MNT" w.img)"
sleep 0.5
fm_kill9_daemon "$MNT" "$wpid"
vout=$("$CW" verify "$P2/w.img" "$ACK") || fail "acknowledged writes lost: $vout"
fm_log "after kill -9: $vout"
fm_mount "$P2" "$MNT"
fm_wait_for "catch-up after remount" 40 in_sync "$MNT" w.img || fail "no catch-up after the remount: $(fm_image_json "$MNT" w.img)"
fm_unmount "$MNT"
same_prefix "$P2" w.img
fm_bg_stop "$SLOW_PID"

# ====================================================================== e) merged writes
FM_CONTEXT="merged writes toward a slow server"
slow_set primary3 s.img 32 128
P3=$P
head -c $((32 << 20)) /dev/urandom >"$FM_TMP/pass1"
head -c $((32 << 20)) /dev/urandom >"$FM_TMP/pass2"
for pass in pass1 pass2; do
  dd if="$FM_TMP/$pass" of="$MNT/s.img" bs=256K oflag=direct conv=notrunc status=none ||
    fail "dd $pass through the mount failed"
done
merged=$(img_get "$MNT" s.img '.write_behind.merged')
[[ $merged =~ ^[0-9]+$ ]] && ((merged > 0)) ||
  fail "no write was merged toward a 100 ms server with a full queue: $(fm_image_json "$MNT" s.img)"
fm_log "merged writes: $merged of 256"
fm_wait_for "in sync" 60 in_sync "$MNT" s.img || fail "the queue did not drain: $(fm_image_json "$MNT" s.img)"
fm_unmount "$MNT"
cmp "$FM_TMP/pass2" "$P3/s.img" || fail "the primary is not the second pass"
same_prefix "$P3" s.img
fm_bg_stop "$SLOW_PID"

fm_pass
