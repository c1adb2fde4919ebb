#!/usr/bin/env bash
# fusemirror end to end: build, create a mirror set, put ext4 on a mirrored image through a
# loop device, copy files in, watch the bitmap go dirty and clean again, unmount, and prove
# the two backing files are identical.
#
#   sudo ./scripts/demo.sh          (root: loop devices and mount(8) need it)
#   KEEP=1 sudo ./scripts/demo.sh   keep the temporary directories for a look afterwards
#   FUSEMIRROR=/path/to/fusemirror sudo -E ./scripts/demo.sh   use that binary, skip the build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

if ((EUID != 0)); then
  if command -v sudo >/dev/null; then exec sudo --preserve-env=KEEP,FUSEMIRROR "$0" "$@"; fi
  echo "demo.sh: needs root (losetup, mount); sudo is not available" >&2
  exit 1
fi
umask 022

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "dependencies and build"
./scripts/install-deps.sh
if [[ -n "${FUSEMIRROR:-}" ]]; then
  fm="$FUSEMIRROR"
  echo "using $fm (no build)"
else
  ./scripts/build.sh
  fm="$repo/build/fusemirror/fusemirror"
fi
[[ -x "$fm" ]] || { echo "demo.sh: $fm was not built" >&2; exit 1; }

work="$(mktemp -d /tmp/fusemirror-demo.XXXXXX)"
chmod 0755 "$work"
primary="$work/primary" secondary="$work/secondary" mnt="$work/mnt" ext="$work/ext4"
mkdir "$primary" "$secondary" "$mnt" "$ext"
loopdev=""

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if mountpoint -q "$ext"; then umount "$ext" || umount -l "$ext"; fi
  if [[ -n "$loopdev" ]]; then losetup -d "$loopdev"; fi
  if mountpoint -q "$mnt"; then
    "$fm" unmount "$mnt" || fusermount3 -u "$mnt" || umount -l "$mnt"
  fi
  if ((rc != 0)) && [[ -f "$primary/.fusemirror/fusemirror.log" ]]; then
    echo "--- last lines of $primary/.fusemirror/fusemirror.log:" >&2
    tail -n 30 "$primary/.fusemirror/fusemirror.log" >&2
  fi
  if [[ -n "${KEEP:-}" ]] || mountpoint -q "$mnt" || mountpoint -q "$ext"; then
    echo "demo.sh: left $work in place" >&2
  else
    rm -rf "$work"
  fi
  ((rc == 0)) || echo "demo.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `cmd` every 0.2 s for up to `secs` seconds; fails naming `what`.
wait_for() {
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  echo "demo.sh: timed out after ${secs}s waiting for $what" >&2
  return 1
}

step "create the mirror set: $primary -> $secondary"
"$fm" create "$primary" "$secondary" --chunk-size 64K --daemon-sleep 2

step "mount it at $mnt"
"$fm" mount "$primary" "$mnt"
wait_for 10 "the mount at $mnt" mountpoint -q "$mnt"

step "a 256 MiB image, a loop device, ext4"
truncate -s 256M "$mnt/disk.img"
loopdev="$(losetup --find --show "$mnt/disk.img")"
echo "loop device: $loopdev"
mkfs.ext4 -q "$loopdev"
mount "$loopdev" "$ext"

step "copy /usr/share/doc into the ext4 ($(du -sh /usr/share/doc | cut -f1))"
cp -a /usr/share/doc "$ext/"
sync -f "$ext"

step "status while chunks are dirty"
"$fm" status "$mnt"

step "unmount the ext4, detach $loopdev, wait for the bitmap to clean"
umount "$ext"
losetup -d "$loopdev"
loopdev=""
"$fm" wait --clean "$mnt" disk.img --timeout 60   # in sync, and every bit cleared

step "status when clean"
"$fm" status "$mnt"
"$fm" status "$mnt" --json | jq .

step "examine the bitmap"
"$fm" examine-bitmap "$primary/.fusemirror/bitmaps/disk.img.fmbm"

step "unmount"
"$fm" unmount "$mnt"
mountpoint -q "$mnt" && { echo "demo.sh: $mnt still mounted" >&2; exit 1; }

step "the bitmap after a clean unmount (state: clean)"
"$fm" examine-bitmap "$primary/.fusemirror/bitmaps/disk.img.fmbm"

step "compare the two legs"
ls -ls "$primary/disk.img" "$secondary/disk.img"
cmp "$primary/disk.img" "$secondary/disk.img"
echo "mirrors identical"
