#!/bin/bash
# t_status — `fusemirror status` text and --json agree with each other and with the set:
# same dirty/total numbers per image, pid is the live daemon's, uuid is config.json's,
# paths are the set's; MOUNT/.fusemirror/status.json is the same JSON and is not listed.
# A long daemon sleep (30 s) keeps dirty bits stable while the two views are compared.
. "$(dirname "$0")/lib.sh"

CHUNK=4096
fm_create "$PRI" "$SEC" --chunk-size 4K --daemon-sleep 30
UUID=$(fm_config_uuid "$PRI")
[[ -n $UUID ]] || fail "no uuid in $PRI/.fusemirror/config.json: $(cat "$PRI/.fusemirror/config.json")"

fm_mount "$PRI" "$MNT"
PID=$(fm_daemon_pid "$MNT")
[[ -f $PRI/.fusemirror/fusemirror.log ]] || soft_fail "no daemon log $PRI/.fusemirror/fusemirror.log after mount"

# images: clean (created, never written), dirty (3 separate chunks + a spanning write),
# one in a subdirectory
truncate -s 1M "$MNT/clean.img"
truncate -s 4M "$MNT/dirty.img"
pwrite_rand "$MNT/dirty.img" 0 100
pwrite_rand "$MNT/dirty.img" $((10 * CHUNK)) $CHUNK
pwrite_rand "$MNT/dirty.img" $((100 * CHUNK + 10)) 10
pwrite_rand "$MNT/dirty.img" $((200 * CHUNK - 1)) 2 # spans chunks 199 and 200
mkdir -p "$MNT/sub"
pwrite_rand "$MNT/sub/odd.img" 0 $((5 * CHUNK + 1)) # 6 chunks, partial last
sync -f "$MNT" 2>/dev/null || true

FM_CONTEXT="json"
J=$(fm_status_json "$MNT")
printf '%s\n' "$J" >"$FM_TMP/logs/status.json"
jq -e '.sets | type == "array" and length == 1' >/dev/null <<<"$J" ||
  fail "status MNT --json: want exactly one set, got: $J"
S=$(jq -c '.sets[0]' <<<"$J")
g() { jq -r "$1" <<<"$S"; }
[[ $(g .uuid) == "$UUID" ]] || soft_fail "uuid '$(g .uuid)' != config uuid '$UUID'"
[[ $(g .pid) == "$PID" ]] || soft_fail "pid '$(g .pid)' != the daemon's pid $PID"
fm_alive "$(g .pid)" || soft_fail "status pid $(g .pid) is not alive"
[[ $(realpath -m "$(g .primary)") == "$PRI" ]] || soft_fail "primary '$(g .primary)' != $PRI"
[[ $(realpath -m "$(g .secondary)") == "$SEC" ]] || soft_fail "secondary '$(g .secondary)' != $SEC"
[[ $(realpath -m "$(g .mountpoint)") == "$MNT" ]] || soft_fail "mountpoint '$(g .mountpoint)' != $MNT"
names=$(jq -r '[.images[].name] | sort | join(" ")' <<<"$S")
[[ $names == "clean.img dirty.img sub/odd.img" ]] || soft_fail "image names '$names', want 'clean.img dirty.img sub/odd.img'"

