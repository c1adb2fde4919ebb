#!/usr/bin/env bash
# test/bench/profile.sh — profile the fusemirror daemon under one write workload.
#
#   sudo test/bench/profile.sh [WORKLOAD] [SECONDS]
#
# WORKLOAD: randwrite32 (default; 4K random writes, libaio qd32), seqwrite (1M, qd4),
#           fsyncwrite (4K random writes, fdatasync after each), or any of them with
#           "-nobitmap" appended (the set is created with --no-bitmap).
# Sets up a mirror set as shipped under $BENCH_DIR/prof.PID, attaches a direct-I/O loop
# device to a ${PROF_IMG_MB:-1024} MiB image, lays it out, then runs fio for SECONDS
# (default 10) while recording the daemon:
#   1. perf record -g (cpu-clock sampling: the VM has no hardware counters) ->
#      top functions by self time, and by inclusive time;
#   2. perf trace -s (syscall counts and time, per thread) when the kernel allows it,
#      else strace -c -f: where the daemon's threads *wait* (fdatasync, pwrite, futex).
# Output goes to stdout and $BENCH_DIR/profile.WORKLOAD/ (perf.data, reports).
# Needs root and linux-perf (apt-get install linux-perf); strace as a fallback.
set -Eeuo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WL=${1:-randwrite32}
SECS=${2:-10}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fm-bench}
BUILD=${BENCH_BUILD:-$SRC/build-bench}
FM=$BUILD/fusemirror/fusemirror
IMG_MB=${PROF_IMG_MB:-1024}
OUT=$BENCH_DIR/profile.$WL
log() { printf '[profile %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $FM ]] || die "$FM missing: build with test/bench/run (or cmake -DCMAKE_BUILD_TYPE=Release -B $BUILD)"
command -v perf >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || die "cannot install linux-perf"
}

create_args=()
base=$WL
if [[ $WL == *-nobitmap ]]; then create_args+=(--no-bitmap); base=${WL%-nobitmap}; fi
case $base in
  randwrite32) fio_args=(--rw=randwrite --bs=4k --iodepth=32) ;;
  seqwrite) fio_args=(--rw=write --bs=1M --iodepth=4) ;;
  fsyncwrite) fio_args=(--rw=randwrite --bs=4k --iodepth=1 --fdatasync=1) ;;
  *) die "unknown workload $WL" ;;
esac

