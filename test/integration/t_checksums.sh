#!/bin/bash
# shellcheck disable=SC2016 # the bash -c snippets get their values as arguments
# t_checksums — checksums of clean chunks (docs/write-path.md §9, docs/operations.md §6):
#   A. a byte flipped in the PRIMARY's backing file while mounted: `check` reports
#      bad_primary 1 and changes nothing; `repair` rewrites the primary from the secondary;
#      legs identical; a second check is clean.
#   B. the same with the daemon stopped (bit rot: the mtime kept): after the mount, check
#      says bad_primary 1; a read through the mount (verify_reads) returns the secondary's
#      good bytes, not the flipped ones, and repairs the primary.
#   C. a byte flipped in the SECONDARY: bad_secondary 1; repair fixes the secondary.
#   D. both legs flipped differently in one chunk: unrecoverable 1; repair overwrites
#      nothing; a verified read of it fails (EIO); the log names the chunk and its bytes.
#   E. status (JSON and text) and examine-bitmap show the checksums and the last pass.
#   F. the scrub schedule: scrub_interval 1 with scrub_repair, a rate limit that makes a
#      pass take seconds (16 MiB at 4 MiB/s); an unmount mid-pass, a remount: the pass resumes from its cursor
#      and repairs a flipped secondary byte.
#   G. the sidecar follows a rename; `checksums: false` removes it at the next mount;
#      rescale-bitmap removes it (after F).
#   H. (crash-point builds) the daemon killed in the middle of a repair of the primary
#      (crash point repair.mid_primary, 4 MiB chunks: a quarter rewritten): the bit stayed
#      clear, so the next mount resyncs nothing over the good secondary; check says "bad
#      primary" again and repair finishes the job.
. "$(dirname "$0")/lib.sh"

CS=65536
FM=$FUSEMIRROR
LOG=$PRI/.fusemirror/fusemirror.log
BM_DIR=$PRI/.fusemirror/bitmaps

img_get() { fm_image_json "$MNT" "$1" | jq -r "$2"; }
is_clean() { fm_image_is "$MNT" "$1" '.state == "clean" and .dirty_chunks == 0 and .sync.action == "idle"'; }
done_lines() { grep -cE -- "\] $(re_quote "$1"): $2 (done|interrupted):" "$LOG" 2>/dev/null || true; }

# run_action IMAGE ACTION — sync-action, then wait until the daemon logged its end.
run_action() {
  local name=$1 action=$2 n0
  n0=$(done_lines "$name" "$action")
  fm_cli sync-action "$MNT" "$name" "$action"
  fm_wait_for "$action end" 30 bash -c 'n=$(grep -cE -- "\] $1: $2 (done|interrupted):" "$3" || true); ((n > $4))' \
    _ "$(re_quote "$name")" "$action" "$LOG" "$n0" || fail "$action of $name did not end: $(fm_image_json "$MNT" "$name")"
  fm_wait_for "idle" 10 fm_image_is "$MNT" "$name" '.sync.action == "idle"' || fail "not idle after $action"
}

# flip FILE CHUNK OFFSET — inverts one byte of FILE (a backing file, not the mount).
flip() {
  local off=$(($2 * CS + $3)) b
  b=$(dd if="$1" bs=1 skip="$off" count=1 status=none | od -An -tu1 | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 0xFF)))" | dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}
chunk_of() { dd if="$1" bs=$CS skip="$2" count=1 status=none | md5sum | cut -d' ' -f1; }
scrub() { img_get "$1" ".scrub.$2"; }

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$PRI/.fusemirror/config.json" '.verify_reads = true'
fm_mount "$PRI" "$MNT"
truncate -s 4M "$MNT/disk.img"
pwrite_rand "$MNT/disk.img" 0 $((4 << 20))
sync -f "$MNT/disk.img"
fm_wait_for "clean" 15 is_clean disk.img || fail "not clean: $(fm_image_json "$MNT" disk.img)"
[[ $(img_get disk.img .checksums) == true ]] || fail "checksums are not on: $(fm_image_json "$MNT" disk.img)"
[[ -f $BM_DIR/disk.img.fmck ]] || fail "no checksum file beside the bitmap: $(ls -a "$BM_DIR")"
run_action disk.img check
[[ $(scrub disk.img checked_chunks) == 64 && $(scrub disk.img unverified_chunks) == 0 ]] ||
  fail "a check of a freshly written, clean image: $(img_get disk.img .scrub)"
