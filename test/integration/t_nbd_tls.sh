#!/bin/bash
# t_nbd_tls — an NBD secondary over TLS (issue 15: nbds://): nbdkit with --tls=require and a
# pre-shared key on a unix socket in this test's temp dir.
#   a) nbds+unix://…&tls-psk-file=KEYS&tls-username=fm: images written through the mount
#      reach the export; at unmount its first SIZE bytes equal the primary.
#   b) the same server, a client key that differs: the image loads degraded with the TLS
#      failure as the reason (status and log); the user's writes succeed.
#   c) TLS asked, the server plain (no --tls): refused the same way, never sent in clear.
#   d) X.509 instead (tls-certificates=DIR, a test CA made with openssl), over TCP on
#      127.0.0.1 (libnbd checks a certificate only with a host name): written and equal at
#      unmount; a client that trusts another CA is refused.
. "$(dirname "$0")/lib.sh"

for c in nbdkit openssl; do command -v "$c" >/dev/null || fail "missing $c (see test/integration/PACKAGES)"; done

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
# start_tcp_server [nbdkit options...] — on 127.0.0.1, a free port (PORT) found by trying.
start_tcp_server() {
  local i
  for i in 1 2 3 4 5 6 7 8; do
    PORT=$((20000 + RANDOM % 40000))
    fm_bg nbdkit -i 127.0.0.1 -p "$PORT" -f "$@" file dir="$SRV"
    NBD_PID=$FM_LAST_BG
    # Listening, and ours (a port taken by another process makes nbdkit exit).
    fm_wait_for "nbdkit on port $PORT" 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null &&
      sleep 0.2 && kill -0 "$NBD_PID" 2>/dev/null && return 0
    kill -0 "$NBD_PID" 2>/dev/null && fm_bg_stop "$NBD_PID"
  done
  fail "nbdkit did not listen on 127.0.0.1 (8 ports tried)"
}

truncate -s $((SIZE + TAIL)) "$SRV/a.img" "$SRV/b.img" "$SRV/c.img" "$SRV/d.img"

# mirrored IMAGE — written through a mount over TLS, in service; at unmount the export's
# first SIZE bytes equal the primary.
mirrored() {
  local img=$1
  fm_mount "$PRI" "$MNT"
  truncate -s "$SIZE" "$MNT/$img"
  dd if=/dev/urandom of="$MNT/$img" bs=1M count=8 conv=notrunc,fsync status=none || fail "writing $img failed"
  fm_image_is "$MNT" "$img" '.secondary_ok == true' || fail "$img degraded over TLS: $(fm_image_json "$MNT" "$img")"
  fm_unmount "$MNT"
  cmp -n "$SIZE" "$PRI/$img" "$SRV/$img" || fail "$img: the export's first $SIZE bytes differ from the primary"
}

# ====================================================================== a) PSK
FM_CONTEXT="TLS with a pre-shared key"
start_server --tls=require --tls-psk="$KEYS"
fm_create "$PRI" "$(uri "$KEYS")" --write-behind 16
mirrored a.img
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
  [[ $reason == *"cannot connect to nbds"*"for export $img"* ]] ||
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

# ====================================================================== d) certificates
FM_CONTEXT="TLS with X.509 certificates"
PKI=$FM_TMP/pki
mkdir -p "$PKI/server" "$PKI/client" "$PKI/other"
# ca NAME DIR — a CA whose certificate is DIR/ca-cert.pem (its key beside it)
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$2/ca-key.pem" -out "$2/ca-cert.pem" -days 2 \
    -subj "/CN=$1" 2>"$FM_TMP/logs/openssl.err" || fail "openssl: $(cat "$FM_TMP/logs/openssl.err")"
}
ca "fusemirror test CA" "$PKI/server"
ca "another CA" "$PKI/other"
openssl req -newkey rsa:2048 -nodes -keyout "$PKI/server/server-key.pem" -out "$PKI/server.csr" \
  -subj "/CN=localhost" 2>"$FM_TMP/logs/openssl.err" || fail "openssl: $(cat "$FM_TMP/logs/openssl.err")"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$PKI/ext.cnf"
openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/server/ca-cert.pem" -CAkey "$PKI/server/ca-key.pem" \
  -CAcreateserial -out "$PKI/server/server-cert.pem" -days 2 -extfile "$PKI/ext.cnf" 2>"$FM_TMP/logs/openssl.err" ||
  fail "openssl: $(cat "$FM_TMP/logs/openssl.err")"
cp "$PKI/server/ca-cert.pem" "$PKI/client/"
fm_bg_stop "$NBD_PID"
start_tcp_server --tls=require --tls-certificates="$PKI/server"
fm_json_edit "$PRI/.fusemirror/config.json" ".secondary = \"nbds://127.0.0.1:$PORT?tls-certificates=$PKI/client\""
mirrored d.img
FM_CONTEXT="TLS, the client trusting another CA"
rm -f "$PRI/d.img" "$PRI/.fusemirror/bitmaps/d.img."*
fm_json_edit "$PRI/.fusemirror/config.json" ".secondary = \"nbds://127.0.0.1:$PORT?tls-certificates=$PKI/other\""
refused d.img "TLS handshake failed"
fm_pass