declare -A want_total=([clean.img]=256 [dirty.img]=1024 [sub/odd.img]=6)
declare -A want_size=([clean.img]=1048576 [dirty.img]=4194304 [sub/odd.img]=$((5 * CHUNK + 1)))
declare -A min_dirty=([clean.img]=0 [dirty.img]=5 [sub/odd.img]=6)
for name in clean.img dirty.img sub/odd.img; do
  I=$(jq -c --arg n "$name" '.images[] | select(.name == $n)' <<<"$S")
  [[ -n $I ]] || { soft_fail "no image $name in status"; continue; }
  v() { jq -r "$1" <<<"$I"; }
  [[ $(v .size) == "${want_size[$name]}" ]] || soft_fail "$name: size $(v .size), want ${want_size[$name]}"
  [[ $(v .chunk_size) == "$CHUNK" ]] || soft_fail "$name: chunk_size $(v .chunk_size), want $CHUNK"
  [[ $(v .total_chunks) == "${want_total[$name]}" ]] || soft_fail "$name: total_chunks $(v .total_chunks), want ${want_total[$name]}"
  d=$(v .dirty_chunks)
  [[ $d =~ ^[0-9]+$ ]] || { soft_fail "$name: dirty_chunks '$d'"; continue; }
  ((d >= min_dirty[$name] && d <= $(v .total_chunks))) ||
    soft_fail "$name: dirty_chunks $d, want between ${min_dirty[$name]} and $(v .total_chunks)"
  st=$(v .state)
  case $st in clean | active | resyncing | degraded) ;; *) soft_fail "$name: state '$st' not one of clean|active|resyncing|degraded" ;; esac
  ((d == 0)) || [[ $st != clean ]] || soft_fail "$name: state clean with $d dirty chunks"
  ((d > 0)) || [[ $st == clean ]] || soft_fail "$name: state '$st' with 0 dirty chunks and no resync"
  [[ $(v .sync.action) == idle ]] || soft_fail "$name: sync.action '$(v .sync.action)', want idle"
  ((($(v .sync.done_bytes)) <= $(v .sync.total_bytes))) || soft_fail "$name: sync done_bytes > total_bytes"
  bf=$(v .bitmap_file)
  want_bf=$(fm_bitmap_path "$PRI" "$name")
  [[ $(realpath -m "$bf") == "$want_bf" ]] || soft_fail "$name: bitmap_file '$bf', want $want_bf"
  # the on-disk bitmap says the same (bits are durable before data, and no clearing
  # happens within the 30 s daemon sleep)
  if [[ -f $bf ]]; then
    out=$(fm_examine "$bf")
    read -r et ed < <(fm_examine_bits "$out")
    ((et == $(v .total_chunks))) || soft_fail "$name: examine-bitmap $et bits, status total_chunks $(v .total_chunks)"
    ((ed == d)) || soft_fail "$name: examine-bitmap $ed dirty, status dirty_chunks $d"
    [[ $(fm_examine_field "$out" UUID) == *"$UUID"* ]] ||
      fm_log "note: examine-bitmap UUID '$(fm_examine_field "$out" UUID)' is not the set uuid (may be the image uuid)"
  else
    soft_fail "$name: bitmap_file $bf does not exist"
  fi
done
# the exact count for dirty.img: chunks 0, 10, 100, 199, 200 (creation by truncate dirties
# nothing with data); not required by the contract, logged only
fm_log "dirty.img dirty_chunks = $(jq -r '.images[] | select(.name == "dirty.img") | .dirty_chunks' <<<"$S") (5 written chunks)"

FM_CONTEXT="virtual status.json"
if [[ $'\n'$(ls -a "$MNT")$'\n' == *$'\n'.fusemirror$'\n'* ]]; then
  soft_fail "readdir of the mount lists .fusemirror"
fi
V=$(cat "$MNT/.fusemirror/status.json") || fail "cannot read $MNT/.fusemirror/status.json"
jq -e . >/dev/null <<<"$V" || fail "$MNT/.fusemirror/status.json is not JSON: $V"
# the virtual file holds either the CLI's {"sets":[...]} or this set's object; compare
# the per-image numbers, and the set's identity where the file has it
norm='[(if has("sets") then .sets[] else . end) | {images: [.images[] | {name, size, chunk_size, dirty_chunks, total_chunks, state, bitmap_file}] | sort_by(.name)}]'
[[ $(jq -S "$norm" <<<"$V") == "$(jq -S "$norm" <<<"$J")" ]] ||
  soft_fail "MOUNT/.fusemirror/status.json images differ from status --json:
