#!/usr/bin/env bash
# test/bench/profile.sh — profile one FUSE block-image server under one fio workload.
#
#   sudo test/bench/profile.sh [WORKLOAD] [SECONDS]
#   sudo PROF_TARGET=qemu test/bench/profile.sh randread32 10
#
# WORKLOAD: randwrite32 (default; 4K random writes, libaio qd32), seqwrite (1M, qd4),
#           fsyncwrite (4K random writes, fdatasync after each), randread32, randread1
#           (4K random reads, qd32 / qd1), seqread (1M, qd4); for PROF_TARGET=fm any of
#           them with "-nobitmap" appended (the set is created with --no-bitmap).
# PROF_TARGET: what serves the image, as in test/bench/run:
#   fm       (default) (d): a mirror set as shipped, fusemirror's Release build;
#   ceiling  (f): test/bench/fm_ceilingfs --direct-read, one leg, nothing else;
#   qemu     (g): qemu-storage-daemon, a quorum of two raw files (cache.direct=on,
#            aio=io_uring, vote-threshold=1, read-pattern=fifo) exported over FUSE.
# Sets it up under $BENCH_DIR/prof.PID, attaches a direct-I/O loop device to a
# ${PROF_IMG_MB:-1024} MiB image, lays it out, then runs fio for SECONDS (default 10),
# time based (reads: the backing files' page cache dropped first), three times:
#   1. counted: per request, the server's CPU (all its threads, /proc/PID/stat), the
#      machine's CPU (/proc/stat) and its context switches — the figures to set two
#      servers side by side with;
#   2. perf record -a -g (cpu-clock sampling: the VM has no hardware counters) -> the
#      machine's samples by command, then the server's (all its threads, io_uring's
#      workers included) top functions by self and by inclusive time, and by object;
#   3. perf trace -s (syscall counts and time, per thread) when the kernel allows it,
#      else strace -c -f: where the server's threads *wait* (fdatasync, pwrite, futex).
# Output goes to stdout and $BENCH_DIR/profile.TARGET.WORKLOAD/ (perf.data, reports).
# Needs root and linux-perf (apt-get install linux-perf); strace as a fallback.
set -Eeuo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WL=${1:-randwrite32}
SECS=${2:-10}
TARGET=${PROF_TARGET:-fm}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fm-bench}
BUILD=${BENCH_BUILD:-$SRC/build-bench}
FM=$BUILD/fusemirror/fusemirror
CEILINGFS=$BUILD/test/bench/fm_ceilingfs
IMG_MB=${PROF_IMG_MB:-1024}
OUT=$BENCH_DIR/profile.$TARGET.$WL
log() { printf '[profile %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root"
command -v perf >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || die "cannot install linux-perf"
}

create_args=()
base=$WL
if [[ $WL == *-nobitmap ]]; then
  [[ $TARGET == fm ]] || die "-nobitmap is a fusemirror workload (PROF_TARGET=fm)"
  create_args+=(--no-bitmap); base=${WL%-nobitmap}
fi
case $base in
  randwrite32) fio_args=(--rw=randwrite --bs=4k --iodepth=32) ;;
  seqwrite) fio_args=(--rw=write --bs=1M --iodepth=4) ;;
  fsyncwrite) fio_args=(--rw=randwrite --bs=4k --iodepth=1 --fdatasync=1) ;;
  randread32) fio_args=(--rw=randread --bs=4k --iodepth=32) ;;
  randread1) fio_args=(--rw=randread --bs=4k --iodepth=1) ;;
  seqread) fio_args=(--rw=read --bs=1M --iodepth=4) ;;
  *) die "unknown workload $WL" ;;
esac
dir="write"; [[ $base == *read* ]] && dir="read"
case $TARGET in
  fm) [[ -x $FM ]] || die "$FM missing: build with test/bench/run (or cmake -DCMAKE_BUILD_TYPE=Release -B $BUILD)" ;;
  ceiling) [[ -x $CEILINGFS ]] || die "$CEILINGFS missing: build with test/bench/run" ;;
  qemu) command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon missing (apt-get install qemu-system-common)" ;;
  *) die "unknown PROF_TARGET $TARGET (fm, ceiling or qemu)" ;;
esac

