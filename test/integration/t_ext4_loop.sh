#!/bin/bash
# t_ext4_loop — an ext4 file system on a loop device over an image on the mount:
# mkfs, copy a tree in, delete part of it, fstrim (discard → punch hole through FUSE),
# unmount everything; e2fsck -fn passes on both backing files and they are identical.
. "$(dirname "$0")/lib.sh"

for c in mkfs.ext4 e2fsck fstrim; do
  command -v "$c" >/dev/null || fail "missing tool $c (see test/integration/PACKAGES)"
done

SRC_TREE=${FM_EXT4_TREE:-/usr/share/doc}
SRC_TREE2=${FM_EXT4_TREE2:-/usr/include/linux}
[[ -d $SRC_TREE && -d $SRC_TREE2 ]] || fail "source tree $SRC_TREE or $SRC_TREE2 missing"
dmesg_lines=$(dmesg 2>/dev/null | wc -l || echo 0)

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_mount "$PRI" "$MNT"

truncate -s 256M "$MNT/fs.img"
loop_attach "$MNT/fs.img"
loop=$FM_LAST_LOOP

FM_CONTEXT="mkfs.ext4 $loop"
fm_timeout 120 mkfs.ext4 -q -F -E nodiscard "$loop" || fail "mkfs.ext4 on $loop failed"
FM_CONTEXT=""

EXT=$FM_TMP/ext4
mkdir -p "$EXT"
mount -t ext4 -o discard "$loop" "$EXT" || fail "mount $loop failed"
fm_track_mount "$EXT"

FM_CONTEXT="copy $SRC_TREE"
fm_timeout 150 cp -a "$SRC_TREE" "$EXT/tree" || fail "cp -a $SRC_TREE into the ext4 failed"
sync -f "$EXT"
diff -r --no-dereference "$SRC_TREE" "$EXT/tree" >/dev/null || fail "copied tree differs from $SRC_TREE"

FM_CONTEXT="delete + fstrim"
# delete about half of the files, then discard: the loop turns it into punch-hole (and
# WRITE_ZEROES into zero-range) on the image, which must reach both legs.
find "$EXT/tree" -type f | awk 'NR % 2 == 0' | xargs -r -d '\n' rm -f
sync -f "$EXT"
fm_timeout 60 fstrim -v "$EXT" >&2 || soft_fail "fstrim on ext4 over the loop device failed (discard → fallocate punch-hole through fusemirror)"
# some more writes after the trim
fm_timeout 60 cp -a "$SRC_TREE2" "$EXT/tree2" || fail "second copy failed"
sync -f "$EXT"
diff -r --no-dereference "$SRC_TREE2" "$EXT/tree2" >/dev/null || fail "second copy differs from $SRC_TREE2"

FM_CONTEXT="unmount"
umount "$EXT" || fail "umount $EXT failed"
loop_detach "$loop"
lname=${loop#/dev/}
if dmesg 2>/dev/null | tail -n +"$((dmesg_lines + 1))" | grep -E "(dev $lname\b|$lname:)" | grep -iE "not supported|error" >&2; then
  soft_fail "kernel log shows errors for $loop (see above)"
fi

# the image through the mount is a valid file system before unmount too
fm_timeout 120 e2fsck -fn "$MNT/fs.img" >"$FM_TMP/logs/fsck.mnt" 2>&1 ||
  soft_fail "e2fsck -fn on the image through the mount failed: $(tail -n 5 "$FM_TMP/logs/fsck.mnt")"

fm_unmount "$MNT"

FM_CONTEXT="after unmount"
for side in "$PRI" "$SEC"; do
  fm_timeout 120 e2fsck -fn "$side/fs.img" >"$FM_TMP/logs/fsck.out" 2>&1 ||
    fail "e2fsck -fn $side/fs.img failed: $(tail -n 10 "$FM_TMP/logs/fsck.out")"
done
assert_same "$PRI/fs.img" "$SEC/fs.img"

# the secondary's copy holds the tree (mount it read-only from a loop over the backing file)
loop_attach "$SEC/fs.img" -r
mkdir -p "$FM_TMP/ro"
mount -t ext4 -o ro,noload "$FM_LAST_LOOP" "$FM_TMP/ro" || fail "mount of the secondary's image failed"
fm_track_mount "$FM_TMP/ro"
diff -r --no-dereference "$SRC_TREE2" "$FM_TMP/ro/tree2" >/dev/null || fail "the secondary's file system holds a different tree2"
umount "$FM_TMP/ro"
loop_detach "$FM_LAST_LOOP"

fm_assert_log_clean "$PRI"

fm_pass
