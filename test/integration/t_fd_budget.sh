#!/bin/bash
# t_fd_budget — descriptors are bounded whatever the number of images, and a create that
# fails leaves nothing behind (issue 12 §3 "File descriptors"; docs/design.md
# "Descriptors", docs/reliability.md "Hostile users").
#
#   a) 2,500 images of 64 KiB created through the mount by a daemon limited to 2,048
#      descriptors (FM_FD_IMAGES and FM_FD_LIMIT; `FM_FD_IMAGES=10000 FM_FD_LIMIT=` is the
#      long run under the default limit of 20,000, where main before issue 12 failed from
#      image ~6,661 with EMFILE; under 2,048 it failed from ~680): every create succeeds, the daemon's open descriptors, sampled throughout,
#      stay under (descriptors per image) x budget + a margin (an image holds its primary, secondary, bitmap and
#      checksum file, 2 more with direct writes on and 1 with direct reads: 7 x budget; the budget is the daemon's "at most N images kept open" log line); status lists all 10,000; a sample of them is written, `fusemirror
#      wait`, and both legs are equal byte for byte; an evicted image's control-tree
#      attributes read "clean" without loading it.
#   b) unmount + mount: the scan keeps the descriptors under the same bound, no image needs
#      a resync (evicted images were closed clean), status still lists every image.
#   c) the daemon under a descriptor limit of 64: images are created and held open until a
#      create fails (EMFILE); the failed name exists on none of the primary, the secondary
#      and the bitmap directory, and every file there belongs to an image that was created;
#      once the handles are closed, creates work again (idle images are evicted).
. "$(dirname "$0")/lib.sh"

NIMG=${FM_FD_IMAGES:-2500}
FD_LIMIT=${FM_FD_LIMIT-2048}
MARGIN=200
FM_REAL=$FUSEMIRROR
if [[ -n $FD_LIMIT ]]; then # the daemon alone runs under the limit
  printf '#!/bin/bash\nulimit -n %d && exec %q "$@"\n' "$FD_LIMIT" "$FM_REAL" >"$FM_TMP/fusemirror_limited"
  chmod +x "$FM_TMP/fusemirror_limited"
  FUSEMIRROR=$FM_TMP/fusemirror_limited
fi

fds_of() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
budget_of() { # the budget the daemon logged
  { grep -o 'at most [0-9]* images kept open' "$1/.fusemirror/fusemirror.log" || true; } | tail -n 1 | awk '{print $3}'
}
nimages() { fm_status_json "$1" | jq '[.sets[].images[]] | length'; }

# sample_fds PID FILE — records the peak descriptor count of PID in FILE until FILE.stop.
sample_fds() {
  local pid=$1 file=$2 peak=0 n
  while fm_alive "$pid" && [[ ! -e $file.stop ]]; do
    n=$(fds_of "$pid"); ((n > peak)) && { peak=$n; echo "$peak" >"$file"; }
    sleep 0.1
  done
}

# ------------------------------------------------------------------ a) many creates
FM_CONTEXT="a: $NIMG images"
fm_create "$PRI" "$SEC" >/dev/null
fm_mount "$PRI" "$MNT"
PID=$(fm_daemon_pid "$MNT")
BUDGET=$(budget_of "$PRI")
LIMIT=$(awk '/Max open files/ {print $4}' "/proc/$PID/limits")
# A daemon without a budget (before issue 12 §3) is held to what its limit would allow.
[[ -n $BUDGET ]] || { BUDGET=$(((LIMIT - 512) / 7)); soft_fail "the daemon did not log its image budget"; }
# Descriptors per open image: primary, secondary, bitmap, checksum file, the activity
# log's record (al_extents > 0, the default), with direct writes on (direct_write_max, on
# by default) each leg's O_DIRECT writer, and with direct reads on (direct_reads, on by
# default) the primary's O_DIRECT reader.
PER_IMAGE=4
(($(jq '.al_extents // 1024' "$PRI/.fusemirror/config.json") > 0)) && PER_IMAGE=$((PER_IMAGE + 1))
(($(jq '.direct_write_max // 0' "$PRI/.fusemirror/config.json") > 0)) && PER_IMAGE=$((PER_IMAGE + 2))
[[ $(jq '.direct_reads // false' "$PRI/.fusemirror/config.json") == true ]] && PER_IMAGE=$((PER_IMAGE + 1))
BOUND=$((PER_IMAGE * BUDGET + MARGIN))
fm_log "daemon $PID: $(grep 'Max open files' "/proc/$PID/limits" | awk '{print $4"/"$5}') descriptors, budget $BUDGET images, bound $BOUND"
sample_fds "$PID" "$FM_TMP/logs/peak" &
SAMPLER=$!
T0=$SECONDS
seq 1 "$NIMG" | xargs -P 16 -n 125 sh -c 'for i; do truncate -s 64K "'"$MNT"'/img$i.raw" || exit 1; done' sh ||
  soft_fail "a create through the mount failed"
