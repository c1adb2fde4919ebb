#!/bin/bash
# t_hostile_users — another local user against a root daemon mounted with allow_other
# (docs/reliability.md §5 "Hostile users"):
#
#   setuid    a user's setuid program, written through the mount or dropped into the primary
#             directly, gets a secondary copy that is the user's (never a root-owned setuid
#             file): when the copy is made on open, remade at mount after it was deleted,
#             remade by re-add, and when a directory tree is remade on the secondary
#   modes     a file and a directory made through the mount get exactly the mode asked
#             (umask 0: 0666 / 0777, setuid kept) on both legs
#   control   a 0700 directory of that user: uid 65534 gets EACCES for its entries in
#             MOUNT/.fusemirror/images and status.json leaves its images out; the owner
#             and root see them
#   looking   reading the control tree never loads an image: an image dropped into the
#             primary behind the daemon's back has no attributes and no secondary copy
#             until it is opened through the mount
#   unpriv    an unprivileged user's own set (create, mount through fusermount3, write,
#             wait, unmount) still works, files keep that user's ownership and exact modes
#   names     every image name length from 240 to 255 bytes: up to 250 (NAME_MAX less the
#             bitmap's and record's 5-byte suffix) the image works end to end, in sync and not
#             degraded; 251-255 are refused (ENAMETOOLONG) at create and at rename with
#             nothing made on any leg or in the bitmap directory
. "$(dirname "$0")/lib.sh"

U=4242 # a uid with no account: setpriv needs none
user() { setpriv --reuid=$U --regid=$U --clear-groups "$@"; }
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

P=$FM_TMP/p S=$FM_TMP/s
mkdir -p "$P" "$S"
chmod 755 "$FM_TMP" "$P" "$S" "$MNT"
fm_create "$P" "$S" --daemon-sleep 1
fm_mount "$P" "$MNT" -o allow_other
CTL=$MNT/.fusemirror

# owner_mode PATH -> "UID GID MODE"
owner_mode() { stat -c '%u %g %a' "$1"; }
expect_copy() { # expect_copy REL WANT — the secondary copy's owner and mode
  local got
  got=$(owner_mode "$S/$1" 2>&1) || got="missing"
  [[ $got == "$2" ]] || soft_fail "secondary copy of $1: '$got', want '$2'"
}
no_root_setuid() {
  local found
  found=$(find "$S" -xdev -type f -uid 0 -perm /6000 2>/dev/null | grep -v '/\.fusemirror/' || true)
  [[ -z $found ]] || soft_fail "$1: root-owned setuid/setgid files on the secondary: $found"
}

# ------------------------------------------------------------------ setuid
FM_CONTEXT=setuid
mkdir "$MNT/u"
chown $U:$U "$MNT/u"
[[ $(owner_mode "$S/u") == "$U $U 755" ]] || soft_fail "secondary directory u: $(owner_mode "$S/u"), want '$U $U 755'"
# through the mount
user sh -c "cp /bin/bash '$MNT/u/sh' && chmod 4755 '$MNT/u/sh'"
expect_copy u/sh "$U $U 4755"
# dropped into the primary directly; the copy is made when it is first opened
user sh -c "cp /bin/bash '$P/u/sh2' && chmod 4755 '$P/u/sh2'"
cat "$CTL/images/u/sh2/state" >/dev/null 2>&1 && soft_fail "an attribute of an image not loaded was readable"
[[ -e $S/u/sh2 ]] && soft_fail "looking at the control tree made a secondary copy of u/sh2"
cmp -s "$MNT/u/sh2" /bin/bash || soft_fail "u/sh2 through the mount differs from /bin/bash"
expect_copy u/sh2 "$U $U 4755"
no_root_setuid "after open"
fm_timeout 60 "$FUSEMIRROR" wait "$MNT" || soft_fail "wait after the copies: exit $?"

# the copy deleted, then a remount remakes it (and the directory)
fm_unmount "$MNT"
rm -rf "$S/u"
fm_mount "$P" "$MNT" -o allow_other
[[ $(owner_mode "$S/u") == "$U $U 755" ]] || soft_fail "remade secondary directory u: $(owner_mode "$S/u" 2>&1), want '$U $U 755'"
expect_copy u/sh "$U $U 4755"
expect_copy u/sh2 "$U $U 4755"
no_root_setuid "after remount"

