#!/bin/bash
# t_clients — real clients that nobody here wrote, run through the mount (issue 7 part 3).
#
#   ext4-crash  mkfs.ext4 on an image through the mount, loop device, a tree copied in;
#               kill -9 of the daemon mid-copy; the dead stack is torn down (ext4 lazily
#               unmounted, FUSE lazily unmounted, loop detached); remount, resync, legs
#               identical; `e2fsck -fy` (may fix: journal replay) then `e2fsck -fn` (must be
#               clean) on both backing files
#   fio         fio --verify=crc32c --verify_backlog on a file on the mount and on a loop
#               device over an image on the mount
#   qemu        qemu-img create (qcow2, raw), qemu-io random writes, qemu-img check,
#               convert qcow2 -> raw, compare
#   stress-ng   --hdd 2 --hdd-bytes 64M --verify and --iomix 2 for FM_STRESS_SECS (20) s in a
#               directory of the mount
#   opfuzz      test/reliability/fm_opfuzz: write / truncate up+down / punch hole / zero
#               range / allocate / fsync / rename against a model file on plain disk; the
#               seed is printed (FM_OPFUZZ_SEED replays it)
# After each part the set is unmounted and every image's legs must be identical.
. "$(dirname "$0")/lib.sh"
fm_rand >/dev/null
for c in mkfs.ext4 e2fsck fio qemu-img qemu-io stress-ng; do
  command -v "$c" >/dev/null || fail "missing tool $c (see test/integration/PACKAGES)"
done
STRESS_SECS=${FM_STRESS_SECS:-20}
OPSEED=${FM_OPFUZZ_SEED:-$(((RANDOM << 15) | RANDOM))}
RESULTS=()

OPFUZZ=${FM_OPFUZZ:-}
if [[ -z $OPFUZZ || ! -x $OPFUZZ ]]; then
  OPFUZZ=$FM_TMP/fm_opfuzz
  c++ -std=c++20 -O2 -o "$OPFUZZ" "$FM_SRC_ROOT/test/reliability/fm_opfuzz.cpp" || fail "cannot build fm_opfuzz"
fi

idle() {
  "$FUSEMIRROR" status "$MNT" --json 2>/dev/null |
    jq -e '[.sets[].images[] | select(.unsynced_chunks > 0 or .sync.action != "idle" or .secondary_ok != true)] | length == 0' >/dev/null
}
legs_same() { # every image of the set identical on both legs (set unmounted)
  local f
  while IFS= read -r f; do
    assert_same "$PRI/$f" "$SEC/$f"
  done < <(cd "$PRI" && find . -path ./.fusemirror -prune -o -type f -printf '%P\n')
}

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1

# ====================================================================== ext4 + crash
FM_CONTEXT=ext4-crash
fm_mount "$PRI" "$MNT"
truncate -s 256M "$MNT/fs.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$MNT/fs.img" || fail "mkfs.ext4 through the mount failed"
sync
loop_attach "$MNT/fs.img"
LOOP=$FM_LAST_LOOP
EXT=$FM_TMP/ext
mkdir -p "$EXT"
mount -t ext4 "$LOOP" "$EXT" || fail "mount ext4 on $LOOP failed"
fm_track_mount "$EXT"
TREE=/usr/share
fm_bg cp -a "$TREE/doc" "$TREE/man" "$TREE/locale" "$EXT/" 2>/dev/null
CPPID=$FM_LAST_BG
sleep 3
copied_mb=$(($(du -sm "$EXT" | cut -f1)))
dpid=$(fm_daemon_pid "$MNT")
kill -KILL "$dpid"
_fm_wait_pid "$dpid" 10 || fail "daemon did not die"
unset "FM_PID[$MNT]"
fm_log "ext4-crash: killed the daemon after ${copied_mb} MiB copied"
kill -KILL "$CPPID" 2>/dev/null || true
wait "$CPPID" 2>/dev/null || true
# tear down the dead stack: the ext4 (lazily: its device fails every I/O now), then the FUSE
# mount (lazily), then the loop device (its backing file is on the dead mount)
umount -l "$EXT" || fail "umount -l of the ext4 failed"
fm_timeout 20 fusermount3 -uz "$MNT" || umount -l "$MNT" || fail "cannot unmount the dead FUSE mount"
losetup -d "$LOOP" 2>/dev/null || true
fm_wait_for "loop detach" 30 bash -c '! losetup "$0" >/dev/null 2>&1' "$LOOP" ||
  fail "$LOOP still attached 30 s after the crash"
