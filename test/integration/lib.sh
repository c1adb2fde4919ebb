# shellcheck shell=bash
# test/integration/lib.sh — shared helpers for the mounted integration tests.
#
# Source it first thing from a t_*.sh script:
#
#     . "$(dirname "$0")/lib.sh"
#
# Environment:
#   FUSEMIRROR       the binary (default /work/main/build/fusemirror/fusemirror)
#   FM_SPARSE_MAP    the fm_sparse_map helper (default: build dir, else compiled on the fly)
#   FM_TEST_TIMEOUT  seconds before the watchdog aborts the test (default 240)
#   FM_KEEP=1        keep the temp dir (logs, backing files) after the test
#   FM_VERBOSE=1     log every step
#
# What it gives a test:
#   FM_TMP            a fresh temp dir (mktemp -d under /tmp), removed at exit
#   PRI SEC MNT       $FM_TMP/primary, $FM_TMP/secondary, $FM_TMP/mnt (created, empty)
#   fm_create ARGS    fusemirror create ARGS (fails the test on error)
#   fm_mount SRC MNT [ARGS]   starts `fusemirror mount SRC MNT -f ARGS` in the background,
#                     records its pid (FM_LAST_PID, fm_daemon_pid MNT), waits until mounted
#   fm_unmount MNT    fusemirror unmount, fallbacks, waits for the recorded daemon to exit
#   loop_attach FILE  losetup; sets FM_LAST_LOOP; detached at exit
#   fm_track_mount DIR  a (non-FUSE) mount the test made; unmounted at exit
#   fm_bg CMD...      a background helper process; sets FM_LAST_BG; killed at exit
#   assert_same F1 F2 byte-identical (cmp) and the same sparse map
#   assert_tree_same D1 D2   same names, types, modes; every regular file assert_same
#   expect_fail WHAT REGEX CMD...  CMD must fail, with a non-empty stderr matching REGEX
#                     (case-insensitive ERE); a fusemirror CMD must print exactly one line
#                     starting "fusemirror: "
#   refuse WHAT REGEX CMD...  expect_fail, plus: nothing under FM_TMP changed (names,
#                     modes, sizes, contents; see fm_snapshot), no stray mount left
#   stderr_has WHAT REGEX     the last expect_fail's stderr also matches REGEX
#   assert_reads_same VIEW BACKING   same bytes (VIEW is a file seen through the mount)
#   fm_signal_daemon MNT SIG  signal our -f daemon; it must unmount and exit 0
#   fm_wait_for WHAT SECS CMD...  poll CMD until it succeeds (returns 1 on timeout)
#   fm_status_json [MNT], fm_image_json MNT NAME, fm_examine FILE, fm_examine_field TEXT
#                     KEY, fm_examine_bits TEXT ("TOTAL DIRTY"), fm_bitmap_path PRI IMAGE
#   pwrite_rand FILE OFFSET LEN   LEN random bytes at OFFSET (dd conv=notrunc)
#   fm_assert_log_clean PRI   no [error] lines in the daemon log
#   fm_timeout SECS CMD...  run CMD under coreutils timeout
#   fail MSG          hard failure: the test stops (cleanup runs)
#   soft_fail MSG     recorded failure: the test goes on, fm_pass then fails listing all
#   fm_pass           cleanup, then "PASS name" (or FAIL if any soft failure)
#
# One trap (EXIT, ERR, INT, TERM) cleans up: stops helper processes, unmounts the mounts
# the test made, detaches its loop devices, unmounts its fusemirror mounts, kills only the
# daemons it started, and removes the temp dir.

set -Eeuo pipefail
shopt -s inherit_errexit 2>/dev/null || true

