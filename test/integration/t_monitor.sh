#!/bin/bash
# t_monitor — a degraded image cannot go unnoticed: `fusemirror monitor`, the daemon's
# sd_notify messages, and `fusemirror metrics` (docs/operations.md §2.4-2.6).
#
#   a) monitor --program: a script appending its arguments to a file records Fail within
#      2 s of the secondary failing (fm_faultfs fail_write=EIO under the secondary), then
#      RebuildStarted .. RebuildFinished after `re-add` (in that order, with the image's
#      name as its own argument even when it holds a space); SIGSTOP of the daemon gives
#      DeviceDisappeared after --timeout 1 (the monitor is not stuck), SIGCONT and a check
#      give CheckFinished; --oneshot (named, and --scan)
#      prints DegradedArray for the degraded image and exits 0; SIGKILL of the daemon (by
#      its pid) gives DeviceDisappeared, and the monitor, with nothing left to watch, exits 0.
#      The sample docs/examples/fusemirror-mail-event mails a Fail (a stub sendmail).
#   a') LagExceeded: write-behind (4 writes) over fm_faultfs with hang=1: the queue fills,
#      the writer waits, the monitor reports LagExceeded once; the metrics show full_waits
#      and a lag.
#   b) sd_notify: a Python datagram socket as NOTIFY_SOCKET. READY=1 comes, and a read of
#      status.json made the moment it arrives succeeds; STATUS= says "1 image, 0 degraded",
#      then "1 image, 1 degraded" within 2 s of `fusemirror fail`; WATCHDOG=1 pings at
#      WATCHDOG_USEC/2; STOPPING=1 at unmount.
#   c) metrics: the output parses with prometheus_client's text parser (Debian
#      python3-prometheus-client) and every value equals `status --json`'s, for images
#      whose names hold a quote, a backslash and a newline; a mount that does not answer
#      gets fusemirror_up 0.
#   d) permissions (allow_other): uid 65534 reads the events file and runs the monitor but
#      sees nothing of an image in a directory it cannot search; root sees it.
#   e) overflow: 1200 events while the monitor is stopped: EventsLost with the exact count,
#      then the 1024 events the ring kept.
. "$(dirname "$0")/lib.sh"

FM_FAULTFS=${FM_FAULTFS:-$(dirname "$FUSEMIRROR")/../test/tools/fm_faultfs}
[[ -x $FM_FAULTFS ]] || fail "fm_faultfs not found at $FM_FAULTFS (set FM_FAULTFS)"
# The Debian python with the Debian prometheus_client (a pyenv python3 earlier in PATH may lack it).
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
"$PY" -c 'import prometheus_client' 2>/dev/null ||
  fail "python3-prometheus-client is not installed (scripts/install-deps.sh installs test/integration/PACKAGES)"

CS=65536
IMG="disk one.img"

# ------------------------------------------------------------------ a) monitor --program
FM_CONTEXT=monitor
FF=$FM_TMP/ffs
mkdir -p "$FF.bk" "$FF"
chmod 755 "$FF.bk" "$FF"
fm_bg env --default-signal=INT,QUIT "$FM_FAULTFS" "$FF.bk" "$FF" -f 2>>"$FM_TMP/logs/faultfs.log"
FFPID=$FM_LAST_BG
fm_track_mount "$FF"
fm_wait_for "faultfs" 20 fm_is_mounted "$FF" || fail "fm_faultfs did not mount"
ffctl() { printf '%s\n' "$*" >"$FF/.faultfs" || fail "writing '$*' to .faultfs failed"; }

fm_create "$PRI" "$FF" --chunk-size 64K --daemon-sleep 1
fm_mount "$PRI" "$MNT"
dd if="$(fm_rand)" of="$MNT/$IMG" bs=1M count=4 conv=fsync status=none || fail "writing the image failed"
fm_wait_for "clean" 15 fm_image_is "$MNT" "$IMG" '.state == "clean"' || fail "not clean: $(fm_image_json "$MNT" "$IMG")"

