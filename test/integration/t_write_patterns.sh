#!/bin/bash
# t_write_patterns — every kind of write and namespace operation through the mount leaves
# the primary and the secondary byte-identical and equally sparse, after each step and
# after unmount. 4 KiB chunks, 1 s daemon sleep. Last, a full resync of a preallocated
# image must give the secondary the same allocation (unwritten extents, not written zeros).
. "$(dirname "$0")/lib.sh"

command -v fallocate >/dev/null || fail "missing tool fallocate (util-linux)"

fm_create "$PRI" "$SEC" --chunk-size 4K --daemon-sleep 1
fm_mount "$PRI" "$MNT"

mount_view_reported=0
# check STEP — mount view == primary; primary == secondary (names, modes, bytes, holes).
check() {
  FM_CONTEXT="after $1"
  fm_step "check"
  sync -f "$MNT" 2>/dev/null || true
  local la=$FM_TMP/logs/mnt.list lb=$FM_TMP/logs/pri.list
  # the mount's view (readdir + stat) matches the primary; reported once (soft) so the
  # mirror checks below still run
  _fm_tree_list "$MNT" >"$la" 2>"$FM_TMP/logs/mnt.find.err" || true
  _fm_tree_list "$PRI" >"$lb"
  if ! cmp -s "$la" "$lb" || [[ -s $FM_TMP/logs/mnt.find.err ]]; then
    if ((!mount_view_reported)); then
      mount_view_reported=1
      soft_fail "the mount's tree (find $MNT) differs from the primary's (first seen here; later steps not re-reported):
$(diff "$lb" "$la" | head -n 20 || true)
$(head -n 5 "$FM_TMP/logs/mnt.find.err")"
    fi
  fi
  local t m s p
  while read -r t m s p; do
    [[ $t == f ]] || continue
    assert_reads_same "$MNT/$p" "$PRI/$p"
  done <"$lb"
  assert_tree_same "$PRI" "$SEC"
  FM_CONTEXT=""
}

# .fusemirror never visible at the mount
if [[ $'\n'$(ls -a "$MNT")$'\n' == *$'\n'.fusemirror$'\n'* ]]; then
  fail "readdir of the mount lists .fusemirror"
fi

img=$MNT/disk.img
P=$PRI/disk.img

# --- create + extend
truncate -s 1M "$img"
check "truncate -s 1M (create)"
[[ $(stat -c %s "$SEC/disk.img") == 1048576 ]] || fail "secondary size after truncate is $(stat -c %s "$SEC/disk.img")"

# --- aligned writes
pwrite_rand "$img" 0 4096
pwrite_rand "$img" 8192 16384
pwrite_rand "$img" $((64 * 1024)) $((64 * 1024))
check "aligned writes"

# --- unaligned writes, inside a chunk and across chunk boundaries
pwrite_rand "$img" 1 1
pwrite_rand "$img" 100 3000
pwrite_rand "$img" $((3 * 4096 - 100)) 300
pwrite_rand "$img" $((7 * 4096 - 1)) 2
pwrite_rand "$img" $((64 * 1024 - 1)) $((64 * 1024 + 2))
pwrite_rand "$img" $((200 * 1024 + 17)) $((300 * 1024 + 5))
check "unaligned / chunk-spanning writes"

# --- writes at and across the end of file (extending)
pwrite_rand "$img" $((1048576 - 10)) 100
pwrite_rand "$img" "$(stat -c %s "$P")" 4096
pwrite_rand "$img" $(($(stat -c %s "$P") + 5000)) 123
check "writes across / beyond EOF"

# --- large write (several FUSE requests)
pwrite_rand "$img" $((2 * 1048576 + 512)) $((3 * 1048576))
check "3 MiB unaligned write"

# --- sparse writes at far offsets
pwrite_rand "$img" $((10 * 1024 * 1048576)) 4096
pwrite_rand "$img" $((4 * 1024 * 1048576 + 123)) 5000
check "sparse writes at 4 GiB and 10 GiB"
[[ $(stat -c %s "$P") == $((10 * 1024 * 1048576 + 4096)) ]] || fail "size after far write: $(stat -c %s "$P")"
blocks=$(stat -c %b "$SEC/disk.img")
((blocks * 512 < 64 * 1048576)) || fail "secondary is not sparse after far writes: $blocks blocks"

# --- punch hole (keep size)
fallocate -p -o 8192 -l 16384 "$img"
fallocate -p -o $((64 * 1024 + 100)) -l 10000 "$img"          # unaligned edges
fallocate -p -o $((2 * 1048576)) -l $((1048576)) "$img"
check "fallocate -p (punch hole)"

# --- zero range
fallocate -z -o $((200 * 1024)) -l $((64 * 1024)) "$img"
fallocate -z -o $((300 * 1024 + 7)) -l 9999 "$img"
check "fallocate -z (zero range)"
# zero range past EOF, extending the file
old=$(stat -c %s "$P")
fallocate -z -o "$old" -l 8192 "$img"
check "fallocate -z past EOF"
[[ $(stat -c %s "$P") == $((old + 8192)) ]] || fail "fallocate -z past EOF did not extend: $(stat -c %s "$P")"