S=$BENCH_DIR/prof.$$
LOOP=""
PID=""
cleanup() {
  set +e
  [[ -n $LOOP ]] && losetup -d "$LOOP"
  sleep 0.3
  if mountpoint -q "$S/m" 2>/dev/null; then
    "$FM" unmount "$S/m" 2>/dev/null || fusermount3 -u -z "$S/m"
  fi
  [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null && sleep 2 && kill "$PID" 2>/dev/null
  rm -rf "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p -m 700 "$S/p" "$S/s"; mkdir -p "$S/m" "$OUT"
"$FM" create "$S/p" "$S/s" "${create_args[@]}" >/dev/null
"$FM" mount "$S/p" "$S/m" 2>/dev/null
PID=$(jq -r .pid "$S/m/.fusemirror/status.json")
truncate -s "${IMG_MB}M" "$S/m/img"
LOOP=$(losetup --direct-io=on -f --show "$S/m/img")
fio --name=layout --filename="$LOOP" --rw=write --bs=1M --ioengine=libaio --direct=1 --iodepth=8 \
  --end_fsync=1 --output-format=terse >/dev/null 2>&1
log "daemon pid $PID, loop $LOOP (dio $(cat /sys/block/${LOOP#/dev/}/loop/dio)); waiting for a clean bitmap"
for _ in $(seq 60); do
  [[ $(jq -r '.images[0].dirty_chunks' "$S/m/.fusemirror/status.json") == 0 ]] && break
  sleep 0.5
done

trim() { sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'; }
run_fio() {
  fio --name=prof --filename="$LOOP" --ioengine=libaio --direct=1 --time_based --runtime="$SECS" \
    --norandommap --randrepeat=0 --end_fsync=1 --output-format=json "${fio_args[@]}" >"$OUT/fio.$1.json" 2>/dev/null
  jq -r '.jobs[0].write | "\(.iops | floor) IOPS, \(.bw_bytes / 1048576 | floor) MiB/s, clat mean \(.clat_ns.mean / 1000 | floor) us"' "$OUT/fio.$1.json"
}

flushes0=$(jq -r '.images[0].bitmap_flushes' "$S/m/.fusemirror/status.json")
log "1/2 perf record -g on the daemon during $WL for ${SECS}s"
perf record -F 2999 -g -p "$PID" -o "$OUT/perf.data" -- sleep "$((SECS + 1))" >/dev/null 2>"$OUT/perf-record.err" &
prec=$!
sleep 0.3
echo "fio ($WL, under perf record): $(run_fio perf)"
wait "$prec" || true
flushes1=$(jq -r '.images[0].bitmap_flushes' "$S/m/.fusemirror/status.json")
writes=$(jq -r '.jobs[0].write.total_ios' "$OUT/fio.perf.json")
echo "bitmap flushes during the run: $((flushes1 - flushes0)) for $writes writes ($(awk -v f=$((flushes1 - flushes0)) -v w="$writes" 'BEGIN { if (w) printf "%.1f", 1000 * f / w }') per 1000 writes)"

echo
echo "== top functions by self time (daemon, all threads; cpu-clock samples) =="
perf report -i "$OUT/perf.data" --no-children --stdio --sort symbol --percent-limit 0.8 2>/dev/null |
  grep -E '^ +[0-9]' | trim | head -30 | tee "$OUT/top-self.txt" || true
echo
echo "== by shared object =="
perf report -i "$OUT/perf.data" --no-children --stdio --sort dso 2>/dev/null | grep -E '^ +[0-9]' | trim |
  head -10 | tee "$OUT/top-dso.txt" || true
echo
echo "== inclusive (children) time, top entries =="
perf report -i "$OUT/perf.data" --children --stdio --sort symbol -g none --percent-limit 3 2>/dev/null |
  grep -E '^ +[0-9]' | trim | head -40 | tee "$OUT/top-children.txt" || true

echo
for _ in $(seq 60); do
  [[ $(jq -r '.images[0].dirty_chunks' "$S/m/.fusemirror/status.json") == 0 ]] && break
  sleep 0.5
done
log "2/2 syscall time of the daemon during $WL for ${SECS}s"
if perf trace -s -p "$PID" -o "$OUT/trace.txt" -- sleep 0.1 >/dev/null 2>&1; then
  perf trace -s -p "$PID" -o "$OUT/trace.txt" -- sleep "$((SECS + 1))" >/dev/null 2>&1 &
  tpid=$!
  sleep 0.3
  echo "fio ($WL, under perf trace): $(run_fio trace)"
  wait "$tpid" || true
  # Sum the per-thread tables: syscall, calls, total ms.
  awk '$1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && NF >= 6 { calls[$1] += $2; ms[$1] += $4 }
       END { for (s in ms) printf "%-18s %10d calls %12.1f ms total %9.1f us/call\n", s, calls[s], ms[s], 1000 * ms[s] / calls[s] }' \
    "$OUT/trace.txt" | sort -k4 -gr | head -15 | tee "$OUT/syscalls.txt" || true
elif command -v strace >/dev/null; then
  strace -c -f -p "$PID" -o "$OUT/strace.txt" &
  tpid=$!
  sleep 0.5
  echo "fio ($WL, under strace -c): $(run_fio trace)"
  kill -INT "$tpid"; wait "$tpid" || true
  head -25 "$OUT/strace.txt"
else
  echo "(no perf trace and no strace: syscall summary skipped)"
fi
log "reports in $OUT"