# The --program: one line per call, its arguments separated by '|', with the time it ran.
EV=$FM_TMP/events.txt
: >"$EV"
PROG=$FM_TMP/record-event
cat >"$PROG" <<EOF
#!/bin/bash
printf '%s' "\$(date +%s.%N)" >>"$EV"
for a in "\$@"; do printf '|%s' "\$a" >>"$EV"; done
printf '\n' >>"$EV"
EOF
chmod +x "$PROG"
"$FUSEMIRROR" monitor "$MNT" --program "$PROG" --delay 0.5 --timeout 1 </dev/null >"$FM_TMP/logs/monitor.out" 2>&1 &
MONPID=$!
FM_BG_PIDS+=("$MONPID")
sleep 1 # the monitor has read the mount once: what follows is news to it

# has_event NAME — the program was called for NAME on our mount and image
has_event() { grep -qF -- "|$1|$MNT|$IMG" "$EV"; }
event_time() { grep -F -- "|$1|$MNT|$IMG" "$EV" | head -n1 | cut -d'|' -f1; }

ffctl fail_write=EIO
dd if="$(fm_rand)" of="$MNT/$IMG" bs=4096 count=1 seek=5 conv=notrunc,fsync status=none ||
  fail "a write failed although only the secondary fails"
t_fail=$(date +%s.%N)
fm_wait_for "Fail event" 5 has_event Fail || fail "no Fail event 5 s after the secondary failed: $(cat "$EV")"
lat=$(awk -v a="$t_fail" -v b="$(event_time Fail)" 'BEGIN { printf "%.2f", b - a }')
fm_log "Fail reported ${lat}s after the failed secondary write returned"
awk -v l="$lat" 'BEGIN { exit !(l <= 2.0) }' || fail "Fail reported after ${lat}s (> 2 s)"
grep -F -- "|Fail|$MNT|$IMG|" "$EV" | grep -q "Input/output error" ||
  soft_fail "the Fail event's detail does not name the error: $(grep Fail "$EV")"
grep -q "DegradedArray" "$EV" && soft_fail "DegradedArray reported for a failure seen live (mdadm reports Fail): $(cat "$EV")"

# The sample mail program, with a sendmail that keeps the message: the image's name with
# its space arrives whole, and the status of the set is in the mail.
BIN=$FM_TMP/bin
mkdir -p "$BIN"
printf '#!/bin/sh\ncat >"%s"\n' "$FM_TMP/mail.txt" >"$BIN/sendmail"
ln -s "$(realpath "$FUSEMIRROR")" "$BIN/fusemirror"
chmod +x "$BIN/sendmail"
PATH=$BIN:$PATH MAILTO=ops@example.org fm_timeout 30 "$FM_SRC_ROOT/docs/examples/fusemirror-mail-event" \
  Fail "$MNT" "$IMG" "write: Input/output error" || fail "fusemirror-mail-event exited $?"
grep -q "^To: ops@example.org" "$FM_TMP/mail.txt" && grep -q "^Subject: fusemirror Fail event on .*:$MNT" "$FM_TMP/mail.txt" &&
  grep -qxF "Image: $IMG" "$FM_TMP/mail.txt" && grep -qF "$IMG : degraded raid1 [U_]" "$FM_TMP/mail.txt" ||
  fail "fusemirror-mail-event's mail: $(cat "$FM_TMP/mail.txt")"

# --oneshot while degraded: DegradedArray for the image, then exit 0.
out=$(fm_timeout 30 "$FUSEMIRROR" monitor "$MNT" --oneshot) || fail "monitor --oneshot exited $?"
n=$(grep -c . <<<"$out" || true)
[[ $n == 1 && $out == *" DegradedArray $MNT disk\\x20one.img "* ]] ||
  fail "monitor --oneshot printed, for one degraded image: '$out'"
out=$(fm_timeout 30 "$FUSEMIRROR" monitor --scan -1 --timeout 2) || fail "monitor --scan -1 exited $?"
grep -qF " DegradedArray $MNT disk\\x20one.img " <<<"$out" || fail "monitor --scan -1 did not report our image: '$out'"

# More writes while degraded, then re-add: a resync of the dirty chunks.
for c in 9 17 33; do
  dd if="$(fm_rand)" of="$MNT/$IMG" bs=4096 count=1 seek=$((c * CS / 4096)) conv=notrunc,fsync status=none ||
    fail "write while degraded failed"