# --- plain allocation (mode 0) and keep-size
fallocate -o $((5 * 1048576)) -l 1048576 "$img"
fallocate -n -o "$(stat -c %s "$P")" -l 65536 "$img"
check "fallocate (allocate, keep-size)"

# --- truncate down (unaligned, inside a chunk) and up again
truncate -s $((1048576 + 5000)) "$img"
check "truncate down to 1 MiB + 5000"
truncate -s 5000 "$img"
check "truncate down to 5000"
truncate -s $((3 * 1048576)) "$img"
check "truncate up to 3 MiB"
pwrite_rand "$img" 4000 200
check "write across the old EOF after truncate up"
truncate -s 0 "$img"
check "truncate to 0"
pwrite_rand "$img" 0 $((256 * 1024))
check "rewrite after truncate to 0"

# --- files in subdirectories
mkdir -p "$MNT/vm/a/b"
[[ -d $SEC/vm/a/b ]] || fail "mkdir -p did not create vm/a/b on the secondary"
truncate -s 2M "$MNT/vm/a/b/root.img"
pwrite_rand "$MNT/vm/a/b/root.img" 4096 65536
pwrite_rand "$MNT/vm/a/b/root.img" $((2 * 1048576 - 100)) 100
head -c 300000 "$(fm_rand)" >"$MNT/vm/a/data.img"            # create + write via O_TRUNC
cp --sparse=always "$P" "$MNT/vm/copy.img"
check "files in subdirectories"

# --- overwrite via O_TRUNC, append
head -c 5000 "$(fm_rand)" >"$MNT/vm/a/data.img"
check "overwrite with O_TRUNC"
head -c 7000 "$(fm_rand)" >>"$MNT/vm/a/data.img"
check "append"

# --- chmod (files and directories)
chmod 640 "$MNT/vm/a/b/root.img"
chmod 700 "$MNT/vm/a"
check "chmod"
[[ $(stat -c %a "$SEC/vm/a/b/root.img") == 640 ]] || fail "chmod 640 not on the secondary: $(stat -c %a "$SEC/vm/a/b/root.img")"
[[ $(stat -c %a "$MNT/vm/a/b/root.img") == 640 ]] || fail "chmod 640 not visible at the mount"

# --- rename: file within a dir, across dirs, over an existing file, and a directory
mv "$MNT/vm/a/b/root.img" "$MNT/vm/a/b/root2.img"
check "rename in a directory"
mv "$MNT/vm/a/b/root2.img" "$MNT/vm/root.img"
check "rename across directories"
[[ ! -e $SEC/vm/a/b/root2.img ]] || fail "old name still on the secondary after rename"
pwrite_rand "$MNT/vm/root.img" 0 4096       # the renamed image is still mirrored
check "write after rename"
mv -f "$MNT/vm/copy.img" "$MNT/vm/a/data.img"
check "rename over an existing file"
mv "$MNT/vm/a" "$MNT/vm/moved"
check "rename a directory"
pwrite_rand "$MNT/vm/moved/data.img" 12345 54321
check "write to a file in a renamed directory"

# --- open file kept across rename: writes through the old descriptor still mirror
exec 7<>"$MNT/vm/root.img"
mv "$MNT/vm/root.img" "$MNT/vm/root3.img"
printf 'written through an fd opened before the rename' >&7
exec 7>&-
check "write through an fd across a rename"

# --- unlink, rmdir
rm "$MNT/vm/moved/data.img"
check "unlink"
[[ ! -e $SEC/vm/moved/data.img ]] || fail "unlinked file still on the secondary"
rmdir "$MNT/vm/moved/b"
rmdir "$MNT/vm/moved"
check "rmdir"
[[ ! -e $SEC/vm/moved ]] || fail "removed directory still on the secondary"
mkdir "$MNT/empty" && rmdir "$MNT/empty"
check "mkdir + rmdir"