touch "$FM_TMP/logs/peak.stop"; wait "$SAMPLER" || true
PEAK=$(cat "$FM_TMP/logs/peak" 2>/dev/null || echo 0)
fm_log "$NIMG images created in $((SECONDS - T0))s; descriptors: now $(fds_of "$PID"), peak $PEAK (bound $BOUND)"
((PEAK <= BOUND)) || soft_fail "the daemon peaked at $PEAK descriptors (bound $BOUND)"
N=$(find "$PRI" -name 'img*.raw' | wc -l)
((N == NIMG)) || soft_fail "$N images in the primary, expected $NIMG"
[[ $(nimages "$MNT") == "$NIMG" ]] || soft_fail "status lists $(nimages "$MNT") images, expected $NIMG"

# A sample (the first ones are the least recently used: evicted), written and compared.
SAMPLE=$( (echo 1; echo 2; echo 3; seq 7 $((NIMG / 40 + 1)) "$NIMG"; echo "$NIMG") | sort -un)
[[ $(cat "$MNT/.fusemirror/images/img1.raw/state") == clean ]] ||
  soft_fail "img1.raw (evicted) state reads '$(cat "$MNT/.fusemirror/images/img1.raw/state")'"
for i in $SAMPLE; do
  dd if=/dev/urandom of="$MNT/img$i.raw" bs=4k seek=$((i % 16)) count=1 conv=notrunc status=none ||
    soft_fail "writing img$i.raw failed"
done
fm_timeout 120 "$FUSEMIRROR" wait "$MNT" || fail "fusemirror wait failed"
bad=0
for i in $SAMPLE; do cmp -s "$PRI/img$i.raw" "$SEC/img$i.raw" || bad=$((bad + 1)); done
((bad == 0)) || soft_fail "$bad of the sample's images differ between the legs"
[[ $(fm_status_json "$MNT" | jq '[.sets[].images[] | select(.state != "clean" and .state != "active")] | length') == 0 ]] ||
  soft_fail "an image is neither clean nor active: $(fm_status_json "$MNT" | jq -c '[.sets[].images[] | select(.state != "clean" and .state != "active") | {name, state}][:5]')"
NOW=$(fds_of "$PID")
((NOW <= BOUND)) || soft_fail "the daemon has $NOW descriptors after the writes (bound $BOUND)"
T0=$SECONDS
fm_unmount "$MNT"
fm_log "unmounted in $((SECONDS - T0))s"

# ------------------------------------------------------------------ b) remount
FM_CONTEXT="b: remount"
T0=$SECONDS
fm_mount "$PRI" "$MNT"
PID=$(fm_daemon_pid "$MNT")
NOW=$(fds_of "$PID")
fm_log "mounted in $((SECONDS - T0))s with $NOW descriptors (bound $BOUND)"
((NOW <= BOUND)) || soft_fail "the daemon has $NOW descriptors after the mount's scan (bound $BOUND)"
[[ $(nimages "$MNT") == "$NIMG" ]] || soft_fail "status lists $(nimages "$MNT") images after the remount"
COPIED=$(fm_status_json "$MNT" | jq '[.sets[].images[] | .sync.copied_bytes] | add // 0')
((COPIED == 0)) || soft_fail "the remount resynced $COPIED bytes (the images were closed clean)"
if grep -q 'full resync' "$PRI/.fusemirror/fusemirror.log"; then
  soft_fail "a full resync was logged: $(grep 'full resync' "$PRI/.fusemirror/fusemirror.log" | head -n 3)"