[[ $(scrub disk.img bad_primary)$(scrub disk.img bad_secondary)$(scrub disk.img unrecoverable) == 000 ]] ||
  fail "a check of identical legs found bad chunks: $(img_get disk.img .scrub)"

# ============================================================ A. primary, daemon running
FM_CONTEXT="A: primary, running"
flip "$PRI/disk.img" 9 1000
p_md5=$(md5sum <"$PRI/disk.img") s_md5=$(md5sum <"$SEC/disk.img")
run_action disk.img check
[[ $(scrub disk.img bad_primary) == 1 && $(scrub disk.img bad_secondary) == 0 ]] ||
  fail "check after a flipped primary byte: $(img_get disk.img .scrub)"
[[ $(md5sum <"$PRI/disk.img") == "$p_md5" && $(md5sum <"$SEC/disk.img") == "$s_md5" ]] || fail "check changed a leg"
grep -qE "disk\.img: chunk 9 \(bytes $((9 * CS))\.\.$((10 * CS - 1))\): bad primary" "$LOG" ||
  soft_fail "the log does not name chunk 9 and its bytes as a bad primary"
# The monitor's event says which leg was wrong (docs/operations.md §2.4).
grep -q 'MismatchesFound.*disk\.img.*bad_primary 1, bad_secondary 0, unrecoverable 0 (check)' "$MNT/.fusemirror/events" ||
  fail "no MismatchesFound event naming the bad primary: $(grep MismatchesFound "$MNT/.fusemirror/events")"
run_action disk.img repair
[[ $(scrub disk.img bad_primary) == 1 && $(scrub disk.img repaired) == 1 ]] ||
  fail "repair of a bad primary: $(img_get disk.img .scrub)"
cmp -s "$PRI/disk.img" "$SEC/disk.img" || fail "legs differ after the repair of the primary"
[[ $(md5sum <"$SEC/disk.img") == "$s_md5" ]] || fail "the repair of the primary changed the secondary"
run_action disk.img check
[[ $(scrub disk.img bad_primary)$(img_get disk.img .mismatch_cnt) == 00 ]] || fail "check after repair: $(img_get disk.img .scrub)"

# ============================================================ B. primary, daemon stopped
FM_CONTEXT="B: primary, stopped"
fm_unmount "$MNT"
touch -r "$PRI/disk.img" "$FM_TMP/mtime.ref"
flip "$PRI/disk.img" 5 77
touch -m -r "$FM_TMP/mtime.ref" "$PRI/disk.img" # rot, not an edit: the mtime is as it was
good=$(chunk_of "$SEC/disk.img" 5)
[[ $(chunk_of "$PRI/disk.img" 5) != "$good" ]] || fail "the flip did not change the primary"
fm_mount "$PRI" "$MNT"
run_action disk.img check
[[ $(scrub disk.img bad_primary) == 1 ]] || fail "check after a flip while stopped: $(img_get disk.img .scrub)"
[[ $(chunk_of "$PRI/disk.img" 5) != "$good" ]] || fail "check repaired the primary"
got=$(chunk_of "$MNT/disk.img" 5)
[[ $got == "$good" ]] || fail "a verified read of the bad chunk returned the primary's bad bytes"
[[ $(img_get disk.img .verified_reads.served_from_secondary) == 1 ]] ||
  soft_fail "verified_reads: $(img_get disk.img .verified_reads)"
cmp -s "$PRI/disk.img" "$SEC/disk.img" || fail "the read did not repair the primary"

# ============================================================ C. secondary
FM_CONTEXT="C: secondary"
flip "$SEC/disk.img" 12 5
p_md5=$(md5sum <"$PRI/disk.img")
run_action disk.img check
[[ $(scrub disk.img bad_secondary) == 1 && $(scrub disk.img bad_primary) == 0 ]] ||
  fail "check after a flipped secondary byte: $(img_get disk.img .scrub)"
run_action disk.img repair
[[ $(scrub disk.img repaired) == 1 ]] || fail "repair of a bad secondary: $(img_get disk.img .scrub)"
cmp -s "$PRI/disk.img" "$SEC/disk.img" || fail "legs differ after the repair of the secondary"
[[ $(md5sum <"$PRI/disk.img") == "$p_md5" ]] || fail "the repair of the secondary changed the primary"

