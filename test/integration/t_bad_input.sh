#!/bin/bash
# t_bad_input — docs/quickstart.md §4: every bad input to create / mount / examine-bitmap / status /
# unmount exits non-zero with ONE line on stderr starting "fusemirror: ", naming the thing
# (path, option or config key) and the reason, and changes nothing on disk.
. "$(dirname "$0")/lib.sh"

FM=$FUSEMIRROR
q() { re_quote "$1"; }

# ====================================================================== create
FM_CONTEXT="create"
pwrite_rand "$PRI/a.img" 0 100000
touch "$FM_TMP/plainfile"

refuse "create: missing primary" "$(q "$FM_TMP/nope")" "$FM" create "$FM_TMP/nope" "$SEC"
refuse "create: primary is a file" "$(q "$FM_TMP/plainfile")" "$FM" create "$FM_TMP/plainfile" "$SEC"
refuse "create: missing secondary" "$(q "$FM_TMP/nope")" "$FM" create "$PRI" "$FM_TMP/nope"
refuse "create: secondary is a file" "$(q "$FM_TMP/plainfile")" "$FM" create "$PRI" "$FM_TMP/plainfile"
refuse "create: same directory twice" "$(q "$PRI")" "$FM" create "$PRI" "$PRI"
stderr_has "create: same directory twice" "same"
ln -s "$PRI" "$FM_TMP/plink"
refuse "create: same directory via a symlink" "$(q "$PRI")|$(q "$FM_TMP/plink")" "$FM" create "$PRI" "$FM_TMP/plink"
refuse "create: same directory via dir/." "$(q "$PRI")" "$FM" create "$PRI" "$PRI/."
refuse "create: same directory via ../" "$(q "$PRI")|$(q "$SEC/../primary")" "$FM" create "$PRI" "$SEC/../primary"

for cs in 3K 2K 1K 2048 5000 65537 3M 0 abc -64K 64Q; do
  refuse "create: --chunk-size $cs" "chunk" "$FM" create "$PRI" "$SEC" --chunk-size "$cs"
done
for ds in -1 abc 1x ""; do
  refuse "create: --daemon-sleep '$ds'" "sleep" "$FM" create "$PRI" "$SEC" --daemon-sleep "$ds"
done
refuse "create: --bitmap-dir missing" "$(q "$FM_TMP/nobm")" "$FM" create "$PRI" "$SEC" --bitmap-dir "$FM_TMP/nobm"
refuse "create: no arguments" "" "$FM" create
refuse "create: one argument" "" "$FM" create "$PRI"

[[ ! -e $PRI/.fusemirror ]] || fail "refused creates left $PRI/.fusemirror behind"

# ---- the good one
fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
CONF=$PRI/.fusemirror/config.json
[[ -f $CONF ]] || fail "create wrote no $CONF"
jq -e . "$CONF" >/dev/null || fail "$CONF is not JSON"

mkdir -p "$FM_TMP/sec2"
refuse "create: primary already initialised" "$(q "$PRI")" "$FM" create "$PRI" "$FM_TMP/sec2"
stderr_has "create: primary already initialised" "already|initiali[sz]ed|exists|--force"

mkdir -p "$FM_TMP/pri2"
refuse "create: secondary member of another set" "$(q "$SEC")" "$FM" create "$FM_TMP/pri2" "$SEC"
stderr_has "create: secondary member of another set" "member|belongs|another|set"

# non-empty secondary whose files differ from the primary (a fresh pair per case, so a
# wrongly accepted create does not hide the next case)
pair() { # pair NAME → sets PP and SS, two fresh directories
  PP=$FM_TMP/pri-$1 SS=$FM_TMP/sec-$1
  mkdir -p "$PP" "$SS"
}
pair samesize
pwrite_rand "$PP/x.img" 0 65536
pwrite_rand "$SS/x.img" 0 65536
refuse "create: secondary file with the same size, different bytes" "$(q "$SS")|x\.img" "$FM" create "$PP" "$SS"
pair size
pwrite_rand "$PP/x.img" 0 65536
pwrite_rand "$SS/x.img" 0 4096
refuse "create: secondary file with a different size" "$(q "$SS")|x\.img" "$FM" create "$PP" "$SS"
pair extra
pwrite_rand "$PP/x.img" 0 65536
cp -a "$PP/x.img" "$SS/x.img"
pwrite_rand "$SS/only-on-secondary.img" 0 4096
refuse "create: secondary with a file the primary lacks" "$(q "$SS")|only-on-secondary" "$FM" create "$PP" "$SS"
# --force takes it
P3=$FM_TMP/pri3 S3=$FM_TMP/sec3
mkdir -p "$P3" "$S3"
pwrite_rand "$P3/x.img" 0 65536
pwrite_rand "$S3/x.img" 0 4096
fm_create "$P3" "$S3" --force
[[ -f $P3/.fusemirror/config.json ]] || fail "create --force wrote no config"
# identical non-empty secondary: accepted without --force
P4=$FM_TMP/pri4 S4=$FM_TMP/sec4
mkdir -p "$P4" "$S4"
pwrite_rand "$P4/same.img" 0 70000
cp -a "$P4/same.img" "$S4/same.img"
if ! timeout 30 "$FM" create "$P4" "$S4" 2>"$FM_TMP/logs/c4.err"; then
  soft_fail "create with a secondary identical to the primary refused: $(cat "$FM_TMP/logs/c4.err")"
