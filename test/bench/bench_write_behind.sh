#!/bin/bash
# bench_write_behind — write throughput of write-behind vs synchronous mirroring with a
# slow secondary (issue 4, "what must be shown"), from one run.
#
# Workloads (fio, ioengine=psync, buffered — a fusemirror mount is write-through — with
# end_fsync=1; each run on a fresh file, capped at BENCH_RUNTIME seconds):
#   seq   sequential 1 MiB writes, BENCH_SEQ_MB MiB (default 256)
#   rand  random 4 KiB writes, BENCH_RAND_MB MiB (default 32)
# Configurations:
#   primary-only   the plain backing directory (no FUSE, no mirror)
#   sync-fast      fusemirror synchronous, secondary an fm_faultfs mount with no delay
#   wb-fast        fusemirror --write-behind 256, the same fast secondary
#   wb-5ms         write-behind, the secondary adds 5 ms to every write (delay_ms_write=5)
#   sync-5ms       synchronous, the same 5 ms secondary
# Each figure is the median of BENCH_RUNS runs (default 3), taken round-robin over the
# configurations. Between runs the write-behind queue is drained, so runs do not overlap. Prints a table and the ratios
#   "WB 5ms / WB fast"   (target >= 0.90 for sequential: write-behind hides the latency)
#   "sync 5ms / WB fast" (shows what synchronous mirroring costs)
# with PASS/MISS, and writes every figure as JSON to $BENCH_JSON
# (default /tmp/bench_write_behind.json). Exit 0 unless the benchmark could not run
# (BENCH_STRICT=1: exit 1 on a MISS too).
#
# Environment: FUSEMIRROR, FM_FAULTFS (defaults: the build dir), BENCH_RUNS, BENCH_SEQ_MB,
# BENCH_RAND_MB, BENCH_RUNTIME (default 4 s), BENCH_JSON, BENCH_STRICT. Runs as root (FUSE).
# Takes about 2-4 minutes.
FM_TEST_TIMEOUT=${FM_TEST_TIMEOUT:-600}
. "$(dirname "$0")/../integration/lib.sh"

FM_FAULTFS=${FM_FAULTFS:-$(dirname "$FUSEMIRROR")/../test/tools/fm_faultfs}
[[ -x $FM_FAULTFS ]] || fail "fm_faultfs not found at $FM_FAULTFS (set FM_FAULTFS)"
command -v fio >/dev/null || fail "fio is missing"
RUNS=${BENCH_RUNS:-3}
SEQ_MB=${BENCH_SEQ_MB:-256}
RAND_MB=${BENCH_RAND_MB:-32}
RUNTIME=${BENCH_RUNTIME:-4}
BENCH_JSON=${BENCH_JSON:-/tmp/bench_write_behind.json}
WB=256
T_START=$SECONDS

# ---------------------------------------------------------------------------- fixture
BK=$FM_TMP/backing
FF=$FM_TMP/faultfs
PLAIN=$FM_TMP/plain
mkdir -p "$BK" "$FF" "$PLAIN"
fm_bg env --default-signal=INT,QUIT "$FM_FAULTFS" "$BK" "$FF" -f 2>>"$FM_TMP/logs/faultfs.log"
FF_PID=$FM_LAST_BG
fm_track_mount "$FF"
fm_wait_for "faultfs" 20 fm_is_mounted "$FF" || fail "fm_faultfs did not mount: $(tail -n 5 "$FM_TMP/logs/faultfs.log")"
ctl() { printf '%s\n' "$*" >"$FF/.faultfs" || fail "writing '$*' to .faultfs failed"; }

for s in sync wb; do
  mkdir -p "$FM_TMP/p_$s" "$FF/s_$s" "$FM_TMP/m_$s"
done
fm_create "$FM_TMP/p_sync" "$FF/s_sync" >/dev/null
fm_create "$FM_TMP/p_wb" "$FF/s_wb" --write-behind $WB >/dev/null
fm_mount "$FM_TMP/p_sync" "$FM_TMP/m_sync"
fm_mount "$FM_TMP/p_wb" "$FM_TMP/m_wb"

drained() { # drained MNT — no write-behind outstanding on any image
  local j
  j=$(timeout -k 5 30 "$FUSEMIRROR" status "$1" --json 2>/dev/null) || return 1
  jq -e '[.sets[].images[] | (.write_behind.outstanding // 0)] | add // 0 | . == 0' >/dev/null <<<"$j"
}
peak_of() { # peak_of MNT — the largest write_behind.peak among the images
  "$FUSEMIRROR" status "$1" --json 2>/dev/null | jq '[.sets[].images[] | (.write_behind.peak // 0)] | max // 0'
}

