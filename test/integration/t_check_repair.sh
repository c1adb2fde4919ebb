#!/bin/bash
# shellcheck disable=SC2016 # the bash -c snippets get their values as arguments
# t_check_repair — md's sync_action check/repair (docs/operations.md §6):
#   * a check leaves neither leg's pages in the page cache (it compares the disks);
#   * a few bytes changed in the secondary's backing file behind the daemon's back (reads
#     are served from the primary, so nothing notices): `sync-action check` reports
#     mismatch_cnt 1 and leaves both legs untouched; `repair` rewrites the chunk from the
#     primary; a second `check` reports 0; two mismatches in two chunks count 2;
#   * progress: with resync_max_rate 64 MiB/s (config.json) a check of a 256 MiB image takes
#     ~4 s; status shows state "checking" and sync.done_bytes moving between two polls;
#     `sync-action idle` stops it.
. "$(dirname "$0")/lib.sh"

CS=65536
RATE=$((64 << 20))
FM=$FUSEMIRROR
LOG=$PRI/.fusemirror/fusemirror.log

img_get() { fm_image_json "$MNT" "$1" | jq -r "$2"; }

is_clean() { fm_image_is "$MNT" "$1" '.state == "clean" and .dirty_chunks == 0 and .sync.action == "idle"'; }

# done_lines IMAGE ACTION — how many "IMAGE: ACTION done|interrupted" lines the log has
done_lines() { grep -cE -- "\] $(re_quote "$1"): $2 (done|interrupted):" "$LOG" || true; }

# run_action IMAGE ACTION [SECS] — sync-action, then wait until the daemon logged its end
# and the status is idle again
run_action() {
  local name=$1 action=$2 secs=${3:-30} n0
  n0=$(done_lines "$name" "$action")
  fm_cli sync-action "$MNT" "$name" "$action"
  fm_wait_for "$action end" "$secs" bash -c '
    n=$(grep -cE -- "\] $1: $2 (done|interrupted):" "$3" || true); ((n > $4))' _ \
    "$(re_quote "$name")" "$action" "$LOG" "$n0" ||
    fail "$action of $name did not end within $secs s: $(fm_image_json "$MNT" "$name")"
  fm_wait_for "idle" 10 bash -c '"$0" status "$1" --json | jq -e --arg n "$2" \
    "[.sets[].images[] | select(.name == \$n)][0].sync.action == \"idle\"" >/dev/null' \
    "$FM" "$MNT" "$name" || fail "status still not idle after the $action ended"
}

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$PRI/.fusemirror/config.json" ".resync_max_rate = $RATE"
fm_mount "$PRI" "$MNT"

# ====================================================================== check / repair
FM_CONTEXT="check/repair"
truncate -s 4M "$MNT/disk.img"
pwrite_rand "$MNT/disk.img" 0 $((4 << 20))
sync -f "$MNT/disk.img"
fm_wait_for "clean" 15 is_clean disk.img || fail "not clean: $(fm_image_json "$MNT" disk.img)"

run_action disk.img check
mm=$(img_get disk.img .mismatch_cnt)
((mm == 0)) || fail "check of identical legs reports mismatch_cnt $mm"
# The check compares the legs' disks and leaves neither leg cached (written through the
# mount, both were cached before it; docs/write-path.md §2, "Resync's drop-behind").
for leg in "$PRI" "$SEC"; do
  cached=$(fincore -nb -o RES "$leg/disk.img")
  ((cached <= 1 << 20)) || fail "after a check, $cached bytes of $leg/disk.img are in the page cache (expected at most 1 MiB of 4)"
done

# 7 bytes of chunk 7, in the secondary's backing file, not through the mount
printf 'garbage' | dd of="$SEC/disk.img" bs=1 seek=$((7 * CS + 1000)) conv=notrunc status=none
cmp -s "$PRI/disk.img" "$SEC/disk.img" && fail "the planted mismatch did not change the secondary"
p_md5=$(md5sum <"$PRI/disk.img")
s_md5=$(md5sum <"$SEC/disk.img")
run_action disk.img check
mm=$(img_get disk.img .mismatch_cnt)
((mm == 1)) || fail "check with one chunk differing reports mismatch_cnt $mm, want 1"
[[ $(img_get disk.img .sync.mismatch_cnt) == 1 ]] || soft_fail "sync.mismatch_cnt != mismatch_cnt"
[[ $(md5sum <"$SEC/disk.img") == "$s_md5" ]] || fail "check modified the secondary"
[[ $(md5sum <"$PRI/disk.img") == "$p_md5" ]] || fail "check modified the primary"
# With its checksum the chunk is named as a bad secondary (docs/operations.md §6); without
# one, as differing.
grep -qE -- "disk\.img: chunk 7 (differs|\(bytes [0-9.]+\): (bad secondary|differs))" "$LOG" ||
  soft_fail "the log does not name the differing chunk 7"
txt=$(fm_timeout 30 "$FM" status "$MNT") || fail "status $MNT failed"
fm_log "status after check: $(grep -A3 disk.img <<<"$txt" | tr -s ' ' | tr '\n' '|')"

