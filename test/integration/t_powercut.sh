#!/bin/bash
# t_powercut — power-loss safety, measured: every mutating operation the daemon makes
# below the mirror is recorded (fm_recordfs, under the primary, the secondary and the
# bitmaps at once), and fm_powercut replays the log into the states a power cut can leave
# (unsynced writes lost, kept or torn; unsynced names there or not) and checks each one:
# intent before data and no trusted checksum accusing a leg offline, the acknowledged writes
# on the primary, and on a sample the
# recovery (mount, `wait --clean`, unmount: legs identical, acknowledged writes read back;
# e2fsck of an ext4 inside). The crash model and the figures: docs/reliability.md §9.
#
# Workloads (wl_* below): randsync direct nosync stream alevict alburst writebehind bursts remount evict
# discard failreadd resync (the data paths: the default here) and create namespace checkrepair
# rescale ext4 checksums (names, offline tools, checksums: t_powercut_names.sh).
# test/reliability/run --powercut runs
# them all, longer.
#
# Environment (defaults are the CI size, about 40 s):
#   FM_PC_WORKLOADS      the workloads, in order
#   FM_PC_STATES         states per workload (default 20)
#   FM_PC_RECOVER_EVERY  every K-th state also gets the recovery check (default 20; 0: none)
#   FM_PC_SEED           the run's seed (default: random, printed)
#   FM_PC_LOAD_SECS      seconds of load per workload (default 1)
#   FM_PC_DAEMON_FAULT   FM_FAULT for the daemon under test (test builds), e.g. bitmap.late
#   FM_PC_AL_EXTENTS     al_extents of every new set (default: the config's default, on)
#   FM_PC_EXPECT         "clean" (default: 0 violations) or "violations" (> 0: the suite
#                        catches a broken daemon; t_powercut_canary.sh)
# Prints, per workload, fm_powercut's figures, and at the end
# "powercut: N states, V violations" (exit 1 if V does not match FM_PC_EXPECT).
. "$(dirname "$0")/lib.sh"

TOOLS=$(dirname "$FUSEMIRROR")/../test/tools
PC=${FM_POWERCUT:-$TOOLS/fm_powercut}
RFS=${FM_RECORDFS:-$TOOLS/fm_recordfs}
CW=${FM_CRASHWRITER:-$TOOLS/fm_crashwriter}
for t in "$PC" "$RFS" "$CW"; do [[ -x $t ]] || fail "$t not found (set FM_POWERCUT, FM_RECORDFS, FM_CRASHWRITER)"; done
RECOVER=$FM_LIB_DIR/powercut_recover.sh
STATES=${FM_PC_STATES:-20}
EVERY=${FM_PC_RECOVER_EVERY:-20}
SEED=${FM_PC_SEED:-$((RANDOM * 32768 + RANDOM))}
LOAD=${FM_PC_LOAD_SECS:-1}
EXPECT=${FM_PC_EXPECT:-clean}
WORKLOADS=${FM_PC_WORKLOADS:-randsync direct nosync stream alevict alburst writebehind bursts remount evict discard failreadd resync}
ROOT=$FM_TMP/root  # what the recorder shows: root/primary, root/secondary
REC=$FM_TMP/rec    # its mount point: the set's config names REC/primary, REC/secondary
SNAP=$FM_TMP/snap
mkdir -p "$ROOT" "$REC"
fm_log "seed $SEED, $STATES states per workload, recovery every $EVERY; workloads: $WORKLOADS"

