#!/bin/bash
# t_lag_bound — write-behind's lag bound (issue 15 item 5, config max_lag_bytes): an NBD
# secondary behind nbdkit's rate filter at 10 MiB/s (nbd+unix), a writer at full speed
# through the mount for LAG_SECS (default 30) seconds.
#   a) status sampled every 0.2 s: write_behind.lag_bytes never passes max_lag_bytes, the
#      writers are held (held_writers, lag_holds, lag_held_seconds), the writer goes at
#      about the link's pace; status text and metrics show the bound; at unmount the
#      export's first SIZE bytes equal the primary.
#   b) the server killed while the bound holds the writer: the image degrades and the
#      writer goes on (the bound cannot apply to a secondary that is out).
# Without the bound (max_lag_bytes 0) the same run lets the lag grow to the queue's
# 256 writes (~256 MiB): LAG_UNBOUNDED=1 runs a) so and expects the check to fail.
. "$(dirname "$0")/lib.sh"

command -v nbdkit >/dev/null || fail "missing nbdkit (see test/integration/PACKAGES)"
[[ -f /usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-rate-filter.so ]] || nbdkit --dump-config >/dev/null ||
  fail "nbdkit does not run"

LAG_SECS=${LAG_SECS:-30}
BOUND=$((8 << 20))
SIZE=$((64 << 20))
TAIL=4096
RATE_BITS=$((10 * 1048576 * 8))  # nbdkit's rate= is in bits per second: 10 MiB/s
SRV=$FM_TMP/served
SOCK=$FM_TMP/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
mkdir -p "$SRV"

start_server() {
  rm -f "$SOCK"
  fm_bg nbdkit -U "$SOCK" -f --filter=rate file dir="$SRV" rate="$RATE_BITS" burstiness=0.5
  NBD_PID=$FM_LAST_BG
  fm_wait_for "nbdkit socket" 10 test -S "$SOCK" || fail "nbdkit did not create $SOCK"
}

truncate -s $((SIZE + TAIL)) "$SRV/lag.img"
start_server
fm_create "$PRI" "$URI" --write-behind 256 --daemon-sleep 1
if [[ ${LAG_UNBOUNDED:-0} == 1 ]]; then
  fm_json_edit "$PRI/.fusemirror/config.json" '.max_lag_bytes = 0'
else
  fm_json_edit "$PRI/.fusemirror/config.json" ".max_lag_bytes = $BOUND"
fi
fm_mount "$PRI" "$MNT"
truncate -s "$SIZE" "$MNT/lag.img"
SRCDATA=$FM_TMP/random.bin
head -c $((SIZE + (8 << 20))) /dev/urandom >"$SRCDATA"

# writer LOOPS — rewrites the image from SRCDATA (shifted each pass) at full speed; each
# pass ends with an fsync (the primary and the bitmap: write-behind does not wait for the
# secondary). Its progress (MiB written) goes to $FM_TMP/written.
writer() {
  local end=$((SECONDS + $1)) pass=0
  while ((SECONDS < end)); do
    dd if="$SRCDATA" of="$MNT/lag.img" bs=1M skip=$((pass % 8)) count=64 conv=notrunc,fsync status=none || exit 1
    pass=$((pass + 1))
    echo $((pass * 64)) >"$FM_TMP/written"
  done
}