run_action disk.img repair
mm=$(img_get disk.img .mismatch_cnt)
fm_log "repair: mismatch_cnt $mm"
((mm == 1)) || soft_fail "repair of one differing chunk reports mismatch_cnt $mm, want 1 (md counts the chunks it rewrote)"
cmp "$PRI/disk.img" "$SEC/disk.img" || fail "the legs still differ after repair"
[[ $(md5sum <"$PRI/disk.img") == "$p_md5" ]] || fail "repair modified the primary"
run_action disk.img check
mm=$(img_get disk.img .mismatch_cnt)
((mm == 0)) || fail "check after repair reports mismatch_cnt $mm, want 0"

# two chunks: a write straddling the 20/21 boundary counts 2
printf 'XXXXXXXX' | dd of="$SEC/disk.img" bs=1 seek=$((21 * CS - 4)) conv=notrunc status=none
run_action disk.img check
mm=$(img_get disk.img .mismatch_cnt)
((mm == 2)) || fail "check with chunks 20 and 21 differing reports mismatch_cnt $mm, want 2"
run_action disk.img repair
cmp "$PRI/disk.img" "$SEC/disk.img" || fail "the legs still differ after the second repair"
fm_wait_for "clean" 15 is_clean disk.img || soft_fail "not clean after repair: $(fm_image_json "$MNT" disk.img)"

# bad actions are refused with a clear error
expect_fail "sync-action with an unknown action" "" "$FM" sync-action "$MNT" disk.img scrub || true
expect_fail "sync-action of an unknown image" "" "$FM" sync-action "$MNT" nosuch.img check || true

# ====================================================================== progress
FM_CONTEXT="progress"
BIG=$((256 << 20))
truncate -s $BIG "$MNT/big.img"
for off in 0 $((100 << 20)) $((250 << 20)); do
  pwrite_rand "$MNT/big.img" $off $((2 << 20))
done
sync -f "$MNT/big.img"
fm_wait_for "clean" 15 is_clean big.img || fail "big.img not clean: $(fm_image_json "$MNT" big.img)"

n0=$(done_lines big.img check)
t0=$SECONDS
fm_cli sync-action "$MNT" big.img check
sleep 1
j1=$(fm_image_json "$MNT" big.img)
sleep 1
j2=$(fm_image_json "$MNT" big.img)
d1=$(jq -r .sync.done_bytes <<<"$j1") d2=$(jq -r .sync.done_bytes <<<"$j2")
tot=$(jq -r .sync.total_bytes <<<"$j2")
fm_log "check of 256 MiB at $((RATE >> 20)) MiB/s: done_bytes $d1 -> $d2 of $tot one second apart"
[[ $(jq -r .sync.action <<<"$j1") == check ]] || fail "1 s into a ~4 s check, sync.action is not check: $j1"
[[ $(jq -r .state <<<"$j1") == checking ]] || soft_fail "state during check is '$(jq -r .state <<<"$j1")', want checking"
((tot == BIG)) || soft_fail "sync.total_bytes $tot, want $BIG"
((d1 > 0 && d2 > d1 && d2 < tot)) || fail "check progress does not move: done_bytes $d1 then $d2 of $tot"
rate=$((d2 - d1))
((rate <= RATE * 3 / 2)) || soft_fail "check ran at $rate bytes/s, above resync_max_rate $RATE"
txt=$(fm_timeout 30 "$FM" status "$MNT") || fail "status $MNT failed"
grep -qE "check = [0-9.]+%" <<<"$txt" || soft_fail "the text status shows no check progress line: $txt"
fm_wait_for "check end" 30 bash -c 'n=$(grep -cE -- "\] big\.img: check (done|interrupted):" "$0" || true); ((n > $1))' "$LOG" "$n0" ||
  fail "check of big.img did not end"
el=$((SECONDS - t0))
fm_log "check of big.img took about $el s"
((el >= 3)) || soft_fail "a 256 MiB check at 64 MiB/s took only $el s"
[[ $(img_get big.img .mismatch_cnt) == 0 ]] || fail "check of big.img: mismatch_cnt $(img_get big.img .mismatch_cnt)"

# idle stops a running check
n0=$(done_lines big.img check)
fm_cli sync-action "$MNT" big.img check
sleep 1
fm_cli sync-action "$MNT" big.img idle
fm_wait_for "check stopped" 5 bash -c 'n=$(grep -cE -- "\] big\.img: check interrupted:" "$0" || true); ((n > 0))' "$LOG" ||
  fail "sync-action idle did not stop the check: $(fm_image_json "$MNT" big.img)"
fm_wait_for "idle" 5 bash -c '"$0" status "$1" --json | jq -e "[.sets[].images[] | select(.name == \"big.img\")][0].sync.action == \"idle\"" >/dev/null' "$FM" "$MNT" ||
  fail "status not idle after sync-action idle"

fm_unmount "$MNT"
assert_same "$PRI/disk.img" "$SEC/disk.img"
assert_same "$PRI/big.img" "$SEC/big.img"
fm_pass