fm_mount "$PRI" "$MNT"
fm_wait_for "resync" 120 idle || fail "resync after the crash did not finish: $(fm_status_json "$MNT")"
copied=$(fm_image_json "$MNT" fs.img | jq -r .sync.copied_bytes)
fm_unmount "$MNT"
legs_same
fsck_rc=()
for leg in "$PRI" "$SEC"; do
  rc=0
  e2fsck -fy "$leg/fs.img" >"$FM_TMP/logs/fsck.y.log" 2>&1 || rc=$?
  ((rc <= 1)) || fail "e2fsck -fy on $leg/fs.img exited $rc: $(tail -n 5 "$FM_TMP/logs/fsck.y.log")"
  rc2=0
  e2fsck -fn "$leg/fs.img" >"$FM_TMP/logs/fsck.n.log" 2>&1 || rc2=$?
  ((rc2 == 0)) || fail "e2fsck -fn on $leg/fs.img exited $rc2 after -fy: $(tail -n 5 "$FM_TMP/logs/fsck.n.log")"
  fsck_rc+=("$rc/$rc2")
done
RESULTS+=("ext4-crash: kill -9 after ${copied_mb} MiB copied, resync copied $copied bytes, legs identical, e2fsck -fy/-fn exit primary ${fsck_rc[0]}, secondary ${fsck_rc[1]}")
# the fsck -fy changes were made to each leg separately: make them one again
cat "$PRI/fs.img" >"$SEC/fs.img"
rm -f "$PRI/fs.img" "$SEC/fs.img"
rm -f "$SEC/.fusemirror/images/fs.img.json" "$(fm_bitmap_path "$PRI" fs.img)"

# ====================================================================== fio
FM_CONTEXT=fio
fm_mount "$PRI" "$MNT"
fio --name=mnt --filename="$MNT/fio.img" --size=64M --rw=randwrite --bs=4k --ioengine=psync \
  --iodepth=1 --numjobs=1 --verify=crc32c --verify_backlog=256 --do_verify=1 --fsync=32 --verify_state_save=0 \
  --output="$FM_TMP/logs/fio.mnt.out" || fail "fio verify on the mount failed: $(grep -iE 'err|verify' "$FM_TMP/logs/fio.mnt.out" | head -n 5)"
truncate -s 128M "$MNT/fioloop.img"
loop_attach "$MNT/fioloop.img" --direct-io=on
FLOOP=$FM_LAST_LOOP
fio --name=loop --filename="$FLOOP" --size=96M --rw=randrw --bs=4k,64k --ioengine=libaio \
  --iodepth=16 --direct=1 --verify=crc32c --verify_backlog=512 --do_verify=1 --verify_state_save=0 \
  --output="$FM_TMP/logs/fio.loop.out" || fail "fio verify on the loop device failed: $(grep -iE 'err|verify' "$FM_TMP/logs/fio.loop.out" | head -n 5)"
blkdiscard -o 0 -l $((16 << 20)) "$FLOOP" 2>/dev/null || true # discard passes down as punch hole
loop_detach "$FLOOP"
fm_wait_for "idle" 30 idle || fail "not idle after fio"
fm_unmount "$MNT"
legs_same
bw() { grep -oE '(WRITE|write): IOPS=[^,]+' "$1" | head -n 1; }
RESULTS+=("fio: mount 64 MiB randwrite verify ok ($(bw "$FM_TMP/logs/fio.mnt.out")); loop --direct-io 96 MiB randrw verify ok ($(bw "$FM_TMP/logs/fio.loop.out")); legs identical")

# ====================================================================== qemu
FM_CONTEXT=qemu
fm_mount "$PRI" "$MNT"
qemu-img create -q -f qcow2 "$MNT/vm.qcow2" 256M || fail "qemu-img create qcow2 failed"
qemu-img create -q -f raw "$MNT/vm.raw" 64M || fail "qemu-img create raw failed"
qio=()
for i in $(seq 1 60); do
  off=$(((RANDOM % 4000) * 65536 + (RANDOM % 16) * 512))
  len=$(((RANDOM % 64 + 1) * 512))
  pat=$((RANDOM % 255 + 1))
  qio+=(-c "write -P $pat $off $len")
