#!/bin/bash
# t_security — nothing reaches outside the two backing directories, metadata is private,
# the control interface is the owner's, and unsafe setups are refused (issue 7 part 5).
#
# Layout: the set is $FM_TMP/d/p -> $FM_TMP/d/s, mounted on $FM_TMP/mnt. Sentinels live in
# $FM_TMP/d (next to the backing directories) and are the targets of every planted link.
# Relative link targets ("../sentinel") resolve to a sentinel only when followed inside a
# backing directory; followed from the mount point they name nothing. So if a sentinel
# changes, fusemirror itself followed the link.
#
#   names     the CLI control actions with "..", absolute paths, ".fusemirror/…", "a/../../x":
#             refused, nothing changed
#   symlinks  planted in the primary (file and directory) and in the secondary (in place of
#             an image's copy), absolute and relative, planted before the mount: reads,
#             writes, truncate and resync through the mount leave the sentinels untouched
#             and never show their bytes
#   devices   a character device node planted in the primary is not served as an image
#   hardlinks a hard link to a sentinel planted in the primary and in the secondary: writes
#             through the mount never change the sentinel
#   modes     with umask 000: every file under .fusemirror (both sides, bitmap_dir) is 0600,
#             every directory 0700
#   mount     allow_other off by default; with -o allow_other, default_permissions is on
#   control   with allow_other: uid 65534 cannot write .fusemirror/control, change
#             per-image attributes, or run fail/re-add/sync-action; it can read status
#   perms     a primary or secondary writable by others: mount refused
. "$(dirname "$0")/lib.sh"
fm_rand >/dev/null
umask 000 # modes of metadata must not depend on the caller's umask

D=$FM_TMP/d
P=$D/p S=$D/s
mkdir -p "$P" "$S" "$D/outdir"
chmod 755 "$D" "$P" "$S" "$D/outdir" "$FM_TMP" "$MNT"
SECRET="sentinel $(date +%s%N) do not touch"
for f in sentinel sentinel-hl outdir/sentinel2 sentinel-s sentinel-shl; do
  printf '%s %s\n' "$SECRET" "$f" >"$D/$f"
  chmod 644 "$D/$f"
done
sentinel_hash() { (cd "$D" && stat -c '%n %s %a %Y' sentinel sentinel-hl outdir/sentinel2 sentinel-s sentinel-shl && md5sum sentinel sentinel-hl outdir/sentinel2 sentinel-s sentinel-shl); }
# no sentinel may appear where a link followed from the mount point would land
for f in sentinel outdir; do [[ ! -e $FM_TMP/$f ]] || fail "$FM_TMP/$f must not exist"; done

fm_create "$P" "$S" --chunk-size 64K --daemon-sleep 1
fm_mount "$P" "$MNT"
head -c $((1 << 20)) "$(fm_rand)" >"$MNT/disk.img"
head -c $((1 << 20)) "$(fm_rand)" >"$MNT/disk2.img"
head -c $((1 << 20)) "$(fm_rand)" >"$MNT/disk3.img"
mkdir "$MNT/sub"
head -c 65536 "$(fm_rand)" >"$MNT/sub/a.img"
sync
fm_unmount "$MNT"

# ------------------------------------------------------------------ plant, while unmounted
ln -s ../sentinel "$P/rel-link.img"
ln -s "$D/sentinel" "$P/abs-link.img"
ln -s ../outdir "$P/linkdir"
ln "$D/sentinel-hl" "$P/hardlink.img"
mknod "$P/null.img" c 1 3
mknod -m 666 "$P/zero.img" c 1 5
rm -f "$S/disk2.img"
ln -s ../sentinel-s "$S/disk2.img" # the secondary's copy of disk2.img is a link outside
rm -f "$S/disk3.img"
ln "$D/sentinel-shl" "$S/disk3.img" # ... and of disk3.img a hard link to a file outside
H0=$(sentinel_hash)

fm_mount "$P" "$MNT"
FINDINGS=()
note() { FINDINGS+=("$*"); fm_log "$*"; }

# ------------------------------------------------------------------ names
FM_CONTEXT=names
for name in ../d/sentinel ../../d/sentinel "$D/sentinel" /etc/passwd .fusemirror/config.json \
  sub/../../sentinel ./../sentinel; do
  for act in fail re-add; do
    expect_fail "$act '$name'" "" "$FUSEMIRROR" "$act" "$MNT" "$name" || true
  done
  expect_fail "sync-action '$name'" "" "$FUSEMIRROR" sync-action "$MNT" "$name" check || true
done
# and through the mount: the kernel resolves "..", fusemirror never sees it; a name with a
# NUL cannot be passed at all; a name ".fusemirror" is the virtual control directory
[[ -e $MNT/.fusemirror/config.json ]] && soft_fail "the primary's .fusemirror/config.json is visible at the mount"
ls -a "$MNT" | grep -qx '.fusemirror' && soft_fail ".fusemirror is listed by readdir"