done
ffctl fail_write=0
fm_cli re-add "$MNT" "$IMG"
fm_wait_for "RebuildFinished" 10 has_event RebuildFinished || fail "no RebuildFinished after re-add: $(cat "$EV")"
order=$(grep -F -- "|$MNT|$IMG" "$EV" | cut -d'|' -f2 | tr '\n' ' ')
[[ $order == "Fail SecondaryReconnected RebuildStarted "*"RebuildFinished " ]] ||
  fail "events in the wrong order: $order"
fm_log "events: $order"

# A daemon that stops answering (SIGSTOP): DeviceDisappeared after --timeout, the monitor
# itself not stuck; once it answers again (SIGCONT) its next event is reported.
dpid=$(fm_daemon_pid "$MNT")
n_dd() { grep -cF -- "|DeviceDisappeared|$MNT|" "$EV" || true; }
kill -STOP "$dpid"
has_dd1() { (($(n_dd) >= 1)); }
fm_wait_for "DeviceDisappeared (hung)" 5 has_dd1 || { kill -CONT "$dpid"; fail "no DeviceDisappeared for a stopped daemon: $(cat "$EV")"; }
kill -CONT "$dpid"
grep -F "|DeviceDisappeared|" "$EV" | grep -q "does not answer (no reply in 1 s)" ||
  soft_fail "DeviceDisappeared for a hung daemon without its reason: $(grep Disapp "$EV")"
fm_cli sync-action "$MNT" "$IMG" check
fm_wait_for "CheckFinished" 10 has_event CheckFinished || fail "no CheckFinished after the daemon answered again: $(cat "$EV")"

# SIGKILL of the daemon: DeviceDisappeared, and the monitor has nothing left to watch.
kill -KILL "$dpid"
wait "$dpid" 2>/dev/null || true
unset "FM_PID[$MNT]"
has_dd() { (($(n_dd) >= 2)); }
fm_wait_for "DeviceDisappeared" 5 has_dd || fail "no DeviceDisappeared 5 s after the daemon was killed: $(cat "$EV")"
grep -F "|DeviceDisappeared|" "$EV" | tail -n1 | grep -q "not connected" || soft_fail "DeviceDisappeared without its reason"
_fm_wait_pid "$MONPID" 10 || fail "the monitor still runs with its only set gone"
((FM_WAIT_RC == 0)) || fail "the monitor exited $FM_WAIT_RC after DeviceDisappeared (want 0, as mdadm)"
fm_timeout 20 fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || fail "cannot unmount the dead mount"
# A named mount that is not a set: a clear error, exit 1.
expect_fail "monitor of a plain directory" "not a fusemirror|not mounted|cannot monitor" \
  "$FUSEMIRROR" monitor "$MNT" --oneshot

# ------------------------------------------------------------------ a') LagExceeded
# Write-behind with 4 outstanding writes at most, over the same fm_faultfs: with hang=1 the
# secondary takes nothing, the queue fills and the writer waits: LagExceeded, once.
FM_CONTEXT=lag
P4=$FM_TMP/p4 S4=$FF/s4 M4=$FM_TMP/m4
mkdir -p "$P4" "$S4" "$M4"
chmod 755 "$P4" "$S4"
fm_create "$P4" "$S4" --chunk-size 64K --daemon-sleep 1 --write-behind 4
fm_mount "$P4" "$M4"
: >"$EV"
"$FUSEMIRROR" monitor "$M4" --program "$PROG" --delay 0.5 </dev/null >"$FM_TMP/logs/monitor4.out" 2>&1 &
FM_BG_PIDS+=("$!")
# the image and its record exist before the secondary hangs (creating it writes the record)
dd if="$(fm_rand)" of="$M4/wb.img" bs=64K count=1 conv=fsync status=none || fail "creating wb.img failed"
fm_wait_for "in sync" 10 fm_image_is "$M4" wb.img '.write_behind.outstanding == 0 and .unsynced_chunks == 0' ||
  fail "wb.img not in sync: $(fm_image_json "$M4" wb.img)"