done
qemu-io -f qcow2 "${qio[@]}" "$MNT/vm.qcow2" >"$FM_TMP/logs/qemu-io.log" || fail "qemu-io on qcow2 failed"
qio=()
for i in $(seq 1 60); do
  off=$(((RANDOM % 1000) * 65536 + (RANDOM % 16) * 512))
  qio+=(-c "write -P $((RANDOM % 255 + 1)) $off $(((RANDOM % 64 + 1) * 512))")
done
qio+=(-c "discard 0 1M" -c "write -z 2M 1M" -c flush)
qemu-io -f raw "${qio[@]}" "$MNT/vm.raw" >>"$FM_TMP/logs/qemu-io.log" || fail "qemu-io on raw failed"
qemu-img check -q "$MNT/vm.qcow2" || fail "qemu-img check of the qcow2 on the mount failed"
qemu-img convert -O raw "$MNT/vm.qcow2" "$MNT/vm-conv.raw" || fail "qemu-img convert failed"
qemu-img compare -q "$MNT/vm.qcow2" "$MNT/vm-conv.raw" || fail "qemu-img compare qcow2 vs converted raw: differ"
qemu-img convert -O qcow2 "$MNT/vm.raw" "$MNT/vm2.qcow2" || fail "qemu-img convert raw -> qcow2 failed"
qemu-img compare -q "$MNT/vm.raw" "$MNT/vm2.qcow2" || fail "qemu-img compare raw vs converted qcow2: differ"
fm_wait_for "idle" 30 idle || fail "not idle after qemu"
fm_unmount "$MNT"
legs_same
qemu-img check -q "$SEC/vm.qcow2" || fail "qemu-img check of the secondary's qcow2 failed"
RESULTS+=("qemu: qcow2 + raw created, 120 qemu-io writes (+ discard, write -z), check ok, convert both ways + compare ok, legs identical, secondary qcow2 checks clean")

# ====================================================================== opfuzz
FM_CONTEXT="opfuzz seed $OPSEED"
fm_log "opfuzz seed $OPSEED (replay: FM_OPFUZZ_SEED=$OPSEED)"
MODEL=$FM_TMP/model
mkdir -p "$MODEL" "$MNT"
fm_mount "$PRI" "$MNT"
mkdir -p "$MNT/ops"
out=$("$OPFUZZ" "$MNT/ops" "$MODEL" --seed "$OPSEED" --ops 3000 2>&1) ||
  fail "fm_opfuzz: the mount diverged from the model (replay: FM_OPFUZZ_SEED=$OPSEED): $out"
fm_wait_for "idle" 30 idle || fail "not idle after opfuzz"
fm_unmount "$MNT"
cmp "$MODEL/f.img" "$PRI/ops/f.img" || fail "the primary differs from the model (seed $OPSEED)"
legs_same
RESULTS+=("opfuzz: $out; legs identical")
# ====================================================================== stress-ng
FM_CONTEXT=stress-ng
fm_mount "$PRI" "$MNT"
mkdir -p "$MNT/stress"
stress_rc=0
(cd "$MNT/stress" && fm_timeout $((STRESS_SECS + 60)) stress-ng --temp-path "$MNT/stress" \
  --hdd 2 --hdd-bytes 64M --verify --iomix 2 --iomix-bytes 32M -t "${STRESS_SECS}s" \
  --metrics-brief >"$FM_TMP/logs/stress.log" 2>&1) || stress_rc=$?
if ((stress_rc)); then
  soft_fail "stress-ng failed (exit $stress_rc): $(grep -iE 'fail|error|verif' "$FM_TMP/logs/stress.log" | sort | uniq -c | head -n 5)"
fi
if grep -qiE 'verif.*(fail|error)|checksum|mismatch' "$FM_TMP/logs/stress.log"; then
  soft_fail "stress-ng reported a verify error: $(grep -iE 'verif|checksum|mismatch' "$FM_TMP/logs/stress.log" | head -n 3)"
fi
ops=$(awk '/metrc:.*(hdd|iomix) +[0-9]/ { printf "%s %s bogo-ops; ", $4, $5 }' "$FM_TMP/logs/stress.log")
fm_wait_for "idle" 30 idle || fail "not idle after stress-ng"
fm_unmount "$MNT"
legs_same
RESULTS+=("stress-ng: --hdd 2 --verify + --iomix 2 for ${STRESS_SECS}s: exit $stress_rc; legs identical ($ops)")

FM_CONTEXT=""

printf 'clients:\n'
printf '  - %s\n' "${RESULTS[@]}"
fm_pass
