#!/usr/bin/env bash
# test/bench/al_price.sh — what the bitmap's activity log buys and what it costs (issue 18):
# random 4 KiB writes at queue depth 1 on a cold bitmap, then a crash (kill -9 of the
# daemon) and the resync it leaves, with the log on and off.
#
#   sudo test/bench/al_price.sh          about 100 s: 512 MiB image, 4 runs of 15 s
#
# Per setting of al_extents (docs/config.md; default "1024 0": the shipped bound and off):
# a new set (64 KiB chunks, daemon_sleep 5) and an image filled through the mount. Then per
# write rate (default "0 200": as fast as qd1 goes, and capped at 200 IOPS — a sparse load,
# where the log's whole extents show their price): unmounted (clean: every bit cleared) and
# mounted again — a cold bitmap; fio randwrite 4 KiB qd1 through `losetup --direct-io=on`
# (as test/bench/run does) for AL_PRICE_SECS; the image held open (the last close would
# clear the bits), the loop detached, the daemon killed with SIGKILL; mounted again, and
# the resync it starts is waited for. Prints a table: write IOPS, bitmap flushes during the
# load, dirty chunks and active extents at the kill, the chunks the activity log's record
# spared (status al_record_spared: set by the log and never written — a kill -9 keeps the
# record, a power cut does not, docs/write-path.md §3d), bytes the resync copied (status
# sync.copied_bytes) and how long the mount took to be in sync. After a power cut the
# resync would copy every dirty chunk instead: the "dirty chunks" column x 64 KiB.
#
# Environment:
#   AL_PRICE_SECS     seconds of load per run (default 15)
#   AL_PRICE_RATES    write rates to compare, IOPS, 0 = unlimited (default "0 200")
#   AL_PRICE_MB       image size in MiB (default 512)
#   AL_PRICE_SETTINGS al_extents values to compare (default "1024 0")
#   BENCH_DIR         scratch root (default /var/tmp/fm-bench); works in BENCH_DIR/al.PID
#   BENCH_BUILD       build directory holding fusemirror/fusemirror (default: SRC/build-bench
#                     when it has one, else SRC/build)
# Needs root (losetup, FUSE), fio and jq. Not part of ctest. Cleans up on every exit: only
# the loop devices it attached, the mounts it made and the daemons it started.
set -Eeuo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=${AL_PRICE_SECS:-15}
RATES=${AL_PRICE_RATES:-0 200}
MB=${AL_PRICE_MB:-512}
SETTINGS=${AL_PRICE_SETTINGS:-1024 0}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fm-bench}
if [[ -n ${BENCH_BUILD:-} ]]; then BUILD=$BENCH_BUILD
elif [[ -x $SRC/build-bench/fusemirror/fusemirror ]]; then BUILD=$SRC/build-bench
else BUILD=$SRC/build; fi
FM=$BUILD/fusemirror/fusemirror