# ====================================================================== a) the bound holds
FM_CONTEXT="sustained writes against a 10 MiB/s secondary"
fm_bg bash -c "$(declare -f writer); SRCDATA='$SRCDATA' MNT='$MNT' FM_TMP='$FM_TMP' writer $LAG_SECS"
WPID=$FM_LAST_BG
t0=$SECONDS
max=0 samples=0 held_seen=0
while kill -0 "$WPID" 2>/dev/null; do
  # The status file itself (what `status --json` reads), one jq per sample.
  read -r lag held < <(jq -r '.images[] | select(.name == "lag.img") | .write_behind |
    "\(.lag_bytes) \(.held_writers)"' "$MNT/.fusemirror/status.json" 2>/dev/null) ||
    { sleep 0.2; continue; }
  [[ $lag =~ ^[0-9]+$ ]] || { sleep 0.2; continue; }
  samples=$((samples + 1))
  ((lag > max)) && max=$lag
  ((held > 0)) && held_seen=$((held_seen + 1))
  ((lag > BOUND)) && fail "lag $lag bytes passed max_lag_bytes $BOUND (sample $samples, $((SECONDS - t0)) s): $(fm_image_json "$MNT" lag.img)"
  sleep 0.2
done
wait "$WPID" || fail "the writer failed"
elapsed=$((SECONDS - t0))
fm_log "$samples samples over ${elapsed}s: lag at most $max bytes (bound $BOUND), writers held in $held_seen samples"
((samples >= elapsed * 2)) || fail "only $samples status samples in ${elapsed}s"
((max > BOUND / 2)) || fail "the lag never came near the bound ($max of $BOUND): the link was not the bottleneck"
j=$(fm_image_json "$MNT" lag.img)
jq -e --argjson b "$BOUND" '.write_behind.max_lag_bytes == $b and .write_behind.lag_holds > 0 and
  .write_behind.lag_held_seconds > 1 and .secondary_ok == true' <<<"$j" >/dev/null ||
  fail "status does not show the bound holding writers: $j"
((held_seen > 0)) || fail "no sample saw a writer held"
# The writer went at about the link's pace: 10 MiB/s (+ the bound, + the rate filter's burst).
written=$(cat "$FM_TMP/written")
((written <= 10 * elapsed + 8 + 10 + 64)) || fail "the writer wrote $written MiB in ${elapsed}s through a 10 MiB/s bound"
txt=$("$FUSEMIRROR" status "$MNT")
grep -q "lag .*(bound 8 MiB), [0-9]* writers held ([0-9]* holds" <<<"$txt" || fail "status text lacks the lag bound: $txt"
m=$("$FUSEMIRROR" metrics "$MNT") || fail "fusemirror metrics failed"
grep -q '^fusemirror_write_behind_max_lag_bytes{.*} 8388608$' <<<"$m" || fail "metrics lack max_lag_bytes: $m"
grep -q '^fusemirror_write_behind_lag_holds_total{.*} [1-9]' <<<"$m" || fail "metrics lack lag_holds_total: $m"
fm_unmount "$MNT"
cmp -n "$SIZE" "$PRI/lag.img" "$SRV/lag.img" || fail "after unmount the export's first $SIZE bytes differ from the primary"

# ====================================================================== b) a dead link
FM_CONTEXT="server killed while the bound holds the writer"
fm_mount "$PRI" "$MNT"
fm_bg bash -c "$(declare -f writer); SRCDATA='$SRCDATA' MNT='$MNT' FM_TMP='$FM_TMP' writer 8"
WPID=$FM_LAST_BG
fm_wait_for "a held writer" 15 fm_image_is "$MNT" lag.img '.write_behind.held_writers > 0' ||
  fail "the writer was never held: $(fm_image_json "$MNT" lag.img)"
fm_bg_stop "$NBD_PID"
fm_wait_for "degraded" 10 fm_image_is "$MNT" lag.img '.secondary_ok == false' ||
  fail "not degraded after the server died: $(fm_image_json "$MNT" lag.img)"
# The writer is released at once and finishes its 8 s at the primary's speed.
for _ in $(seq 150); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$WPID" 2>/dev/null && fail "the writer still runs 15 s after the secondary died (held on a dead link?)"
wait "$WPID" || fail "the writer failed after the secondary died"
fm_image_is "$MNT" lag.img '.write_behind.held_writers == 0' || fail "writers still held while degraded"
fm_unmount "$MNT"
fm_pass