# one_run DIR KIND — one fio run on a fresh file in DIR; prints "MiB/s IOPS"
one_run() {
  local kind=$2 f=$1/bench.img out=$FM_TMP/logs/fio.json args
  if [[ $kind == seq ]]; then
    args=(--rw=write --bs=1M "--size=${SEQ_MB}m")
  else
    args=(--rw=randwrite --bs=4k "--size=${RAND_MB}m" --randrepeat=0)
  fi
  local mb=$RAND_MB
  [[ $kind == seq ]] && mb=$SEQ_MB
  rm -f -- "$f"
  truncate -s "${mb}M" "$f" || fail "truncate $f failed"
  fm_timeout $((RUNTIME + 120)) fio --name="$kind" --filename="$f" "${args[@]}" --ioengine=psync \
    --end_fsync=1 --runtime="$RUNTIME" --output-format=json --output="$out" >/dev/null ||
    fail "fio $kind on $f failed: $(tail -n 5 "$out")"
  jq -r '.jobs[0].write | "\(.bw_bytes / 1048576) \(.iops)"' "$out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------------------- runs
CONFIGS=(primary-only sync-fast wb-fast wb-5ms sync-5ms)
declare -A DIR=([primary-only]=$PLAIN [sync-fast]=$FM_TMP/m_sync [wb-fast]=$FM_TMP/m_wb
  [wb-5ms]=$FM_TMP/m_wb [sync-5ms]=$FM_TMP/m_sync)
declare -A DELAY=([primary-only]=0 [sync-fast]=0 [wb-fast]=0 [wb-5ms]=5 [sync-5ms]=5)
declare -A MBPS=() IOPS=() ALL=() PEAK=() BWS=() IOS=()
# Round-robin (run r of every configuration, then run r+1), so that a noisy moment on the
# machine hits every configuration alike rather than all runs of one.
for r in $(seq 1 "$RUNS"); do
  for c in "${CONFIGS[@]}"; do
    ctl "delay_ms_write=${DELAY[$c]}"
    for kind in seq rand; do
      if [[ ${DIR[$c]} != "$PLAIN" ]]; then
        fm_wait_for "drain" 120 drained "${DIR[$c]}" || fail "$c: the write-behind queue did not drain"
      fi
      read -r bw io <<<"$(one_run "${DIR[$c]}" "$kind")"
      BWS[$c.$kind]+="$bw "
      IOS[$c.$kind]+="$io "
      if [[ ${DIR[$c]} != "$PLAIN" ]]; then
        p=$(peak_of "${DIR[$c]}")
        ((p > ${PEAK[$c.$kind]:-0})) && PEAK[$c.$kind]=$p
      fi
    done
    [[ ${DIR[$c]} != "$PLAIN" ]] && { fm_wait_for "drain" 120 drained "${DIR[$c]}" || fail "$c: queue did not drain"; }
  done
  fm_log "round $r of $RUNS done"
done
for c in "${CONFIGS[@]}"; do
  for kind in seq rand; do
    # shellcheck disable=SC2086
    MBPS[$c.$kind]=$(median ${BWS[$c.$kind]})
    # shellcheck disable=SC2086
    IOPS[$c.$kind]=$(median ${IOS[$c.$kind]})
    # shellcheck disable=SC2086
    ALL[$c.$kind]=$(printf '%s\n' ${BWS[$c.$kind]} | jq -s -c 'map(. * 100 | round / 100)')
    fm_log "$c $kind: median $(printf '%.1f' "${MBPS[$c.$kind]}") MiB/s, $(printf '%.0f' "${IOPS[$c.$kind]}") IOPS (runs ${ALL[$c.$kind]} MiB/s)"
  done
done
ctl delay_ms_write=0

# ---------------------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
verdict() { awk -v r="$1" -v t="$2" -v d="$3" 'BEGIN { if (d == "ge") print (r >= t ? "PASS" : "MISS"); else print (r <= t ? "PASS" : "MISS") }'; }

printf '\nfusemirror write-behind benchmark (median of %d runs, fio psync, runtime cap %ss; seq %d MiB x 1 MiB, rand %d MiB x 4 KiB; write-behind limit %d)\n\n' \
  "$RUNS" "$RUNTIME" "$SEQ_MB" "$RAND_MB" "$WB"
printf '%-14s %12s %12s %12s\n' config "seq MiB/s" "rand MiB/s" "rand IOPS"
for c in "${CONFIGS[@]}"; do
  printf '%-14s %12.1f %12.2f %12.0f\n' "$c" "${MBPS[$c.seq]}" "${MBPS[$c.rand]}" "${IOPS[$c.rand]}"
done
R_WB_SEQ=$(ratio "${MBPS[wb-5ms.seq]}" "${MBPS[wb-fast.seq]}")
R_WB_RAND=$(ratio "${MBPS[wb-5ms.rand]}" "${MBPS[wb-fast.rand]}")
R_SY_SEQ=$(ratio "${MBPS[sync-5ms.seq]}" "${MBPS[wb-fast.seq]}")
R_SY_RAND=$(ratio "${MBPS[sync-5ms.rand]}" "${MBPS[wb-fast.rand]}")
R_WP_SEQ=$(ratio "${MBPS[wb-5ms.seq]}" "${MBPS[primary-only.seq]}")
R_WP_RAND=$(ratio "${MBPS[wb-5ms.rand]}" "${MBPS[primary-only.rand]}")
V_WB_SEQ=$(verdict "$R_WB_SEQ" 0.90 ge)
V_SY_SEQ=$(verdict "$R_SY_SEQ" 0.90 lt)
printf '\n%-32s %8s %8s   %s\n' ratio seq rand "verdict (seq)"
printf '%-32s %8s %8s   %s\n' "WB 5ms / WB fast" "$R_WB_SEQ" "$R_WB_RAND" "$V_WB_SEQ (target >= 0.90)"
printf '%-32s %8s %8s   %s\n' "sync 5ms / WB fast" "$R_SY_SEQ" "$R_SY_RAND" "$V_SY_SEQ (expected well below 0.90)"
printf '%-32s %8s %8s\n' "WB 5ms / primary-only" "$R_WP_SEQ" "$R_WP_RAND"
printf '\nwrite-behind peak outstanding: wb-fast %s/%s, wb-5ms %s/%s (seq/rand, limit %d); %d s\n' \
  "${PEAK[wb-fast.seq]:-?}" "${PEAK[wb-fast.rand]:-?}" "${PEAK[wb-5ms.seq]:-?}" "${PEAK[wb-5ms.rand]:-?}" "$WB" \
  $((SECONDS - T_START))

{
  for c in "${CONFIGS[@]}"; do
    jq -n --arg c "$c" --argjson s "${MBPS[$c.seq]}" --argjson r "${MBPS[$c.rand]}" \
      --argjson si "${IOPS[$c.seq]}" --argjson ri "${IOPS[$c.rand]}" \
      --argjson sa "${ALL[$c.seq]}" --argjson ra "${ALL[$c.rand]}" \
      --argjson d "${DELAY[$c]}" \
      '{($c): {secondary_delay_ms: $d, seq_mib_s: $s, seq_iops: $si, seq_runs_mib_s: $sa,
               rand_mib_s: $r, rand_iops: $ri, rand_runs_mib_s: $ra}}'
  done
} | jq -s --argjson runs "$RUNS" --argjson rt "$RUNTIME" --argjson seq "$SEQ_MB" --argjson rnd "$RAND_MB" \
  --argjson wb "$WB" --arg rws "$R_WB_SEQ" --arg rwr "$R_WB_RAND" --arg rss "$R_SY_SEQ" --arg rsr "$R_SY_RAND" \
  --arg rps "$R_WP_SEQ" --arg rpr "$R_WP_RAND" --arg vws "$V_WB_SEQ" --arg vss "$V_SY_SEQ" \
  '{benchmark: "write_behind", runs: $runs, runtime_cap_s: $rt, seq_mib: $seq, rand_mib: $rnd,
    write_behind_limit: $wb, configs: add,
    ratios: {wb5_over_wbfast: {seq: ($rws | tonumber), rand: ($rwr | tonumber), seq_target: 0.90, seq_verdict: $vws},
             sync5_over_wbfast: {seq: ($rss | tonumber), rand: ($rsr | tonumber), seq_verdict: $vss},
             wb5_over_primary: {seq: ($rps | tonumber), rand: ($rpr | tonumber)}}}' >"$BENCH_JSON" ||
  fail "cannot write $BENCH_JSON"
printf 'figures written to %s\n' "$BENCH_JSON"

fm_unmount "$FM_TMP/m_wb"
fm_unmount "$FM_TMP/m_sync"
fm_bg_stop "$FF_PID"
if [[ ${BENCH_STRICT:-0} == 1 && ($V_WB_SEQ != PASS || $V_SY_SEQ != PASS) ]]; then
  soft_fail "a ratio missed its target (BENCH_STRICT=1)"
fi
fm_pass
