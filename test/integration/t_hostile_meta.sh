#!/bin/bash
# t_hostile_meta — names and metadata files that are not what they seem (issue 12: §4
# metadata, §5 small ones). Each check fails on the code before the fix.
#
#   names      an image named with ESC sequences and a newline: `fusemirror status`, the
#              error of `fusemirror wait` and the daemon's log hold no raw control byte and
#              no forged line
#   rates      the sync_speed_min / sync_speed_max control files refuse min > max (EINVAL),
#              as the config does, and keep the old value
#   log        a symlink in place of PRIMARY/.fusemirror/fusemirror.log (to an existing file,
#              and dangling): mount refused naming it; the target untouched / not created
#   fifo       a FIFO in place of SECONDARY/.fusemirror/member.json: mount refused within
#              20 s naming it (it hung forever)
#   records    a symlink in place of SECONDARY/.fusemirror/images: mount refused; nothing
#              written where it points
#   layout     config.json edited so that the secondary lies inside the primary, or the
#              bitmap_dir inside the primary's image tree: mount refused with create's reason
#   values     config.json with format 4294967297 or daemon_sleep 1e-300: mount refused
#              naming the key
#   gone       the primary's metadata directory moved away while mounted: unmount returns
#              at once and says the set lock no longer exists (it waited 300 s)
. "$(dirname "$0")/lib.sh"

P=$PRI S=$SEC
CONF=$P/.fusemirror/config.json
RAW_CTL='[\x00-\x08\x0b-\x1f\x7f]'  # any C0 control but \t and \n, or DEL

# no_raw_control WHAT FILE — FILE has no raw control byte (newlines aside)
no_raw_control() {
  if LC_ALL=C grep -qaP "$RAW_CTL" "$2"; then
    soft_fail "$1: raw control bytes: $(LC_ALL=C grep -naP "$RAW_CTL" "$2" | head -n 3 | od -c | head -n 6)"
  fi
}

fm_create "$P" "$S" --chunk-size 64K --daemon-sleep 1
fm_mount "$P" "$MNT"

# ------------------------------------------------------------------ names
FM_CONTEXT=names
EVIL=$'evil\e[2J\e[H\e]0;pwned\a\nforged : active raid1 [UU] 1 MiB.img'
EVIL2=$'esc\e[31m\x7f.img'  # no space: the control file splits names on whitespace
head -c 65536 /dev/urandom >"$MNT/$EVIL"
head -c 65536 /dev/urandom >"$MNT/$EVIL2"
head -c 65536 /dev/urandom >"$MNT/plain.img"
"$FUSEMIRROR" status "$MNT" >"$FM_TMP/logs/status.txt"
no_raw_control "fusemirror status" "$FM_TMP/logs/status.txt"
grep -q '^forged' "$FM_TMP/logs/status.txt" && soft_fail "fusemirror status: a name forged a line: $(cat -v "$FM_TMP/logs/status.txt")"
grep -qF 'evil\x1b[2J' "$FM_TMP/logs/status.txt" || soft_fail "fusemirror status: the name is not shown escaped: $(cat -v "$FM_TMP/logs/status.txt")"
# JSON keeps the exact name
[[ $(fm_status_json "$MNT" | jq -r --arg n "$EVIL" '[.sets[].images[] | select(.name == $n)] | length') == 1 ]] ||
  soft_fail "status --json does not carry the exact name"
expect_fail "wait for an unknown image named with ESC" "no image" "$FUSEMIRROR" wait --timeout 5 "$MNT" $'nope\e[2J\nx' || true
printf '%s' "$FM_LAST_STDERR" >"$FM_TMP/logs/wait.err"
no_raw_control "fusemirror wait's error" "$FM_TMP/logs/wait.err"
# the daemon logs the name (operator fail / re-add): one escaped line each
"$FUSEMIRROR" fail "$MNT" "$EVIL2"
"$FUSEMIRROR" re-add "$MNT" "$EVIL2"
no_raw_control "the daemon's log" "$P/.fusemirror/fusemirror.log"
grep -qF 'esc\x1b[31m\x7f.img' "$P/.fusemirror/fusemirror.log" ||
  soft_fail "the daemon's log does not show the name escaped: $(grep -a esc "$P/.fusemirror/fusemirror.log" | cat -v | head -n 3)"

# ------------------------------------------------------------------ rates
FM_CONTEXT=rates
A=$MNT/.fusemirror/images/plain.img
printf '1048576\n' >"$A/sync_speed_max"
if printf '10485760\n' >"$A/sync_speed_min" 2>"$FM_TMP/logs/rate.err"; then
  soft_fail "sync_speed_min 10 MiB/s above sync_speed_max 1 MiB/s was accepted"
fi
[[ $(cat "$A/sync_speed_min") != 10485760 ]] || soft_fail "the refused sync_speed_min was applied"
printf '2048\n' >"$A/sync_speed_min"
if printf '1024\n' >"$A/sync_speed_max" 2>/dev/null; then
  soft_fail "sync_speed_max 1024 below sync_speed_min 2048 was accepted"
fi
grep -q 'must not exceed' "$P/.fusemirror/fusemirror.log" || soft_fail "the refusal's reason is not logged"
printf '0\n' >"$A/sync_speed_max"  # unlimited: any min is fine again
printf '10485760\n' >"$A/sync_speed_min" || soft_fail "sync_speed_min with an unlimited max was refused"
sync
fm_unmount "$MNT"

