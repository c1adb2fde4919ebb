#!/bin/bash
# t_trust — a bitmap (or a secondary copy) that cannot be trusted is never taken for
# "clean" (docs/on-disk-format.md §2.7; docs/reliability.md invariant 4). Each case tampers with a cleanly
# unmounted set, plants a difference on the secondary that only a full copy would repair,
# mounts, and requires: a log line saying "full resync" and why, a resync that copies the
# whole image, and byte-identical legs after unmount.
#
#   a) the bitmap file deleted                 -> "no bitmap existed for an image holding data"
#   b) a header byte flipped                   -> "header checksum mismatch"
#   c) the bitmap of another set copied in     -> "belongs to another mirror set"
#   d) the bitmap truncated to 100 bytes       -> "shorter than the 4096-byte bitmap header"
#   d2) the bits cut off (header only)         -> "bits truncated"
#   d3) the header zeroed                      -> "bad magic"
#   e) an older copy of the secondary image restored together with its older record
#      (SECONDARY/.fusemirror/images/<image>.json) -> "older than the bitmap"
#   e2) the older copy restored WITHOUT its record: the record still proves coverage, so
#      nothing at mount can tell the copy is old (same limitation as md with a bitmap-less
#      member). What happens is reported; the divergence must then be found by
#      `sync-action check` (mismatch_cnt > 0) and fixed by `repair`.
#   f) the secondary's member.json of another set -> mount refused, naming the secondary.
. "$(dirname "$0")/lib.sh"

CS=65536
SIZE=$((4 << 20))
FM=$FUSEMIRROR
LOG=$PRI/.fusemirror/fusemirror.log
BM=$(fm_bitmap_path "$PRI" disk.img)
REC=$SEC/.fusemirror/images/disk.img.json

img_get() { fm_image_json "$MNT" disk.img | jq -r "$1"; }

