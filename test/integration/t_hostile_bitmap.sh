#!/bin/bash
# t_hostile_bitmap — the bitmap against hostile users and hostile files (issue 12, §3 memory,
# §4 metadata that is not what it seems, §5 no space for the bitmap).
#
#   memory    16 images truncated to 16 TiB through the mount add <= 32 MiB of daemon RSS
#             (main: ~2 GiB); shrinking them back returns it
#   efbig     truncate, write and fallocate past max_image_size (default 16 TiB; 64 PiB too)
#             fail with EFBIG, both legs and the bitmap file unchanged
#   crafted   a bitmap header with a valid CRC, state clean and sync_size 2^62 over an image
#             whose secondary differs: the mount is quick and small, logs why the bitmap is
#             not trusted, resyncs the whole image (never "clean" with differing legs)
#   fifo      a FIFO in place of a bitmap: the mount does not hang; refused, moved aside,
#             full resync
#   hardlink  a hard link to a file outside in place of a bitmap: never written
#   enospc    bitmap_dir on a full 1 MiB tmpfs: a write needing a new bitmap page fails,
#             status says bitmap-failed with the error; after space returns writes resume by
#             themselves. At mount, a bitmap that does not fit: the image is served
#             (bitmap-failed), the log says how much to free where; then it resyncs.
# Backing directories are on tmpfs (16 TiB sparse files; ext4's limit is 16 TiB - 4 KiB).
. "$(dirname "$0")/lib.sh"
BMEDIT=$FM_SRC_ROOT/test/reliability/fm_bmedit
T0=$SECONDS

D=$FM_TMP/d
mkdir -p "$D"
mount -t tmpfs -o size=256m,mode=0755 tmpfs "$D"
fm_track_mount "$D"
P=$D/p S=$D/s
mkdir -p "$P" "$S"
fm_create "$P" "$S" --chunk-size 64K --daemon-sleep 1
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
daemon_log() { cat "$FM_TMP/logs/daemon.$FM_NDAEMON.log" "$P/.fusemirror/fusemirror.log" 2>/dev/null || true; }
log_has() { grep -qE -- "$1" <<<"$(daemon_log)"; }  # (no pipe into grep -q: pipefail)

# --------------------------------------------------------------------------------- memory
FM_CONTEXT=memory
fm_mount "$P" "$MNT"
PID=$(fm_daemon_pid "$MNT")
for i in $(seq -w 1 16); do printf 'image %s\n' "$i" >"$MNT/img$i.img"; done
head -c $((1 << 20)) "$(fm_rand)" >"$MNT/small.img"
sync
sleep 1
R0=$(rss_kib "$PID")
t=$SECONDS
for i in $(seq -w 1 16); do truncate -s 16T "$MNT/img$i.img" || fail "truncate -s 16T img$i.img failed"; done
R1=$(rss_kib "$PID")
[[ $(stat -c %s "$P/img01.img") == $((16 << 40)) && $(stat -c %s "$S/img16.img") == $((16 << 40)) ]] ||
  fail "16 TiB truncate did not reach both legs"
BMK=$(du -k "$(fm_bitmap_path "$P" img01.img)" | cut -f1)
fm_log "memory: RSS ${R0} KiB -> ${R1} KiB after 16 x truncate -s 16T ($((SECONDS - t))s); bitmap file allocates ${BMK} KiB of $(($(stat -c %s "$(fm_bitmap_path "$P" img01.img)") >> 10)) KiB"
((R1 - R0 <= 32 * 1024)) || soft_fail "RSS grew by $(((R1 - R0) >> 10)) MiB for 16 empty 16 TiB images (limit 32 MiB)"
((BMK <= 64)) || soft_fail "the bitmap of an empty 16 TiB image allocates ${BMK} KiB on disk"
# A write near the end of each: one bitmap page each, still small.
for i in $(seq -w 1 16); do
  printf 'tail' | dd of="$MNT/img$i.img" bs=1 seek=$(((16 << 40) - 4096)) conv=notrunc status=none || fail "write at 16T-4K"
done
R2=$(rss_kib "$PID")
((R2 - R0 <= 32 * 1024)) || soft_fail "RSS grew by $(((R2 - R0) >> 10)) MiB after one write per 16 TiB image"
for i in $(seq -w 1 16); do truncate -s 1M "$MNT/img$i.img" || fail "shrink img$i.img"; done
R3=$(rss_kib "$PID")
fm_log "memory: RSS ${R2} KiB with one tail write each, ${R3} KiB after shrinking to 1 MiB"
[[ $(fm_image_json "$MNT" img01.img | jq .total_chunks) == 16 ]] || soft_fail "img01.img: the cover did not follow the shrink"