# fail, delete the copy, re-add: re-add remakes it
"$FUSEMIRROR" fail "$MNT" u/sh
rm -f "$S/u/sh"
"$FUSEMIRROR" re-add "$MNT" u/sh
expect_copy u/sh "$U $U 4755"
fm_timeout 60 "$FUSEMIRROR" wait "$MNT" u/sh || soft_fail "wait after re-add: exit $?"
assert_same "$P/u/sh" "$S/u/sh"
no_root_setuid "after re-add"

# ------------------------------------------------------------------ modes at create
FM_CONTEXT=modes
user sh -c "umask 0; touch '$MNT/u/f0666'; mkdir '$MNT/u/d0777'"
for leg in "$MNT" "$P" "$S"; do
  [[ $(owner_mode "$leg/u/f0666") == "$U $U 666" ]] || soft_fail "$leg/u/f0666: $(owner_mode "$leg/u/f0666" 2>&1), want '$U $U 666'"
  [[ $(owner_mode "$leg/u/d0777") == "$U $U 777" ]] || soft_fail "$leg/u/d0777: $(owner_mode "$leg/u/d0777" 2>&1), want '$U $U 777'"
done

# ------------------------------------------------------------------ control tree
FM_CONTEXT=control
user sh -c "mkdir '$MNT/u/priv' && chmod 700 '$MNT/u/priv' && head -c 65536 /dev/urandom >'$MNT/u/priv/secret.img'"
# stat of u/priv itself needs only search permission above it, as through the mount
nobody stat "$CTL/images/u/priv" >/dev/null || soft_fail "uid 65534 cannot stat $CTL/images/u/priv (the mount lets it)"
for p in "$CTL/images/u/priv/secret.img" "$CTL/images/u/priv/secret.img/state" \
  "$CTL/images/u/priv/nonexistent.img"; do
  if out=$(nobody stat -c %n "$p" 2>&1); then
    soft_fail "uid 65534 could stat $p through the control tree"
  elif [[ $out != *"Permission denied"* ]]; then
    soft_fail "uid 65534 stat $p: '$out', want Permission denied (as through the mount)"
  fi
done
nobody ls "$CTL/images/u/priv" >/dev/null 2>&1 && soft_fail "uid 65534 could list $CTL/images/u/priv"
nobody cat "$CTL/status.json" | grep -q 'secret.img' && soft_fail "status.json shows u/priv/secret.img to uid 65534"
nobody cat "$CTL/status.json" | grep -q '"u/sh"' || soft_fail "status.json hides u/sh from uid 65534"
user cat "$CTL/status.json" | grep -q 'u/priv/secret.img' || soft_fail "status.json hides u/priv/secret.img from its owner"
grep -q 'u/priv/secret.img' "$CTL/status.json" || soft_fail "status.json hides u/priv/secret.img from root"
user cat "$CTL/images/u/priv/secret.img/state" >/dev/null || soft_fail "the owner cannot read u/priv/secret.img's state"
user ls "$CTL/images/u/priv" | grep -q secret.img || soft_fail "the owner cannot list $CTL/images/u/priv"

# ------------------------------------------------------------------ names
FM_CONTEXT=names
mkdir "$MNT/n"
before=$(fm_snapshot "$P" "$S")
for len in 251 252 253 254 255; do
  name=$(printf 'x%.0s' $(seq "$len"))
  if out=$(head -c 4096 /dev/urandom 2>&1 >"$MNT/n/$name"); then
    soft_fail "a $len-byte image name was accepted"
  elif [[ $out != *"File name too long"* ]]; then
    soft_fail "a $len-byte image name: '$out', want File name too long"
  fi
done
[[ $(fm_snapshot "$P" "$S") == "$before" ]] || soft_fail "refused names left something on a leg or in the bitmaps"
for len in $(seq 240 250); do
  name=$(printf 'y%.0s' $(seq "$len"))
  head -c 65536 /dev/urandom >"$MNT/n/$name" || soft_fail "a $len-byte image name was refused"