sleep 1
ffctl hang=1
dd if="$(fm_rand)" of="$M4/wb.img" bs=4096 count=12 conv=notrunc status=none 2>"$FM_TMP/logs/dd4.err" &
DD4=$!
has_lag() { grep -qF -- "|LagExceeded|$M4|wb.img|" "$EV"; }
fm_wait_for "LagExceeded" 5 has_lag || fail "no LagExceeded with a hung write-behind secondary: $(cat "$EV")"
grep -F "|LagExceeded|" "$EV" | grep -q "4 of 4 writes outstanding" || soft_fail "LagExceeded detail: $(grep Lag "$EV")"
m=$("$FUSEMIRROR" metrics "$M4")
grep -qE '^fusemirror_write_behind_full_waits_total\{.*image="wb.img"\} [1-9]' <<<"$m" ||
  soft_fail "full_waits not counted: $(grep full_waits <<<"$m")"
grep -qE '^fusemirror_write_behind_lag_seconds\{.*image="wb.img"\} (0\.[0-9]*[1-9]|[1-9])' <<<"$m" ||
  soft_fail "no write-behind lag while hung: $(grep lag_seconds <<<"$m")"
ffctl hang=0
wait "$DD4" || fail "the writer failed after hang=0: $(cat "$FM_TMP/logs/dd4.err")"
sleep 1.5
n=$(grep -cF "|LagExceeded|" "$EV" || true)
((n == 1)) || soft_fail "want one LagExceeded for one stall, got $n"
fm_log "LagExceeded: $(grep -F '|LagExceeded|' "$EV" | cut -d'|' -f5)"
fm_unmount "$M4"

fm_bg_stop "$FFPID"
fm_wait_for "faultfs gone" 10 bash -c '! grep -q " $0 " /proc/self/mountinfo' "$FF" || fail "fm_faultfs still mounted"

# ------------------------------------------------------------------ b) sd_notify
FM_CONTEXT=sd_notify
P2=$FM_TMP/p2 S2=$FM_TMP/s2 M2=$FM_TMP/m2
mkdir -p "$P2" "$S2" "$M2"
chmod 755 "$P2" "$S2"
fm_create "$P2" "$S2" --chunk-size 64K --daemon-sleep 1
# the image exists before the mount: STATUS= has it from READY on
head -c $((1 << 20)) "$(fm_rand)" >"$P2/vm.img"
SOCK=$FM_TMP/notify.sock
NLOG=$FM_TMP/notify.log
cat >"$FM_TMP/listen.py" <<'EOF'
# Records every datagram ("TIME MESSAGE", newlines as '|'); when READY=1 arrives, reads
# status.json at once and records whether that read succeeded.
import os, socket, sys, time
sock_path, log_path, probe = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
with open(log_path, "a", buffering=1) as log:
    log.write("LISTENING\n")
    while True:
        msg = s.recv(4096).decode("utf-8", "replace")
        log.write("%.3f %s\n" % (time.time(), msg.replace("\n", "|")))
        if "READY=1" in msg.split("\n"):
            try:
                with open(probe) as f:
                    ok = '"images"' in f.read()
                log.write("READ_AFTER_READY %s\n" % ("ok" if ok else "bad-content"))
            except OSError as e:
                log.write("READ_AFTER_READY error %s\n" % e)
EOF
: >"$NLOG"
fm_bg "$PY" "$FM_TMP/listen.py" "$SOCK" "$NLOG" "$M2/.fusemirror/status.json"
fm_wait_for "listener" 10 grep -q LISTENING "$NLOG" || fail "the notify listener did not start"
NOTIFY_SOCKET=$SOCK WATCHDOG_USEC=400000 fm_mount "$P2" "$M2"
fm_wait_for "READY=1" 10 grep -q "READY=1" "$NLOG" || fail "no READY=1 10 s after mounting: $(cat "$NLOG")"
fm_wait_for "read after READY" 10 grep -q READ_AFTER_READY "$NLOG" || fail "the listener did not read after READY"
grep -q "READ_AFTER_READY ok" "$NLOG" || fail "READY=1 came before the mount served: $(grep READ_AFTER "$NLOG")"
grep "READY=1" "$NLOG" | grep -q "STATUS=1 image, 0 degraded" || fail "READY=1 without the status line: $(cat "$NLOG")"
sleep 1
pings=$(grep -c "WATCHDOG=1" "$NLOG" || true)
((pings >= 2)) || fail "only $pings WATCHDOG=1 in 1 s with WATCHDOG_USEC=400000"
t0=$(date +%s.%N)
fm_cli fail "$M2" vm.img
has_degraded_status() { grep -q "STATUS=1 image, 1 degraded" "$NLOG"; }
fm_wait_for "STATUS degraded" 5 has_degraded_status || fail "STATUS= did not change after the image degraded: $(cat "$NLOG")"
t1=$(grep "STATUS=1 image, 1 degraded" "$NLOG" | head -n1 | cut -d' ' -f1)
lat=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
fm_log "STATUS= changed ${lat}s after the image degraded"
awk -v l="$lat" 'BEGIN { exit !(l <= 2.0) }' || fail "STATUS= changed only after ${lat}s"
fm_unmount "$M2"
grep -q "STOPPING=1" "$NLOG" || fail "no STOPPING=1 at unmount: $(tail -n 3 "$NLOG")"
fm_log "sd_notify: $(grep -c . "$NLOG") messages, $pings watchdog pings in the first second"