$(diff <(jq -S "$norm" <<<"$J") <(jq -S "$norm" <<<"$V") | head -n 20 || true)"
vuuid=$(jq -r '(if has("sets") then .sets[0] else . end) | .uuid // empty' <<<"$V")
[[ -z $vuuid || $vuuid == "$UUID" ]] || soft_fail "MOUNT/.fusemirror/status.json uuid '$vuuid' != config uuid $UUID"
[[ ! -e $PRI/.fusemirror/status.json ]] || soft_fail "status.json appeared in the primary's .fusemirror"

FM_CONTEXT="text"
T=$(fm_timeout 30 "$FUSEMIRROR" status "$MNT" 2>"$FM_TMP/logs/status-text.err") ||
  fail "fusemirror status $MNT failed: $(cat "$FM_TMP/logs/status-text.err")"
printf '%s\n' "$T" >"$FM_TMP/logs/status.txt"
J2=$(fm_status_json "$MNT")
S2=$(jq -c '.sets[0]' <<<"$J2")
[[ $(jq -c '[.images[] | {name, dirty_chunks, total_chunks}] | sort_by(.name)' <<<"$S") == \
   "$(jq -c '[.images[] | {name, dirty_chunks, total_chunks}] | sort_by(.name)' <<<"$S2")" ]] ||
  fail "dirty numbers changed while the daemon sleep is 30s:
$(diff <(jq -S '[.sets[0].images[] | {name, dirty_chunks, total_chunks}] | sort_by(.name)' <<<"$J") \
       <(jq -S '[.sets[0].images[] | {name, dirty_chunks, total_chunks}] | sort_by(.name)' <<<"$J2") || true)"
