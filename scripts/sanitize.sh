#!/usr/bin/env bash
# scripts/sanitize.sh — the sanitizer and fuzzing runs of the reliability suite (issue 7 §4, §5).
#
#   scripts/sanitize.sh [ci] [asan] [asan-unit] [tsan] [fuzz]   (default: asan tsan fuzz)
#
#   ci    what scripts/test.sh runs: one clang tree, build-ci, that builds both the unit
#         tests and the fuzz targets, so core is compiled once for both (ASan+UBSan,
#         libFuzzer's coverage instrumentation, -O1 -gline-tables-only, assertions and the
#         named crash points on, so every unit test case runs); runs the unit tests, then
#         each fuzz target FM_FUZZ_SECS seconds;
#   asan-unit  only the unit tests under gcc's ASan+UBSan (CI ran this before `ci`), built
#         into build-asan-unit at -O0 -g1 with assertions on: a third of the -O2 -g compile
#         time (the unit tests run in seconds either way), and line numbers in every report;
#
#   asan  build-asan (-DFUSEMIRROR_SANITIZE=ON: ASan+UBSan): the unit tests, then the mounted
#         concurrency test (test/reliability/concurrency.sh) with the ASan daemon;
#   tsan  build-tsan (-fsanitize=thread): the unit tests, then the same concurrency test with
#         the TSan daemon (many writers on one image and on many images, overlapping ranges,
#         during a resync and checks);
#   fuzz  build-fuzz (clang, -DFUSEMIRROR_FUZZ=ON, ASan+UBSan+libFuzzer): fuzz_header and
#         fuzz_config, FM_FUZZ_SECS (default 60) seconds each, corpora in test/fuzz/corpus.
#
# Sanitizer reports of the daemon go to build-*/sanitizer-logs/; any report, any unit-test
# failure or fuzzer crash makes the script exit 1. The mounted test needs root and /dev/fuse
# (skipped otherwise). Environment: JOBS (default nproc), FM_FUZZ_SECS, FM_CONC_SECS.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}
FUZZ_SECS=${FM_FUZZ_SECS:-60}
what=("$@")
((${#what[@]})) || what=(asan tsan fuzz)
failures=()
say() { printf '\n== sanitize: %s\n' "$*"; }

build() { # build DIR TARGETS... -- CMAKE ARGS...
  local dir=$1
  shift
  local targets=()
  while [[ $1 != -- ]]; do targets+=("$1"); shift; done
  shift
  cmake -S "$ROOT" -B "$ROOT/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$ROOT/$dir.configure.log" 2>&1 ||
    { cat "$ROOT/$dir.configure.log"; return 1; }
  local t
  for t in "${targets[@]}"; do
    cmake --build "$ROOT/$dir" -j "$JOBS" --target "$t" || return 1
  done
}

# scan DIR WHAT — any sanitizer report in DIR is a failure
scan() {
  local dir=$1 what=$2 n
  n=$(grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:' \
    "$dir"/* 2>/dev/null | wc -l)
  if ((n)); then
    failures+=("$what: $n sanitizer report file(s) in $dir")
    grep -hE -A12 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:' "$dir"/* | head -n 80
  else
    echo "$what: no sanitizer reports"
  fi
}

# mounted DIR SANITIZER_ENV_NAME — the concurrency test with DIR's daemon
mounted() {
  local dir=$1 envname=$2 logs=$ROOT/$1/sanitizer-logs rc=0
  if ((EUID != 0)) || [[ ! -e /dev/fuse ]]; then
    echo "$dir: mounted concurrency test skipped (needs root and /dev/fuse)"
    return 0
  fi
  rm -rf "$logs"
  mkdir -p "$logs"
  local opts="log_path=$logs/report halt_on_error=0"
  [[ $envname == TSAN_OPTIONS ]] && opts+=" second_deadlock_stack=1"
  [[ $envname == ASAN_OPTIONS ]] && opts+=" detect_leaks=1"
  env "$envname=$opts" UBSAN_OPTIONS="print_stacktrace=1 log_path=$logs/ubsan" \
    FUSEMIRROR="$ROOT/$dir/fusemirror/fusemirror" \
    FM_SPARSE_MAP="$ROOT/$dir/test/tools/fm_sparse_map" FM_TEST_TIMEOUT=300 \
    bash "$ROOT/test/reliability/concurrency.sh" || rc=$?
  ((rc == 0)) || failures+=("$dir: concurrency test failed (exit $rc)")
  scan "$logs" "$dir daemon"
}

units() { # units DIR ENVNAME
  local dir=$1 envname=$2 logs=$ROOT/$1/sanitizer-logs-unit rc=0
  rm -rf "$logs"
  mkdir -p "$logs"
  env "$envname=log_path=$logs/report halt_on_error=0" UBSAN_OPTIONS="print_stacktrace=1 log_path=$logs/ubsan" \
    "$ROOT/$dir/test/fm_unit_tests" || rc=$?
  ((rc == 0)) || failures+=("$dir: unit tests failed (exit $rc)")
  scan "$logs" "$dir unit tests"
}

# clang, ASan+UBSan and libFuzzer's coverage instrumentation; -O1 -gline-tables-only:
# libFuzzer's recommended flags, and half the compile time (RelWithDebInfo's flags replaced,
# so NDEBUG is not defined and assertions stay on).
FUZZ_CMAKE=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only"
  -DFUSEMIRROR_FUZZ=ON -DFUSEMIRROR_SANITIZE=ON -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link)

have_clang() { # have_clang WHAT — records a failure for WHAT when clang++ is missing
  command -v clang++ >/dev/null && return 0
  failures+=("$1: clang++ not installed (apt-get install clang)")
  return 1
}

run_fuzzers() { # run_fuzzers DIR — each fuzz target of DIR for FUZZ_SECS seconds
  local dir=$ROOT/$1 t corpus args
  for t in header config; do
    corpus=$dir/corpus-$t
    mkdir -p "$corpus"
    args=(-max_total_time="$FUZZ_SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$dir/crash-$t-")
    [[ $t == config ]] && args+=(-dict="$ROOT/test/fuzz/config.dict")
    echo "fuzz_$t: ${FUZZ_SECS}s"
    if ! "$dir/test/fuzz/fuzz_$t" "${args[@]}" "$corpus" "$ROOT/test/fuzz/corpus/$t" \
      >"$dir/fuzz_$t.log" 2>&1; then
      failures+=("fuzz_$t: crash, see $1/fuzz_$t.log and $1/crash-$t-*")
      grep -A20 -E '==ERROR|runtime error|deadly signal' "$dir/fuzz_$t.log" | head -n 40
    fi
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE|cov:' "$dir/fuzz_$t.log" | tail -n 2
  done
}

for w in "${what[@]}"; do
  case $w in
    asan)
      say "ASan+UBSan build (build-asan)"
      if build build-asan fm_unit_tests fusemirror fm_sparse_map -- -DFUSEMIRROR_SANITIZE=ON; then
        units build-asan ASAN_OPTIONS
        mounted build-asan ASAN_OPTIONS
      else
        failures+=("build-asan: build failed")
      fi
      ;;
    asan-unit)
      # The unit tests only, under gcc's ASan+UBSan (CI runs them in the `ci` tree instead).
      say "ASan+UBSan unit tests (build-asan-unit, -O0 -g1)"
      if build build-asan-unit fm_unit_tests -- -DFUSEMIRROR_SANITIZE=ON \
        -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1"; then
        units build-asan-unit ASAN_OPTIONS
      else
        failures+=("build-asan: build failed")
      fi
      ;;
    tsan)
      say "TSan build (build-tsan)"
      if build build-tsan fm_unit_tests fusemirror fm_sparse_map -- \
        -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
        -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread; then
        units build-tsan TSAN_OPTIONS
        mounted build-tsan TSAN_OPTIONS
      else
        failures+=("build-tsan: build failed")
      fi
      ;;
    ci)
      say "clang ASan+UBSan tree for the unit tests and the fuzz targets (build-ci)"
      have_clang ci || continue
      if build build-ci fm_unit_tests fuzz_header fuzz_config -- "${FUZZ_CMAKE[@]}" -DFUSEMIRROR_CRASH_POINTS=ON; then
        units build-ci ASAN_OPTIONS
        run_fuzzers build-ci
      else
        failures+=("build-ci: build failed")
      fi
      ;;
    fuzz)
      say "libFuzzer targets (build-fuzz, clang)"
      have_clang fuzz || continue
      if build build-fuzz fuzz_header fuzz_config -- "${FUZZ_CMAKE[@]}"; then
        run_fuzzers build-fuzz
      else
        failures+=("build-fuzz: build failed")
      fi
      ;;
    *)
      echo "usage: scripts/sanitize.sh [ci] [asan] [asan-unit] [tsan] [fuzz]" >&2
      exit 2
      ;;
  esac
done

say "result"
if ((${#failures[@]})); then
  printf 'FAIL: %s\n' "${failures[@]}"
  exit 1
fi
echo "PASS: ${what[*]}"