# ------------------------------------------------------------------ c) metrics
FM_CONTEXT=metrics
P3=$FM_TMP/p3 S3=$FM_TMP/s3 M3=$FM_TMP/m3
mkdir -p "$P3" "$S3" "$M3"
chmod 755 "$P3" "$S3"
fm_create "$P3" "$S3" --chunk-size 64K --daemon-sleep 1 --write-behind 8
fm_mount "$P3" "$M3" -o allow_other
N1='quo"te\back.img'
N2=$'new\nline.img'
dd if="$(fm_rand)" of="$M3/$N1" bs=64K count=10 conv=fsync status=none || fail "writing $N1 failed"
dd if="$(fm_rand)" of="$M3/$N2" bs=64K count=3 conv=fsync status=none || fail "writing $N2 failed"
dd if="$(fm_rand)" of="$M3/plain.img" bs=64K count=5 conv=fsync status=none || fail "writing plain.img failed"
fm_wait_for "clean" 15 fm_image_is "$M3" plain.img '.state == "clean"' || fail "plain.img not clean"
fm_cli fail "$M3" "$N1" # one degraded image: its bits stay, the values hold still
dd if="$(fm_rand)" of="$M3/$N1" bs=64K count=2 seek=3 conv=notrunc,fsync status=none || fail "write while degraded"
fm_wait_for "clean" 15 fm_image_is "$M3" "$N2" '.state == "clean"' || fail "$N2 not clean"
"$FUSEMIRROR" metrics "$M3" >"$FM_TMP/metrics.prom" || fail "fusemirror metrics exited $?"
"$FUSEMIRROR" status "$M3" --json >"$FM_TMP/status.json" || fail "status --json exited $?"
cat >"$FM_TMP/compare.py" <<'EOF'
# Parses the metrics with prometheus_client and checks each value against status --json.
import json, sys
from prometheus_client.parser import text_string_to_metric_families
prom_text, status_path, mount = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
samples = {}
for fam in text_string_to_metric_families(prom_text):
    if not fam.documentation:
        sys.exit("family %s has no HELP" % fam.name)
    for s in fam.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        samples[key] = s.value
st = json.load(open(status_path))["sets"][0]
bad = []
def want(name, value, **labels):
    labels["mount"] = mount
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        bad.append("missing %s%s" % (name, labels))
    elif float(samples[key]) != float(value):
        bad.append("%s%s = %r, status says %r" % (name, labels, samples[key], value))
