#!/bin/bash
# shellcheck disable=SC2016 # the python and bash -c snippets get their values as arguments
# t_posix_edges — POSIX edges of the mount (docs/write-path.md §6-7, docs/quickstart.md
# "What the mount refuses"):
#
#   modes     a file and a directory made through the mount get exactly the mode the kernel
#             hands over (umask 0, 022, 077; setuid at create kept; sticky kept) and the
#             caller's ownership, on the mount and on both legs; in a setgid directory they
#             take its group and a new directory keeps the setgid bit (root and a user)
#   refused   symlink, mknod, mkfifo, a socket (ENOSYS), a hard link (EPERM),
#             RENAME_EXCHANGE (EINVAL), collapse/insert range, unshare (EOPNOTSUPP),
#             FICLONE, FICLONERANGE, FIDEDUPERANGE (EOPNOTSUPP): each with its errno,
#             nothing made on either leg
#   mmap      a shared writable mapping of an image on the default (direct-I/O) mount:
#             the bytes written through it reach both legs after msync and after munmap
#   shared    both legs on one small ext4 (1 KiB blocks, so a file cannot pass 4 TiB): an
#             error both legs share is refused to the user and changes nothing — no leg,
#             not the bitmap (same cover, no dirty chunk, same file), not degraded — for
#             truncate past the file system's limit (healthy and degraded), fallocate
#             without space (growing and KEEP_SIZE), writes without space (small and
#             large, inside and past the end), a setxattr too big and a rename onto a
#             directory; a zero range that runs out of space part-way is resynced, not
#             degraded
#   check     a check over an image that grows during it ends with "N chunks of N" for
#             the new size, and its progress never passes its total; one over an image
#             cut short during it ends (it used to spin forever)
. "$(dirname "$0")/lib.sh"

U=4242 # a uid with no account: setpriv needs none
user() { setpriv --reuid=$U --regid=$U --clear-groups "$@"; }
mode_of() { stat -c '%a %u:%g' "$1" 2>&1; }
# shellcheck disable=SC2317 # called through fm_wait_for
is_clean() { fm_image_is "$1" "$2" '.state == "clean" and .dirty_chunks == 0 and .sync.action == "idle"'; }

# ====================================================================== modes
FM_CONTEXT=modes
chmod 755 "$FM_TMP" "$PRI" "$SEC" "$MNT"
fm_create "$PRI" "$SEC" --daemon-sleep 1
fm_mount "$PRI" "$MNT" -o allow_other
mkdir "$MNT/u"
chown $U:$U "$MNT/u"
# want_mode REL WANT — REL has mode and owner WANT ("MODE UID:GID") on the mount and both legs
want_mode() {
  local leg got
  for leg in "$MNT" "$PRI" "$SEC"; do
    got=$(mode_of "$leg/$1")
    [[ $got == "$2" ]] || soft_fail "$leg/$1: '$got', want '$2'"
  done
}
for um in 0 022 077; do
  user sh -c 'umask "$1"; cd "$2" && touch "f$1" && mkdir "d$1" && python3 -c "