fi
# --force re-initialises an initialised primary
mkdir -p "$FM_TMP/sec4b"
if ! timeout 30 "$FM" create "$P4" "$FM_TMP/sec4b" --force 2>"$FM_TMP/logs/c4b.err"; then
  soft_fail "create --force on an initialised primary refused: $(cat "$FM_TMP/logs/c4b.err")"
fi

# ====================================================================== mount
FM_CONTEXT="mount"
RAW=$FM_TMP/raw
mkdir -p "$RAW"
pwrite_rand "$RAW/r.img" 0 4096
refuse "mount: uninitialised primary" "$(q "$RAW")" "$FM" mount "$RAW" "$MNT"
refuse "mount: missing primary" "$(q "$FM_TMP/nope")" "$FM" mount "$FM_TMP/nope" "$MNT"
refuse "mount: missing mount point" "$(q "$FM_TMP/nomnt")" "$FM" mount "$PRI" "$FM_TMP/nomnt"
refuse "mount: mount point is a file" "$(q "$FM_TMP/plainfile")" "$FM" mount "$PRI" "$FM_TMP/plainfile"
BUSY=$FM_TMP/busy
mkdir -p "$BUSY"
mount -t tmpfs -o size=1m fm-test-busy "$BUSY"
fm_track_mount "$BUSY"
refuse "mount: mount point already a mount point" "$(q "$BUSY")" "$FM" mount "$PRI" "$BUSY"
umount "$BUSY"
refuse "mount: no arguments" "" "$FM" mount

# the secondary missing
mv "$SEC" "$FM_TMP/sec.away"
refuse "mount: secondary missing" "$(q "$SEC")" "$FM" mount "$PRI" "$MNT"
mv "$FM_TMP/sec.away" "$SEC"

# the secondary belongs to another set
MEMBER=$SEC/.fusemirror/member.json
[[ -f $MEMBER ]] || fail "no $MEMBER"
cp -p "$MEMBER" "$FM_TMP/logs/member.json.orig"
fm_json_edit "$MEMBER" 'walk(if type == "string" and test("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$") then "0badc0de-0000-4000-8000-000000000001" else . end)'
cmp -s "$MEMBER" "$FM_TMP/logs/member.json.orig" && fail "no uuid found to change in $MEMBER: $(cat "$MEMBER")"
refuse "mount: secondary of another set" "$(q "$SEC")|member|uuid|another set" "$FM" mount "$PRI" "$MNT"
cat "$FM_TMP/logs/member.json.orig" >"$MEMBER"

# config with bad values / unknown keys; the error names the key
cp -p "$CONF" "$FM_TMP/logs/config.json.orig"
restore_conf() { cat "$FM_TMP/logs/config.json.orig" >"$CONF"; }
key_path() { # key_path REGEX → JSON path array of the first scalar whose key matches
  jq -c --arg re "$1" '[paths(scalars) | select(.[-1] | tostring | test($re; "i"))][0] // empty' "$CONF"
}
cpath=$(key_path chunk)
[[ -n $cpath ]] || fail "no chunk-size key in $CONF: $(cat "$CONF")"
ckey=$(jq -r '.[-1]' <<<"$cpath")
for v in 3000 0 -65536 '"banana"' 1099511627776000; do
  fm_json_edit "$CONF" "setpath($cpath; $v)"
  refuse "mount: config $ckey = $v" "$(q "$ckey")" "$FM" mount "$PRI" "$MNT"
  restore_conf