# --- several writers at once (different files and overlapping ranges of one file)
truncate -s 8M "$MNT/par.img"
for i in 1 2 3 4; do
  (
    for j in $(seq 1 20); do
      pwrite_rand "$MNT/par.img" $(((RANDOM % 2048) * 4096 + RANDOM % 4096)) $((1 + RANDOM % 20000))
    done
  ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a parallel writer failed"; done
check "parallel overlapping writes"

# --- fsync / fdatasync through the mount
dd if="$(fm_rand)" of="$MNT/par.img" bs=64k count=4 conv=notrunc,fsync status=none
dd if="$(fm_rand)" of="$MNT/par.img" bs=64k count=4 seek=8 conv=notrunc,fdatasync status=none
check "fsync/fdatasync"

# --- fio: random writes of mixed sizes from 4 jobs, verified on read-back (buffered and
# O_DIRECT); then the legs must match
command -v fio >/dev/null || fail "missing tool fio (see test/integration/PACKAGES)"
mkdir -p "$MNT/fio"
for direct in 0 1; do
  FM_CONTEXT="fio direct=$direct"
  fm_timeout 120 fio --name=fm --directory="$MNT/fio" --filename_format='job$jobnum.img' \
    --numjobs=4 --size=8M --rw=randwrite --bsrange=512-128k --ioengine=psync --direct=$direct \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 --fallocate=none --verify_state_save=0 \
    --group_reporting >"$FM_TMP/logs/fio.$direct.out" 2>&1 ||
    fail "fio (direct=$direct) through the mount failed: $(grep -iE 'err|verify|fail' "$FM_TMP/logs/fio.$direct.out" | head -n 5)"
  check "fio randwrite+verify direct=$direct"
done

final_list=$(_fm_tree_list "$PRI")
fm_unmount "$MNT"

# after unmount: still identical, nothing lost
assert_tree_same "$PRI" "$SEC"
[[ $(_fm_tree_list "$PRI") == "$final_list" ]] || fail "the primary's tree changed during unmount"

# every image has a bitmap, and no bitmap is left over for removed/renamed images
while read -r t m s p; do
  [[ $t == f ]] || continue
  p=${p#./}
  bm=$(fm_bitmap_path "$PRI" "$p")
  if [[ ! -f $bm ]]; then
    soft_fail "no bitmap $bm for image $p"
    continue
  fi
  out=$(fm_examine "$bm")
  state=$(fm_examine_field "$out" State)
  [[ $state == clean ]] || soft_fail "bitmap of $p after clean unmount has State '$state', want clean"
  read -r total dirty < <(fm_examine_bits "$out")
  ((dirty == 0)) || soft_fail "bitmap of $p after clean unmount has $dirty dirty bits"
  size=$(stat -c %s "$PRI/$p")
  ssz=$(fm_examine_field "$out" "Sync Size")
  [[ ${ssz%% *} == "$size" ]] || soft_fail "bitmap of $p: Sync Size '$ssz' after clean unmount, image size $size"
  ((total == (size + 4095) / 4096)) || soft_fail "bitmap of $p: $total bits for a $size-byte image at 4 KiB chunks"
done < <(_fm_tree_list "$PRI")
if [[ -d $PRI/.fusemirror/bitmaps ]]; then
  while read -r bm; do
    rel=${bm#"$PRI/.fusemirror/bitmaps/"}
    rel=${rel%.fmbm}
    [[ -f $PRI/$rel ]] || soft_fail "orphan bitmap $bm (image $rel no longer exists)"
  done < <(find "$PRI/.fusemirror/bitmaps" -type f -name '*.fmbm')
fi

# remount: everything is still there and clean (no resync needed, nothing changes)
fm_mount "$PRI" "$MNT"
check "remount"
fm_unmount "$MNT"
assert_tree_same "$PRI" "$SEC"

# --- a full resync gives the secondary the primary's layout: data, preallocated (unwritten)
# extents and holes. The preallocated range is read through the mount first, so its pages
# sit in the primary's page cache, where SEEK_DATA would report them as data (and a copy
# by SEEK_DATA would write zeros over what the primary only reserved).
FM_CONTEXT="full resync of a preallocated image"
fm_mount "$PRI" "$MNT"
truncate -s 8M "$MNT/prealloc.img"
fallocate -o $((1 << 20)) -l $((3 << 20)) "$MNT/prealloc.img" || fail "fallocate through the mount failed"
pwrite_rand "$MNT/prealloc.img" $((2 << 20)) 65536
cat "$MNT/prealloc.img" >/dev/null
fm_unmount "$MNT"
rm -f "$SEC/prealloc.img" "$SEC/.fusemirror/images/prealloc.img.json"
fm_mount "$PRI" "$MNT"
fm_wait_for "full resync of prealloc.img" 60 fm_image_is "$MNT" prealloc.img \
  '.secondary_ok == true and .unsynced_chunks == 0 and .sync.action == "idle"' ||
  fail "full resync did not finish: $(fm_image_json "$MNT" prealloc.img)"
copied=$(fm_image_json "$MNT" prealloc.img | jq -r .sync.copied_bytes)
fm_unmount "$MNT"
assert_same "$PRI/prealloc.img" "$SEC/prealloc.img" # allocation compared: unwritten counts
blocks_p=$(stat -c %b "$PRI/prealloc.img") blocks_s=$(stat -c %b "$SEC/prealloc.img")
((blocks_s == blocks_p)) || fail "secondary has $blocks_s blocks allocated, primary $blocks_p"
((copied == 65536)) || soft_fail "full resync copied $copied bytes of data, want 65536 (the written range only)"

fm_assert_log_clean "$PRI"

fm_pass
