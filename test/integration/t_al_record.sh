#!/bin/bash
# t_al_record — the activity log's record of logged chunks (docs/write-path.md §3d).
#
# A kill -9 after three 4 KiB writes into three extents leaves three whole extents set in
# the bitmap (192 chunks). The record beside it names the 189 chunks the log set and
# nobody wrote; the next mount copies the 3 written chunks only, and the legs are then
# byte-identical. The same kill with the boot id changed (test builds: FM_FAULT=
# al_record.other_boot, as after a power cut or a reboot) copies the whole extents; so
# does a record that does not match the bitmap (a forged header, an earlier mount's).
. "$(dirname "$0")/lib.sh"

CW=${FM_CRASHWRITER:-$(dirname "$FUSEMIRROR")/../test/tools/fm_crashwriter}
[[ -x $CW ]] || fail "fm_crashwriter not found at $CW (set FM_CRASHWRITER)"
CS=65536
EXT_CHUNKS=64 # al_extent_size 4 MiB by default
CHUNKS=(0 $((5 * EXT_CHUNKS + 9)) $((9 * EXT_CHUNKS + 63)))

fm_create "$PRI" "$SEC" --chunk-size 64K
fm_mount "$PRI" "$MNT"
dd if=/dev/urandom of="$MNT/disk.img" bs=1M count=64 conv=fsync status=none
fm_unmount "$MNT"
cmp "$PRI/disk.img" "$SEC/disk.img" || fail "legs differ after the first clean unmount"
BM=$(fm_bitmap_path "$PRI" disk.img)
AL=${BM%.fmbm}.fmal

# crash_after_writes — mount, write one 4 KiB block into each chunk of CHUNKS, kill -9.
crash_after_writes() {
  fm_mount "$PRI" "$MNT"
  local pid c
  pid=$(fm_daemon_pid "$MNT")
  for c in "${CHUNKS[@]}"; do
    dd if=/dev/urandom of="$MNT/disk.img" bs=4K count=1 seek=$((c * 16 + 3)) conv=notrunc,fsync status=none
  done
  [[ -s $AL ]] || fail "no activity log record at $AL"
  [[ $(fm_image_json "$MNT" disk.img | jq -r .al_record) == true ]] || fail "status: al_record is not true"
  kill -KILL "$pid"
  fm_bg_stop "$pid"
  unset "FM_PID[$(realpath -m -- "$MNT")]"
  fm_timeout 20 fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || fail "cannot unmount the dead mount"
}

# remount_and_resync [FAULT] — mounts (the daemon with FM_FAULT=FAULT when given), waits
# for the resync, sets COPIED (bytes it copied) and SPARED (chunks the record spared),
# unmounts; the legs must then be identical.
remount_and_resync() {
  if [[ -n ${1:-} ]]; then
    FM_FAULT=$1 fm_mount "$PRI" "$MNT"
  else
    fm_mount "$PRI" "$MNT"
  fi
  fm_wait_for "resync" 60 bash -c '"$0" status "$1" --json | jq -e "[.sets[].images[] | select(.unsynced_chunks > 0 or .sync.action != \"idle\")] | length == 0" >/dev/null' "$FUSEMIRROR" "$MNT" ||
    fail "the resync did not finish in 60 s"
  COPIED=$(fm_image_json "$MNT" disk.img | jq -r .sync.copied_bytes)
  SPARED=$(fm_image_json "$MNT" disk.img | jq -r .al_record_spared)
  fm_unmount "$MNT"
  cmp "$PRI/disk.img" "$SEC/disk.img" || fail "legs differ after the resync"
}

# 1. The record believed: the written chunks are copied, nothing else.
crash_after_writes
out=$("$CW" bitmapcheck "$PRI/disk.img" "$SEC/disk.img" "$BM") ||
  fail "a chunk differs between the legs with its bit clear or spared: $out"
