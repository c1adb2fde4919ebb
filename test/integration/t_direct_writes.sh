#!/bin/bash
# t_direct_writes — config direct_write_max (docs/write-path.md §1b): aligned writes go to
# both legs with O_DIRECT, the rest buffered, side by side in the same image.
#  1. fio through a --direct-io loop device: 4 KiB and 64 KiB random writes at queue depth
#     16 (direct), mixed with 1 MiB sequential writes and 512-byte-aligned writes from a
#     second job (direct and buffered, some in one 2 MiB block at once), then a verify
#     pass that reads every block back through the mount (buffered reads of what direct
#     writes wrote over a cached range).
#  1b. 4 KiB direct writes, then the sweep: the chunks it hashes are read O_DIRECT, so the
#     primary's page cache stays empty.
#  2. mkfs.ext4 + a tree copied in + e2fsck on the same image.
#  3. status counts direct writes; after unmount both legs are byte-identical and e2fsck
#     passes on each.
. "$(dirname "$0")/lib.sh"

for c in fio mkfs.ext4 e2fsck jq; do
  command -v "$c" >/dev/null || fail "missing tool $c (see test/integration/PACKAGES)"
done

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
# inflight 1: every qualifying write goes direct, even from a single writer.
fm_json_edit "$PRI/.fusemirror/config.json" '.direct_write_max = 1048576 | .direct_write_inflight = 1'
fm_mount "$PRI" "$MNT"

FM_CONTEXT="fio, direct and buffered writes side by side"
truncate -s 192M "$MNT/d.img"
# The buffered side: the image is read once through the mount (page cache filled, large
# read-ahead folios) before the direct writes land over it.
cat "$MNT/d.img" >/dev/null
loop_attach "$MNT/d.img" --direct-io=on
L=$FM_LAST_LOOP
DIRECT_JOB=(--name=direct --filename="$L" --offset=0 --size=96M --rw=randwrite --bsrange=4k-64k
  --randseed=4242 --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --verify_state_save=0)
fio "${DIRECT_JOB[@]}" --verify_backlog=1024 --do_verify=1 \
  --name=mixed --filename="$MNT/d.img" --offset=96M --size=96M --rw=randwrite --bssplit=512/30:4k/20:1m/50 \
  --ba=512 --ioengine=psync --verify=crc32c --do_verify=1 --verify_state_save=0 \
  --output="$FM_TMP/logs/fio.out" ||
  fail "fio verify failed: $(grep -iE 'err|verify|bad' "$FM_TMP/logs/fio.out" | head -n 5)"
# Every block of the direct half again, once the legs' page cache was dropped (their
# files only) — fio replays the same job without writing (--verify_only).
sync
for f in "$PRI/d.img" "$SEC/d.img"; do dd if="$f" iflag=nocache count=0 status=none; done
fio "${DIRECT_JOB[@]}" --verify_only=1 --output="$FM_TMP/logs/fio.reverify.out" ||
  fail "verify-only pass over the direct half failed: $(grep -iE 'err|verify|bad' "$FM_TMP/logs/fio.reverify.out" | head -n 5)"
loop_detach "$L"
n=$(fm_image_json "$MNT" d.img | jq -r .direct_writes)
[[ $n =~ ^[0-9]+$ ]] && ((n > 1000)) || fail "status counts $n direct writes for d.img (expected thousands)"

FM_CONTEXT="the sweep's hashing leaves the page cache empty"
# 4 KiB direct writes dirty 64 KiB chunks they do not cover whole: the sweep reads those
# chunks back to hash them. A buffered read would leave them in the primary's page cache,
# and every later direct write into a cached page is handed to a kernel worker (io_uring
# cannot issue it without blocking): twice the CPU per write (docs/performance.md, "the hashes
# that filled the cache"). The sweep reads them O_DIRECT instead.
truncate -s 32M "$MNT/h.img"
fio --name=h --filename="$MNT/h.img" --rw=randwrite --bs=4k --size=32M --number_ios=2048 --direct=1 \
  --ioengine=psync --randseed=77 --output="$FM_TMP/logs/fio.h.out" || fail "fio on h.img failed"
sync
for f in "$PRI/h.img" "$SEC/h.img"; do dd if="$f" iflag=nocache count=0 status=none; done
fm_timeout 60 "$FUSEMIRROR" wait --clean "$MNT" h.img --timeout 50 || fail "h.img not clean after 50 s"
h=$(fm_image_json "$MNT" h.img)
[[ $(jq -r .checksums <<<"$h") == true ]] || fail "h.img has no checksums: $h"
cached=$(fincore -nb -o RES "$PRI/h.img")
((cached <= 1048576)) || fail "after the sweep $cached bytes of the primary's h.img are in the page cache (expected at most 1 MiB of 32 MiB)"

FM_CONTEXT="ext4 on the same kind of image"
truncate -s 128M "$MNT/fs.img"
loop_attach "$MNT/fs.img" --direct-io=on
L=$FM_LAST_LOOP
fm_timeout 120 mkfs.ext4 -q -F -E nodiscard "$L" || fail "mkfs.ext4 on $L failed"
EXT=$FM_TMP/ext4
mkdir -p "$EXT"
mount -t ext4 "$L" "$EXT" || fail "mount $L failed"
fm_track_mount "$EXT"
fm_timeout 150 cp -a /usr/include/linux "$EXT/tree" || fail "copy into the ext4 failed"
sync -f "$EXT"
diff -r --no-dereference /usr/include/linux "$EXT/tree" >/dev/null || fail "copied tree differs"
umount "$EXT" || fail "umount $EXT failed"
loop_detach "$L"

fm_unmount "$MNT"
FM_CONTEXT="after unmount"
assert_same "$PRI/d.img" "$SEC/d.img"
assert_same "$PRI/fs.img" "$SEC/fs.img"
for side in "$PRI" "$SEC"; do
  fm_timeout 120 e2fsck -fn "$side/fs.img" >"$FM_TMP/logs/fsck.out" 2>&1 ||
    fail "e2fsck -fn $side/fs.img failed: $(tail -n 10 "$FM_TMP/logs/fsck.out")"
done
if grep -q "refused an O_DIRECT\|direct writes off" "$FM_TMP"/logs/*.log 2>/dev/null; then
  fail "direct writes were turned off on this file system: $(grep -h "O_DIRECT\|direct writes off" "$FM_TMP"/logs/*.log | head -n 3)"
fi
fm_assert_log_clean "$PRI"
fm_pass