in_sync() { fm_image_is "$MNT" disk.img '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }

is_clean() { fm_image_is "$MNT" disk.img '.state == "clean" and .dirty_chunks == 0 and .sync.action == "idle"'; }

action_idle() { fm_image_is "$MNT" disk.img '.sync.action == "idle"'; }

loglines() { if [[ -f $LOG ]]; then wc -l <"$LOG"; else echo 0; fi; }

# plant — a difference in the secondary copy that only a (full) copy repairs
plant() { pwrite_rand "$SEC/disk.img" $((10 * CS + 123)) 4096; }

# write_some N — N random writes through the mount, then wait until clean (bits cleared)
write_some() {
  local i
  for ((i = 0; i < $1; i++)); do
    pwrite_rand "$MNT/disk.img" $(((RANDOM % (SIZE / 4096)) * 4096)) 4096
  done
  sync -f "$MNT/disk.img"
  fm_wait_for "clean" 15 is_clean || fail "not clean 15 s after writes: $(fm_image_json "$MNT" disk.img)"
}

# expect_full_resync REASON_ERE — mount (the tampering is done), wait for the resync, and
# require the log line and a whole-image copy; unmount; the legs are identical.
expect_full_resync() {
  local reason=$1 l0 new copied
  l0=$(loglines)
  fm_mount "$PRI" "$MNT"
  fm_wait_for "resync" 30 in_sync || fail "resync did not finish in 30 s: $(fm_image_json "$MNT" disk.img)"
  new=$(tail -n +"$((l0 + 1))" "$LOG")
  printf '%s\n' "$new" >>"$FM_TMP/logs/trust.log"
  grep -E -- "disk\.img.*full resync|full resync.*disk\.img" <<<"$new" | grep -qiE -- "$reason" ||
    fail "want a 'full resync' log line for disk.img saying /$reason/; the mount logged:
$new"
  fm_log "$(grep -E -- 'full resync' <<<"$new" | sed 's/^[0-9-]* [0-9:.]* //' | head -n 1)"
  copied=$(img_get .sync.copied_bytes)
  ((copied >= SIZE)) || fail "a full resync copied only $copied of $SIZE bytes"
  fm_wait_for "clean" 15 is_clean || soft_fail "not clean after the full resync: $(fm_image_json "$MNT" disk.img)"
  fm_unmount "$MNT"
  assert_same "$PRI/disk.img" "$SEC/disk.img"
  local ex
  ex=$(fm_examine "$BM")
  read -r _ d < <(fm_examine_bits "$ex")
  ((d == 0)) || soft_fail "after the full resync and a clean unmount, examine-bitmap shows $d dirty"
}

# ---------------------------------------------------------------- the set, in sync
fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_mount "$PRI" "$MNT"
truncate -s $SIZE "$MNT/disk.img"
pwrite_rand "$MNT/disk.img" 0 $SIZE
sync -f "$MNT/disk.img"
fm_wait_for "clean" 15 is_clean || fail "not clean after the first writes: $(fm_image_json "$MNT" disk.img)"
fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"
[[ -f $BM ]] || fail "no bitmap at $BM"
[[ -f $REC ]] || fail "no record of the image on the secondary at $REC"

# sanity: an untouched remount trusts the bitmap and copies nothing
l0=$(loglines)
fm_mount "$PRI" "$MNT"
sleep 1
grep -q -- "full resync" <(tail -n +"$((l0 + 1))" "$LOG") && fail "an untouched clean set did a full resync: $(tail -n +"$((l0 + 1))" "$LOG")"
[[ $(img_get .sync.copied_bytes) == 0 ]] || fail "an untouched clean set resynced $(img_get .sync.copied_bytes) bytes"
fm_unmount "$MNT"

# ---------------------------------------------------------------- a) deleted
FM_CONTEXT="a: bitmap deleted"
rm -f "$BM"
plant
expect_full_resync "no bitmap existed"

# ---------------------------------------------------------------- b) header byte flipped
FM_CONTEXT="b: header byte flipped"
b=$(od -An -tu1 -j 48 -N 1 "$BM" | tr -d ' ')
printf '%b' "\\$(printf '%03o' $((b ^ 0x10)))" | dd of="$BM" bs=1 seek=48 conv=notrunc status=none
out=$("$FM" examine-bitmap "$BM" 2>&1) && fail "examine-bitmap accepts a header with a flipped byte: $out"
plant
expect_full_resync "checksum"

# ---------------------------------------------------------------- c) another set's bitmap
FM_CONTEXT="c: foreign bitmap"
PB=$FM_TMP/pB
SB=$FM_TMP/sB
mkdir -p "$PB" "$SB"
chmod 755 "$PB" "$SB"
fm_create "$PB" "$SB" --chunk-size 64K --daemon-sleep 1
fm_mount "$PB" "$MNT"
truncate -s $SIZE "$MNT/disk.img"
pwrite_rand "$MNT/disk.img" 0 65536
fm_wait_for "clean" 15 is_clean || fail "set B not clean: $(fm_image_json "$MNT" disk.img)"
fm_unmount "$MNT"
BMB=$(fm_bitmap_path "$PB" disk.img)
ex=$(fm_examine "$BMB")
[[ $ex == *clean* ]] || fail "set B's bitmap is not clean: $ex"
cat "$BMB" >"$BM" # a valid, clean bitmap, of the wrong set
plant
expect_full_resync "another mirror set"

# ---------------------------------------------------------------- d) truncated
FM_CONTEXT="d: truncated to 100 bytes"
truncate -s 100 "$BM"
plant
expect_full_resync "shorter than the 4096-byte|truncated"

FM_CONTEXT="d2: bits cut off"
truncate -s 4096 "$BM"
plant
expect_full_resync "truncated"

FM_CONTEXT="d3: header zeroed"
dd if=/dev/zero of="$BM" bs=4096 count=1 conv=notrunc status=none
plant
expect_full_resync "magic"

# ---------------------------------------------------------------- e) an older copy restored
FM_CONTEXT="e: old copy + old record restored"
OLD=$FM_TMP/old
mkdir -p "$OLD"
cp -p "$SEC/disk.img" "$OLD/disk.img"
cp -p "$REC" "$OLD/record.json"
fm_mount "$PRI" "$MNT"
write_some 20
fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"
cmp -s "$OLD/disk.img" "$PRI/disk.img" && fail "the old copy does not differ from the primary (test setup)"
fm_log "record before restore: $(cat "$REC"); saved record: $(cat "$OLD/record.json"); bitmap: $(fm_examine "$BM" | grep -iE 'events' | tr -s ' ' | tr '\n' ' ')"
cat "$OLD/disk.img" >"$SEC/disk.img"
cp -p "$OLD/record.json" "$REC"
expect_full_resync "older than the bitmap"

FM_CONTEXT="e2: old copy restored, record kept"
cp -p "$SEC/disk.img" "$OLD/disk.img"
fm_mount "$PRI" "$MNT"
write_some 20
fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"
cmp -s "$OLD/disk.img" "$PRI/disk.img" && fail "the old copy does not differ from the primary (test setup)"
cat "$OLD/disk.img" >"$SEC/disk.img" # the data file only; the record stays current
l0=$(loglines)
fm_mount "$PRI" "$MNT"
fm_wait_for "resync" 30 in_sync || fail "resync did not finish in 30 s: $(fm_image_json "$MNT" disk.img)"
new=$(tail -n +"$((l0 + 1))" "$LOG")
if grep -q -- "full resync" <<<"$new"; then
  fm_log "e2: the restored old copy was detected at mount: $(grep -- 'full resync' <<<"$new" | head -n 1)"
else
  differ=$(cmp -l "$PRI/disk.img" "$SEC/disk.img" 2>/dev/null | wc -l || true)
  fm_log "e2: NOTE: an old secondary copy restored without its record is NOT detected at mount" \
    "(state $(img_get .state), $differ bytes differ); relying on check/repair"
fi
fm_cli sync-action "$MNT" disk.img check
sleep 0.3
fm_wait_for "check" 30 action_idle || fail "check did not finish"
mm=$(img_get .mismatch_cnt)
if grep -q -- "full resync" <<<"$new"; then
  ((mm == 0)) || fail "check after a full resync found $mm mismatches"
else
  ((mm > 0)) || fail "the secondary silently differs from the primary and check reports mismatch_cnt $mm"
  fm_log "e2: check found mismatch_cnt $mm"
  fm_cli sync-action "$MNT" disk.img repair
  sleep 0.3
  fm_wait_for "repair" 30 action_idle || fail "repair did not finish"
  fm_cli sync-action "$MNT" disk.img check
  sleep 0.3
  fm_wait_for "check" 30 action_idle || fail "check did not finish"
  mm=$(img_get .mismatch_cnt)
  ((mm == 0)) || fail "check after repair reports mismatch_cnt $mm"
fi
fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"

# ---------------------------------------------------------------- f) foreign member.json
FM_CONTEXT="f: secondary of another set"
MEMBER=$SEC/.fusemirror/member.json
cp -p "$MEMBER" "$FM_TMP/logs/member.json.orig"
cat "$SB/.fusemirror/member.json" >"$MEMBER"
cmp -s "$MEMBER" "$FM_TMP/logs/member.json.orig" && fail "set B's member.json equals set A's"
refuse "mount with a secondary of another set" "$(re_quote "$SEC")" "$FM" mount "$PRI" "$MNT"
stderr_has "mount with a secondary of another set" "another|member|belongs"
cat "$FM_TMP/logs/member.json.orig" >"$MEMBER"
# and the set still works
fm_mount "$PRI" "$MNT"
fm_wait_for "in sync" 15 in_sync || fail "not in sync after member.json was restored"
fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"

fm_pass