import os, sys
u = sys.argv[1]
os.close(os.open(\"s\" + u, os.O_CREAT | os.O_WRONLY, 0o4755))
os.mkdir(\"t\" + u, 0o1777)" "$1"' _ "$um" "$MNT/u"
  m=$((8#$um))
  want_mode "u/f$um" "$(printf '%o' $((0666 & ~m))) $U:$U"
  want_mode "u/d$um" "$(printf '%o' $((0777 & ~m))) $U:$U"
  want_mode "u/s$um" "$(printf '%o' $((04755 & ~m))) $U:$U"
  want_mode "u/t$um" "$(printf '%o' $((01777 & ~m))) $U:$U"
done
# a setgid directory of group 4343: what is made in it takes that group, a directory keeps
# the setgid bit (the user is not in group 4343; root is)
mkdir "$MNT/g"
chgrp 4343 "$MNT/g"
chmod 2777 "$MNT/g"
user sh -c 'umask 022; touch "$1/g/uf" && mkdir "$1/g/ud"' _ "$MNT"
(umask 0 && touch "$MNT/g/rf" && mkdir "$MNT/g/rd" &&
  python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o2755))' "$MNT/g/rsg")
want_mode g/uf "644 $U:4343"
want_mode g/ud "2755 $U:4343"
want_mode g/rf "666 0:4343"
want_mode g/rd "2777 0:4343"
want_mode g/rsg "2755 0:4343"
# and one level down, the inheritance goes on
user mkdir "$MNT/g/ud/deeper"
want_mode g/ud/deeper "2755 $U:4343"

# ====================================================================== refused
FM_CONTEXT=refused
head -c $((1 << 20)) /dev/urandom >"$MNT/r.img"
touch "$MNT/r2.img"
# Each line: the operation, then the errno name it got (or "ok").
out=$(python3 - "$MNT" <<'PY'
import ctypes, errno, fcntl, os, socket, struct, sys
m = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
def ename(e):  # EOPNOTSUPP and ENOTSUP are one number; the docs say EOPNOTSUPP
    return "EOPNOTSUPP" if e == errno.EOPNOTSUPP else errno.errorcode[e]
def report(name, fn):
    try:
        r = fn()
        if isinstance(r, int) and r < 0:
            print(name, ename(ctypes.get_errno()))
        else:
            print(name, "ok")
    except OSError as e:
        print(name, ename(e.errno))
report("symlink", lambda: os.symlink("r.img", m + "/sl"))
report("mknod", lambda: os.mknod(m + "/nod", 0o600 | 0o020000, os.makedev(1, 3)))
report("mkfifo", lambda: os.mkfifo(m + "/fifo"))
report("socket", lambda: socket.socket(socket.AF_UNIX).bind(m + "/sock"))
report("link", lambda: os.link(m + "/r.img", m + "/hl"))
report("rename_exchange", lambda: libc.renameat2(-100, (m + "/r.img").encode(), -100,
                                                 (m + "/r2.img").encode(), 2))
fd = os.open(m + "/r.img", os.O_RDWR)
fd2 = os.open(m + "/r2.img", os.O_RDWR)
for name, mode in [("collapse_range", 0x08), ("insert_range", 0x20), ("unshare_range", 0x40)]:
    report(name, lambda: libc.fallocate(fd, mode, ctypes.c_long(65536), ctypes.c_long(65536)))
report("ficlone", lambda: fcntl.ioctl(fd2, 0x40049409, fd))
# FICLONERANGE = _IOW(0x94, 13, struct file_clone_range {s64 src_fd; u64 off, len, dest_off})
report("ficlonerange", lambda: fcntl.ioctl(fd2, 0x4020940d, struct.pack("qQQQ", fd, 0, 65536, 0)))
# FIDEDUPERANGE = _IOWR(0x94, 54, struct file_dedupe_range) with one destination
arg = bytearray(struct.pack("QQHHI", 0, 65536, 1, 0, 0) + struct.pack("qQQiI", fd2, 0, 0, 0, 0))
report("fideduperange", lambda: fcntl.ioctl(fd, 0xc0189436, arg))
PY
)
fm_log "refused: $(tr '\n' ' ' <<<"$out")"
for want in symlink:ENOSYS mknod:ENOSYS mkfifo:ENOSYS socket:ENOSYS link:EPERM \
  rename_exchange:EINVAL collapse_range:EOPNOTSUPP insert_range:EOPNOTSUPP \
  unshare_range:EOPNOTSUPP ficlone:EOPNOTSUPP ficlonerange:EOPNOTSUPP fideduperange:EOPNOTSUPP; do
  got=$(awk -v op="${want%%:*}" '$1 == op { print $2 }' <<<"$out")
  [[ $got == "${want#*:}" ]] || soft_fail "${want%%:*}: got '${got:-nothing}', want ${want#*:}"
done
for n in sl nod fifo sock hl; do
  for leg in "$PRI" "$SEC"; do
    [[ -e $leg/$n || -L $leg/$n ]] && soft_fail "the refused $n exists on $leg"
  done
done
cmp -s "$PRI/r.img" "$SEC/r.img" || soft_fail "r.img differs between the legs after the refusals"
[[ $(stat -c %s "$PRI/r2.img") == 0 ]] || soft_fail "r2.img changed after the refusals"

# ====================================================================== mmap
FM_CONTEXT=mmap
head -c $((1 << 20)) /dev/urandom >"$MNT/m.img"
cp "$MNT/m.img" "$FM_TMP/want.img"
# mmap_write FILE MIRROR FLUSH — writes 3 patches through a shared mapping of FILE (and the
# same bytes into MIRROR with pwrite); FLUSH=1: msync before munmap
mmap_write() {
  python3 - "$@" <<'PY'
import mmap, os, sys
path, mirror, flush = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
f = os.open(path, os.O_RDWR)
mm = mmap.mmap(f, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
w = os.open(mirror, os.O_RDWR)
for off in (0, 300001, len(mm) - 7):
    data = os.urandom(7)
    mm[off:off + 7] = data
    os.pwrite(w, data, off)
if flush:
    mm.flush()
mm.close()
os.close(f)
os.close(w)
PY
}
if ! err=$(mmap_write "$MNT/m.img" "$FM_TMP/want.img" 1 2>&1); then
  soft_fail "a shared writable mapping of an image failed: $err"
else
  for f in "$PRI/m.img" "$SEC/m.img" "$MNT/m.img"; do
    cmp -s "$f" "$FM_TMP/want.img" || soft_fail "after msync: $f lacks the bytes written through the mapping"
  done
  mmap_write "$MNT/m.img" "$FM_TMP/want.img" 0 || soft_fail "the second mapping failed"
  for f in "$PRI/m.img" "$SEC/m.img" "$MNT/m.img"; do
    cmp -s "$f" "$FM_TMP/want.img" || soft_fail "after munmap and close: $f lacks the bytes written through the mapping"
  done
fi
fm_image_is "$MNT" m.img '.state != "degraded"' || soft_fail "m.img degraded: $(fm_image_json "$MNT" m.img)"
grep -q 'shared mmap of images allowed' "$PRI/.fusemirror/fusemirror.log" ||
  soft_fail "the daemon did not log that shared mmap is allowed"
fm_assert_log_clean "$PRI"
fm_unmount "$MNT"

# ====================================================================== shared errors
FM_CONTEXT=shared
E=$FM_TMP/ext
truncate -s 64M "$FM_TMP/ext.fs"
mkfs.ext4 -q -F -b 1024 -m 0 "$FM_TMP/ext.fs"
loop_attach "$FM_TMP/ext.fs"
mkdir "$E"
mount "$FM_LAST_LOOP" "$E"
fm_track_mount "$E"
P2=$E/p S2=$E/s BM=$FM_TMP/bitmaps M2=$FM_TMP/m2
mkdir "$P2" "$S2" "$BM" "$M2"
fm_create "$P2" "$S2" --daemon-sleep 1 --bitmap-dir "$BM"
fm_mount "$P2" "$M2"
head -c $((1 << 20)) /dev/urandom >"$M2/img"
mkdir "$M2/dir"
touch "$M2/dir/x"
fm_wait_for clean 20 is_clean "$M2" img || fail "img not clean: $(fm_image_json "$M2" img)"
B=$(fm_bitmap_path "$P2" img "$BM")
# state — what must not change: the image's status, the bitmap file, both legs
state() {
  printf '%s|%s|%s|%s\n' \
    "$(fm_image_json "$M2" img | jq -c '{state, size, total_chunks, dirty_chunks, unsynced_chunks}')" \
    "$(stat -c %s "$B")" "$(stat -c %s "$P2/img" "$S2/img" | tr '\n' ' ')" \
    "$(md5sum <"$P2/img") $(md5sum <"$S2/img")"
}
s0=$(state)
fm_log "before: $s0"
# unchanged WHAT — the state is s0, right away (no sweep needed)
unchanged() {
  local now
  now=$(state)
  [[ $now == "$s0" ]] || soft_fail "$1 changed something: $now, want $s0"
}
expect_fail "truncate past the file system's limit" "too large" truncate -s 5T "$M2/img" && unchanged "truncate 5T"
expect_fail "fallocate without space" "no space" fallocate -l 100M "$M2/img" && unchanged "fallocate 100M"
expect_fail "fallocate KEEP_SIZE without space" "no space" fallocate -n -l 100M "$M2/img" &&
  unchanged "fallocate -n 100M"
# xattr_op set|has FILE — sets a 3000-byte user.big (more than a 1 KiB block holds), or
# tells whether FILE has it; prints "ok" or the errno name of the failure
xattr_op() {
  python3 - "$@" <<'PY'
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "set":
        os.setxattr(path, "user.big", b"x" * 3000)
    else:
        os.getxattr(path, "user.big")
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
PY
}
got=$(xattr_op set "$M2/img")
[[ $got == ENOSPC || $got == E2BIG ]] ||
  soft_fail "a 3000-byte xattr on a 1 KiB-block ext4: '$got', want ENOSPC or E2BIG"
for leg in "$P2" "$S2"; do
  [[ $(xattr_op has "$leg/img") == ENODATA ]] || soft_fail "the refused xattr is on $leg/img"
done
# an xattr the primary takes reaches the secondary (the check above is not vacuous)
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.small", b"1")' "$M2/dir/x"
python3 -c 'import os, sys; os.getxattr(sys.argv[1], "user.small")' "$S2/dir/x" 2>/dev/null ||
  soft_fail "an accepted xattr did not reach the secondary"
expect_fail "rename onto a non-empty directory" "" mv -T "$M2/img" "$M2/dir"
[[ -f $S2/img && -f $S2/dir/x ]] || soft_fail "the refused rename changed the secondary"
unchanged "refused setxattr and rename"
# no space at all on the file system (both legs): writes at and past the end
dd if=/dev/zero of="$E/filler" bs=1M 2>/dev/null || true
dd if=/dev/zero of="$E/filler2" bs=1k 2>/dev/null || true
sync -f "$E"
free=$(df -k --output=avail "$E" | tail -n 1 | tr -d ' ')
((free == 0)) || fail "could not fill the legs' file system: $free KiB still free"
for w in "64K 32" "1M 2" "1M 1"; do  # small (inline, primary first) and large (both legs at once)
  read -r bs seek <<<"$w"
  expect_fail "write of $bs at block $seek without space" "no space" \
    dd if=/dev/urandom of="$M2/img" bs="$bs" count=1 seek="$seek" conv=notrunc status=none &&
    unchanged "write of $bs at block $seek without space"
done
fm_image_is "$M2" img '.state != "degraded"' || soft_fail "img degraded after the shared errors"
# a zero range that runs out of space part-way: the primary may have zeroed part of it;
# the range is resynced (the legs end up equal), the image is not degraded
fallocate -z -o 256K -l 512K "$M2/img" 2>/dev/null || fm_log "zero range refused: no space"
rm -f "$E/filler" "$E/filler2"
fm_wait_for clean 20 is_clean "$M2" img || soft_fail "img not clean after the zero range: $(fm_image_json "$M2" img)"
cmp -s "$P2/img" "$S2/img" || soft_fail "the legs differ after the zero range"
grep -q 'secondary failed on' "$P2/.fusemirror/fusemirror.log" &&
  soft_fail "a shared error degraded the image: $(grep 'secondary failed on' "$P2/.fusemirror/fusemirror.log" | head -n 3)"
# degraded: the bitmap keeps what the secondary misses, and a refused truncate adds nothing
fm_image_is "$M2" img '.state == "degraded"' || fm_cli fail "$M2" img
s0=$(state)
expect_fail "truncate past the limit while degraded" "too large" truncate -s 5T "$M2/img" &&
  unchanged "truncate 5T while degraded"
fm_cli re-add "$M2" img
fm_wait_for clean 20 is_clean "$M2" img || soft_fail "img not clean after re-add: $(fm_image_json "$M2" img)"
fm_unmount "$M2"
bits=$(fm_examine_bits "$(fm_examine "$B")")
[[ $bits == "16 0" ]] || soft_fail "bitmap after a clean unmount: '$bits' (total dirty), want '16 0'"
[[ $(stat -c %s "$B") -le 8192 ]] || soft_fail "the bitmap file grew to $(stat -c %s "$B") bytes"

# ====================================================================== check
FM_CONTEXT=check
P3=$FM_TMP/p3 S3=$FM_TMP/s3 M3=$FM_TMP/m3
mkdir "$P3" "$S3" "$M3"
fm_create "$P3" "$S3" --daemon-sleep 1
fm_json_edit "$P3/.fusemirror/config.json" ".resync_max_rate = $((4 << 20))"
fm_mount "$P3" "$M3"
LOG=$P3/.fusemirror/fusemirror.log
# 22.5 MiB: 360 chunks, not a whole number of the check's 4 MiB steps, so a check that kept
# its first total overshot it once the image grew ("384 chunks of 360")
head -c $((45 << 19)) /dev/urandom >"$M3/c.img"
fm_wait_for clean 20 is_clean "$M3" c.img || fail "c.img not clean"
# run_check WHAT CMD... — starts a check, runs CMD a second later, waits for the check's
# end line (into CHECK_LINE); its progress, polled meanwhile, must never pass its total.
run_check() {
  local what=$1 n0 j past=0
  shift
  CHECK_LINE=""
  n0=$(grep -c 'c.img: check done' "$LOG" || true)
  fm_cli sync-action "$M3" c.img check
  sleep 1
  "$@"
  for _ in $(seq 1 100); do
    j=$(fm_image_json_try "$M3" c.img) || true
    if ((!past)) && [[ -n $j ]] && ! jq -e '.sync.done_bytes <= .sync.total_bytes' >/dev/null <<<"$j"; then
      soft_fail "$what: progress past its total: $(jq -c '.sync | {done_bytes, total_bytes}' <<<"$j")"
      past=1
    fi
    (($(grep -c 'c.img: check done' "$LOG" || true) > n0)) && break
    sleep 0.2
  done
  if (($(grep -c 'c.img: check done' "$LOG" || true) > n0)); then
    CHECK_LINE=$(grep 'c.img: check done' "$LOG" | tail -n 1)
  else
    soft_fail "$what: the check did not end within 20 s: $(fm_image_json "$M3" c.img)"
    fm_cli sync-action "$M3" c.img idle
  fi
}
run_check "growing image" dd if=/dev/urandom of="$M3/c.img" bs=1M count=8 seek=24 conv=notrunc status=none
fm_log "grown: $CHECK_LINE"
[[ -z $CHECK_LINE || $CHECK_LINE == *"(512 chunks of 512)"* ]] ||
  soft_fail "check of an image grown to 32 MiB ended with '$CHECK_LINE', want (512 chunks of 512)"
run_check "shrinking image" truncate -s 4M "$M3/c.img"
fm_log "cut: $CHECK_LINE"
[[ -z $CHECK_LINE || $CHECK_LINE == *"(64 chunks of 64)"* ]] ||
  soft_fail "check of an image cut to 4 MiB ended with '$CHECK_LINE', want (64 chunks of 64)"
fm_unmount "$M3"

fm_pass