done
spath=$(key_path sleep)
if [[ -n $spath ]]; then
  skey=$(jq -r '.[-1]' <<<"$spath")
  for v in -5 '"soon"'; do
    fm_json_edit "$CONF" "setpath($spath; $v)"
    refuse "mount: config $skey = $v" "$(q "$skey")" "$FM" mount "$PRI" "$MNT"
    restore_conf
  done
else
  soft_fail "no daemon-sleep key in $CONF"
fi
fm_json_edit "$CONF" '.bogus_key_xyz = 1'
refuse "mount: config with an unknown key" "bogus_key_xyz" "$FM" mount "$PRI" "$MNT"
restore_conf
printf '{ "truncated": ' >"$CONF"
refuse "mount: config not JSON" "config\.json" "$FM" mount "$PRI" "$MNT"
restore_conf
refuse "mount: config path that does not exist" "$(q "$FM_TMP/nope.json")" "$FM" mount "$FM_TMP/nope.json" "$MNT"
cmp -s "$CONF" "$FM_TMP/logs/config.json.orig" || fail "config.json changed"

# a second daemon on the same set: refused (lock)
FM_CONTEXT="lock"
fm_mount "$PRI" "$MNT"
mkdir -p "$FM_TMP/mnt2"
FM_SNAP_EXCLUDE='\.fmbm$|/mnt$' refuse "mount: second daemon on the same set" "lock|running|in use|already|busy" \
  "$FM" mount "$PRI" "$FM_TMP/mnt2"
FM_SNAP_EXCLUDE='\.fmbm$|/mnt$' refuse "mount: second daemon via config.json" "lock|running|in use|already|busy" \
  "$FM" mount "$CONF" "$FM_TMP/mnt2"
FM_SNAP_EXCLUDE='\.fmbm$|/mnt$' refuse "mount: the live mount point again" "$(q "$MNT")|lock|running|in use|already|busy" \
  "$FM" mount "$PRI" "$MNT"
# a set sharing the live secondary: pri2 + its own fresh secondary works, but pointing
# a new set at the live secondary is refused (already checked at create above)
fm_unmount "$MNT"

# mounting by config.json path works
FM_CONTEXT="mount via config.json"
fm_mount "$CONF" "$MNT"
cmp -s "$MNT/a.img" "$PRI/a.img" || fail "a.img reads wrong via a config.json mount"
fm_unmount "$MNT"

# ====================================================================== status / unmount
FM_CONTEXT="status/unmount"
mkdir -p "$FM_TMP/notmnt"
refuse "status: not a mount point" "$(q "$FM_TMP/notmnt")" "$FM" status "$FM_TMP/notmnt"
refuse "status --json: not a mount point" "$(q "$FM_TMP/notmnt")" "$FM" status "$FM_TMP/notmnt" --json
refuse "status: missing directory" "$(q "$FM_TMP/nope")" "$FM" status "$FM_TMP/nope"
refuse "unmount: not a mount point" "$(q "$FM_TMP/notmnt")" "$FM" unmount "$FM_TMP/notmnt"
refuse "unmount: missing directory" "$(q "$FM_TMP/nope")" "$FM" unmount "$FM_TMP/nope"
mount -t tmpfs -o size=1m fm-test-busy "$BUSY"
refuse "unmount: a mount that is not fusemirror's" "$(q "$BUSY")" "$FM" unmount "$BUSY"
fm_is_mounted "$BUSY" || soft_fail "fusemirror unmount of a foreign tmpfs unmounted it"
umount "$BUSY" 2>/dev/null || true
refuse "unknown subcommand" "" "$FM" frobnicate
refuse "unknown option" "" "$FM" create "$P4" "$S4" --no-such-option

# ====================================================================== examine-bitmap
FM_CONTEXT="examine-bitmap"
GOOD=$(fm_bitmap_path "$PRI" a.img)
[[ -f $GOOD ]] || fail "no bitmap $GOOD after a mount cycle"
cp "$GOOD" "$FM_TMP/good.fmbm"
GOOD=$FM_TMP/good.fmbm
out=$(fm_examine "$GOOD")
[[ $(fm_examine_field "$out" Magic) == FMBITMAP ]] || soft_fail "examine-bitmap of a good bitmap: Magic '$(fm_examine_field "$out" Magic)'"