S=$BENCH_DIR/prof.$$
LOOP=""
PID=""
cleanup() {
  set +e
  [[ -n $LOOP ]] && losetup -d "$LOOP"
  sleep 0.3
  if [[ $TARGET == fm ]] && mountpoint -q "$S/m" 2>/dev/null; then
    "$FM" unmount "$S/m" 2>/dev/null || fusermount3 -u -z "$S/m"
  elif [[ $TARGET == ceiling ]] && mountpoint -q "$S/m" 2>/dev/null; then
    fusermount3 -u "$S/m" || fusermount3 -u -z "$S/m"
  fi
  # qemu-storage-daemon removes its export when it ends; the others end after the unmount.
  [[ -n $PID && $TARGET == qemu ]] && kill "$PID" 2>/dev/null
  [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null && sleep 2 && kill "$PID" 2>/dev/null
  rm -rf "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_mounted() { # PATH: until PATH is a mount point served by $PID (max 10 s)
  for _ in $(seq 200); do mountpoint -q "$1" && return 0; kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  die "$TARGET did not mount $1 (see $OUT/server.log)"
}
mkdir -p "$BENCH_DIR" "$OUT"; mkdir -m 700 "$S"
case $TARGET in
  fm)
    mkdir -m 700 "$S/p" "$S/s"; mkdir "$S/m"
    "$FM" create "$S/p" "$S/s" "${create_args[@]}" >/dev/null
    "$FM" mount "$S/p" "$S/m" 2>"$OUT/server.log"
    PID=$(jq -r .pid "$S/m/.fusemirror/status.json")
    truncate -s "${IMG_MB}M" "$S/m/img"
    IMG=$S/m/img; BACKING=("$S/p/img" "$S/s/img") ;;
  ceiling)
    mkdir "$S/m"; truncate -s "${IMG_MB}M" "$S/backing.img"
    "$CEILINGFS" "$S/backing.img" "$S/m" --direct-read >"$OUT/server.log" 2>&1 &
    PID=$!; wait_mounted "$S/m"
    IMG=$S/m/img; BACKING=("$S/backing.img") ;;
  qemu)
    truncate -s "${IMG_MB}M" "$S/leg0.img" "$S/leg1.img"; touch "$S/img"
    qemu-storage-daemon \
      --blockdev "driver=file,node-name=leg0,filename=$S/leg0.img,cache.direct=on,aio=io_uring" \
      --blockdev "driver=file,node-name=leg1,filename=$S/leg1.img,cache.direct=on,aio=io_uring" \
      --blockdev "driver=quorum,node-name=mirror,children.0=leg0,children.1=leg1,vote-threshold=1,read-pattern=fifo" \
      --export "type=fuse,id=exp0,node-name=mirror,mountpoint=$S/img,writable=on" >"$OUT/server.log" 2>&1 &
    PID=$!; wait_mounted "$S/img"
    IMG=$S/img; BACKING=("$S/leg0.img" "$S/leg1.img") ;;
esac
LOOP=$(losetup --direct-io=on -f --show "$IMG")
fio --name=layout --filename="$LOOP" --rw=write --bs=1M --ioengine=libaio --direct=1 --iodepth=8 \
  --end_fsync=1 --output-format=terse >/dev/null 2>&1