REC_PID=""
rec_start() { # rec_start LOG — the recorder over ROOT at REC
  fm_bg "$RFS" "$ROOT" "$REC" --log "$1" -f
  REC_PID=$FM_LAST_BG
  fm_wait_for "recorder" 20 fm_is_mounted "$REC" || fail "fm_recordfs did not mount"
}
rec_stop() { # the log is complete once the recorder exits
  fm_timeout 20 fusermount3 -u "$REC" || fail "cannot unmount the recorder"
  _fm_wait_pid "$REC_PID" 20 || fail "fm_recordfs did not exit"
  REC_PID=""
}
daemon_mount() { # daemon_mount [ARGS] — fusemirror on REC/primary at MNT, with the fault
  if [[ -n ${FM_PC_DAEMON_FAULT:-} ]]; then
    FM_FAULT=$FM_PC_DAEMON_FAULT fm_mount "$REC/primary" "$MNT" "$@"
  else
    fm_mount "$REC/primary" "$MNT" "$@"
  fi
}
power_cut() { # the daemon dies with the machine: kill -9, then the dead mount goes
  local pid
  pid=$(fm_daemon_pid "$MNT")
  kill -KILL "$pid" 2>/dev/null || true
  _fm_wait_pid "$pid" 10 || fail "daemon $pid survived kill -9"
  unset "FM_PID[$(realpath -m -- "$MNT")]"
  fm_timeout 20 fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || fail "cannot unmount the dead mount"
}
pc_config() { # pc_config JQ_FILTER — edits the new set's config (through the recorder)
  fm_json_edit "$REC/primary/.fusemirror/config.json" "$1"
}
new_set() { # new_set [CREATE ARGS] — an empty root, the set created through the recorder
  rm -rf --one-file-system "${ROOT:?}"/* "$SNAP"
  mkdir -m 0755 "$ROOT/primary" "$ROOT/secondary"
  rec_start "$FM_TMP/logs/setup.log"
  fm_create "$REC/primary" "$REC/secondary" --chunk-size 64K --daemon-sleep 0.1 "$@" >/dev/null
  if [[ -n ${FM_PC_AL_EXTENTS:-} ]]; then
    [[ $FM_PC_AL_EXTENTS =~ ^[0-9]+$ ]] || fail "FM_PC_AL_EXTENTS must be a number"
    pc_config ".al_extents = $FM_PC_AL_EXTENTS"
  fi
}
snapshot_and_record() { # the setup is over: snapshot the root, record the workload's log
  rec_stop
  cp -a --sparse=always "$ROOT" "$SNAP"
  rec_start "$FM_TMP/logs/$1.log"
}
syncdir() { # syncdir DIR NAME... — fsync of MNT/DIR; then each NAME (under MNT) must survive
  local dir=$1 n
  shift
  "$CW" syncdir "$MNT/$dir" || fail "fsync of the directory $MNT/$dir failed"
  for n in "$@"; do printf 'exists primary/%s\n' "$n" >"$REC/.recordfs"; done
}
crashwriter() { # crashwriter IMAGE SECS [ARGS] — the verifying load with marks, for SECS
  local img=$1 secs=$2
  shift 2
  timeout "$secs" "$CW" write "$MNT/$img" "$FM_TMP/logs/acks.$img" --mark "$REC/.recordfs" --image "$img" "$@" ||
    true
}
crashwriter_lanes() { # crashwriter_lanes IMAGE SECS [ARGS] — four crashwriters at once, on disjoint blocks
  local k pids=()
  for k in 0 1 2 3; do
    crashwriter "$@" --lanes 4 --lane "$k" &
    pids+=($!)
  done
  wait "${pids[@]}"
}

# ---------------------------------------------------------------------------- workloads
# Each: new_set, setup (unrecorded: in the snapshot), snapshot_and_record, load, power_cut.

wl_randsync() { # random 4 KiB writes, fsync every 8
  new_set
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record randsync
  daemon_mount
  crashwriter disk.img "$LOAD" --blocks 4096 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_direct() { # randsync's load with every aligned write direct (write-path.md §1b), half of
  # them whole 64 KiB chunks, whose checksums the sweep takes from the writes' own buffers
  # (§9.2 "Hashes from the write"); swept clean twice, over chunks also written in part
  new_set
  pc_config '.direct_write_max = 1048576 | .direct_write_inflight = 1'
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record direct
  daemon_mount
  local n round
  # Short rounds, each swept clean: most of the log then holds trusted checksums, which the
  # states check (a stale hash from a write would accuse the good leg).
  for round in 1 2 3 4; do
    crashwriter disk.img "$LOAD" --blocks 4096 --sync-every 8 --run 16 --max-writes 128 --seed "$((SEED + round))"
    "$FUSEMIRROR" wait --clean "$MNT" disk.img --timeout 20 >/dev/null || fail "direct: disk.img not clean after round $round"
  done
  n=$(fm_image_json "$MNT" disk.img | jq -r .direct_writes)
  [[ $n =~ ^[0-9]+$ ]] && ((n > 0)) || fail "direct: the load made $n direct writes (the legs refused O_DIRECT?)"
  n=$(fm_image_json "$MNT" disk.img | jq -r .hashes_from_writes)
  [[ $n =~ ^[0-9]+$ ]] && ((n > 0)) || fail "direct: the sweep took $n checksums from direct writes"
  crashwriter disk.img 1 --blocks 4096 --sync-every 8 --run 16 --max-writes 64 --seed "$SEED"
  power_cut
}

wl_nosync() { # random 4 KiB writes, never an fsync (the sweeper's own syncs only)
  new_set
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record nosync
  daemon_mount
  crashwriter disk.img "$LOAD" --blocks 4096 --sync-every 1000000000 --seed "$SEED"
  power_cut
}

wl_stream() { # sequential streams: intent ahead sets the bits of the next 16 MiB early
  new_set
  daemon_mount
  truncate -s 32M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record stream
  daemon_mount
  crashwriter disk.img "$LOAD" --blocks 8192 --sync-every 32 --sequential --seed "$SEED"
  power_cut
}

wl_alevict() { # the activity log over its bound: activations, and retirements that clear at once
  # 16 extents of 1 MiB, 2 active at most (every workload runs with the log on, at its
  # default bound, which a 16 MiB image never reaches): most writes activate an extent in
  # their flush and retire another, whose never-written chunks are cleared without a sync.
  new_set
  pc_config '.al_extents = 2 | .al_extent_size = 1048576'
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record alevict
  daemon_mount
  crashwriter disk.img "$LOAD" --blocks 4096 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_alburst() { # writers into cold extents: activation ahead, in a burst and in dense groups (write-path.md §3b)
  # 256 extents of 256 KiB, in four groups of 64: a writer that activates an extent while another
  # writer's flush runs activates the rest of its group in the same flush. Each round is
  # swept clean first, so that it starts cold; at least one must have made a burst. Then a
  # writer alone, from cold: its 16th extent in a group activates the rest (a dense group).
  # The lone writer stays in the first group (16 MiB), and this set sweeps every second: a
  # sweep retires every extent its period saw no write to, and with the suite's 0.1 s and
  # the writer spread over four groups a loaded machine's writer seldom had 16 extents of
  # one group active at once (CI saw 0 adopted).
  new_set
  pc_config '.al_extent_size = 262144 | .daemon_sleep = 1'
  daemon_mount
  truncate -s 64M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record alburst
  daemon_mount
  local n m round
  # Cold: every bit clear and every extent retired (the sweep after an idle period retires
  # them; a clean bitmap alone may still hold the last round's extents active).
  cold() {
    "$FUSEMIRROR" wait --clean "$MNT" disk.img --timeout 20 >/dev/null || fail "alburst: disk.img not clean before $1"
    fm_wait_for "no active extent before $1" 20 fm_image_is "$MNT" disk.img '.active_extents == 0' ||
      fail "alburst: extents still active before $1: $(fm_image_json "$MNT" disk.img | jq -c '{active_extents, dirty_chunks}')"
  }
  for round in 1 2 3; do
    cold "round $round"
    crashwriter_lanes disk.img "$LOAD" --blocks 16384 --sync-every 8 --max-writes 48 --seed "$((SEED + round))"
  done
  n=$(fm_image_json "$MNT" disk.img | jq -r .al_burst_extents)
  [[ $n =~ ^[0-9]+$ ]] && ((n > 0)) || fail "alburst: four writers into cold extents activated $n extents ahead"
  cold "the lone writer"
  crashwriter disk.img "$LOAD" --blocks 4096 --sync-every 8 --max-writes 160 --seed "$((SEED + 4))"
  m=$(fm_image_json "$MNT" disk.img | jq -r .al_burst_extents)
  [[ $m =~ ^[0-9]+$ ]] && ((m > n)) || fail "alburst: a writer alone over cold groups activated $((m - n)) extents ahead"
  crashwriter_lanes disk.img "$LOAD" --blocks 16384 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_writebehind() { # a write-behind set: fsync covers the primary and the bits, not the secondary
  new_set --write-behind 64
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record writebehind
  daemon_mount
  crashwriter disk.img "$LOAD" --blocks 4096 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_bursts() { # bursts and idle periods: the sweeper clears bits in between (daemon sleep 0.3 s)
  new_set
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record bursts
  daemon_mount
  local end=$((SECONDS + LOAD + 1))
  while ((SECONDS < end)); do
    crashwriter disk.img 5 --blocks 4096 --sync-every 4 --max-writes 40 --seed "$SEED"
    sleep 0.7
  done
  power_cut
}

wl_remount() { # clean unmounts and mounts: the clean header and record, the scan's images closed clean
  new_set
  daemon_mount
  truncate -s 8M "$MNT/a.img" "$MNT/b.img"
  fm_unmount "$MNT"
  snapshot_and_record remount
  daemon_mount
  crashwriter a.img 5 --blocks 2048 --sync-every 8 --max-writes 150 --seed "$SEED"
  fm_unmount "$MNT"
  daemon_mount
  crashwriter b.img 5 --blocks 2048 --sync-every 8 --max-writes 100 --seed "$SEED"
  crashwriter a.img 5 --blocks 2048 --sync-every 8 --max-writes 50 --seed "$SEED"
  fm_unmount "$MNT"
  daemon_mount
  crashwriter a.img "$LOAD" --blocks 2048 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_evict() { # more images than max_open_images: idle ones closed clean and loaded again, under load
  new_set
  pc_config '.max_open_images = 2'
  daemon_mount
  truncate -s 4M "$MNT/a.img" "$MNT/b.img" "$MNT/c.img" "$MNT/d.img"
  fm_unmount "$MNT"
  snapshot_and_record evict
  daemon_mount
  local round img
  for round in 1 2; do
    for img in a b c d; do
      crashwriter "$img.img" 5 --blocks 1024 --sync-every 8 --max-writes 40 --seed "$SEED"
    done
  done
  power_cut
}

wl_discard() { # fallocate through the mount: punch, zero range, allocate past the end, grow
  new_set
  daemon_mount
  truncate -s 8M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record discard
  daemon_mount
  crashwriter disk.img 5 --blocks 2048 --sync-every 8 --max-writes 150 --seed "$SEED"
  fallocate -p -o 1M -l 512K "$MNT/disk.img"
  fallocate -z -o 3M -l 300K "$MNT/disk.img"
  crashwriter disk.img 5 --blocks 2048 --sync-every 8 --max-writes 50 --seed "$SEED"
  fallocate -n -o 8M -l 1M "$MNT/disk.img"
  fallocate -o 7M -l 3M "$MNT/disk.img"
  fallocate -p -o 5M -l 64K "$MNT/disk.img"
  crashwriter disk.img 5 --blocks 2560 --sync-every 8 --max-writes 80 --seed "$SEED"
  power_cut
}

wl_create() { # from nothing: create the set, mount, make an image, write it (all recorded)
  rm -rf --one-file-system "${ROOT:?}"/* "$SNAP"
  mkdir -m 0755 "$ROOT/primary" "$ROOT/secondary"
  cp -a "$ROOT" "$SNAP"
  rec_start "$FM_TMP/logs/create.log"
  fm_create "$REC/primary" "$REC/secondary" --chunk-size 64K --daemon-sleep 0.1 >/dev/null
  # create returned: the set must survive a power cut from here on
  printf 'exists primary/.fusemirror/config.json\nexists secondary/.fusemirror/member.json\n' >"$REC/.recordfs"
  daemon_mount
  truncate -s 4M "$MNT/disk.img"
  crashwriter disk.img 1 --blocks 1024 --sync-every 8 --max-writes 200 --seed "$SEED"
  power_cut
}

wl_namespace() { # images created, grown, shrunk, renamed (also over another) and deleted
  new_set
  daemon_mount
  truncate -s 4M "$MNT/a.img" "$MNT/b.img"
  fm_unmount "$MNT"
  snapshot_and_record namespace
  daemon_mount
  crashwriter a.img 5 --blocks 1024 --sync-every 8 --max-writes 64 --seed "$SEED"
  truncate -s 8M "$MNT/a.img"
  crashwriter a.img 5 --blocks 2048 --sync-every 8 --max-writes 32 --seed "$SEED"
  truncate -s 2M "$MNT/a.img"
  truncate -s 6M "$MNT/a.img"
  truncate -s 4M "$MNT/c.img"
  crashwriter c.img 5 --blocks 1024 --sync-every 8 --max-writes 64 --seed "$SEED"
  mv "$MNT/c.img" "$MNT/d.img"
  crashwriter d.img 5 --blocks 1024 --sync-every 8 --max-writes 32 --seed "$SEED"
  crashwriter b.img 5 --blocks 1024 --sync-every 8 --max-writes 32 --seed "$SEED"
  mv "$MNT/d.img" "$MNT/b.img"
  crashwriter b.img 5 --blocks 1024 --sync-every 8 --max-writes 32 --seed "$SEED"
  rm "$MNT/a.img"
  truncate -s 4M "$MNT/a.img"
  crashwriter a.img 5 --blocks 1024 --sync-every 8 --max-writes 32 --seed "$SEED"
  mkdir "$MNT/sub"
  syncdir . a.img sub
  mv "$MNT/b.img" "$MNT/sub/b.img"
  syncdir sub sub/b.img
  crashwriter sub/b.img 5 --blocks 1024 --sync-every 8 --max-writes 32 --seed "$SEED"
  truncate -s 1M "$MNT/e.img"
  mkdir "$MNT/empty"
  syncdir . e.img empty
  crashwriter e.img 5 --blocks 256 --sync-every 8 --max-writes 32 --seed "$SEED"
  power_cut
}

wl_checksums() { # chunks hashed by the sweeper, then a shrink mid-chunk and a regrow (invariant 9)
  new_set
  daemon_mount
  truncate -s 4M "$MNT/a.img"
  fm_unmount "$MNT"
  snapshot_and_record checksums
  daemon_mount
  # Chunk 15 holds data whatever the seed, so that the shrink below really changes a hashed
  # chunk (a chunk of zeros cut to zeros changes nothing: the canary would depend on the
  # seed hitting it).
  dd if="$(fm_rand)" of="$MNT/a.img" bs=64K seek=15 count=1 conv=notrunc,fsync status=none ||
    fail "writing chunk 15 of a.img failed"
  crashwriter a.img 5 --blocks 1024 --sync-every 8 --max-writes 64 --seed "$SEED"
  "$FUSEMIRROR" wait --clean "$MNT" a.img --timeout 20 >/dev/null || fail "a.img not clean (checksums recorded) after the load"
  truncate -s 1000000 "$MNT/a.img"  # inside chunk 15: its tail and the chunks past it change without a bit
  truncate -s 4M "$MNT/a.img"
  crashwriter a.img 5 --blocks 1024 --sync-every 8 --max-writes 16 --seed "$SEED"
  sleep 0.5
  power_cut
}

wl_failreadd() { # the secondary failed, written degraded, re-added: resync cut by the crash
  new_set
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  fm_unmount "$MNT"
  snapshot_and_record failreadd
  daemon_mount
  crashwriter disk.img 1 --blocks 4096 --sync-every 8 --seed "$SEED"
  fm_cli fail "$MNT" disk.img
  crashwriter disk.img 1 --blocks 4096 --sync-every 8 --seed "$SEED"
  fm_cli re-add "$MNT" disk.img
  crashwriter disk.img 1 --blocks 4096 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_resync() { # a full resync of an adopted image, cut by the crash, with writes racing it
  rm -rf --one-file-system "${ROOT:?}"/* "$SNAP"
  mkdir -m 0755 "$ROOT/primary" "$ROOT/secondary"
  head -c 24M /dev/urandom >"$ROOT/primary/disk.img"
  rec_start "$FM_TMP/logs/setup.log"
  fm_create "$REC/primary" "$REC/secondary" --chunk-size 64K --daemon-sleep 0.1 >/dev/null
  snapshot_and_record resync
  daemon_mount
  crashwriter disk.img "$LOAD" --blocks 6144 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_checkrepair() { # check and repair of planted differences, cut by the crash
  new_set
  daemon_mount
  truncate -s 8M "$MNT/disk.img"
  crashwriter disk.img 5 --blocks 2048 --sync-every 64 --max-writes 512 --seed "$SEED"
  fm_unmount "$MNT"
  rec_stop
  # differences no bit knows of (a bad disk, say): only check/repair can find them
  local c
  for c in 3 17 40 99; do printf 'PLANTED' | dd of="$ROOT/secondary/disk.img" bs=1 seek=$((c * 65536 + 100)) conv=notrunc status=none; done
  rec_start "$FM_TMP/logs/setup2.log"
  snapshot_and_record checkrepair
  daemon_mount
  fm_cli sync-action "$MNT" disk.img check
  sleep 0.5
  fm_cli sync-action "$MNT" disk.img repair
  crashwriter disk.img 1 --blocks 2048 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_rescale() { # rescale-bitmap (offline) of a dirty bitmap, then a mount that writes
  new_set
  daemon_mount
  truncate -s 16M "$MNT/disk.img"
  crashwriter disk.img 1 --blocks 4096 --sync-every 8 --seed "$SEED"
  power_cut  # leaves bits set
  snapshot_and_record rescale
  fm_cli rescale-bitmap "$REC/primary/.fusemirror/bitmaps/disk.img.fmbm" --chunk-size 256K >/dev/null
  daemon_mount
  crashwriter disk.img 1 --blocks 4096 --sync-every 8 --seed "$SEED"
  power_cut
}

wl_ext4() { # the client's view: an ext4 inside the image (mkfs, copy, sync, more writes)
  command -v mkfs.ext4 >/dev/null || fail "mkfs.ext4 missing (e2fsprogs)"
  new_set
  daemon_mount
  truncate -s 32M "$MNT/fs.img"
  mkfs.ext4 -q -F -b 4096 "$MNT/fs.img"
  fm_unmount "$MNT"
  snapshot_and_record ext4
  daemon_mount
  local loop dir=$FM_TMP/ext4
  mkdir -p "$dir"
  loop_attach "$MNT/fs.img"
  loop=$FM_LAST_LOOP
  PC_E2FSCK=fs.img
  mount -t ext4 "$loop" "$dir" || fail "mount ext4 failed"
  fm_track_mount "$dir"
  cp -a /usr/share/doc/. "$dir/doc1/" 2>/dev/null || true
  sync -f "$dir"
  (
    trap - ERR
    set +e
    cp -a /usr/share/doc/. "$dir/doc2/"
    rm -rf "$dir/doc1/"[a-m]*
  ) >/dev/null 2>&1 &
  local cpid=$!
  sleep "$LOAD"
  power_cut
  wait "$cpid" 2>/dev/null || true
  umount -l "$dir" 2>/dev/null || true
  losetup -d "$loop" 2>/dev/null || true
}

# ---------------------------------------------------------------------------- the run

total_states=0 total_violations=0
for w in $WORKLOADS; do
  declare -F "wl_$w" >/dev/null || fail "no workload '$w'"
  FM_CONTEXT=$w
  PC_E2FSCK=""
  "wl_$w"
  rec_stop
  mv "$SNAP" "$FM_TMP/snap.$w"
  out=$("$PC" selftest --log "$FM_TMP/logs/$w.log" --snapshot "$FM_TMP/snap.$w" --final "$ROOT" 2>&1) ||
    fail "the replay of every record does not give the recorder's final root: $out"
  rc=0
  out=$(FUSEMIRROR=$FUSEMIRROR FM_PC_FMNT=$MNT FM_PC_LOGDIR=$FM_TMP/logs FM_PC_E2FSCK=$PC_E2FSCK \
    "$PC" run --log "$FM_TMP/logs/$w.log" --snapshot "$FM_TMP/snap.$w" --mount-path "$REC" --seed "$SEED" \
    --states "$STATES" --recover-every "$EVERY" --recover-cmd "bash $RECOVER" --label "$w" 2>&1) || rc=$?
  grep -E '^(VIOLATION|  state:|  replay:)' <<<"$out" | awk 'NR <= 30' >&2 || true
  grep -E '^powercut ' <<<"$out" >&2 || true
  line=$(grep -E "^powercut $w: [0-9]+ states, [0-9]+ violations$" <<<"$out") ||
    fail "fm_powercut run exited $rc without its summary: $(tail -n 5 <<<"$out")"
  read -r _ _ n _ v _ <<<"$line"
  total_states=$((total_states + n))
  total_violations=$((total_violations + v))
  ((rc == 0 || rc == 1)) || fail "fm_powercut run exited $rc: $(tail -n 5 <<<"$out")"
  # a failing workload keeps its snapshot and log (FM_KEEP=1 keeps the whole temp dir), so
  # that the replay commands printed above work
  ((v > 0 || ${FM_KEEP:-0} == 1)) || rm -rf --one-file-system "$FM_TMP/snap.$w"
done
FM_CONTEXT=""
echo "powercut: $total_states states, $total_violations violations" >&2
if [[ $EXPECT == violations ]]; then
  ((total_violations > 0)) || fail "the daemon under test (FM_FAULT=${FM_PC_DAEMON_FAULT:-}) is broken on purpose, and no state caught it"
else
  ((total_violations == 0)) || fail "$total_violations violations (replay commands above; seed $SEED)"
fi
fm_pass