head -c 8192 /dev/urandom >"$FM_TMP/random.bin"
refuse "examine-bitmap: random file" "$(q "$FM_TMP/random.bin")" "$FM" examine-bitmap "$FM_TMP/random.bin"
stderr_has "examine-bitmap: random file" "magic|not a (fusemirror )?bitmap"
printf 'hello\n' >"$FM_TMP/short.txt"
refuse "examine-bitmap: short text file" "$(q "$FM_TMP/short.txt")" "$FM" examine-bitmap "$FM_TMP/short.txt"
: >"$FM_TMP/empty.fmbm"
refuse "examine-bitmap: empty file" "$(q "$FM_TMP/empty.fmbm")" "$FM" examine-bitmap "$FM_TMP/empty.fmbm"
for n in 100 4095; do
  head -c "$n" "$GOOD" >"$FM_TMP/trunc$n.fmbm"
  refuse "examine-bitmap: bitmap truncated to $n bytes" "$(q "$FM_TMP/trunc$n.fmbm")" "$FM" examine-bitmap "$FM_TMP/trunc$n.fmbm"
  stderr_has "examine-bitmap: bitmap truncated to $n bytes" "truncat|short|too small|incomplete|size"
done
refuse "examine-bitmap: missing file" "$(q "$FM_TMP/nope.fmbm")" "$FM" examine-bitmap "$FM_TMP/nope.fmbm"
refuse "examine-bitmap: a directory" "$(q "$FM_TMP/notmnt")" "$FM" examine-bitmap "$FM_TMP/notmnt"

flip() { # flip SRC DST OFFSET — DST = SRC with the byte at OFFSET inverted
  cp "$1" "$2"
  local b
  b=$(od -An -tu1 -j "$3" -N1 "$2" | tr -d ' ')
  printf "\\$(printf '%03o' $((b ^ 0xff)))" | dd of="$2" bs=1 seek="$3" conv=notrunc status=none
}
for off in 200 50 64 80 88 4000 4092; do
  flip "$GOOD" "$FM_TMP/flip$off.fmbm" "$off"
  refuse "examine-bitmap: header byte $off flipped" "$(q "$FM_TMP/flip$off.fmbm")" "$FM" examine-bitmap "$FM_TMP/flip$off.fmbm"
  stderr_has "examine-bitmap: header byte $off flipped" "checksum|crc"
done
flip "$GOOD" "$FM_TMP/flip0.fmbm" 0
refuse "examine-bitmap: magic byte flipped" "$(q "$FM_TMP/flip0.fmbm")" "$FM" examine-bitmap "$FM_TMP/flip0.fmbm"
stderr_has "examine-bitmap: magic byte flipped" "magic|not a|checksum|crc"
# a zeroed header page
cp "$GOOD" "$FM_TMP/zeroed.fmbm"
dd if=/dev/zero of="$FM_TMP/zeroed.fmbm" bs=4096 count=1 conv=notrunc status=none
refuse "examine-bitmap: zeroed header" "$(q "$FM_TMP/zeroed.fmbm")" "$FM" examine-bitmap "$FM_TMP/zeroed.fmbm"

# headers with a valid CRC32C but bad contents (CRC computed here, checked against GOOD)
crc32c_header() { # crc32c of bytes [0, 4092) of FILE, as 8 hex digits
  local crc=$((0xFFFFFFFF)) b k
  for b in $(od -An -v -tu1 -N4092 "$1"); do
    crc=$((crc ^ b))
    for k in 1 2 3 4 5 6 7 8; do
      if ((crc & 1)); then crc=$(((crc >> 1) ^ 0x82F63B78)); else crc=$((crc >> 1)); fi
    done
  done
  printf '%08x\n' $((crc ^ 0xFFFFFFFF))
}
stored_crc() { od -An -tx4 -j4092 -N4 "$1" | tr -d ' '; } # little-endian u32 as hex
put_le() { # put_le FILE OFFSET BYTES VALUE
  local f=$1 off=$2 n=$3 v=$4 i s=""
  for ((i = 0; i < n; i++)); do s+=$(printf '\\%03o' $(((v >> (8 * i)) & 0xff))); done
  printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}