want("fusemirror_up", 1)
want("fusemirror_images", len(st["images"]))
want("fusemirror_images_degraded", sum(1 for i in st["images"] if not i["secondary_ok"]))
want("fusemirror_set_info", 1, uuid=st["uuid"], primary=st["primary"], secondary=st["secondary"])
for i in st["images"]:
    n = i["name"]
    sy, wb = i["sync"], i["write_behind"]
    want("fusemirror_image_size_bytes", i["size"], image=n)
    want("fusemirror_image_degraded", 0 if i["secondary_ok"] else 1, image=n)
    for state in ("clean", "active", "resyncing", "checking", "degraded", "bitmap-failed"):
        want("fusemirror_image_state", 1 if i["state"] == state else 0, image=n, state=state)
    want("fusemirror_dirty_chunks", i["dirty_chunks"], image=n)
    want("fusemirror_unsynced_chunks", i["unsynced_chunks"], image=n)
    want("fusemirror_unsynced_bytes", i["unsynced_chunks"] * i["chunk_size"], image=n)
    want("fusemirror_chunks", i["total_chunks"], image=n)
    want("fusemirror_chunk_size_bytes", i["chunk_size"], image=n)
    want("fusemirror_bitmap_events", i["events"], image=n)
    want("fusemirror_bitmap_failed", 1 if i["bitmap_error"] else 0, image=n)
    want("fusemirror_bitmap_flushes_total", i["bitmap_flushes"], image=n)
    for a in ("idle", "resync", "check", "repair"):
        want("fusemirror_sync_action", 1 if sy["action"] == a else 0, image=n, action=a)
    want("fusemirror_sync_done_bytes", sy["done_bytes"], image=n)
    want("fusemirror_sync_total_bytes", sy["total_bytes"], image=n)
    want("fusemirror_sync_speed_bytes_per_second", sy.get("speed", 0), image=n)
    want("fusemirror_resync_copied_bytes_total", sy["copied_bytes"], image=n)
    want("fusemirror_mismatch_chunks", i["mismatch_cnt"], image=n)
    want("fusemirror_write_behind_outstanding", wb["outstanding"], image=n)
    want("fusemirror_write_behind_limit", wb["limit"], image=n)
    want("fusemirror_write_behind_peak", wb["peak"], image=n)
    want("fusemirror_write_behind_lag_seconds", wb["lag_seconds"], image=n)
    want("fusemirror_write_behind_full_waits_total", wb["full_waits"], image=n)
    want("fusemirror_secondary_reads_total", i["secondary_reads"], image=n)
    lk = i["link"]
    for state in ("connected", "connecting", "down"):
        want("fusemirror_link_state", 1 if lk["state"] == state else 0, image=n, state=state)
    want("fusemirror_link_reconnect_tries", lk.get("tries", 0), image=n)
names = sorted(i["name"] for i in st["images"])
if names != sorted(['quo"te\\back.img', "new\nline.img", "plain.img"]):
    bad.append("status names %r" % names)
if bad:
    sys.exit("\n".join(bad))
print("%d samples, %d images: every value equals status --json" % (len(samples), len(st["images"])))
EOF
res=$("$PY" "$FM_TMP/compare.py" "$FM_TMP/metrics.prom" "$FM_TMP/status.json" "$M3" 2>&1) ||
  fail "metrics vs status --json: $res"
fm_log "metrics: $res"
# A mount whose daemon does not answer still gets a sample: fusemirror_up 0.
out=$("$FUSEMIRROR" metrics "$M3" "$FM_TMP" 2>/dev/null) || fail "metrics with a dead mount exited $?"
grep -qxF "fusemirror_up{mount=\"$FM_TMP\"} 0" <<<"$out" || fail "no fusemirror_up 0 for a non-set: $(grep _up <<<"$out")"

# ------------------------------------------------------------------ d) who sees which events
FM_CONTEXT=permissions
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
chmod 755 "$FM_TMP" "$M3" # the way to the mount; the mount's root is the primary's mode
mkdir -m 700 "$M3/priv" || fail "mkdir through the mount failed"
dd if="$(fm_rand)" of="$M3/priv/secret.img" bs=64K count=2 conv=fsync status=none || fail "writing secret.img failed"
fm_cli fail "$M3" priv/secret.img
grep -q " Fail priv/secret.img operator request" "$M3/.fusemirror/events" || fail "root does not see secret.img's Fail"
ev=$(nobody cat "$M3/.fusemirror/events") || fail "uid 65534 cannot read the events file"
grep -q "secret" <<<"$ev" && fail "uid 65534 sees the events of an image it cannot reach: $ev"
grep -q " NewImage plain.img" <<<"$ev" || fail "uid 65534 does not see plain.img's events: $ev"
out=$(fm_timeout 30 setpriv --reuid=65534 --regid=65534 --clear-groups "$FUSEMIRROR" monitor "$M3" --oneshot) || fail "monitor --oneshot as uid 65534 exited $?"
grep -q "secret" <<<"$out" && fail "monitor as uid 65534 reports secret.img: $out"
grep -q " DegradedArray .* quo" <<<"$out" || fail "monitor as uid 65534 misses the degraded image it can reach: $out"
out=$(fm_timeout 30 "$FUSEMIRROR" monitor "$M3" --oneshot) || fail "monitor --oneshot exited $?"
[[ $(grep -c DegradedArray <<<"$out") == 2 ]] || fail "root's monitor --oneshot should report 2 degraded images: $out"

