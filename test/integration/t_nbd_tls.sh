#!/bin/bash
# t_nbd_tls — an NBD secondary over TLS (issue 15: nbds://): nbdkit with --tls=require and a
# pre-shared key on a unix socket in this test's temp dir.
#   a) nbds+unix://…&tls-psk-file=KEYS&tls-username=fm: images written through the mount
#      reach the export; at unmount its first SIZE bytes equal the primary.
#   b) the same server, a client key that differs: the image loads degraded with the TLS
#      failure as the reason (status and log); the user's writes succeed.
#   c) TLS asked, the server plain (no --tls): refused the same way, never sent in clear.
. "$(dirname "$0")/lib.sh"

command -v nbdkit >/dev/null || fail "missing nbdkit (see test/integration/PACKAGES)"

SIZE=$((8 << 20))
TAIL=4096
SRV=$FM_TMP/served
SOCK=$FM_TMP/nbd.sock
KEYS=$FM_TMP/server.psk
mkdir -p "$SRV"
# psktool's format (gnutls-bin): USERNAME:HEXKEY per line.
printf 'fm:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$KEYS"
printf 'fm:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$FM_TMP/wrong.psk"
chmod 600 "$KEYS" "$FM_TMP/wrong.psk"
LOG=$PRI/.fusemirror/fusemirror.log

start_server() { # [nbdkit options...]
  rm -f "$SOCK"
  fm_bg nbdkit -U "$SOCK" -f "$@" file dir="$SRV"
  NBD_PID=$FM_LAST_BG
  fm_wait_for "nbdkit socket" 10 test -S "$SOCK" || fail "nbdkit did not create $SOCK"
}
uri() { printf 'nbds+unix:///?socket=%s&tls-psk-file=%s&tls-username=fm' "$SOCK" "$1"; }

truncate -s $((SIZE + TAIL)) "$SRV/a.img" "$SRV/b.img" "$SRV/c.img"

# ====================================================================== a) PSK
FM_CONTEXT="TLS with a pre-shared key"
start_server --tls=require --tls-psk="$KEYS"
fm_create "$PRI" "$(uri "$KEYS")" --write-behind 16
fm_mount "$PRI" "$MNT"
truncate -s "$SIZE" "$MNT/a.img"
dd if=/dev/urandom of="$MNT/a.img" bs=1M count=8 conv=notrunc,fsync status=none || fail "writing a.img failed"
fm_image_is "$MNT" a.img '.secondary_ok == true' || fail "a.img degraded over TLS: $(fm_image_json "$MNT" a.img)"
fm_unmount "$MNT"
cmp -n "$SIZE" "$PRI/a.img" "$SRV/a.img" || fail "the export's first $SIZE bytes differ from the primary"
[[ $(dd if="$SRV/a.img" bs=1 skip="$SIZE" count=8 status=none) == FMNBDREC ]] ||
  fail "no identity record in the export's tail"

# refused IMAGE WANT — IMAGE loads degraded, its reason naming the URI, the export and
# WANT; the user's write succeeds and never reaches the export.
refused() {
  local img=$1 want=$2 reason
  fm_mount "$PRI" "$MNT"
  truncate -s "$SIZE" "$MNT/$img"
  pwrite_rand "$MNT/$img" 0 65536
  fm_wait_for "degraded" 10 fm_image_is "$MNT" "$img" '.secondary_ok == false' ||
    fail "$img not degraded: $(fm_image_json "$MNT" "$img")"
  reason=$(fm_image_json "$MNT" "$img" | jq -r .degraded_reason)
  fm_log "$FM_CONTEXT: $reason"
  [[ $reason == *"cannot connect to nbds+unix://"*"for export $img"* ]] ||
    fail "the reason does not name the URI and export: '$reason'"
  [[ $reason == *"$want"* ]] || fail "the reason does not say '$want': '$reason'"
  grep -qF "for export $img" "$LOG" || fail "the log does not give the reason"
  cmp -n 65536 "$PRI/$img" "$SRV/$img" >/dev/null 2>&1 && fail "$img reached the export"
  fm_unmount "$MNT"
}

# ====================================================================== b) a wrong key
FM_CONTEXT="TLS with a key the server does not know"
fm_json_edit "$PRI/.fusemirror/config.json" ".secondary = \"$(uri "$FM_TMP/wrong.psk")\""
refused b.img "TLS handshake failed"

# ====================================================================== c) a plain server
FM_CONTEXT="TLS asked, the server plain"
fm_bg_stop "$NBD_PID"
start_server
fm_json_edit "$PRI/.fusemirror/config.json" ".secondary = \"$(uri "$KEYS")\""
refused c.img "server refused TLS"
fm_pass