fix_crc() { put_le "$1" 4092 4 "0x$(crc32c_header "$1")"; }
if [[ $(crc32c_header "$GOOD") == "$(stored_crc "$GOOD")" ]]; then
  cp "$GOOD" "$FM_TMP/future.fmbm"
  put_le "$FM_TMP/future.fmbm" 8 2 99
  fix_crc "$FM_TMP/future.fmbm"
  refuse "examine-bitmap: future major version" "$(q "$FM_TMP/future.fmbm")" "$FM" examine-bitmap "$FM_TMP/future.fmbm"
  stderr_has "examine-bitmap: future major version" "version|newer"
  for cs in 3000 0 2048; do
    cp "$GOOD" "$FM_TMP/cs$cs.fmbm"
    put_le "$FM_TMP/cs$cs.fmbm" 64 8 "$cs"
    fix_crc "$FM_TMP/cs$cs.fmbm"
    refuse "examine-bitmap: chunk size $cs with a valid CRC" "$(q "$FM_TMP/cs$cs.fmbm")" "$FM" examine-bitmap "$FM_TMP/cs$cs.fmbm"
    stderr_has "examine-bitmap: chunk size $cs with a valid CRC" "chunk"
  done
  cp "$GOOD" "$FM_TMP/hs.fmbm"
  put_le "$FM_TMP/hs.fmbm" 12 4 512
  fix_crc "$FM_TMP/hs.fmbm"
  refuse "examine-bitmap: header_size 512 with a valid CRC" "$(q "$FM_TMP/hs.fmbm")" "$FM" examine-bitmap "$FM_TMP/hs.fmbm"
  # sync_size claims more bits than the file holds (truncated bits): either refused
  # naming the file, or shown with the truncation said (never as a plain clean bitmap)
  cp "$GOOD" "$FM_TMP/bigsync.fmbm"
  put_le "$FM_TMP/bigsync.fmbm" 80 8 $((1 << 36))
  fix_crc "$FM_TMP/bigsync.fmbm"
  rc=0
  out=$(timeout 30 "$FM" examine-bitmap "$FM_TMP/bigsync.fmbm" 2>"$FM_TMP/logs/bigsync.err") || rc=$?
  if ((rc == 0)); then
    grep -qiE "truncat|missing|short" <<<"$out" ||
      soft_fail "examine-bitmap of a bitmap whose bits are truncated (sync_size 64 GiB, file $(stat -c %s "$GOOD") bytes) exits 0 without saying so: $(tail -n 2 <<<"$out")"
  else
    grep -qF "$FM_TMP/bigsync.fmbm" "$FM_TMP/logs/bigsync.err" ||
      soft_fail "examine-bitmap of a bitmap with truncated bits: error does not name the file: $(cat "$FM_TMP/logs/bigsync.err")"
  fi
  # an absurd sync_size (2^62 bytes) with a valid CRC: a clean error naming the file, not
  # an attempt to allocate the bits
  cp "$GOOD" "$FM_TMP/hugesync.fmbm"
  put_le "$FM_TMP/hugesync.fmbm" 80 8 $((1 << 62))
  fix_crc "$FM_TMP/hugesync.fmbm"
  rc=0
  out=$(timeout 30 "$FM" examine-bitmap "$FM_TMP/hugesync.fmbm" 2>"$FM_TMP/logs/hugesync.err") || rc=$?
  if ((rc != 0)); then
    grep -qF "$FM_TMP/hugesync.fmbm" "$FM_TMP/logs/hugesync.err" ||
      soft_fail "examine-bitmap of a header with sync_size 2^62 (valid CRC): error does not name the file: $(cat "$FM_TMP/logs/hugesync.err")"
  else
    grep -qiE "truncat|missing|short" <<<"$out" ||
      soft_fail "examine-bitmap of a header with sync_size 2^62 exits 0 without saying the bits are truncated"
  fi
else
  fm_log "note: header CRC is not CRC32C over [0,4092) as documented (stored $(stored_crc "$GOOD"), computed $(crc32c_header "$GOOD")); skipping valid-CRC cases"
  soft_fail "bitmap header CRC at 4092 is not the documented CRC32C of bytes [0,4092): stored $(stored_crc "$GOOD"), computed $(crc32c_header "$GOOD")"
fi

# the bitmap is not rewritten by examine-bitmap
cmp -s "$GOOD" "$(fm_bitmap_path "$PRI" a.img)" || fail "examine-bitmap changed the bitmap"