# ------------------------------------------------------------------ symlinks in the primary
FM_CONTEXT=symlinks
for l in rel-link.img abs-link.img; do
  t=$(stat -c %F "$MNT/$l" 2>/dev/null || echo absent)
  if [[ $t == "regular file" ]]; then
    soft_fail "$l (a symlink in the primary) is presented as a regular file: fusemirror followed it"
  fi
  out=$(dd if="$MNT/$l" iflag=nofollow bs=4096 count=1 status=none 2>/dev/null) || true
  [[ $out == *"$SECRET"* ]] && soft_fail "reading $l through the mount returned a sentinel's bytes"
  dd if=/dev/zero of="$MNT/$l" oflag=nofollow bs=512 count=1 conv=notrunc status=none 2>/dev/null || true
  truncate --no-create -s 0 "$MNT/$l" 2>/dev/null || true # follows on the client side: lands nowhere
  note "symlink $l in the primary: shown at the mount as: $t"
done
t=$(stat -c %F "$MNT/linkdir" 2>/dev/null || echo absent)
[[ $t == directory ]] && soft_fail "linkdir (a symlink to a directory outside) is presented as a directory"
dd if=/dev/zero of="$MNT/linkdir/sentinel2" oflag=nofollow bs=512 count=1 conv=notrunc status=none 2>/dev/null || true
ls "$MNT/linkdir/" >/dev/null 2>&1 || true
note "symlinked directory in the primary: shown as: $t"
# fusemirror's own I/O through links: the control tree and status name images by path
cat "$MNT/.fusemirror/images/rel-link.img/state" >/dev/null 2>&1 && soft_fail ".fusemirror/images/rel-link.img/state exists: a symlink was opened as an image"

# ------------------------------------------------------------------ devices
FM_CONTEXT=devices
for n in null.img zero.img; do
  t=$(stat -c %F "$MNT/$n" 2>/dev/null || echo absent)
  [[ $t == "regular file" ]] && soft_fail "$n (a device node in the primary) is presented as a regular file"
  note "device node $n in the primary: shown as: $t"
  if dd if="$MNT/$n" of=/dev/null bs=4096 count=1 status=none 2>/dev/null; then
    grep -qw nodev <(awk -v m="$MNT" '$2 == m { print $4 }' /proc/mounts) ||
      note "reading $n through the mount worked and the mount has no nodev: the client opened the device itself"
  fi
done
rc=0
mknod "$MNT/made.img" c 1 3 2>/dev/null || rc=$?
((rc != 0)) || note "mknod through the mount succeeded (made.img: $(stat -c %F "$P/made.img" 2>/dev/null))"
[[ -c $S/made.img || -b $S/made.img ]] && note "a device node made through the mount was mirrored to the secondary"

# ------------------------------------------------------------------ hard links
FM_CONTEXT=hardlinks
t=$(stat -c %F "$MNT/hardlink.img" 2>/dev/null || echo absent)
rc=0
dd if=/dev/zero of="$MNT/hardlink.img" bs=512 count=1 conv=notrunc,fsync status=none 2>/dev/null || rc=$?
note "hard link (nlink 2) to a file outside, in the primary: shown as '$t', write exit $rc"

# ------------------------------------------------------------------ the secondary's links
FM_CONTEXT=secondary-links
for n in disk2.img disk3.img; do
  dd if="$(fm_rand)" of="$MNT/$n" bs=65536 count=2 seek=3 conv=notrunc,fsync status=none ||
    soft_fail "a write to $n failed: a bad secondary copy must not fail the user's write"
  truncate -s $((2 << 20)) "$MNT/$n" || soft_fail "truncate of $n failed"
done
# a resync (re-add, full) must not follow them either
for n in disk2.img disk3.img; do
  fm_timeout 30 "$FUSEMIRROR" re-add "$MNT" "$n" 2>/dev/null || true
done
sleep 2
for n in disk2.img disk3.img; do
  j=$(fm_image_json "$MNT" "$n")
  note "secondary copy of $n is a $( [[ $n == disk2.img ]] && echo symlink || echo 'hard link') outside: state $(jq -r .state <<<"$j"), secondary_ok $(jq -r .secondary_ok <<<"$j")"
done

FM_CONTEXT=sentinels
H1=$(sentinel_hash)
[[ $H0 == "$H1" ]] || soft_fail "a file outside the backing directories changed (written through a link planted in a backing directory):
$(diff <(echo "$H0") <(echo "$H1") || true)"
[[ -L $S/disk2.img || ! -e $S/disk2.img || -f $S/disk2.img ]] || true
fm_unmount "$MNT"
H2=$(sentinel_hash)
[[ $H1 == "$H2" ]] || soft_fail "a file outside the backing directories changed at unmount:
$(diff <(echo "$H1") <(echo "$H2") || true)"
[[ -e $FM_TMP/sentinel || -e $FM_TMP/outdir ]] && note "a client-side link follow created $(ls -d "$FM_TMP"/sentinel "$FM_TMP"/outdir 2>/dev/null)"