done
long=$(printf 'y%.0s' $(seq 250))
renamed=$(printf 'z%.0s' $(seq 251))
mv "$MNT/n/$long" "$MNT/n/$renamed" 2>/dev/null && soft_fail "rename to a 251-byte name was accepted"
[[ -f $P/n/$long && -f $S/n/$long ]] || soft_fail "a refused rename moved the image"
fm_timeout 60 "$FUSEMIRROR" wait "$MNT" || soft_fail "wait after the long names: exit $?"
nlong=$(grep -c '"n/yyy' "$CTL/status.json" || true)
((nlong == 11)) || soft_fail "status lists $nlong of the 11 long-named images"
grep -q '"degraded"' "$CTL/status.json" && soft_fail "an image is degraded: $(grep -B3 '"degraded"' "$CTL/status.json" | head -5)"

fm_timeout 60 "$FUSEMIRROR" wait "$MNT" || soft_fail "final wait: exit $?"
fm_unmount "$MNT"
for f in u/sh u/sh2 u/f0666 u/priv/secret.img; do assert_same "$P/$f" "$S/$f"; done
for len in $(seq 240 250); do
  name=n/$(printf 'y%.0s' $(seq "$len"))
  assert_same "$P/$name" "$S/$name"
  [[ -f $P/.fusemirror/bitmaps/$name.fmbm && -f $S/.fusemirror/images/$name.json ]] ||
    soft_fail "a $len-byte image has no bitmap or no record"
done
# the secondary's copy of the setuid program runs as its owner, never as root (the daemon
# held it open for writing until the unmount: ETXTBSY before)
euid=$(user "$S/u/sh2" -p -c 'id -u' 2>&1 || true)
[[ $euid == "$U" ]] || soft_fail "the secondary copy of a setuid program ran with euid '$euid', want $U"
# ------------------------------------------------------------------ unprivileged mount
FM_CONTEXT=unpriv
# fusermount3 needs the caller in passwd (uid 65534 is) and /dev/fuse open to it (Debian's
# udev makes it 0666; some machines have 0600: opened up for this section only).
fuse_mode=$(stat -c %a /dev/fuse)
chmod o+rw /dev/fuse
UP=$FM_TMP/up
mkdir -p "$UP/p" "$UP/s" "$UP/m"
chown 65534:65534 "$UP/p" "$UP/s" "$UP/m"
chmod 755 "$UP"
if nobody "$FUSEMIRROR" create "$UP/p" "$UP/s" >"$FM_TMP/logs/unpriv.log" 2>&1 &&
  nobody "$FUSEMIRROR" mount "$UP/p" "$UP/m" >>"$FM_TMP/logs/unpriv.log" 2>&1; then
  fm_track_mount "$UP/m"
  nobody sh -c "head -c 1048576 /dev/urandom >'$UP/m/a.img'; umask 0; touch '$UP/m/b.img'; mkdir '$UP/m/d'" ||
    soft_fail "an unprivileged user could not write its own mount"
  fm_timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$FUSEMIRROR" wait "$UP/m" || soft_fail "unprivileged wait: exit $?"
  fm_timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$FUSEMIRROR" unmount "$UP/m" || soft_fail "unprivileged unmount: exit $?"
  cmp -s "$UP/p/a.img" "$UP/s/a.img" || soft_fail "unprivileged set: the legs differ"
  for f in b.img d; do
    for leg in p s; do
      [[ $(stat -c '%u %a' "$UP/$leg/$f") == "65534 $([[ $f == d ]] && echo 777 || echo 666)" ]] ||
        soft_fail "unprivileged set: $leg/$f is $(stat -c '%u %a' "$UP/$leg/$f")"
    done
  done
else
  soft_fail "an unprivileged user could not create and mount its own set: $(tail -3 "$FM_TMP/logs/unpriv.log")"
fi
chmod "$fuse_mode" /dev/fuse

fm_log "hostile users: setuid copies checked at open, remount and re-add; control tree checked for 3 hidden paths; names of 240-255 bytes"
fm_pass