FM_TEST_NAME=$(basename "$0" .sh)
FM_TEST_NAME=${FM_TEST_NAME#t_}
FUSEMIRROR=${FUSEMIRROR:-/work/main/build/fusemirror/fusemirror}
FM_TEST_TIMEOUT=${FM_TEST_TIMEOUT:-240}
FM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FM_SRC_ROOT=$(cd "$FM_LIB_DIR/../.." && pwd)

FM_TMP=""
FM_DONE=0            # set by fm_pass / once cleanup started
FM_CLEANED=0
FM_FAILED_MSG=""
FM_SOFT_FAILS=()
FM_MOUNTS=()         # fusemirror mount points (ours)
declare -A FM_PID=() # mount point -> daemon pid (ours)
FM_DAEMON_PIDS=()
FM_LOOPS=()          # loop devices we attached
declare -A FM_LOOP_INO=() # loop device -> "backing file, inode" when attached
FM_OTHER_MOUNTS=()   # non-FUSE mounts we made (ext4 on a loop, tmpfs, ...)
FM_BG_PIDS=()        # helper processes we started
FM_WATCHDOG_PID=""
FM_NDAEMON=0
FM_LAST_PID=""
FM_LAST_LOOP=""
FM_LAST_BG=""
FM_LAST_STDERR=""

# ---------------------------------------------------------------------------- output

fm_log() { printf '[%s %s] %s\n' "$FM_TEST_NAME" "$(date +%T)" "$*" >&2; }
fm_step() { [[ ${FM_VERBOSE:-0} == 1 ]] && fm_log "step: $*"; return 0; }

FM_CONTEXT=""        # optional "where are we" text prefixed to failures

fail() {
  FM_FAILED_MSG="${FM_CONTEXT:+[$FM_CONTEXT] }$*"
  printf 'FAIL %s: %s\n' "$FM_TEST_NAME" "$FM_FAILED_MSG" >&2
  exit 1
}

# A failure that lets the test go on (so one run reports every bug); fm_pass then fails.
soft_fail() {
  FM_SOFT_FAILS+=("${FM_CONTEXT:+[$FM_CONTEXT] }$*")
  printf 'FAIL(soft) %s: %s\n' "$FM_TEST_NAME" "${FM_SOFT_FAILS[-1]}" >&2
}

# ---------------------------------------------------------------------------- the trap

_fm_trap() {
  local why=$1 line=${2:-} rc=${3:-1}
  case $why in
    ERR)
      trap - ERR
      if [[ -z $FM_FAILED_MSG ]]; then
        FM_FAILED_MSG="command failed (exit $rc) at line $line: $BASH_COMMAND"
        printf 'FAIL %s: %s\n' "$FM_TEST_NAME" "$FM_FAILED_MSG" >&2
      fi
      exit 1
      ;;
    INT | TERM)
      trap - INT TERM ERR
      if [[ -z $FM_FAILED_MSG ]]; then
        FM_FAILED_MSG="interrupted by SIG$why"
        printf 'FAIL %s: %s\n' "$FM_TEST_NAME" "$FM_FAILED_MSG" >&2
      fi
      exit 1
      ;;
    EXIT)
      trap - ERR INT TERM
      set +e
      if [[ $FM_DONE != 1 && -z $FM_FAILED_MSG ]]; then
        printf 'FAIL %s: exited (status %s) without fm_pass\n' "$FM_TEST_NAME" "$rc" >&2
        [[ $rc == 0 ]] && rc=1
      fi
      if [[ $FM_DONE != 1 ]]; then
        _fm_dump_logs
        if ((${#FM_SOFT_FAILS[@]})) && [[ $FM_FAILED_MSG != *"check(s) failed" ]]; then
          printf 'FAIL %s: also failed before that:\n' "$FM_TEST_NAME" >&2
          printf '  - %s\n' "${FM_SOFT_FAILS[@]}" >&2
        fi
      fi
      _fm_cleanup || rc=1
      exit "$rc"
      ;;
  esac
}
trap '_fm_trap ERR "$LINENO" "$?"' ERR
trap '_fm_trap EXIT "" "$?"' EXIT
trap '_fm_trap INT' INT
trap '_fm_trap TERM' TERM

_fm_dump_logs() {
  [[ -n $FM_TMP && -d $FM_TMP ]] || return 0
  local f
  for f in "$FM_TMP"/logs/daemon.*.log; do
    [[ -s $f ]] || continue
    printf -- '--- %s (last 30 lines)\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
  for f in "$FM_TMP"/*/.fusemirror/fusemirror.log; do
    [[ -s $f ]] || continue
    printf -- '--- %s (last 30 lines)\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
  return 0
}

# Is DIR a mount point (per /proc/self/mountinfo)? Our paths contain no spaces.
fm_is_mounted() {
  local dir
  dir=$(realpath -m -- "$1")
  awk -v m="$dir" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# FUSE mount points at or below DIR that no daemon of ours serves (e.g. a refused mount
# that wrongly went live and daemonized): unmount them. Prints what it unmounted.
fm_unmount_strays() {
  local dir=${1:-$FM_TMP} m
  dir=$(realpath -m -- "$dir")
  while read -r m; do
    [[ -n $m && -z ${FM_PID[$m]:-} ]] || continue
    fm_log "unmounting stray fuse mount $m"
    timeout -k 2 10 fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    printf '%s\n' "$m"
  done < <(awk -v d="$dir" '{ for (i = 7; i <= NF; i++) if ($i == "-") break; t = $(i + 1) }
      t ~ /^fuse/ && ($5 == d || index($5, d "/") == 1) { print $5 }' /proc/self/mountinfo | sort -r -u)
}

# Mount points at or below DIR, deepest first.
_fm_mounts_under() {
  local dir
  dir=$(realpath -m -- "$1")
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r -u
}

_fm_proc_state() { # prints the state letter of PID, nothing if gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  printf '%s' "${stat%% *}"
}

# fm_alive PID — running (a zombie counts as exited: PID 1 here may not reap orphans)
fm_alive() {
  local st
  st=$(_fm_proc_state "$1")
  [[ -n $st && $st != Z && $st != X ]]
}

# Waits up to SECS for our child PID to exit; sets FM_WAIT_RC. Returns 1 on timeout.
_fm_wait_pid() {
  local pid=$1 secs=$2 st deadline
  deadline=$((SECONDS + secs))
  FM_WAIT_RC=""
  while :; do
    st=$(_fm_proc_state "$pid")
    if [[ -z $st || $st == Z || $st == X ]]; then
      FM_WAIT_RC=0
      wait "$pid" 2>/dev/null || FM_WAIT_RC=$?
      return 0
    fi
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

_fm_kill_pid() { # TERM, then KILL, a pid we started
  local pid=$1
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  _fm_wait_pid "$pid" 5 && return 0
  kill -KILL "$pid" 2>/dev/null
  _fm_wait_pid "$pid" 5 || return 1
}

_fm_cleanup() {
  ((FM_CLEANED)) && return 0
  FM_CLEANED=1
  set +e
  trap - ERR
  local problems=() i pid m loop
  if [[ -n $FM_WATCHDOG_PID ]]; then
    kill "$FM_WATCHDOG_PID" 2>/dev/null
    wait "$FM_WATCHDOG_PID" 2>/dev/null
  fi
  # 1. helper processes
  for pid in "${FM_BG_PIDS[@]}"; do
    _fm_kill_pid "$pid" || problems+=("helper pid $pid did not exit")
  done
  # 2. the non-FUSE mounts we made, newest first
  for ((i = ${#FM_OTHER_MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${FM_OTHER_MOUNTS[i]}
    fm_is_mounted "$m" || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || problems+=("could not unmount $m")
  done
  # 3. loop devices we attached
  #    (only while the device still shows our backing file: tests run side by side, and a
  #    number this test detached may be another test's device by now)
  for loop in "${FM_LOOPS[@]}"; do
    if [[ $(losetup -n -O BACK-FILE,BACK-INO "$loop" 2>/dev/null) == "${FM_LOOP_INO[$loop]:-none}" ]]; then
      losetup -d "$loop" 2>/dev/null || problems+=("could not detach $loop")
    fi
  done
  # 4. fusemirror mounts: ours, plus any left under FM_TMP (e.g. a refused mount that
  #    wrongly daemonized); the daemon exits once its mount is gone.
  local all=("${FM_MOUNTS[@]}")
  if [[ -n $FM_TMP && -d $FM_TMP ]]; then
    mapfile -t -O "${#all[@]}" all < <(_fm_mounts_under "$FM_TMP")
  fi
  for m in "${all[@]}"; do
    fm_is_mounted "$m" || continue
    if ! timeout -k 2 10 fusermount3 -u "$m" 2>/dev/null; then
      timeout -k 2 10 umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
        problems+=("could not unmount $m")
    fi
  done
  # 5. daemons we started
  for pid in "${FM_DAEMON_PIDS[@]}"; do
    if ! _fm_wait_pid "$pid" 10; then
      fm_log "daemon pid $pid still running after unmount; killing it"
      _fm_kill_pid "$pid" || problems+=("daemon pid $pid did not die")
    fi
  done
  # 6. the temp dir, unless something is still mounted below it
  if [[ -n $FM_TMP && -d $FM_TMP ]]; then
    local left
    left=$(_fm_mounts_under "$FM_TMP")
    if [[ -n $left ]]; then
      problems+=("still mounted, temp dir kept: $left")
    elif [[ ${FM_KEEP:-0} == 1 ]]; then
      fm_log "keeping $FM_TMP"
    else
      rm -rf --one-file-system -- "$FM_TMP"
    fi
  fi
  if ((${#problems[@]})); then
    printf 'FAIL %s: cleanup: %s\n' "$FM_TEST_NAME" "${problems[*]}" >&2
    return 1
  fi
  return 0
}

fm_pass() {
  if ((${#FM_SOFT_FAILS[@]})); then
    FM_FAILED_MSG="${#FM_SOFT_FAILS[@]} check(s) failed"
    printf 'FAIL %s: %d check(s) failed:\n' "$FM_TEST_NAME" "${#FM_SOFT_FAILS[@]}" >&2
    printf '  - %s\n' "${FM_SOFT_FAILS[@]}" >&2
    exit 1
  fi
  FM_DONE=1
  trap - ERR
  if ! _fm_cleanup; then
    FM_DONE=0
    FM_FAILED_MSG="cleanup failed"
    exit 1
  fi
  printf 'PASS %s\n' "$FM_TEST_NAME"
  exit 0
}

# ---------------------------------------------------------------------------- setup

if [[ $EUID -ne 0 ]]; then
  echo "SKIP $FM_TEST_NAME: must run as root (losetup, mount)" >&2
  trap - EXIT
  exit 77
fi
for _c in fusermount3 losetup cmp awk jq timeout realpath; do
  command -v "$_c" >/dev/null || { trap - EXIT; echo "FAIL $FM_TEST_NAME: missing tool $_c (see test/integration/PACKAGES)" >&2; exit 1; }
done
[[ -x $FUSEMIRROR ]] || { trap - EXIT; echo "FAIL $FM_TEST_NAME: FUSEMIRROR=$FUSEMIRROR is not an executable" >&2; exit 1; }
[[ -e /dev/fuse ]] || { trap - EXIT; echo "SKIP $FM_TEST_NAME: no /dev/fuse" >&2; exit 77; }

FM_TMP=$(mktemp -d "/tmp/fm-${FM_TEST_NAME}.XXXXXX")
FM_TMP=$(realpath "$FM_TMP")
mkdir -p "$FM_TMP/logs"
PRI=$FM_TMP/primary
SEC=$FM_TMP/secondary
MNT=$FM_TMP/mnt
mkdir -p "$PRI" "$SEC" "$MNT"
: >"$FM_TMP/logs/pids"

# fm_sparse_map: the given one, the build dir's, or compile it now.
if [[ -z ${FM_SPARSE_MAP:-} || ! -x ${FM_SPARSE_MAP:-} ]]; then
  for _c in "$(dirname "$(dirname "$FUSEMIRROR")")/test/tools/fm_sparse_map" \
            "$FM_SRC_ROOT/build/test/tools/fm_sparse_map"; do
    if [[ -x $_c ]]; then FM_SPARSE_MAP=$_c; break; fi
  done
fi
if [[ -z ${FM_SPARSE_MAP:-} || ! -x ${FM_SPARSE_MAP:-} ]]; then
  FM_SPARSE_MAP=$FM_TMP/fm_sparse_map
  c++ -std=c++20 -O2 -o "$FM_SPARSE_MAP" "$FM_SRC_ROOT/test/tools/fm_sparse_map.cpp" ||
    fail "cannot build fm_sparse_map"
fi

# Watchdog: after FM_TEST_TIMEOUT seconds, TERM the test, then its foreground children
# (never the daemons, which the cleanup unmounts). Its only output goes to stderr.
(
  trap - EXIT ERR INT TERM
  set +e
  _main=$$
  _end=$((SECONDS + FM_TEST_TIMEOUT))
  while ((SECONDS < _end)); do sleep 1; done
  printf 'FAIL %s: timed out after %ss\n' "$FM_TEST_NAME" "$FM_TEST_TIMEOUT" >&2
  kill -TERM "$_main" 2>/dev/null
  sleep 3
  for _sig in TERM KILL; do
    for _p in /proc/[0-9]*; do
      _p=${_p#/proc/}
      [[ $_p == "$BASHPID" ]] && continue
      _s=$(cat "/proc/$_p/stat" 2>/dev/null) || continue
      _s=${_s##*) }
      read -r _ _pp _ <<<"$_s"
      [[ $_pp == "$_main" ]] || continue
      grep -qx "$_p" "$FM_TMP/logs/pids" 2>/dev/null && continue
      kill "-$_sig" "$_p" 2>/dev/null
    done
    sleep 3
  done
) </dev/null >/dev/null &
FM_WATCHDOG_PID=$!

# ---------------------------------------------------------------------------- helpers

fm_timeout() { # fm_timeout SECS CMD...
  local secs=$1 rc=0
  shift
  timeout -k 10 "$secs" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    fm_log "timed out after ${secs}s: $*"
  fi
  return "$rc"
}

# Runs fusemirror ARGS with a timeout; on failure shows its stderr and fails the test.
fm_cli() {
  local err=$FM_TMP/logs/cli.err rc=0
  fm_timeout 60 "$FUSEMIRROR" "$@" 2>"$err" || rc=$?
  if ((rc != 0)); then
    fail "fusemirror $* exited $rc: $(cat "$err")"
  fi
  [[ -s $err ]] && cat "$err" >&2
  return 0
}

# A set made here does not reconnect its secondary by itself (config reconnect_min 0):
# the tests of the operator's fail/re-add flows would race the link's automatic tries.
# FM_AUTO_RECONNECT=1 keeps the product's default (t_nbd_link, t_sshfs).
fm_create() {
  fm_cli create "$@"
  if [[ ${FM_AUTO_RECONNECT:-0} != 1 && $1 != -* && -f $1/.fusemirror/config.json ]]; then
    fm_json_edit "$1/.fusemirror/config.json" '.reconnect_min = 0'
  fi
}

# fm_mount SRC MOUNTPOINT [EXTRA ARGS...]
fm_mount() {
  local src=$1 mnt
  mnt=$(realpath -m -- "$2")
  shift 2
  FM_NDAEMON=$((FM_NDAEMON + 1))
  local log=$FM_TMP/logs/daemon.$FM_NDAEMON.log
  fm_step "mount $src $mnt -f $*"
  # a non-interactive shell starts background jobs with SIGINT/SIGQUIT ignored, and libfuse
  # only handles signals left at their default: restore the defaults, as on a terminal
  env --default-signal=INT,QUIT "$FUSEMIRROR" mount "$src" "$mnt" -f "$@" </dev/null >"$log" 2>&1 &
  local pid=$!
  FM_DAEMON_PIDS+=("$pid")
  echo "$pid" >>"$FM_TMP/logs/pids"
  FM_PID[$mnt]=$pid
  FM_MOUNTS+=("$mnt")
  FM_LAST_PID=$pid
  local deadline=$((SECONDS + 20))
  while ! fm_is_mounted "$mnt"; do
    local st
    st=$(_fm_proc_state "$pid")
    if [[ -z $st || $st == Z ]]; then
      local rc=0
      wait "$pid" || rc=$?
      fail "fusemirror mount $src $mnt -f exited ($rc) before the mount was live: $(tail -n 5 "$log")"
    fi
    ((SECONDS < deadline)) || fail "fusemirror mount $src $mnt: not mounted after 20s"
    sleep 0.1
  done
  fm_step "mounted $mnt (pid $pid)"
}

fm_daemon_pid() { printf '%s\n' "${FM_PID[$(realpath -m -- "$1")]}"; }

# _fm_holders MOUNTPOINT — "pid(comm)" of every process with a descriptor, cwd or root
# under MOUNTPOINT.
_fm_holders() {
  local p l out=()
  for p in /proc/[0-9]*; do
    for l in "$p"/cwd "$p"/root "$p"/fd/*; do
      [[ $(readlink "$l" 2>/dev/null) == "$1"* ]] || continue
      out+=("${p#/proc/}($(cat "$p/comm" 2>/dev/null))")
      break
    done
  done
  echo "${out[*]:-none found}"
}

# fm_unmount MOUNTPOINT — fusemirror unmount; fallbacks fusermount3 -u, umount -l (each
# recorded as a failure); then waits for the daemon we started, which must exit 0.
fm_unmount() {
  local mnt rc=0
  mnt=$(realpath -m -- "$1")
  local err=$FM_TMP/logs/unmount.err
  fm_step "unmount $mnt"
  fm_timeout 60 "$FUSEMIRROR" unmount "$mnt" 2>"$err" || rc=$?
  # Busy: tests run side by side, and a process of another test may pass through this
  # mount for a moment. Say who holds it, then try again a few times.
  local try
  for ((try = 0; try < 5 && rc != 0; try++)); do
    grep -q "busy" "$err" || break
    fm_log "unmount $mnt busy; holders: $(_fm_holders "$mnt")"
    sleep 1
    rc=0
    fm_timeout 60 "$FUSEMIRROR" unmount "$mnt" 2>"$err" || rc=$?
  done
  if ((rc != 0)) || fm_is_mounted "$mnt"; then
    soft_fail "fusemirror unmount $mnt: exit $rc, still mounted: $(fm_is_mounted "$mnt" && echo yes || echo no); stderr: $(cat "$err")"
    if fm_is_mounted "$mnt"; then
      fm_timeout 20 fusermount3 -u "$mnt" || umount -l "$mnt" || fail "cannot unmount $mnt"
    fi
  fi
  local pid=${FM_PID[$mnt]:-}
  if [[ -n $pid ]]; then
    if ! _fm_wait_pid "$pid" 30; then
      soft_fail "daemon pid $pid still running 30s after unmount of $mnt"
      _fm_kill_pid "$pid" || fail "daemon pid $pid would not die"
    elif ((FM_WAIT_RC != 0)); then
      soft_fail "daemon of $mnt (pid $pid) exited with status $FM_WAIT_RC after unmount"
    fi
    unset "FM_PID[$mnt]"
  fi
  fm_is_mounted "$mnt" && fail "$mnt still mounted after unmount"
  return 0
}

# fm_signal_daemon MOUNTPOINT SIG — sends SIG to the daemon we started for MOUNTPOINT
# (a -f daemon unmounts cleanly on TERM/INT); waits for it; it must exit 0 and the mount
# must be gone. Failures are soft.
fm_signal_daemon() {
  local mnt sig=$2
  mnt=$(realpath -m -- "$1")
  local pid=${FM_PID[$mnt]:-}
  [[ -n $pid ]] || fail "fm_signal_daemon: no daemon of ours on $mnt"
  kill "-$sig" "$pid" || fail "kill -$sig $pid failed"
  if ! _fm_wait_pid "$pid" 30; then
    soft_fail "daemon pid $pid still running 30s after SIG$sig"
    fm_timeout 20 fusermount3 -u "$mnt" || umount -l "$mnt" || true
    _fm_kill_pid "$pid" || fail "daemon pid $pid would not die"
  elif ((FM_WAIT_RC != 0)); then
    soft_fail "daemon of $mnt (pid $pid) exited with status $FM_WAIT_RC after SIG$sig, want 0"
  fi
  unset "FM_PID[$mnt]"
  if fm_is_mounted "$mnt"; then
    soft_fail "$mnt still mounted after its -f daemon got SIG$sig and exited"
    fm_timeout 20 fusermount3 -u "$mnt" || umount -l "$mnt" || fail "cannot unmount $mnt"
  fi
}

# fm_kill9_daemon MOUNTPOINT [PID...] — SIGKILL of the daemon we started on MOUNTPOINT (a
# crash), waits for it and for the other PIDs given (its writers), then unmounts the dead
# mount.
fm_kill9_daemon() {
  local mnt pid
  mnt=$(realpath -m -- "$1")
  shift
  pid=${FM_PID[$mnt]:-}
  [[ -n $pid ]] || fail "fm_kill9_daemon: no daemon of ours on $mnt"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  unset "FM_PID[$mnt]"
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  fm_timeout 20 fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" || fail "cannot unmount the dead mount"
}

# loop_attach FILE [losetup options] — sets FM_LAST_LOOP.
loop_attach() {
  local file=$1 dev
  shift
  dev=$(losetup -f --show "$@" -- "$file") || fail "losetup $file failed"
  FM_LOOPS+=("$dev")
  FM_LOOP_INO[$dev]=$(losetup -n -O BACK-FILE,BACK-INO "$dev")
  FM_LAST_LOOP=$dev
  fm_step "attached $dev -> $file"
}

loop_detach() {
  local dev=$1
  losetup -d "$dev" || fail "losetup -d $dev failed"
  unset "FM_LOOP_INO[$dev]"
  # losetup -d is lazy (autoclear); wait until the device is really free
  local deadline=$((SECONDS + 20))
  while losetup "$dev" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "loop device $dev still attached 20s after losetup -d"
    sleep 0.2
  done
}

fm_track_mount() { FM_OTHER_MOUNTS+=("$(realpath -m -- "$1")"); }

# fm_bg CMD... — a background helper, killed at exit; sets FM_LAST_BG.
fm_bg() {
  "$@" </dev/null &
  FM_LAST_BG=$!
  FM_BG_PIDS+=("$FM_LAST_BG")
}

fm_bg_stop() { # fm_bg_stop PID
  _fm_kill_pid "$1" || fail "helper pid $1 would not stop"
}

# fm_kill_under_writer FILE N COUNT SLOTS BASE PID — a writer rewrites FILE, each pass
# COUNT 64 KiB blocks with fsync at block (i % SLOTS * COUNT + BASE), until told to stop.
# After its third pass the server PID is killed (-9) and stopped; the writer then goes on
# for N more passes and stops. Paced by the writer's progress, not by a clock, so a fast
# host cannot finish the load before the kill. Fails if the writer saw an error or made
# no progress for 30 s. FM_KILL_NS is the kill's time (date +%s%N).
fm_kill_under_writer() {
  local file=$1 n=$2 count=$3 slots=$4 base=$5 pid=$6 writer at_kill
  local prog=$FM_TMP/kill_writer.pass stop=$FM_TMP/kill_writer.stop
  echo 0 >"$prog"
  rm -f "$stop"
  fm_bg bash -c 'i=0; until [[ -e $6 ]]; do i=$((i + 1))
      dd if=/dev/urandom of="$1" bs=64K count="$2" seek=$((i % $3 * $2 + $4)) conv=notrunc,fsync status=none || exit 1
      echo "$i" >"$5"
    done' _ "$file" "$count" "$slots" "$base" "$prog" "$stop"
  writer=$FM_LAST_BG
  _passes() { local v; v=$(<"$prog"); echo "${v:-0}"; } # read while the writer rewrites it
  _passes_at_least() { kill -0 "$writer" 2>/dev/null || return 0; (($(_passes) >= $1)); }
  fm_wait_for "3 passes" 30 _passes_at_least 3 || fail "the writer made no 3 passes in 30 s"
  kill -0 "$writer" 2>/dev/null || fail "the writer failed before the server was killed"
  at_kill=$(_passes)
  kill -KILL "$pid"
  FM_KILL_NS=$(date +%s%N)
  fm_bg_stop "$pid"
  fm_wait_for "$n passes after the kill" 30 _passes_at_least $((at_kill + n)) ||
    fail "the writer made no $n passes in 30 s after the server was killed"
  touch "$stop"
  wait "$writer" || fail "a user write failed while the server died"
  fm_log "writer: $at_kill passes before the kill, $(($(_passes) - at_kill)) after"
}

# fm_wait_for WHAT SECS CMD... — polls CMD every 0.2s until it succeeds.
fm_wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  return 0
}

# ---------------------------------------------------------------------------- assertions

# fm_sparse_map [--written] FILE — allocated extents (see test/tools/fm_sparse_map.cpp)
fm_sparse_map() { "$FM_SPARSE_MAP" --size --drop-cache "$@"; }

FM_FULL_CMP_MAX=${FM_FULL_CMP_MAX:-$((512 << 20))}

# _fm_cmp_extents A B MAPFILE — cmp A and B over the data extents listed in MAPFILE
# (fm_sparse_map --size output). Prints cmp's complaint and returns 1 on a difference.
_fm_cmp_extents() {
  local a=$1 b=$2 map=$3 start end
  while read -r start end; do
    [[ $start == size ]] && continue
    cmp -i "$start:$start" -n "$((end - start))" -- "$a" "$b" || return 1
  done <"$map"
}

# assert_same FILE1 FILE2 — byte-identical and the same sparse map. Files larger than
# FM_FULL_CMP_MAX (512 MiB) are compared over their (identical) data extents only: holes
# read as zeros on both sides by definition.
assert_same() {
  local a=$1 b=$2 out
  [[ -f $a ]] || fail "assert_same: $a is not a regular file"
  [[ -f $b ]] || fail "assert_same: $b is not a regular file"
  local ma=$FM_TMP/logs/map.a mb=$FM_TMP/logs/map.b how=()
  # Two file system types (a FUSE view against its backing file): one may have FIEMAP and
  # the other only SEEK_DATA, which cannot see unwritten extents; compare written data.
  [[ $(stat -f -c %T -- "$a") == "$(stat -f -c %T -- "$b")" ]] || how=(--written)
  fm_sparse_map "${how[@]}" "$a" >"$ma" || fail "fm_sparse_map $a failed"
  fm_sparse_map "${how[@]}" "$b" >"$mb" || fail "fm_sparse_map $b failed"
  local sa sb
  sa=$(stat -c %s -- "$a") sb=$(stat -c %s -- "$b")
  ((sa == sb)) || fail "files differ in size: $a is $sa bytes, $b is $sb bytes"
  if ((sa <= FM_FULL_CMP_MAX)); then
    if ! out=$(cmp -- "$a" "$b" 2>&1); then
      fail "files differ: $out"
    fi
  fi
  if ! cmp -s "$ma" "$mb"; then
    fail "sparse maps differ: $a vs $b:
$(diff "$ma" "$mb" | head -n 20 || true)"
  fi
  if ((sa > FM_FULL_CMP_MAX)); then
    if ! out=$(_fm_cmp_extents "$a" "$b" "$ma" 2>&1); then
      fail "files differ: $out"
    fi
  fi
}

# assert_reads_same VIEW BACKING — VIEW (e.g. through the mount, where SEEK_DATA may not
# be implemented) reads the same as BACKING: fully up to FM_FULL_CMP_MAX, else over
# BACKING's data extents plus the first 1 MiB of each hole.
assert_reads_same() {
  local v=$1 b=$2 out sv sb
  sv=$(stat -c %s -- "$v") sb=$(stat -c %s -- "$b")
  ((sv == sb)) || fail "$v is $sv bytes, $b is $sb bytes"
  if ((sb <= FM_FULL_CMP_MAX)); then
    out=$(cmp -- "$v" "$b" 2>&1) || fail "$v reads differently from $b: $out"
    return 0
  fi
  local map=$FM_TMP/logs/map.r
  fm_sparse_map "$b" >"$map" || fail "fm_sparse_map $b failed"
  out=$(_fm_cmp_extents "$v" "$b" "$map" 2>&1) || fail "$v reads differently from $b: $out"
  local prev=0 start end n
  while read -r start end; do
    [[ $start == size ]] && continue
    if ((start > prev)); then
      n=$((start - prev)); ((n > 1048576)) && n=1048576
      out=$(cmp -i "$prev:$prev" -n "$n" -- "$v" "$b" 2>&1) || fail "$v reads differently from $b in a hole: $out"
    fi
    prev=$end
  done <"$map"
}

# Lists DIR's tree (excluding the top-level .fusemirror): "type mode size path".
_fm_tree_list() {
  (cd "$1" && find . -xdev -path ./.fusemirror -prune -o -printf '%y %m %s %p\n') |
    awk '$4 == "." { next } $1 == "d" { $3 = "-" } { print }' | sort -k4
}

# assert_tree_same DIR1 DIR2 — same names, types and modes; regular files assert_same.
assert_tree_same() {
  local a=$1 b=$2
  local la=$FM_TMP/logs/tree.a lb=$FM_TMP/logs/tree.b
  _fm_tree_list "$a" >"$la"
  _fm_tree_list "$b" >"$lb"
  if ! cmp -s "$la" "$lb"; then
    fail "trees differ: $a vs $b:
$(diff "$la" "$lb" | head -n 20 || true)"
  fi
  local t m s p
  while read -r t m s p; do
    [[ $t == f ]] || continue
    assert_same "$a/$p" "$b/$p"
  done <"$la"
}

# expect_fail WHAT REGEX CMD... — CMD exits non-zero, stderr non-empty and matching REGEX
# (case-insensitive ERE; "" = any). For fusemirror itself: exactly one line on stderr,
# starting "fusemirror: ". Failures are soft (reported at the end); returns 1 then.
expect_fail() {
  local what=$1 re=$2
  shift 2
  local out=$FM_TMP/logs/ef.out err=$FM_TMP/logs/ef.err rc=0
  fm_timeout 30 "$@" >"$out" 2>"$err" </dev/null || rc=$?
  local errtxt
  errtxt=$(cat "$err")
  FM_LAST_STDERR=$errtxt
  fm_step "expect_fail $what: rc=$rc stderr=$errtxt"
  if ((rc == 0)); then
    soft_fail "$what: expected failure, got exit 0 (cmd: $*; stdout: $(head -c 300 "$out"); stderr: $errtxt)"
    return 1
  fi
  if ((rc == 124 || rc == 137)); then
    soft_fail "$what: timed out (cmd: $*)"
    return 1
  fi
  if [[ -z $errtxt ]]; then
    soft_fail "$what: exit $rc but stderr is empty (cmd: $*)"
    return 1
  fi
  if [[ -n $re ]] && ! grep -qiE -- "$re" "$err"; then
    soft_fail "$what: stderr does not match /$re/: $errtxt"
    return 1
  fi
  if [[ $1 == "$FUSEMIRROR" ]]; then
    local n
    n=$(wc -l <"$err")
    if [[ $n -ne 1 || $errtxt != "fusemirror: "* ]]; then
      soft_fail "$what: want one line starting 'fusemirror: ' on stderr, got $n line(s): $errtxt"
      return 1
    fi
  fi
  return 0
}

# stderr_has WHAT REGEX — the last expect_fail's stderr also matches REGEX (soft check).
stderr_has() {
  grep -qiE -- "$2" <<<"$FM_LAST_STDERR" ||
    soft_fail "$1: stderr does not match /$2/: $FM_LAST_STDERR"
}

# re_quote STRING — STRING as a literal ERE.
re_quote() { sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$1"; }

# fm_snapshot DIR... — names, types, modes, sizes and content hashes (not times); stays on
# one file system (so mount points inside are not entered). Paths matching
# FM_SNAP_EXCLUDE (ERE) are skipped; fusemirror.log is always skipped.
fm_snapshot() {
  local d
  for d in "$@"; do
    [[ -e $d ]] || { echo "missing $d"; continue; }
    find "$d" -xdev -printf '%y %m %s %p\n' 2>/dev/null | sort -k4
    find "$d" -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 -r md5sum
  done | grep -vE "/fusemirror\.log\$|/\.fusemirror/lock\$|/logs/|${FM_SNAP_EXCLUDE:-^\$}" || true
}

# refuse WHAT REGEX CMD... — expect_fail, and nothing under FM_TMP changed.
refuse() {
  local what=$1 before after
  before=$(fm_snapshot "$FM_TMP")
  expect_fail "$@" || true
  local stray
  stray=$(fm_unmount_strays)
  [[ -z $stray ]] || soft_fail "$what: the refused command left a live mount at $stray"
  after=$(fm_snapshot "$FM_TMP")
  if [[ $before != "$after" ]]; then
    soft_fail "$what: the refused command changed files on disk:
$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | head -n 20 || true)"
  fi
}

# fm_assert_log_clean PRIMARY — the daemon logged no error (for runs without faults).
fm_assert_log_clean() {
  local log=$1/.fusemirror/fusemirror.log lines
  [[ -f $log ]] || return 0
  lines=$(grep -E '\[(error|critical|err)\]' "$log" | head -n 5 || true)
  [[ -z $lines ]] || soft_fail "the daemon logged errors in $log during a fault-free run:
$lines"
}

# ---------------------------------------------------------------------------- data & status

# A random source file for dd (16 MiB), made once.
FM_RAND=""
fm_rand() {
  if [[ -z $FM_RAND ]]; then
    FM_RAND=$FM_TMP/logs/random.bin
    head -c $((16 << 20)) /dev/urandom >"$FM_RAND"
  fi
  printf '%s' "$FM_RAND"
}

# pwrite_rand FILE OFFSET LEN — writes LEN random bytes at OFFSET (no truncation).
pwrite_rand() {
  local file=$1 off=$2 len=$3 src skip
  src=$(fm_rand)
  skip=$(((RANDOM * 32768 + RANDOM) % ((16 << 20) - len + 1)))
  dd if="$src" of="$file" bs="$len" count=1 iflag=skip_bytes skip="$skip" \
    oflag=seek_bytes seek="$off" conv=notrunc status=none || fail "pwrite $file $off $len failed"
}

fm_status_json() { # fm_status_json [MOUNTPOINT]
  local err=$FM_TMP/logs/status.err out rc=0
  out=$(fm_timeout 30 "$FUSEMIRROR" status "$@" --json 2>"$err") || rc=$?
  ((rc == 0)) || fail "fusemirror status $* --json exited $rc: $(cat "$err")"
  jq -e . >/dev/null <<<"$out" || fail "fusemirror status $* --json is not JSON: $out"
  printf '%s\n' "$out"
}

# fm_image_json MOUNTPOINT NAME — that image's object from status --json.
fm_image_json() {
  local mnt=$1 name=$2 j
  j=$(fm_status_json "$mnt")
  jq -ce --arg n "$name" '[.sets[].images[] | select(.name == $n)][0] // empty' <<<"$j" ||
    fail "status --json has no image named $name: $j"
}

# fm_image_json_try MOUNTPOINT NAME — the same, but just returns 1 (quietly) on any error.
fm_image_json_try() {
  local mnt=$1 name=$2 j
  j=$(timeout -k 5 30 "$FUSEMIRROR" status "$mnt" --json 2>/dev/null) || return 1
  jq -ce --arg n "$name" '[.sets[].images[] | select(.name == $n)][0] // empty' <<<"$j" 2>/dev/null
}

# fm_image_is MOUNTPOINT NAME JQ_PREDICATE — that image's status object satisfies the jq
# predicate; quietly false on any error (for fm_wait_for and polling loops).
fm_image_is() {
  local j
  j=$(fm_image_json_try "$1" "$2") || return 1
  jq -e "$3" >/dev/null <<<"$j"
}

# fm_examine FILE — examine-bitmap output; fails the test if it fails.
fm_examine() {
  local err=$FM_TMP/logs/examine.err rc=0 out
  out=$(fm_timeout 30 "$FUSEMIRROR" examine-bitmap "$1" 2>"$err") || rc=$?
  ((rc == 0)) || fail "fusemirror examine-bitmap $1 exited $rc: $(cat "$err")"
  printf '%s\n' "$out"
}

# fm_examine_field TEXT KEY — the value after "KEY :" in examine-bitmap output.
fm_examine_field() {
  awk -v k="$2" -F: '{ key = $1; gsub(/^[ \t]+|[ \t]+$/, "", key) } key == k {
      v = substr($0, index($0, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", v); print v; exit }' <<<"$1"
}

# fm_examine_bits TEXT — prints "TOTAL DIRTY" from the "Bitmap : T bits (chunks), D dirty" line.
fm_examine_bits() {
  local line
  line=$(fm_examine_field "$1" Bitmap)
  if [[ $line =~ ^([0-9]+)\ bits.*[^0-9]([0-9]+)\ dirty ]]; then
    printf '%s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
  else
    fail "cannot parse examine-bitmap Bitmap line: '$line'"
  fi
}

fm_bitmap_path() { # fm_bitmap_path PRIMARY IMAGE_REL_PATH [BITMAP_DIR]
  printf '%s/%s.fmbm\n' "${3:-$1/.fusemirror/bitmaps}" "$2"
}

# fm_config_uuid PRIMARY — the set uuid from config.json (key uuid or set_uuid).
fm_config_uuid() {
  jq -r '.uuid // .set_uuid // .set.uuid // empty' "$1/.fusemirror/config.json"
}

# fm_json_edit FILE JQ_FILTER — edits FILE in place, keeping its inode and mode.
fm_json_edit() {
  local f=$1 filter=$2 tmp
  tmp=$(jq "$filter" "$f") || fail "jq '$filter' on $f failed"
  printf '%s\n' "$tmp" >"$f"
}