# ------------------------------------------------------------------ e) more than the ring holds
# A monitor that cannot read for a while (SIGSTOP) while more events happen than the ring
# holds (1024): it says exactly how many it lost, then reports the 1024 the ring kept. Each
# fail/re-add pair posts Fail, SecondaryReconnected, RebuildStarted, RebuildFinished (the
# image has a dirty chunk). The set is on a tmpfs: the pair's fsyncs are free there.
FM_CONTEXT=overflow
T5=$FM_TMP/t5 M5=$FM_TMP/m5
mkdir -p "$T5" "$M5"
mount -t tmpfs -o size=16m,mode=755 fm-test-t5 "$T5" || fail "mount tmpfs on $T5 failed"
fm_track_mount "$T5"
mkdir -m 755 "$T5/p" "$T5/s"
fm_create "$T5/p" "$T5/s" --chunk-size 64K --daemon-sleep 1
head -c 65536 "$(fm_rand)" >"$T5/p/x.img"
fm_mount "$T5/p" "$M5"
# the mount's first full sync (RebuildStarted, RebuildFinished) is over before the monitor starts
fm_wait_for "in sync" 10 fm_image_is "$M5" x.img '.unsynced_chunks == 0 and .sync.action == "idle"' ||
  fail "x.img not in sync"
next_of() { head -n1 "$M5/.fusemirror/events" | sed -n 's/.* next=\([0-9]*\)$/\1/p'; }
next0=$(next_of)
"$FUSEMIRROR" monitor "$M5" --delay 0.2 </dev/null >"$FM_TMP/mon5.out" 2>&1 &
MON5=$!
FM_BG_PIDS+=("$MON5")
sleep 0.5
kill -STOP "$MON5"
t0=$(date +%s.%N)
# Each fail + re-add posts 2 to 4 events (a re-add that meets the last resync still running
# posts fewer): go on until well past the ring's 1024, then let the last resync end so that
# nothing is posted after the count is taken.
for ((k = 0; k < 1000 && $(next_of) - next0 <= 1100; k++)); do
  printf 'fail x.img\n' >"$M5/.fusemirror/control"
  printf 're-add x.img\n' >"$M5/.fusemirror/control"
done
fm_wait_for "in sync" 10 fm_image_is "$M5" x.img '.unsynced_chunks == 0 and .sync.action == "idle"' ||
  fail "x.img not in sync after the fail/re-add loop"
posted=$(($(next_of) - next0))
fm_log "$posted events posted in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
((posted > 1024)) || fail "only $posted events posted: the ring did not overflow"
kill -CONT "$MON5"
lost() { grep -q " EventsLost $M5 - " "$FM_TMP/mon5.out"; }
fm_wait_for "EventsLost" 10 lost || fail "no EventsLost after $posted events while the monitor slept: $(head -3 "$FM_TMP/mon5.out")"
line=$(grep " EventsLost " "$FM_TMP/mon5.out")
want=$((posted - 1024))
range="$next0..$((next0 + want - 1))"
[[ $line == *" - $want events ($range) were dropped "* ]] || fail "want $want events ($range) lost: $line"
fm_wait_for "the rest" 10 bash -c '(( $(grep -c " x.img " "$0") >= 1024 ))' "$FM_TMP/mon5.out" ||
  fail "the monitor did not report the 1024 events the ring kept: $(grep -c " x.img " "$FM_TMP/mon5.out")"
sleep 0.5
n=$(grep -c " x.img " "$FM_TMP/mon5.out")
((n == 1024)) || fail "$n events reported after EventsLost, want the ring's 1024"
fm_log "EventsLost: $want of $posted; then the 1024 the ring kept"
fm_bg_stop "$MON5"
fm_unmount "$M5"
fm_unmount "$M3"

fm_pass