# a corrupted bitmap in place is never trusted: mount does a full resync, or refuses
FM_CONTEXT="corrupt bitmap at mount"
BM=$(fm_bitmap_path "$PRI" a.img)
flip "$BM" "$FM_TMP/logs/bm.flipped" 200
cp "$FM_TMP/logs/bm.flipped" "$BM"
pwrite_rand "$SEC/a.img" 4096 4096 # make the secondary differ where no bit says so
rc=0
timeout 30 "$FM" mount "$PRI" "$MNT" 2>"$FM_TMP/logs/corrupt.err" || rc=$?
if ((rc == 0)); then
  # it took the mount: it must resync a.img fully
  FM_MOUNTS+=("$MNT")
  synced() { [[ $(fm_image_json_try "$MNT" a.img | jq -r '.dirty_chunks == 0 and .sync.action == "idle"') == true ]]; }
  fm_wait_for "full resync" 30 synced || soft_fail "a.img with a corrupt bitmap: not resynced 30s after mount"
  cmp -s "$PRI/a.img" "$SEC/a.img" ||
    soft_fail "mount trusted a bitmap with a bad header checksum: secondary still differs from primary"
  grep -iE "checksum|crc|full resync|untrusted|not trusted" "$PRI/.fusemirror/fusemirror.log" >/dev/null ||
    soft_fail "no log line about the corrupt bitmap / full resync in fusemirror.log"
  timeout 60 "$FM" unmount "$MNT" || { soft_fail "fusemirror unmount $MNT failed"; fm_unmount_strays >/dev/null; }
  ! fm_is_mounted "$MNT" || fail "$MNT still mounted"
else
  grep -qiE "checksum|crc|bitmap" "$FM_TMP/logs/corrupt.err" ||
    soft_fail "mount refused a corrupt bitmap without saying why: $(cat "$FM_TMP/logs/corrupt.err")"
fi

# ====================================================================== security
# fusemirror's metadata cannot be reached or changed through the mount, and symlinks
# planted in the backing directories never redirect I/O outside them (docs/reliability.md §5)
FM_CONTEXT="security"
fm_is_mounted "$MNT" && fail "$MNT unexpectedly mounted"
printf 'outside-primary\n' >"$FM_TMP/outside-p.img"
printf 'outside-secondary\n' >"$FM_TMP/outside-s.img"
ln -s "$FM_TMP/outside-p.img" "$PRI/plink.img"
pwrite_rand "$PRI/svictim.img" 0 8192
ln -s "$FM_TMP/outside-s.img" "$SEC/svictim.img"
ln -s "$FM_TMP" "$PRI/dirlink"
outside_sums=$(md5sum "$FM_TMP/outside-p.img" "$FM_TMP/outside-s.img")
cp -p "$CONF" "$FM_TMP/logs/config.json.orig"

fm_mount "$PRI" "$MNT"
sleep 2 # let the initial resync of svictim.img run
expect_fail "read MOUNT/.fusemirror/config.json (the primary's metadata must not show)" "" cat "$MNT/.fusemirror/config.json" || true
expect_fail "read MOUNT/.fusemirror/lock" "" cat "$MNT/.fusemirror/lock" || true
expect_fail "write MOUNT/.fusemirror/config.json" "" sh -c "printf '{}' > '$MNT/.fusemirror/config.json'" || true
expect_fail "create MOUNT/.fusemirror/evil" "" touch "$MNT/.fusemirror/evil" || true
expect_fail "mkdir MOUNT/.fusemirror" "" mkdir "$MNT/.fusemirror" || true
expect_fail "unlink MOUNT/.fusemirror/status.json" "" rm "$MNT/.fusemirror/status.json" || true
expect_fail "rename an image into MOUNT/.fusemirror" "" mv "$MNT/a.img" "$MNT/.fusemirror/a.img" || true
[[ -f $PRI/a.img ]] || fail "a.img vanished from the primary"
cmp -s "$CONF" "$FM_TMP/logs/config.json.orig" || soft_fail "config.json changed through the mount"
[[ ! -e $PRI/.fusemirror/evil && ! -e $PRI/.fusemirror/a.img ]] || soft_fail "a file was created in $PRI/.fusemirror through the mount"
# the planted symlinks: writing through them (if they are shown at all) must not reach outside
printf 'EVIL' 2>/dev/null >"$MNT/plink.img" || true
printf 'EVIL' 2>/dev/null >>"$MNT/svictim.img" || true
printf 'EVIL' 2>/dev/null >"$MNT/dirlink/outside-p.img" || true
fm_unmount "$MNT"
[[ $(md5sum "$FM_TMP/outside-p.img" "$FM_TMP/outside-s.img") == "$outside_sums" ]] ||
  soft_fail "a symlink planted in a backing directory redirected a write outside it: $(head -c 100 "$FM_TMP/outside-p.img"; head -c 100 "$FM_TMP/outside-s.img")"

fm_pass