# ============================================================ D. both legs
FM_CONTEXT="D: both legs"
flip "$PRI/disk.img" 20 10
flip "$SEC/disk.img" 20 20
p_md5=$(md5sum <"$PRI/disk.img") s_md5=$(md5sum <"$SEC/disk.img")
run_action disk.img repair
[[ $(scrub disk.img unrecoverable) == 1 && $(scrub disk.img repaired) == 0 ]] ||
  fail "both legs bad: $(img_get disk.img .scrub)"
[[ $(md5sum <"$PRI/disk.img") == "$p_md5" && $(md5sum <"$SEC/disk.img") == "$s_md5" ]] ||
  fail "an unrecoverable chunk was overwritten"
grep -qE "disk\.img: chunk 20 \(bytes $((20 * CS))\.\.$((21 * CS - 1))\): unrecoverable.*legs differ in bytes $((20 * CS + 10))\.\.$((20 * CS + 20))" "$LOG" ||
  soft_fail "the log does not name chunk 20 with its bytes: $(grep 'chunk 20' "$LOG" | tail -n 1)"
if dd if="$MNT/disk.img" of=/dev/null bs=$CS skip=20 count=1 status=none 2>/dev/null; then
  fail "a verified read of an unrecoverable chunk succeeded"
fi
# Put chunk 20 right by hand (both legs), so later sections start clean.
dd if="$FM_TMP/logs/random.bin" bs=$CS count=1 status=none >"$FM_TMP/c20"
dd if="$FM_TMP/c20" of="$MNT/disk.img" bs=$CS seek=20 conv=notrunc status=none
sync -f "$MNT/disk.img"
fm_wait_for "clean" 15 is_clean disk.img || fail "not clean after rewriting chunk 20"

# ============================================================ E. status, examine
FM_CONTEXT="E: status"
txt=$(fm_timeout 30 "$FM" status "$MNT")
grep -qE "scrub: checksums on, last run [0-9-]+ .*unrecoverable" <<<"$txt" || soft_fail "the text status has no scrub line: $txt"
ex=$(fm_examine "$BM_DIR/disk.img.fmbm")
[[ $(fm_examine_field "$ex" "Checksum Entries") == "64 of 64 clean chunks have a checksum"* ]] ||
  soft_fail "examine-bitmap: $(fm_examine_field "$ex" "Checksum Entries")"

# ============================================================ G. rename, checksums off
FM_CONTEXT="G: rename"
mv "$MNT/disk.img" "$MNT/moved.img"
[[ -f $BM_DIR/moved.img.fmck && ! -e $BM_DIR/disk.img.fmck ]] || fail "the checksum file did not follow the rename: $(ls -a "$BM_DIR")"
run_action moved.img check
[[ $(scrub moved.img unverified_chunks) == 0 && $(scrub moved.img mismatches) == 0 ]] ||
  fail "check after a rename: $(img_get moved.img .scrub)"
fm_unmount "$MNT"
fm_json_edit "$PRI/.fusemirror/config.json" '.checksums = false | .verify_reads = false'
fm_mount "$PRI" "$MNT"
cat "$MNT/moved.img" >/dev/null
[[ ! -e $BM_DIR/moved.img.fmck ]] || fail "checksums off: the checksum file is still there"
[[ $(img_get moved.img .checksums) == false ]] || fail "checksums off, status says otherwise"
fm_unmount "$MNT"

# ============================================================ F. scheduled scrub, resumed
FM_CONTEXT="F: scrub"
fm_json_edit "$PRI/.fusemirror/config.json" \
  ".checksums = true | .scrub_interval = 1 | .scrub_repair = true | .resync_max_rate = $((4 << 20)) | .resync_min_rate = 0"
fm_mount "$PRI" "$MNT"
truncate -s 16M "$MNT/big.img"
pwrite_rand "$MNT/big.img" 0 $((16 << 20))
sync -f "$MNT/big.img"
fm_wait_for "clean" 20 is_clean big.img || fail "big.img not clean"
fm_wait_for "a scheduled pass" 20 fm_image_is "$MNT" big.img '.scrub.in_progress and .scrub.cursor > 0' ||
  fail "no scheduled scrub of big.img started: $(fm_image_json "$MNT" big.img)"
fm_unmount "$MNT"
# Past the cursor, so the resumed pass finds it; rot, not an edit: the mtime kept (an
# edited secondary is not the copy the set left there: a full resync, not a repair).
touch -r "$SEC/big.img" "$FM_TMP/mtime.ref"
flip "$SEC/big.img" 200 3
touch -m -r "$FM_TMP/mtime.ref" "$SEC/big.img"
fm_mount "$PRI" "$MNT"
fm_wait_for "the resumed pass" 30 fm_image_is "$MNT" big.img '.scrub.last_run > 0 and (.scrub.in_progress | not)' ||
  fail "the scrub of big.img did not finish: $(fm_image_json "$MNT" big.img)"