# ------------------------------------------------------------------ modes
FM_CONTEXT=modes
BMD=$D/bitmaps
mkdir -p "$BMD"
chmod 755 "$BMD"
P2=$D/p2 S2=$D/s2
mkdir -p "$P2" "$S2"
chmod 755 "$P2" "$S2"
fm_create "$P2" "$S2" --bitmap-dir "$BMD"
fm_mount "$P2" "$MNT"
head -c 65536 "$(fm_rand)" >"$MNT/m.img"
sync
fm_unmount "$MNT"
fm_mount "$P" "$MNT" # the first set too, mounted again (log, lock, bitmaps of every image)
fm_unmount "$MNT"
bad=$(find "$P/.fusemirror" "$S/.fusemirror" "$P2/.fusemirror" "$S2/.fusemirror" "$BMD" -mindepth 1 \
  \( -type f ! -perm 0600 -printf 'file %m %p\n' \) -o \( -type d ! -perm 0700 -printf 'dir %m %p\n' \))
for d in "$P/.fusemirror" "$S/.fusemirror" "$P2/.fusemirror" "$S2/.fusemirror"; do
  [[ $(stat -c %a "$d") == 700 ]] || bad+=$'\n'"dir $(stat -c %a "$d") $d"
done
[[ -z $bad ]] || soft_fail "metadata not private (want files 0600, dirs 0700):
$bad"
nmeta=$(find "$P/.fusemirror" "$S/.fusemirror" "$P2/.fusemirror" "$S2/.fusemirror" "$BMD" | wc -l)

# ------------------------------------------------------------------ allow_other
FM_CONTEXT=allow_other
opts() { awk -v m="$MNT" '$2 == m { print $4 }' /proc/mounts; }
fm_mount "$P" "$MNT"
o=$(opts)
[[ ,$o, == *,allow_other,* ]] && soft_fail "allow_other is on without being asked for: $o"
fm_unmount "$MNT"
fm_mount "$P" "$MNT" -o allow_other
o=$(opts)
[[ ,$o, == *,allow_other,* ]] || soft_fail "-o allow_other is not in the mount options: $o"
[[ ,$o, == *,default_permissions,* ]] || soft_fail "allow_other without default_permissions: $o"
o_allow=$o

# ------------------------------------------------------------------ control as a non-owner
FM_CONTEXT=control
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
chmod 755 "$FM_TMP" "$D"
nobody cat "$MNT/.fusemirror/status.json" >/dev/null 2>&1 && status_nobody=readable || status_nobody=refused
if nobody sh -c "echo 'fail disk.img' > '$MNT/.fusemirror/control'" 2>/dev/null; then
  soft_fail "uid 65534 could write $MNT/.fusemirror/control"
fi
for a in "$MNT"/.fusemirror/images/disk.img/*; do
  [[ -f $a ]] || continue
  if nobody sh -c "echo check > '$a'" 2>/dev/null; then soft_fail "uid 65534 could write $a"; fi
done
if nobody "$FUSEMIRROR" fail "$MNT" disk.img >/dev/null 2>&1; then soft_fail "uid 65534 could run fusemirror fail"; fi
if nobody "$FUSEMIRROR" sync-action "$MNT" disk.img check >/dev/null 2>&1; then soft_fail "uid 65534 could run sync-action"; fi
j=$(fm_image_json "$MNT" disk.img)
[[ $(jq -r .secondary_ok <<<"$j") == true && $(jq -r .sync.action <<<"$j") == idle ]] ||
  soft_fail "a non-owner's control attempt changed the image: $j"
# owner can (sanity: the refusals above are about the caller, not a broken control file)
echo 'check disk.img' >"$MNT/.fusemirror/control" 2>/dev/null || fm_cli sync-action "$MNT" disk.img check
fm_unmount "$MNT"

# ------------------------------------------------------------------ permissive directories
FM_CONTEXT=perms
for d in "$P" "$S"; do
  chmod 777 "$d"
  refuse "mount with $(basename "$d") mode 0777" "writable|permission|others|mode" "$FUSEMIRROR" mount "$P" "$MNT"
  chmod 1777 "$d"
  refuse "mount with $(basename "$d") mode 1777" "" "$FUSEMIRROR" mount "$P" "$MNT"
  chmod 755 "$d"
done
FM_CONTEXT=""

fm_log "security: 5 sentinel files outside (changed: $([[ $H0 == "$H1" && $H1 == "$H2" ]] && echo no || echo YES)), links planted: 3 symlinks, 2 hard links, 2 device nodes);" \
  "$nmeta metadata paths checked for 0600/0700; allow_other mount options: $o_allow; status.json for uid 65534: $status_nobody"
printf 'security findings (informational):\n'
printf '  - %s\n' "${FINDINGS[@]}"
fm_pass