# ---------------------------------------------------------------------------------- efbig
FM_CONTEXT=efbig
snap_legs() { stat -c '%n %s %b' "$P/small.img" "$S/small.img"; md5sum "$(fm_bitmap_path "$P" small.img)"; }
B0=$(snap_legs)
for sz in 17T 64P; do
  err=$(truncate -s $sz "$MNT/small.img" 2>&1) && soft_fail "truncate -s $sz beyond max_image_size succeeded"
  [[ $err == *"too large"* ]] || soft_fail "truncate -s $sz: expected EFBIG (File too large), got: $err"
done
err=$(printf x | dd of="$MNT/small.img" bs=1 seek=$(((16 << 40) + 1)) conv=notrunc status=none 2>&1) &&
  soft_fail "a write past max_image_size succeeded"
[[ $err == *"too large"* ]] || soft_fail "write past the limit: expected EFBIG, got: $err"
err=$(fallocate -o $((16 << 40)) -l 1M "$MNT/small.img" 2>&1) && soft_fail "fallocate past max_image_size succeeded"
[[ $err == *"too large"* ]] || soft_fail "fallocate past the limit: expected EFBIG, got: $err"
[[ $(snap_legs) == "$B0" ]] || soft_fail "EFBIG, yet a leg or the bitmap changed: $B0 -> $(snap_legs)"
fm_wait_for "small.img in sync" 20 fm_image_is "$MNT" small.img '.unsynced_chunks == 0' || soft_fail "small.img never in sync"
fm_unmount "$MNT"
assert_same "$P/small.img" "$S/small.img"

# -------------------------------------------------------------------- crafted, fifo, hardlink
FM_CONTEXT=crafted
BM=$(fm_bitmap_path "$P" small.img)
[[ $(fm_examine_field "$(fm_examine "$BM")" State) == clean ]] || fail "small.img: bitmap not clean after unmount"
"$BMEDIT" "$BM" set sync_size 4611686018427387904 || fail "fm_bmedit"
"$BMEDIT" "$BM" crcok || fail "the crafted header's CRC must be valid"
head -c $((1 << 20)) /dev/zero | dd of="$S/small.img" conv=notrunc status=none  # the legs differ
expect_fail "examine-bitmap of the crafted header" "sync_size|truncated|trusted" "$FUSEMIRROR" examine-bitmap "$BM"
FM_CONTEXT=fifo
rm -f "$(fm_bitmap_path "$P" img01.img)"
mkfifo "$(fm_bitmap_path "$P" img01.img)"
FM_CONTEXT=hardlink
printf 'outside the bitmap directory\n' >"$D/outside"
OUT0=$(md5sum <"$D/outside")
rm -f "$(fm_bitmap_path "$P" img02.img)"
ln "$D/outside" "$(fm_bitmap_path "$P" img02.img)"
FM_CONTEXT=crafted
t=$SECONDS
fm_mount "$P" "$MNT"
PID=$(fm_daemon_pid "$MNT")
fm_log "crafted: mounted in $((SECONDS - t))s, RSS $(rss_kib "$PID") KiB"
((SECONDS - t <= 10)) || soft_fail "mount with a crafted header took $((SECONDS - t))s"
(($(rss_kib "$PID") <= 256 * 1024)) || soft_fail "daemon RSS $(rss_kib "$PID") KiB after the crafted mount"
log_has "small.img.fmbm: bitmap not trusted: sync_size 4611686018427387904" ||
  soft_fail "no log line saying why small.img's bitmap is not trusted: $(daemon_log | grep -i small | tail -3)"
fm_wait_for "small.img resynced" 30 fm_image_is "$MNT" small.img '.state == "clean" and .unsynced_chunks == 0' ||
  soft_fail "small.img not resynced: $(fm_image_json "$MNT" small.img)"