word() { grep -E "(^|[^0-9A-Za-z])$(re_quote "$1")([^0-9A-Za-z]|$)" >/dev/null <<<"$2"; }
word "$UUID" "$T" || soft_fail "status text does not show the set uuid $UUID"
word "$MNT" "$T" || soft_fail "status text does not show the mount point $MNT"
word "$PID" "$T" || soft_fail "status text does not show the daemon pid $PID"
word "$PRI" "$T" || soft_fail "status text does not show the primary $PRI"
word "$SEC" "$T" || soft_fail "status text does not show the secondary $SEC"
# per image: its block of lines (from the line naming it to the next image's) shows
# the same dirty and total numbers and state as the JSON
mapfile -t names < <(jq -r '.images[].name' <<<"$S")
for name in "${names[@]}"; do
  I=$(jq -c --arg n "$name" '.images[] | select(.name == $n)' <<<"$S")
  d=$(jq -r .dirty_chunks <<<"$I") t=$(jq -r .total_chunks <<<"$I") st=$(jq -r .state <<<"$I")
  others=$(printf '%s\n' "${names[@]}" | grep -vxF "$name" | sed 's/[][\.*^$+?(){}|]/\\&/g' | paste -sd'|' || true)
  block=$(FM_N=$name FM_O=$others awk 'BEGIN { n = ENVIRON["FM_N"]; o = ENVIRON["FM_O"] }
      function names_it(line, x) { return index(line, x) > 0 }
      names_it($0, n) && !(o != "" && $0 ~ ("(^|[^A-Za-z0-9_/.])(" o ")([^A-Za-z0-9_/.]|$)")) { on = 1; print; next }
      on && o != "" && $0 ~ ("(^|[^A-Za-z0-9_/.])(" o ")([^A-Za-z0-9_/.]|$)") { on = 0 }
      on { print }' <<<"$T")
  if [[ -z $block ]]; then
    soft_fail "status text has no line naming image $name"
    continue
  fi
  if grep -E "(^|[^0-9])$d */ *$t([^0-9]|$)" >/dev/null <<<"$block"; then
    :
  elif word "$d" "$block" && word "$t" "$block"; then
    :
  else
    soft_fail "status text for $name does not show dirty $d and total $t:
$block"
  fi
  word "$st" "$block" || soft_fail "status text for $name does not show state '$st':
$block"
done

# status without a mount point lists this set too
FM_CONTEXT="status (all)"
A=$(fm_status_json)
jq -e --arg u "$UUID" '[.sets[] | select(.uuid == $u)] | length == 1' >/dev/null <<<"$A" ||
  soft_fail "status --json (no mount point) does not list set $UUID once: $A"
TA=$(fm_timeout 30 "$FUSEMIRROR" status 2>/dev/null) || soft_fail "fusemirror status (no args) failed"
word "$MNT" "${TA:-}" || soft_fail "status (no args) text does not show $MNT"

# after unmount the set is gone from status, and status MNT fails
FM_CONTEXT="after unmount"
fm_unmount "$MNT"
A=$(fm_timeout 30 "$FUSEMIRROR" status --json 2>/dev/null || true)
if [[ -n $A ]] && jq -e --arg u "$UUID" '[.sets[]? | select(.uuid == $u)] | length > 0' >/dev/null <<<"$A"; then
  soft_fail "status --json still lists set $UUID after unmount: $A"
fi
expect_fail "status of the unmounted mount point" "$(re_quote "$MNT")" "$FUSEMIRROR" status "$MNT" --json || true

# daemon mode: `mount` without -f returns once the mount is live; `unmount` returns once
# the daemon has exited (bitmaps flushed and clean, lock released)
FM_CONTEXT="daemon mode"
rc=0
fm_timeout 30 "$FUSEMIRROR" mount "$PRI" "$MNT" 2>"$FM_TMP/logs/dmount.err" || rc=$?
((rc == 0)) || fail "fusemirror mount (daemon mode) exited $rc: $(cat "$FM_TMP/logs/dmount.err")"
FM_MOUNTS+=("$MNT")
fm_is_mounted "$MNT" || soft_fail "fusemirror mount (daemon mode) returned before the mount was live"
fm_wait_for "mount" 10 fm_is_mounted "$MNT" || fail "daemon-mode mount never went live"
J=$(fm_status_json "$MNT")
dpid=$(jq -r '.sets[0].pid' <<<"$J")
[[ $dpid =~ ^[0-9]+$ ]] && fm_alive "$dpid" || fail "status pid '$dpid' of the daemon-mode mount is not a live process"
tr '\0' ' ' <"/proc/$dpid/cmdline" | grep -q fusemirror || soft_fail "status pid $dpid is not a fusemirror process: $(tr '\0' ' ' <"/proc/$dpid/cmdline")"
[[ $(jq -r '.sets[0].uuid' <<<"$J") == "$UUID" ]] || soft_fail "daemon-mode status uuid differs from config"
pwrite_rand "$MNT/dirty.img" 0 4096
rc=0
fm_timeout 60 "$FUSEMIRROR" unmount "$MNT" 2>"$FM_TMP/logs/dumount.err" || rc=$?
((rc == 0)) || soft_fail "fusemirror unmount (daemon mode) exited $rc: $(cat "$FM_TMP/logs/dumount.err")"
if fm_alive "$dpid"; then
  soft_fail "fusemirror unmount returned while the daemon (pid $dpid) was still running"
  fm_wait_for "daemon exit" 30 eval '! fm_alive "$dpid"' || fail "daemon pid $dpid still running 30s after unmount"
fi
fm_is_mounted "$MNT" && fail "$MNT still mounted after fusemirror unmount"
if command -v flock >/dev/null && [[ -f $PRI/.fusemirror/lock ]]; then
  flock -n "$PRI/.fusemirror/lock" true || soft_fail "the set's lock is still held after unmount returned"
fi
for name in clean.img dirty.img sub/odd.img; do
  out=$(fm_examine "$(fm_bitmap_path "$PRI" "$name")")
  [[ $(fm_examine_field "$out" State) == clean ]] ||
    soft_fail "$name: examine-bitmap State '$(fm_examine_field "$out" State)' right after daemon-mode unmount returned"
  assert_same "$PRI/$name" "$SEC/$name"
done

fm_assert_log_clean "$PRI"

fm_pass