grep -qE "big\.img: scheduled (check|repair) started over 256 chunks \(resumed at chunk [1-9][0-9]*\)" "$LOG" ||
  soft_fail "the pass did not resume from its cursor: $(grep 'big.img: scheduled' "$LOG" | tail -n 2)"
[[ $(scrub big.img bad_secondary) == 1 && $(scrub big.img repaired) == 1 ]] ||
  fail "the scheduled repair: $(img_get big.img .scrub)"
fm_unmount "$MNT"
cmp -s "$PRI/big.img" "$SEC/big.img" || fail "big.img legs differ after the scheduled repair"
cmp -s "$PRI/moved.img" "$SEC/moved.img" || fail "moved.img legs differ"
# rescale-bitmap: the checksums of the old chunk size go with it.
out=$("$FM" rescale-bitmap "$BM_DIR/big.img.fmbm" --chunk-size 128K) || fail "rescale-bitmap failed"
grep -q "big.img.fmck: removed" <<<"$out" || soft_fail "rescale-bitmap did not say it removed the checksums: $out"
[[ ! -e $BM_DIR/big.img.fmck ]] || fail "the checksums of the old chunk size survived rescale-bitmap"

# ============================================================ H. a crash mid-repair
FM_CONTEXT="H: crash in a repair of the primary"
if ! grep -q 'repair.mid_primary' "$FUSEMIRROR"; then
  fm_log "no crash points in this build: section H skipped"
  fm_pass
  exit 0
fi
P3=$FM_TMP/p3 S3=$FM_TMP/s3 M3=$FM_TMP/m3
mkdir -p "$P3" "$S3" "$M3"
fm_create "$P3" "$S3" --chunk-size 4M --daemon-sleep 1
LOG=$P3/.fusemirror/fusemirror.log MNT=$M3
fm_mount "$P3" "$M3"
truncate -s 8M "$M3/r.img"
pwrite_rand "$M3/r.img" 0 $((8 << 20))
sync -f "$M3/r.img"
fm_wait_for "clean" 15 is_clean r.img || fail "r.img not clean"
fm_unmount "$M3"
cp "$S3/r.img" "$FM_TMP/r.good"
touch -r "$P3/r.img" "$FM_TMP/mtime.ref"
CS=$((4 << 20)) flip "$P3/r.img" 1 $((3 << 20)) # the last quarter of chunk 1
touch -m -r "$FM_TMP/mtime.ref" "$P3/r.img"
FM_CRASH_AT=repair.mid_primary fm_mount "$P3" "$M3"
pid=$(fm_daemon_pid "$M3")
"$FUSEMIRROR" sync-action "$M3" r.img repair 2>/dev/null || true
_fm_wait_pid "$pid" 20 || fail "the daemon did not die at repair.mid_primary"
unset "FM_PID[$(realpath -m -- "$M3")]"
fm_timeout 20 fusermount3 -u "$M3" 2>/dev/null || umount -l "$M3"
cmp -s "$S3/r.img" "$FM_TMP/r.good" || fail "the secondary changed during the repair of the primary"
cmp -s "$P3/r.img" "$FM_TMP/r.good" && fail "the repair was not interrupted (the primary is already good)"
[[ $(cmp -l "$P3/r.img" "$FM_TMP/r.good" | wc -l) == 1 ]] || fail "the interrupted repair wrote something else than the secondary's bytes"
fm_mount "$P3" "$M3"
[[ $(img_get r.img .unsynced_chunks) == 0 ]] || fail "the mount after the crash resyncs (the bad primary over the good secondary)"
run_action r.img check
[[ $(scrub r.img bad_primary) == 1 && $(scrub r.img bad_secondary)$(scrub r.img unrecoverable) == 00 ]] ||
  fail "check after the crash: $(img_get r.img .scrub)"
run_action r.img repair
[[ $(scrub r.img repaired) == 1 ]] || fail "repair after the crash: $(img_get r.img .scrub)"
fm_unmount "$M3"
cmp -s "$P3/r.img" "$FM_TMP/r.good" || fail "the primary is not the good data after the repair"
cmp -s "$S3/r.img" "$FM_TMP/r.good" || fail "the secondary is not the good data after the repair"
fm_pass