log "$TARGET: server pid $PID, loop $LOOP (dio $(cat "/sys/block/${LOOP#/dev/}/loop/dio"))"

flushes() { [[ $TARGET == fm ]] && jq -r '.images[0].bitmap_flushes' "$S/m/.fusemirror/status.json" || echo 0; }
before_run() { # writes: a clean bitmap (fm); reads: the backing files' cache dropped (cold)
  if [[ $TARGET == fm ]]; then
    "$FM" wait --clean "$S/m" img --timeout 30 >/dev/null || log "note: the bitmap is not clean before this run"
  fi
  sync
  if [[ $dir == read ]]; then
    for f in "${BACKING[@]}"; do dd if="$f" iflag=nocache count=0 status=none; done
  fi
}
trim() { sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'; }
run_fio() {
  local end=(--end_fsync=1); [[ $dir == read ]] && end=()
  fio --name=prof --filename="$LOOP" --ioengine=libaio --direct=1 --time_based --runtime="$SECS" \
    --norandommap --randrepeat=0 "${end[@]}" --output-format=json "${fio_args[@]}" >"$OUT/fio.$1.json" 2>/dev/null
  jq -r ".jobs[0].$dir | \"\(.iops | floor) IOPS, \(.bw_bytes / 1048576 | floor) MiB/s, clat mean \(.clat_ns.mean / 1000 | floor) us\"" "$OUT/fio.$1.json"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }  # utime + stime of all its threads
machine() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 } /^ctxt / { print $2 }' /proc/stat | paste -sd' '; }

HZ=$(getconf CLK_TCK)
log "1/3 counted run of $WL for ${SECS}s"
before_run
read -r m0 x0 < <(machine); c0=$(cpu_ticks); f0=$(flushes)
echo "fio ($TARGET, $WL, counted): $(run_fio count)"
read -r m1 x1 < <(machine); c1=$(cpu_ticks); f1=$(flushes)
ios=$(jq -r ".jobs[0].$dir.total_ios" "$OUT/fio.count.json")
awk -v hz="$HZ" -v n="$ios" -v c=$((c1 - c0)) -v m=$((m1 - m0)) -v x=$((x1 - x0)) -v f=$((f1 - f0)) -v t="$TARGET" 'BEGIN {
  if (n == 0) { print "no requests completed"; exit }
  printf "per request (%d): %s CPU %.1f us, machine CPU %.1f us, context switches %.2f", n, t, 1e6 * c / hz / n, 1e6 * m / hz / n, x / n
  if (t == "fm") printf ", bitmap flushes %d (%.2f per 1000 requests)", f, 1000 * f / n
  printf "\n" }' | tee "$OUT/per-request.txt"

log "2/3 perf record -a -g during $WL for ${SECS}s"
before_run
perf record -a -F 2999 -g -o "$OUT/perf.data" -- sleep "$((SECS + 1))" >/dev/null 2>"$OUT/perf-record.err" &
prec=$!
sleep 0.3
echo "fio ($TARGET, $WL, under perf record): $(run_fio perf)"
wait "$prec" || true
report() { perf report -i "$OUT/perf.data" --stdio "$@" 2>/dev/null | grep -E '^ +[0-9]' | trim; }
echo
echo "== the machine's samples by command (all CPUs) =="
report --no-children --sort comm | head -12 | tee "$OUT/by-comm.txt" || true
echo
echo "== $TARGET (pid $PID, all threads): top functions by self time (share of its samples) =="
report --pid "$PID" --no-children --sort symbol --percent-limit 0.8 | head -30 | tee "$OUT/top-self.txt" || true
echo
echo "== $TARGET: by shared object =="
report --pid "$PID" --no-children --sort dso | head -10 | tee "$OUT/top-dso.txt" || true
echo
echo "== $TARGET: inclusive (children) time, top entries =="
report --pid "$PID" --children --sort symbol -g none --percent-limit 3 | head -40 | tee "$OUT/top-children.txt" || true

echo
log "3/3 syscall time of the server's threads during $WL for ${SECS}s"
before_run
if perf trace -s -p "$PID" -o "$OUT/trace.txt" -- sleep 0.1 >/dev/null 2>&1; then
  perf trace -s -p "$PID" -o "$OUT/trace.txt" -- sleep "$((SECS + 1))" >/dev/null 2>&1 &
  tpid=$!
  sleep 0.3
  echo "fio ($TARGET, $WL, under perf trace): $(run_fio trace)"
  wait "$tpid" || true
  # Sum the per-thread tables: syscall, calls, total ms.
  awk '$1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && NF >= 6 { calls[$1] += $2; ms[$1] += $4 }
       END { for (s in ms) printf "%-18s %10d calls %12.1f ms total %9.1f us/call\n", s, calls[s], ms[s], 1000 * ms[s] / calls[s] }' \
    "$OUT/trace.txt" | sort -k4 -gr | head -15 | tee "$OUT/syscalls.txt" || true
elif command -v strace >/dev/null; then
  strace -c -f -p "$PID" -o "$OUT/strace.txt" &
  tpid=$!
  sleep 0.5
  echo "fio ($TARGET, $WL, under strace -c): $(run_fio trace)"
  kill -INT "$tpid"; wait "$tpid" || true
  head -25 "$OUT/strace.txt"
else
  echo "(no perf trace and no strace: syscall summary skipped)"
fi
log "reports in $OUT"