read -r _ differing _ unmarked _ dirty _ _ _ spared <<<"$out"
fm_log "after the kill: $out"
((dirty == ${#CHUNKS[@]})) || fail "bitmap and record leave $dirty chunks to copy, not ${#CHUNKS[@]}: $out"
((spared == ${#CHUNKS[@]} * (EXT_CHUNKS - 1))) || fail "the record spares $spared chunks, not $((${#CHUNKS[@]} * (EXT_CHUNKS - 1))): $out"
ex=$(fm_examine "$BM")
grep -q "Record State : this boot's, matches the bitmap: $spared chunks logged, never written; a recovery now spares $spared set chunks" <<<"$ex" ||
  fail "examine-bitmap does not show the record as the mount will read it: $ex"
remount_and_resync
((COPIED == ${#CHUNKS[@]} * CS)) || fail "the resync copied $COPIED bytes, not $((${#CHUNKS[@]} * CS))"
((SPARED == ${#CHUNKS[@]} * (EXT_CHUNKS - 1))) || fail "status al_record_spared $SPARED"
fm_log "record believed: resync copied $COPIED bytes (whole extents: $((${#CHUNKS[@]} * EXT_CHUNKS * CS)))"

# 2. Another boot (test builds only): whole extents, as without a record.
if grep -q "FUSEMIRROR_CRASH_POINTS:BOOL=ON" "$(dirname "$FUSEMIRROR")/../CMakeCache.txt" 2>/dev/null; then
  crash_after_writes
  remount_and_resync al_record.other_boot
  ((COPIED == ${#CHUNKS[@]} * EXT_CHUNKS * CS)) ||
    fail "after a 'reboot' the resync copied $COPIED bytes, not the whole extents ($((${#CHUNKS[@]} * EXT_CHUNKS * CS)))"
  ((SPARED == 0)) || fail "after a 'reboot' the record spared $SPARED chunks"
  grep -q "activity log record not used (written before the machine last started)" "$FM_TMP"/logs/daemon.*.log ||
    fail "the log does not say why the record was not used"
  fm_log "another boot: resync copied $COPIED bytes (whole extents)"
else
  fm_log "not a build with crash points: the other-boot case is left to the unit tests"
fi

# 3. A record that is not this bitmap's: an earlier mount's header (events - 1), resealed.
crash_after_writes
python3 - "$AL" <<'EOF'
import struct, sys, zlib
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
ev = struct.unpack_from('<Q', b, 48)[0]
struct.pack_into('<Q', b, 48, ev - 1)
# crc32c of [0, 4092), bitwise (Castagnoli, reflected)
def crc32c(data):
    crc = 0xFFFFFFFF
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
struct.pack_into('<I', b, 4092, crc32c(bytes(b[:4092])))
open(p, 'wb').write(bytes(b))
EOF
out=$("$CW" bitmapcheck "$PRI/disk.img" "$SEC/disk.img" "$BM") || fail "bitmapcheck on the forged record: $out"
read -r _ _ _ _ _ dirty _ _ _ spared <<<"$out"
((spared == 0 && dirty == ${#CHUNKS[@]} * EXT_CHUNKS)) || fail "a forged record is believed: $out"
grep -q "Record State : not believed: written at bitmap events" <<<"$(fm_examine "$BM")" ||
  fail "examine-bitmap does not say why the forged record is not believed"
remount_and_resync
((COPIED == ${#CHUNKS[@]} * EXT_CHUNKS * CS)) || fail "with a forged record the resync copied $COPIED bytes"
grep -q "activity log record not used (written at bitmap events" "$FM_TMP"/logs/daemon.*.log ||
  fail "the log does not say why the forged record was not used"

# 4. A hostile object in its place (a FIFO): moved aside, a new record made, the mount serves.
fm_mount "$PRI" "$MNT"
fm_unmount "$MNT"
rm -f "$AL"
mkfifo "$AL"
fm_mount "$PRI" "$MNT"
dd if=/dev/urandom of="$MNT/disk.img" bs=4K count=1 conv=notrunc,fsync status=none # loads the image
[[ -f $AL && ! -p $AL ]] || fail "the FIFO at $AL was not replaced by a record file"
ls "$(dirname "$AL")"/.disk.img.fmal.refused-* >/dev/null 2>&1 || fail "the FIFO was not moved aside"
[[ $(fm_image_json "$MNT" disk.img | jq -r .al_record) == true ]] || fail "no record kept after the FIFO"
fm_unmount "$MNT"
cmp "$PRI/disk.img" "$SEC/disk.img" || fail "legs differ after the hostile record"
fm_pass
