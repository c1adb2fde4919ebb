#!/bin/bash
# t_sshfs — write-behind to a secondary on a real network file system over loopback
# (issue 4, item 5): a private sshd on 127.0.0.1 (its own config, host key, client key and
# port, all in FM_TMP), sshfs mounts FM_TMP/remote at FM_TMP/sec, and the mirror set's
# secondary is a directory in that sshfs mount, with --write-behind 64.
#
# A 64 MiB image of random data is written through the mount and fsync'ed; once the
# write-behind queue is drained and every bit cleared, the set is unmounted and the file
# under FM_TMP/remote (the far end of the network mount, read directly) must be byte for
# byte the primary's, and the data written.
#
# Link loss (issue 15, item 4): a second set, reconnecting by itself (the product's
# default), on the same sshfs mount (-o reconnect); sshd is stopped (its listener and the
# session serving sshfs) while the image is written: no user error, the image degraded;
# sshd started again on the same port: the set reconnects and catches up from the bitmap
# with no operator command (only the dirty chunks copied); the legs end identical.
#
# Needs openssh-server and sshfs (installed with apt-get when missing; exit 77 only when
# they cannot be installed).
. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------------------- tools
need_install=()
[[ -x /usr/sbin/sshd ]] || need_install+=(openssh-server)
command -v sshfs >/dev/null || need_install+=(sshfs)
command -v ssh-keygen >/dev/null || need_install+=(openssh-client)
if ((${#need_install[@]})); then
  fm_log "installing ${need_install[*]}"
  if ! DEBIAN_FRONTEND=noninteractive fm_timeout 300 apt-get install -y -q "${need_install[@]}" \
    >"$FM_TMP/logs/apt.log" 2>&1; then
    fm_timeout 300 apt-get update -q >>"$FM_TMP/logs/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive fm_timeout 300 apt-get install -y -q "${need_install[@]}" \
      >>"$FM_TMP/logs/apt.log" 2>&1 || true
  fi
  if [[ ! -x /usr/sbin/sshd ]] || ! command -v sshfs >/dev/null || ! command -v ssh-keygen >/dev/null; then
    echo "SKIP $FM_TEST_NAME: openssh-server / sshfs cannot be installed: $(tail -n 3 "$FM_TMP/logs/apt.log")" >&2
    # shellcheck disable=SC2034 # read by lib.sh's EXIT trap, which cleans up and keeps the status
    FM_DONE=1
    exit 77
  fi
fi

# ---------------------------------------------------------------------------- sshd
SSHD_DIR=$FM_TMP/ssh
REMOTE=$FM_TMP/remote # the far side of the network file system
NETSEC=$FM_TMP/sec    # the sshfs mount
mkdir -p "$SSHD_DIR" "$REMOTE" "$NETSEC"
chmod 0700 "$SSHD_DIR"
ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/host_key" || fail "ssh-keygen (host key) failed"
ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/client_key" || fail "ssh-keygen (client key) failed"
cp "$SSHD_DIR/client_key.pub" "$SSHD_DIR/authorized_keys"
chmod 0600 "$SSHD_DIR/authorized_keys"

free_port() { # a random TCP port in 20000..59999 that no socket uses (per /proc/net/tcp*)
  local used p
  used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  for _ in $(seq 1 50); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    grep -qix "$(printf '%04X' "$p")" <<<"$used" || { echo "$p"; return 0; }
  done
  fail "no free TCP port found"
}
PORT=$(free_port)
cat >"$SSHD_DIR/sshd_config" <<EOF
ListenAddress 127.0.0.1
HostKey $SSHD_DIR/host_key
PidFile $SSHD_DIR/sshd.pid
AuthorizedKeysFile $SSHD_DIR/authorized_keys
PermitRootLogin yes
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
# sshd refuses to start without its privilege separation directory (the service unit makes it)
[[ -d /run/sshd ]] || install -d -m 0755 /run/sshd
/usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config" -p "$PORT" 2>"$FM_TMP/logs/sshd.t" ||
  fail "sshd rejects its config: $(cat "$FM_TMP/logs/sshd.t")"
start_sshd() {
  fm_bg /usr/sbin/sshd -D -f "$SSHD_DIR/sshd_config" -p "$PORT" -E "$FM_TMP/logs/sshd.log"
  SSHD_PID=$FM_LAST_BG
}
start_sshd
SSH_OPTS=(-o "IdentityFile=$SSHD_DIR/client_key" -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=5)
ssh_ok() { ssh "${SSH_OPTS[@]}" -p "$PORT" root@127.0.0.1 true </dev/null >/dev/null 2>&1; }
fm_wait_for "sshd" 20 ssh_ok ||
  fail "cannot log in to the test sshd on 127.0.0.1:$PORT (alive: $(fm_alive "$SSHD_PID" && echo yes || echo no)): $(tail -n 5 "$FM_TMP/logs/sshd.log")"
fm_log "sshd (pid $SSHD_PID) on 127.0.0.1:$PORT"

# ---------------------------------------------------------------------------- sshfs
sshfs "root@127.0.0.1:$REMOTE" "$NETSEC" -p "$PORT" -o reconnect \
  -o "IdentityFile=$SSHD_DIR/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR" \
  -o "ServerAliveInterval=1,ServerAliveCountMax=3,ConnectTimeout=2" \
  2>"$FM_TMP/logs/sshfs.err" || fail "sshfs failed: $(cat "$FM_TMP/logs/sshfs.err")"
fm_track_mount "$NETSEC"
fm_is_mounted "$NETSEC" || fail "sshfs returned 0 but $NETSEC is not mounted"
echo probe >"$NETSEC/probe" || fail "cannot write into the sshfs mount"
[[ $(cat "$REMOTE/probe") == probe ]] || fail "the sshfs mount does not reach $REMOTE"
rm -f "$NETSEC/probe"
mkdir "$NETSEC/mirror"

# ---------------------------------------------------------------------------- the mirror
LIM=64
fm_create "$PRI" "$NETSEC/mirror" --write-behind $LIM --daemon-sleep 1 --role backup
fm_mount "$PRI" "$MNT"
SRC=$FM_TMP/logs/src.bin
head -c $((64 << 20)) /dev/urandom >"$SRC"
t0=$(date +%s%N)
dd if="$SRC" of="$MNT/disk.img" bs=1M conv=fsync status=none || fail "writing 64 MiB through the mount failed"
ms=$((($(date +%s%N) - t0) / 1000000))
j=$(fm_image_json "$MNT" disk.img)
fm_log "64 MiB written and fsync'ed in ${ms} ms; then: $(jq -c '{write_behind, dirty_chunks, state}' <<<"$j")"
(($(jq -r .write_behind.peak <<<"$j") <= LIM)) || soft_fail "write_behind.peak above the limit $LIM: $j"

clean() { fm_image_is "$MNT" disk.img '.secondary_ok and .write_behind.outstanding == 0 and .unsynced_chunks == 0 and .dirty_chunks == 0 and .state == "clean"'; }
t0=$SECONDS
fm_wait_for "drained and clean" 180 clean || fail "not drained and clean after 180 s: $(fm_image_json "$MNT" disk.img)"
fm_log "drained and clean $((SECONDS - t0)) s after the fsync"
cmp "$MNT/disk.img" "$SRC" || soft_fail "the mount does not read back what was written"
fm_unmount "$MNT"
fm_assert_log_clean "$PRI"

# ---------------------------------------------------------------------------- compare
# the far end, read directly (not through sshfs): byte for byte the primary and the data
cmp "$PRI/disk.img" "$SRC" || soft_fail "the primary does not hold the data written"
cmp "$REMOTE/mirror/disk.img" "$PRI/disk.img" || fail "the secondary over sshfs differs from the primary"
assert_same "$PRI/disk.img" "$REMOTE/mirror/disk.img"
read -r _ dirty <<<"$(fm_examine_bits "$(fm_examine "$(fm_bitmap_path "$PRI" disk.img)")")"
((dirty == 0)) || soft_fail "the bitmap has $dirty dirty chunks after a clean unmount"

# ---------------------------------------------------------------------------- link loss
FM_CONTEXT="sshd stopped and started again"
P3=$FM_TMP/primary3
mkdir -p "$P3" "$NETSEC/mirror3"
CS=65536
FM_AUTO_RECONNECT=1 fm_create "$P3" "$NETSEC/mirror3" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$P3/.fusemirror/config.json" '.reconnect_min = 0.5 | .reconnect_max = 2'
fm_mount "$P3" "$MNT"
dd if=/dev/urandom of="$MNT/l.img" bs=1M count=8 conv=fsync status=none || fail "writing l.img failed"
lclean() { fm_image_is "$MNT" l.img '.state == "clean" and .dirty_chunks == 0'; }
fm_wait_for "clean" 20 lclean || fail "l.img not clean: $(fm_image_json "$MNT" l.img)"
copied0=$(fm_image_json "$MNT" l.img | jq -r .sync.copied_bytes)
# sshd down: the listener, and the session serving sshfs (its child: a pid we started)
sessions=$(ps -o pid= --ppid "$SSHD_PID" | tr -d ' ')
fm_bg_stop "$SSHD_PID"
for p in $sessions; do kill -TERM "$p" 2>/dev/null || true; done
for i in 0 1 2 3; do
  dd if=/dev/urandom of="$MNT/l.img" bs=64K count=1 seek=$((i * 20)) conv=notrunc,fsync status=none ||
    fail "a user write failed while sshd was down"
done
ldegraded() { fm_image_is "$MNT" l.img '.secondary_ok == false'; }
fm_wait_for "degraded" 5 ldegraded || fail "l.img not degraded with sshd down: $(fm_image_json "$MNT" l.img)"
lconnecting() { fm_image_is "$MNT" l.img '.link.state == "connecting" and .link.tries >= 1'; }
fm_wait_for "connecting" 10 lconnecting || fail "the link does not retry: $(fm_image_json "$MNT" l.img)"
dirty=$(fm_image_json "$MNT" l.img | jq -r .dirty_chunks)
start_sshd
fm_wait_for "sshd back" 20 ssh_ok || fail "sshd did not come back on port $PORT"
lsync() { fm_image_is "$MNT" l.img '.secondary_ok and .unsynced_chunks == 0 and .sync.action == "idle"'; }
fm_wait_for "automatic catch-up" 30 lsync || fail "no automatic catch-up: $(fm_image_json "$MNT" l.img)"
copied=$(($(fm_image_json "$MNT" l.img | jq -r .sync.copied_bytes) - copied0))
fm_log "sshd back: catch-up copied $copied bytes for $dirty dirty chunks (image 8 MiB)"
((copied > 0 && copied <= dirty * CS)) || fail "catch-up copied $copied bytes, want 1..$((dirty * CS))"
grep -q "l.img: secondary reconnected by itself; bitmap-based" "$P3/.fusemirror/fusemirror.log" ||
  fail "no automatic bitmap-based reconnect logged: $(tail -n 5 "$P3/.fusemirror/fusemirror.log")"
fm_unmount "$MNT"
cmp "$REMOTE/mirror3/l.img" "$P3/l.img" || fail "the secondary over sshfs differs from the primary after the catch-up"

# ---------------------------------------------------------------------------- teardown
fusermount3 -u "$NETSEC" 2>/dev/null || umount "$NETSEC" || fail "cannot unmount the sshfs mount"
fm_bg_stop "$SSHD_PID"
fm_pass
