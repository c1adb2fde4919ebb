#!/bin/bash
# t_resync_race — writes that race with the resync are never lost or left unmirrored
# (docs/operations.md §5). A 128 MiB image holding data exists in PRIMARY only before `create` (so it is
# adopted all dirty), resync_max_rate is 16 MiB/s so the initial full resync takes ~8 s;
# while it runs, random writes (4 KiB .. 256 KiB, some straddling chunk boundaries, each
# fsync'ed) go through the mount into [0, 96 MiB), ahead of, behind and on top of the resync
# position; the same writes are applied to a reference copy. At the same time fio writes
# [96, 128 MiB) at 4 MiB/s (so the resync passes through while it writes) and verifies it
# (crc32c). After the resync and an unmount: the primary equals the reference (no write
# lost), fio verified its region, and the secondary equals the primary.
. "$(dirname "$0")/lib.sh"

CS=65536
SIZE=$((128 << 20))
RATE=$((16 << 20))
FM=$FUSEMIRROR
LOG=$PRI/.fusemirror/fusemirror.log

img_json() { fm_image_json "$MNT" disk.img; }

resync_over() { fm_image_is "$MNT" disk.img '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"'; }

is_clean() { fm_image_is "$MNT" disk.img '.state == "clean" and .dirty_chunks == 0'; }

# the image: data everywhere except a hole in the middle (holes must stay holes)
SRC=$FM_TMP/logs/src.bin
head -c $((16 << 20)) /dev/urandom >"$SRC"
truncate -s $SIZE "$PRI/disk.img"
for i in 0 1 2 3 5 6 7; do
  dd if="$SRC" of="$PRI/disk.img" bs=1M seek=$((i * 16)) conv=notrunc status=none
done
REF=$FM_TMP/ref.img
cp --sparse=always "$PRI/disk.img" "$REF"

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$PRI/.fusemirror/config.json" ".resync_max_rate = $RATE"
t0=$SECONDS
fm_mount "$PRI" "$MNT"

J=$(img_json)
[[ $(jq -r .sync.action <<<"$J") == resync ]] ||
  fail "an adopted image (all dirty) is not being resynced right after mount: $J"

# writes while the resync runs: fio in [96, 128 MiB)
FIO_OFF=$((96 << 20))
fm_bg fio --name=race --filename="$MNT/disk.img" --offset=$FIO_OFF --size=$((SIZE - FIO_OFF)) \
  --rw=randwrite --bs=16k --ioengine=psync --rate=4m --fsync=8 --verify=crc32c --do_verify=1 \
  --verify_fatal=1 --verify_state_save=0 --output="$FM_TMP/logs/fio.out"
FIO_PID=$FM_LAST_BG
# dd writes in [0, 96 MiB)
nw=0 ahead=0 behind=0 maxoff=$((FIO_OFF - (256 << 10)))
while ((nw < 600)); do
  if ((nw % 4 == 0)); then # a status poll every 4 writes
    J=$(img_json)
    [[ $(jq -r .sync.action <<<"$J") == resync ]] || break
    pos=$(jq -r .sync.done_bytes <<<"$J")
  fi
  case $((nw % 4)) in
    0) len=4096 ;;
    1) len=$((64 << 10)) ;;
    2) len=$((256 << 10)) ;;
    3) len=$((12 << 10)) ;;
  esac
  case $((nw % 3)) in
    0) off=$(((RANDOM * 32768 + RANDOM) % (maxoff / 4096) * 4096)) ;;     # anywhere
    1) off=$((pos + (RANDOM % 64) * 4096)) ;;                              # near the resync position
    2) off=$(((RANDOM % (FIO_OFF / CS)) * CS - 2048)); ((off < 0)) && off=0 ;; # across a chunk boundary
  esac
  ((off > maxoff)) && off=$maxoff
  ((off >= pos)) && ahead=$((ahead + 1)) || behind=$((behind + 1))
  skip=$(((RANDOM * 32768 + RANDOM) % ((16 << 20) - len)))
  dd if="$SRC" of="$MNT/disk.img" bs="$len" count=1 iflag=skip_bytes skip="$skip" oflag=seek_bytes seek="$off" \
    conv=notrunc,fsync status=none || fail "write $nw ($len bytes at $off) through the mount failed"
  dd if="$SRC" of="$REF" bs="$len" count=1 iflag=skip_bytes skip="$skip" oflag=seek_bytes seek="$off" \
    conv=notrunc status=none
  nw=$((nw + 1))
done
fm_log "$nw fsync'ed writes during the resync ($ahead at or ahead of the resync position, $behind behind it)"
((nw >= 20)) || fail "only $nw writes happened during the resync (resync too fast? rate limit ignored?)"
fm_wait_for "resync end" 60 resync_over || fail "resync did not finish in 60 s: $(img_json)"
el=$((SECONDS - t0))
J=$(img_json)
fm_log "resync of $((SIZE >> 20)) MiB at $((RATE >> 20)) MiB/s took ~$el s; copied $(jq -r .sync.copied_bytes <<<"$J") bytes"
((el >= 5)) || soft_fail "the resync took only $el s: resync_max_rate $RATE not honoured"
grep -q "disk.img: resync done" "$LOG" || soft_fail "no 'resync done' line in the log"
frc=0
wait "$FIO_PID" || frc=$?
((frc == 0)) || fail "fio (writes + crc32c verify of [96, 128 MiB) through the mount) failed ($frc): $(tail -n 20 "$FM_TMP/logs/fio.out")"
fm_log "fio: $(grep -oE 'WRITE: bw=[^,]*, [^,]*, io=[^,]*' "$FM_TMP/logs/fio.out" | head -n 1), verified"
fm_wait_for "clean" 15 is_clean || soft_fail "not clean after the resync: $(img_json)"
cmp -n $FIO_OFF "$REF" "$MNT/disk.img" || fail "the mount does not read back what was written"
fm_unmount "$MNT"

cmp -n $FIO_OFF "$REF" "$PRI/disk.img" || fail "writes lost on the primary"
assert_same "$PRI/disk.img" "$SEC/disk.img"
fm_pass
