#!/bin/bash
# powercut_recover.sh — fm_powercut's recovery step for one crash state (t_powercut.sh).
#
# fm_powercut wrote the state into FM_PC_MOUNT (the recorder's mount point, now a plain
# directory). This mounts the set on FM_PC_MOUNT/primary at FM_PC_FMNT, waits until
# `fusemirror wait --clean` says every image is in sync with no dirty chunk, and unmounts;
# fm_powercut then compares the legs and the acknowledged writes. With FM_PC_E2FSCK=IMAGE
# (an ext4 inside that image), both legs' copies of it must then pass `e2fsck -fn` after the
# journal replay alone (`e2fsck -E journal_only`: a plain `-fy` would also repair damage).
#
# Exit 0, or non-zero with one line on stderr saying what failed. Leaves nothing mounted.
set -uo pipefail
: "${FUSEMIRROR:?}" "${FM_PC_MOUNT:?}" "${FM_PC_FMNT:?}"
log=${FM_PC_LOGDIR:-/tmp}/recover.${FM_PC_STATE:-x}.log
mnt=$FM_PC_FMNT
pid=""

say() { printf 'recover state %s: %s\n' "${FM_PC_STATE:-?}" "$*" >&2; }
mounted() { awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
alive() { [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]; }

finish() {
  local rc=$1
  if mounted; then
    timeout -k 2 20 "$FUSEMIRROR" unmount "$mnt" >/dev/null 2>&1 || timeout -k 2 10 fusermount3 -u "$mnt" 2>/dev/null ||
      umount -l "$mnt" 2>/dev/null
  fi
  if [[ -n $pid ]]; then
    for _ in $(seq 1 300); do alive || break; sleep 0.1; done
    if alive; then
      kill -KILL "$pid" 2>/dev/null
      ((rc == 0)) && { say "the daemon did not exit after unmount"; rc=6; }
    fi
    wait "$pid" 2>/dev/null
  fi
  if ((rc != 0)); then
    say "daemon log tail:"
    tail -n 15 "$log" >&2
    tail -n 15 "$FM_PC_MOUNT/primary/.fusemirror/fusemirror.log" >&2 2>/dev/null
  else
    rm -f "$log"
  fi
  exit "$rc"
}

# A power cut is a new boot: the activity log's record, kept in the page cache only, is
# never believed after one (write-path.md §3d). This machine did not reboot, so the test
# build is told (FM_FAULT=al_record.other_boot) — else a record page the cut lost would
# be read as if it had survived.
export FM_FAULT=${FM_FAULT:+$FM_FAULT,}al_record.other_boot
env --default-signal=INT,QUIT "$FUSEMIRROR" mount "$FM_PC_MOUNT/primary" "$mnt" -f </dev/null >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  mounted && break
  alive || { say "the mount failed: $(tail -n 3 "$log" | tr '\n' ' ')"; pid=""; finish 3; }
  sleep 0.1
done
mounted || { say "not mounted after 20 s"; finish 3; }
# An image whose secondary had been failed before the power cut stays out (md keeps a faulty
# member out across restarts): the operator's re-add, then the bitmap's resync.
if ! degraded=$(timeout -k 5 30 "$FUSEMIRROR" status "$mnt" --json 2>&1 | jq -r '.sets[].images[] | select(.secondary_ok == false) | .name'); then
  say "fusemirror status failed: $degraded"
  finish 4
fi
while IFS= read -r img; do
  [[ -n $img ]] || continue
  if ! out=$(timeout -k 5 60 "$FUSEMIRROR" re-add "$mnt" "$img" 2>&1); then
    say "fusemirror re-add $img failed: $out"
    finish 4
  fi
done <<<"$degraded"
if ! out=$(timeout -k 5 120 "$FUSEMIRROR" wait "$mnt" --clean --timeout 90 2>&1); then
  say "fusemirror wait --clean failed: $out"
  finish 4
fi
if ! timeout -k 5 60 "$FUSEMIRROR" unmount "$mnt" >/dev/null 2>&1; then
  say "fusemirror unmount failed"
  finish 5
fi
for _ in $(seq 1 300); do alive || break; sleep 0.1; done
if alive; then say "the daemon did not exit after unmount"; finish 6; fi
wait "$pid"
rc=$?
pid=""
((rc == 0)) || { say "the daemon exited $rc after unmount"; finish 6; }

if [[ -n ${FM_PC_E2FSCK:-} ]]; then
  tmp=$(mktemp "${FM_PC_LOGDIR:-/tmp}/e2fsck.XXXXXX")
  for leg in primary secondary; do
    src=$FM_PC_MOUNT/$leg/$FM_PC_E2FSCK
    [[ -f $src ]] || continue
    cp --sparse=always "$src" "$tmp"
    # the journal replay only (what a mount would do), then a full check that must find nothing
    e2fsck -E journal_only -p "$tmp" >"$tmp.out" 2>&1
    rc=$?
    if ((rc > 1)); then say "the journal replay (e2fsck -E journal_only) on the $leg's $FM_PC_E2FSCK exited $rc: $(tail -n 5 "$tmp.out" | tr '\n' ' ')"; rm -f "$tmp" "$tmp.out"; finish 7; fi
    e2fsck -fn "$tmp" >"$tmp.out" 2>&1
    rc=$?
    if ((rc != 0)); then say "e2fsck -fn on the $leg's $FM_PC_E2FSCK exited $rc after the journal replay: $(tail -n 5 "$tmp.out" | tr '\n' ' ')"; rm -f "$tmp" "$tmp.out"; finish 7; fi
  done
  rm -f "$tmp" "$tmp.out"
fi
finish 0