# ------------------------------------------------------------------ log
FM_CONTEXT=log
LOG=$P/.fusemirror/fusemirror.log
mv "$LOG" "$FM_TMP/logs/saved.log"
printf 'precious\n' >"$FM_TMP/victim.log"
ln -s "$FM_TMP/victim.log" "$LOG"
refuse "mount with a symlinked log file" "fusemirror\.log.*symbolic link" "$FUSEMIRROR" mount "$P" "$MNT"
[[ $(cat "$FM_TMP/victim.log") == precious ]] || soft_fail "the log's symlink target was written"
rm "$LOG"
ln -s "$FM_TMP/created-by-log" "$LOG"
refuse "mount with a dangling symlinked log file" "symbolic link" "$FUSEMIRROR" mount "$P" "$MNT"
[[ ! -e $FM_TMP/created-by-log ]] || soft_fail "the dangling log symlink's target was created"
rm "$LOG"
mv "$FM_TMP/logs/saved.log" "$LOG"

# ------------------------------------------------------------------ fifo
FM_CONTEXT=fifo
MEMBER=$S/.fusemirror/member.json
mv "$MEMBER" "$FM_TMP/member.saved"
mkfifo -m 600 "$MEMBER"
t0=$SECONDS
refuse "mount with a FIFO member.json" "member\.json.*FIFO" timeout -k 2 20 "$FUSEMIRROR" mount "$P" "$MNT"
((SECONDS - t0 < 15)) || soft_fail "refusing the FIFO member.json took $((SECONDS - t0))s"
[[ $(wc -l <<<"$FM_LAST_STDERR") == 1 && $FM_LAST_STDERR == "fusemirror: "* ]] ||
  soft_fail "want one line 'fusemirror: ...', got: $FM_LAST_STDERR"
rm "$MEMBER"
mv "$FM_TMP/member.saved" "$MEMBER"

# ------------------------------------------------------------------ records
FM_CONTEXT=records
mv "$S/.fusemirror/images" "$FM_TMP/images.saved"
mkdir "$FM_TMP/elsewhere"
ln -s "$FM_TMP/elsewhere" "$S/.fusemirror/images"
refuse "mount with a symlinked SECONDARY/.fusemirror/images" "images.*symbolic link" "$FUSEMIRROR" mount "$P" "$MNT"
[[ -z $(ls -A "$FM_TMP/elsewhere") ]] || soft_fail "records were written through the symlink: $(ls -A "$FM_TMP/elsewhere")"
rm "$S/.fusemirror/images"
mv "$FM_TMP/images.saved" "$S/.fusemirror/images"

# ------------------------------------------------------------------ layout
FM_CONTEXT=layout
cp -p "$CONF" "$FM_TMP/config.saved"
# A nested secondary that would otherwise pass: it holds the set's member.json.
mkdir -p "$P/nested/.fusemirror"
cp -p "$MEMBER" "$P/nested/.fusemirror/member.json"
jq --arg s "$P/nested" '.secondary = $s' "$FM_TMP/config.saved" >"$CONF"
refuse "mount with the secondary inside the primary (config edited)" "must not contain each other" "$FUSEMIRROR" mount "$P" "$MNT"
rm -r "$P/nested"
mkdir "$P/bm"
jq --arg b "$P/bm" '.bitmap_dir = $b' "$FM_TMP/config.saved" >"$CONF"
refuse "mount with bitmap_dir in the primary's image tree (config edited)" "bitmap directory.*inside the primary" "$FUSEMIRROR" mount "$P" "$MNT"
rm -rf "$P/bm"

# ------------------------------------------------------------------ values
FM_CONTEXT=values
sed 's/"format": 1,/"format": 4294967297,/' "$FM_TMP/config.saved" >"$CONF"
grep -q 4294967297 "$CONF" || fail "could not edit format in $CONF"
refuse "mount with format 4294967297" "'format'" "$FUSEMIRROR" mount "$P" "$MNT"
jq '.daemon_sleep = 1e-300' "$FM_TMP/config.saved" >"$CONF"
refuse "mount with daemon_sleep 1e-300" "'daemon_sleep'" "$FUSEMIRROR" mount "$P" "$MNT"
cp -p "$FM_TMP/config.saved" "$CONF"
FM_CONTEXT=""

# Everything put back: the set mounts and serves its images.
fm_mount "$P" "$MNT"
cmp -s "$MNT/plain.img" "$S/plain.img" || fm_wait_for "plain.img in sync" 20 cmp -s "$MNT/plain.img" "$S/plain.img" ||
  soft_fail "plain.img differs between the legs after the remount"

# ------------------------------------------------------------------ gone
# The primary's metadata directory moved away while mounted (a user's `rm -rf` of the
# set): `fusemirror unmount` returns at once, saying the set lock no longer exists. It
# used to wait its whole timeout (300 s) for a lock that nothing could hold.
FM_CONTEXT=gone
mv "$P/.fusemirror" "$FM_TMP/meta.moved"
fm_unmount "$MNT"
grep -q 'set lock .* no longer exists' "$FM_TMP/logs/unmount.err" ||
  soft_fail "unmount did not say the lock is gone: $(cat "$FM_TMP/logs/unmount.err")"
mv "$FM_TMP/meta.moved" "$P/.fusemirror"
FM_CONTEXT=""
fm_pass