log() { printf '[al_price %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (losetup and FUSE mounts)"
for t in fio jq losetup fusermount3; do command -v "$t" >/dev/null || die "$t is missing"; done
[[ -x $FM ]] || die "$FM missing (build first, or set BENCH_BUILD)"
[[ $SECS =~ ^[0-9]+$ && $MB =~ ^[0-9]+$ ]] || die "AL_PRICE_SECS and AL_PRICE_MB must be whole numbers"

mkdir -p "$BENCH_DIR"
W=$BENCH_DIR/al.$$
mkdir -m 700 "$W"
LOOP="" MNT="" DPID="" HOLD=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM ERR
  set +e
  [[ -n $HOLD ]] && exec {HOLD}<&-
  [[ -n $LOOP ]] && losetup -d "$LOOP"
  if [[ -n $MNT ]] && mountpoint -q "$MNT"; then
    "$FM" unmount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
  fi
  if [[ -n $DPID ]]; then
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DPID" 2>/dev/null && kill -9 "$DPID"
  fi
  rm -rf --one-file-system "$W"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR

status() { cat "$MNT/.fusemirror/status.json"; }
image() { status | jq -r ".images[] | select(.name == \"disk.img\") | $1"; }
mount_set() { # P M: mounts (daemonized), sets DPID
  mkdir -p "$2"
  "$FM" mount "$1" "$2" 2>>"$W/mount.log" || die "mount of $1 failed: $(tail -1 "$W/mount.log")"
  MNT=$2
  DPID=$(status | jq -r .pid)
  [[ $DPID =~ ^[0-9]+$ ]] || die "no daemon pid in $2/.fusemirror/status.json"
}
unmount_set() {
  local i
  for i in $(seq 40); do
    "$FM" unmount "$MNT" 2>/dev/null && break
    ((i == 40)) && die "cannot unmount $MNT"
    sleep 0.25
  done
  for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  MNT="" DPID=""
}

declare -A IOPS FLUSHES DIRTY ACTIVE COPIED RESYNC_S SPARED
for al in $SETTINGS; do
  [[ $al =~ ^[0-9]+$ ]] || die "AL_PRICE_SETTINGS: '$al' is not a number"
  d=$W/al$al
  mkdir -m 700 -p "$d/p" "$d/s"
  "$FM" create "$d/p" "$d/s" --chunk-size 64K >/dev/null
  jq --argjson n "$al" '.al_extents = $n' "$d/p/.fusemirror/config.json" >"$d/config.json"
  cat "$d/config.json" >"$d/p/.fusemirror/config.json"
  log "al_extents $al: filling a $MB MiB image"
  mount_set "$d/p" "$d/m"
  fio --name=fill --filename="$d/m/disk.img" --size="${MB}M" --rw=write --bs=1M --direct=1 \
    --ioengine=libaio --iodepth=4 --end_fsync=1 --output-format=terse >/dev/null 2>"$W/fio.err" ||
    die "fill failed: $(tail -3 "$W/fio.err")"
  for rate in $RATES; do
    [[ $rate =~ ^[0-9]+$ ]] || die "AL_PRICE_RATES: '$rate' is not a number"
    k=$al/$rate
    unmount_set  # clean: every bit cleared, the checksums recorded
    mount_set "$d/p" "$d/m"
    [[ $(image .dirty_chunks) == 0 ]] || die "the bitmap is not clean after a clean unmount"
    f0=$(image .bitmap_flushes)
    exec {HOLD}<"$d/m/disk.img"
    LOOP=$(losetup --direct-io=on -f --show "$d/m/disk.img")
    log "al_extents $al: random 4 KiB writes, qd1, rate ${rate:-0} (0: unlimited), ${SECS} s on $LOOP (dio $(cat "/sys/block/${LOOP#/dev/}/loop/dio"))"
    cap=()
    ((rate > 0)) && cap=(--rate_iops="$rate")
    fio --name=rw --filename="$LOOP" --rw=randwrite --bs=4k --iodepth=1 --ioengine=libaio --direct=1 \
      --time_based --runtime="$SECS" --norandommap --randrepeat=0 --output-format=json "${cap[@]}" \
      >"$W/fio.json" 2>"$W/fio.err" || die "fio failed: $(tail -3 "$W/fio.err")"
    IOPS[$k]=$(jq -r '.jobs[0].write.iops | floor' "$W/fio.json")
    losetup -d "$LOOP"
    LOOP=""
    FLUSHES[$k]=$(($(image .bitmap_flushes) - f0))
    DIRTY[$k]=$(image .dirty_chunks)
    ACTIVE[$k]=$(image .active_extents)
    # The crash: the daemon dies with the image open and its bits as they are.
    kill -9 "$DPID"
    for _ in $(seq 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.02; done
    exec {HOLD}<&-
    HOLD=""
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
    MNT="" DPID=""
    t0=$(date +%s%N)
    mount_set "$d/p" "$d/m"
    "$FM" wait "$MNT" disk.img --timeout 300 2>>"$W/mount.log" || die "the resync did not finish"
    RESYNC_S[$k]=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    COPIED[$k]=$(image .sync.copied_bytes)
    SPARED[$k]=$(image '.al_record_spared // 0')
    log "al_extents $al, rate $rate: ${IOPS[$k]} IOPS, resync copied ${COPIED[$k]} bytes"
  done
  unmount_set
done

printf '\nactivity log: random 4 KiB writes qd1 for %s s on a cold %s MiB image (64 KiB chunks, 4 MiB extents), then kill -9 and the resync\n' "$SECS" "$MB"
printf '%-11s %-10s %10s %15s %13s %15s %14s %18s %9s\n' al_extents "rate cap" "write IOPS" "bitmap flushes" "dirty chunks" "active extents" "record spared" "resync copied MiB" "resync s"
for rate in $RATES; do
  for al in $SETTINGS; do
    k=$al/$rate
    printf '%-11s %-10s %10s %15s %13s %15s %14s %18s %9s\n' "$al" "$( ((rate > 0)) && echo "$rate" || echo none)" \
      "${IOPS[$k]}" "${FLUSHES[$k]}" "${DIRTY[$k]}" "${ACTIVE[$k]}" "${SPARED[$k]}" \
      "$(awk -v b="${COPIED[$k]}" 'BEGIN { printf "%.1f", b / 1048576 }')" "${RESYNC_S[$k]}"
  done
done
echo "(dirty chunks: every bit set at the kill — what a power cut resyncs; resync copied: a kill -9, the record believed)"
