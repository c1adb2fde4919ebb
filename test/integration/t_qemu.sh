#!/bin/bash
# t_qemu — qcow2 and raw VM disks made and written by qemu-img / qemu-io through the mount:
# patterned and random writes, write-zeroes, discard; read-back verifies; qemu-img check
# passes on both backing files and they are identical (and equally sparse).
. "$(dirname "$0")/lib.sh"

for c in qemu-img qemu-io; do
  command -v "$c" >/dev/null || fail "missing tool $c (qemu-utils)"
done

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_mount "$PRI" "$MNT"

qio() { # qio FORMAT FILE qemu-io-commands...
  local fmt=$1 file=$2
  shift 2
  local args=() c
  for c in "$@"; do args+=(-c "$c"); done
  local out=$FM_TMP/logs/qemu-io.out
  fm_timeout 120 qemu-io -f "$fmt" "${args[@]}" "$file" >"$out" 2>&1 ||
    fail "qemu-io $fmt $file $* failed: $(tail -n 5 "$out")"
  # qemu-io reports I/O errors and pattern mismatches on stdout, exit status 0
  if grep -iE "error|failed|mismatch|Pattern verification" "$out" >&2; then
    fail "qemu-io $fmt $file $*: reported errors (above)"
  fi
}

# ---------------------------------------------------------------- qcow2
FM_CONTEXT="qcow2"
fm_timeout 60 qemu-img create -q -f qcow2 "$MNT/vm.qcow2" 1G || fail "qemu-img create qcow2 failed"
qio qcow2 "$MNT/vm.qcow2" \
  'write -P 0xab 0 1M' \
  'write -P 0xcd 1M 64k' \
  'write -P 0x11 511M 2M' \
  'write -P 0x22 1023M 1M' \
  'write -P 0x33 4095 5000'

qio qcow2 "$MNT/vm.qcow2" 'read -P 0xab 1044480 4k' 'read -P 0xcd 1M 64k' 'read -P 0x11 511M 2M' 'read -P 0x22 1023M 1M'

# random writes anywhere (they may overwrite the patterns above: checked by comparing legs)
declare -a cmds=()
for i in $(seq 1 60); do
  off=$(((RANDOM * 32768 + RANDOM) % (1023 * 1024 * 1024)))
  len=$((512 * (1 + RANDOM % 256)))
  pat=$((RANDOM % 256))
  cmds+=("write -P $pat $off $len")
done
qio qcow2 "$MNT/vm.qcow2" "${cmds[@]}"
# a final, non-overlapping set whose contents we can check
qio qcow2 "$MNT/vm.qcow2" 'write -P 0x5a 100M 3M' 'write -z 101M 64k' 'discard 102M 64k' 'flush'
qio qcow2 "$MNT/vm.qcow2" 'read -P 0x5a 100M 1M' 'read -P 0 101M 64k' 'read -P 0x5a 105971712 960k' 'read -P 0 102M 64k' 'read -P 0x5a 107020288 960k'

fm_timeout 120 qemu-img check -q "$MNT/vm.qcow2" || fail "qemu-img check through the mount failed"

# copy-on-write overlay and commit, the VM-snapshot workflow
fm_timeout 60 qemu-img create -q -f qcow2 -b vm.qcow2 -F qcow2 "$MNT/overlay.qcow2" || fail "overlay create failed"
qio qcow2 "$MNT/overlay.qcow2" 'write -P 0x77 200M 1M' 'read -P 0x5a 100M 1M'
fm_timeout 120 qemu-img commit -q "$MNT/overlay.qcow2" || fail "qemu-img commit failed"
qio qcow2 "$MNT/vm.qcow2" 'read -P 0x77 200M 1M'
rm -f "$MNT/overlay.qcow2"

# ---------------------------------------------------------------- raw (sparse)
FM_CONTEXT="raw"
fm_timeout 60 qemu-img create -q -f raw "$MNT/vm.raw" 2G || fail "qemu-img create raw failed"
qio raw "$MNT/vm.raw" \
  'write -P 0xab 0 1M' \
  'write -P 0x01 1G 4k' \
  'write -P 0x02 2147483136 512' \
  'write -P 0x03 314572923 7777'
cmds=()
for i in $(seq 1 60); do
  off=$(((RANDOM * 32768 + RANDOM) % (2047 * 1024 * 1024)))
  cmds+=("write -P $((RANDOM % 256)) $off $((1 + RANDOM % 200000))")
done
qio raw "$MNT/vm.raw" "${cmds[@]}"
qio raw "$MNT/vm.raw" 'write -P 0x44 50M 4M' 'write -z 51M 1M' 'discard 52M 1M' 'flush'
qio raw "$MNT/vm.raw" 'read -P 0x44 50M 1M' 'read -P 0 51M 1M' 'read -P 0 52M 1M' 'read -P 0x44 53M 1M'

# convert raw → qcow2 through the mount, compare
fm_timeout 120 qemu-img convert -O qcow2 "$MNT/vm.raw" "$MNT/conv.qcow2" || fail "qemu-img convert failed"
fm_timeout 120 qemu-img compare -q "$MNT/vm.raw" "$MNT/conv.qcow2" || fail "qemu-img compare raw vs converted qcow2 differ"

FM_CONTEXT="live"
for f in vm.qcow2 vm.raw conv.qcow2; do
  assert_same "$PRI/$f" "$SEC/$f"
done

fm_unmount "$MNT"

FM_CONTEXT="after unmount"
for f in vm.qcow2 conv.qcow2; do
  for side in "$PRI" "$SEC"; do
    fm_timeout 120 qemu-img check -q "$side/$f" || fail "qemu-img check $side/$f failed"
  done
done
for f in vm.qcow2 vm.raw conv.qcow2; do
  assert_same "$PRI/$f" "$SEC/$f"
  fm_timeout 120 qemu-img compare -q "$PRI/$f" "$SEC/$f" || fail "qemu-img compare $f differs"
done
[[ ! -e $SEC/overlay.qcow2 ]] || fail "removed overlay.qcow2 still on the secondary"

fm_assert_log_clean "$PRI"

fm_pass