assert_reads_same "$MNT/small.img" "$S/small.img"
assert_same "$P/small.img" "$S/small.img"
FM_CONTEXT=fifo
log_has "img01.img.fmbm: bitmap refused: is a FIFO" || soft_fail "no log line naming the FIFO bitmap"
[[ -f $(fm_bitmap_path "$P" img01.img) && ! -p $(fm_bitmap_path "$P" img01.img) ]] || soft_fail "img01.img's bitmap was not replaced by a regular file"
compgen -G "$P/.fusemirror/bitmaps/.img01.img.fmbm.refused-*" >/dev/null || soft_fail "the FIFO was not moved aside"
FM_CONTEXT=hardlink
printf 'new data' | dd of="$MNT/img02.img" bs=1 seek=100 conv=notrunc status=none || fail "write img02.img"
sync
[[ $(md5sum <"$D/outside") == "$OUT0" ]] || soft_fail "the file outside, hard-linked as img02.img's bitmap, was written"
log_has "img02.img.fmbm: bitmap refused: has 2 hard links" || soft_fail "no log line naming the hard-linked bitmap"
[[ $(stat -c %h "$(fm_bitmap_path "$P" img02.img)") == 1 ]] || soft_fail "img02.img's bitmap still has several links"
fm_unmount "$MNT"
assert_same "$P/img02.img" "$S/img02.img"

# ---------------------------------------------------------------------------------- enospc
FM_CONTEXT=enospc
P2=$D/p2 S2=$D/s2 BD=$FM_TMP/bmfs
mkdir -p "$P2" "$S2" "$BD"
mount -t tmpfs -o size=1m,mode=0700 tmpfs "$BD"
fm_track_mount "$BD"
fm_create "$P2" "$S2" --chunk-size 64K --daemon-sleep 1 --bitmap-dir "$BD"
M2=$FM_TMP/mnt2
mkdir -p "$M2"
fm_mount "$P2" "$M2"
head -c $((1 << 20)) "$(fm_rand)" >"$M2/big.img"
truncate -s 4G "$M2/big.img"  # bits: 2 pages; the second is a hole in the bitmap file
sync
fill() { dd if=/dev/zero of="$BD/filler" bs=4k status=none 2>/dev/null || true; sync; }  # until ENOSPC
fill
err=$(head -c 4096 "$(fm_rand)" | dd of="$M2/big.img" bs=4k seek=$((3 << 18)) conv=notrunc status=none 2>&1) &&
  soft_fail "a write needing a new bitmap page succeeded on a full bitmap file system"
fm_log "enospc: the write: ${err:-succeeded}"
j=$(fm_image_json "$M2" big.img)
[[ $(jq -r .state <<<"$j") == bitmap-failed ]] || soft_fail "status state is $(jq -r .state <<<"$j"), not bitmap-failed"
[[ $(jq -r .bitmap_error <<<"$j") == *"space"* ]] || soft_fail "status bitmap_error does not name the condition: $j"
rm -f "$BD/filler"
fm_wait_for "writes resume" 15 fm_image_is "$M2" big.img '.state != "bitmap-failed"' ||
  soft_fail "still bitmap-failed after space returned: $(fm_image_json "$M2" big.img)"
head -c 4096 "$(fm_rand)" | dd of="$M2/big.img" bs=4k seek=$((3 << 18)) conv=notrunc status=none ||
  soft_fail "writes did not resume after space returned"
fm_wait_for "big.img in sync" 30 fm_image_is "$M2" big.img '.unsynced_chunks == 0' || soft_fail "big.img never in sync"
fm_unmount "$M2"
assert_same "$P2/big.img" "$S2/big.img"
# At mount: the bitmap is gone (all dirty for an image holding data) and does not fit.
head -c 65536 /dev/zero | dd of="$S2/big.img" conv=notrunc status=none  # the legs differ
rm -f "$(fm_bitmap_path "$P2" big.img "$BD")"
fill
fm_mount "$P2" "$M2"
fm_wait_for "big.img listed" 10 fm_image_is "$M2" big.img '.state == "bitmap-failed"' ||
  soft_fail "big.img at a mount with no room for its bitmap: $(fm_image_json "$M2" big.img) (not served?)"
log_has "big.img.fmbm: cannot write the bitmap: .*needs .* more .*free space there" ||
  soft_fail "the mount did not say what to free: $(daemon_log | grep big.img | tail -3)"
rm -f "$BD/filler"
fm_wait_for "big.img resynced" 30 fm_image_is "$M2" big.img '.state == "clean" and .unsynced_chunks == 0' ||
  soft_fail "big.img not resynced after space returned: $(fm_image_json "$M2" big.img)"
fm_unmount "$M2"
assert_same "$P2/big.img" "$S2/big.img"

fm_log "hostile_bitmap: done in $((SECONDS - T0))s"
fm_pass