fi
for i in 1 $NIMG; do
  cmp -s "$MNT/img$i.raw" "$SEC/img$i.raw" || soft_fail "img$i.raw reads differently from its secondary copy"
done
fm_unmount "$MNT"

# ------------------------------------------------------- c) a tiny limit: failed creates
FM_CONTEXT="c: 64 descriptors"
P2=$FM_TMP/p2 S2=$FM_TMP/s2 M2=$FM_TMP/m2
mkdir -p "$P2" "$S2" "$M2"
fm_create "$P2" "$S2" >/dev/null
# The daemon alone runs under the limit (raising a hard limit back needs CAP_SYS_RESOURCE).
printf '#!/bin/bash\nulimit -n 64 && exec %q "$@"\n' "$FM_REAL" >"$FM_TMP/fusemirror64"
chmod +x "$FM_TMP/fusemirror64"
FUSEMIRROR=$FM_TMP/fusemirror64 fm_mount "$P2" "$M2"
PID=$(fm_daemon_pid "$M2")
fm_log "daemon $PID: budget $(budget_of "$P2") images, $(fds_of "$PID") descriptors at the start"
# Three idle images first: they are evicted to make room for the held ones.
for i in 1 2 3; do truncate -s 64K "$M2/idle$i.raw" || soft_fail "creating idle$i.raw failed"; done
HELD=() FAILED=""
for i in $(seq 1 40); do
  # (the braces keep the shell's stderr: exec would make the redirection permanent)
  if { exec {fd}<>"$M2/held$i.raw"; } 2>"$FM_TMP/logs/held.err"; then
    HELD+=("$fd")
  else
    FAILED=held$i.raw
    break
  fi
done
fm_log "${#HELD[@]} images held open; the create of ${FAILED:-(none)} failed: $(cat "$FM_TMP/logs/held.err")"
[[ -n $FAILED ]] || soft_fail "40 images held open under a limit of 64 descriptors and no create failed"
grep -qi 'too many open files' "$FM_TMP/logs/held.err" || soft_fail "the failed create did not report EMFILE"
if [[ -n $FAILED ]]; then
  for d in "$P2" "$S2" "$P2/.fusemirror/bitmaps"; do
    ls -a "$d" | grep -q -- "$FAILED" && soft_fail "the failed create left $(ls -a "$d" | grep -- "$FAILED") in $d"
  done
  ls -a "$S2/.fusemirror/images" 2>/dev/null | grep -q -- "$FAILED" && soft_fail "the failed create left a record on the secondary"
fi
# Every file on the three belongs to an image that exists.
EXPECT=$((${#HELD[@]} + 3))
NP=$(find "$P2" -path "$P2/.fusemirror" -prune -o -type f -print | wc -l)
NS=$(find "$S2" -path "$S2/.fusemirror" -prune -o -type f -print | wc -l)
NB=$(find "$P2/.fusemirror/bitmaps" -type f -name '*.fmbm' | wc -l)
((NP == EXPECT && NS == EXPECT && NB == EXPECT)) ||
  soft_fail "files: primary $NP, secondary $NS, bitmaps $NB; images created $EXPECT"
for fd in "${HELD[@]}"; do exec {fd}>&-; done
sleep 1
truncate -s 64K "$M2/after.raw" || soft_fail "a create after the handles were closed failed"
[[ $(nimages "$M2") == $((EXPECT + 1)) ]] || soft_fail "status lists $(nimages "$M2") images, expected $((EXPECT + 1))"
fm_timeout 60 "$FUSEMIRROR" wait "$M2" || fail "fusemirror wait failed"
fm_unmount "$M2"
assert_tree_same "$P2" "$S2" 2>/dev/null || true
for f in "$P2"/*.raw; do cmp -s "$f" "$S2/${f##*/}" || soft_fail "${f##*/} differs between the legs"; done

fm_pass
