#!/bin/bash
# concurrency — many writers on one image and on many images, overlapping ranges, while a
# resync (re-add of a failed secondary) and a check run. Meant to be run with a sanitizer
# build of the daemon (scripts/sanitize.sh runs it with the TSan and the ASan+UBSan
# binaries), but any build works: FUSEMIRROR=... bash test/reliability/concurrency.sh
#
#   * 4 images of 16 MiB (random data), daemon_sleep 1, resync_max_rate 8 MiB/s (so the
#     resync overlaps the writes);
#   * a.img: `fail`, 4 MiB written while degraded, then 8 fio jobs writing random 4 KiB
#     blocks over the same 16 MiB (overlapping ranges) while `re-add` resyncs it;
#   * b.img, c.img, d.img: 2 fio jobs each; `sync-action check` on b and c during the writes;
#   * then: resync done, check of every image reports mismatch_cnt 0, unmount, and the two
#     legs of every image are identical.
# FM_CONC_SECS (default 12) sets the fio run time.
. "$(dirname "$0")/../integration/lib.sh"
command -v fio >/dev/null || fail "fio is not installed"
fm_rand >/dev/null
SECS=${FM_CONC_SECS:-12}
IMGS=(a b c d)

fm_create "$PRI" "$SEC" --chunk-size 64K --daemon-sleep 1
fm_json_edit "$PRI/.fusemirror/config.json" '.resync_max_rate = 8388608'
fm_mount "$PRI" "$MNT"
for i in "${IMGS[@]}"; do
  cat "$(fm_rand)" >"$MNT/$i.img"
done
sync
fm_cli fail "$MNT" a.img
for off in 0 4 8 12; do pwrite_rand "$MNT/a.img" $((off << 20)) 1048576; done
sync

jobs=()
job() { # job NAME FILE NUMJOBS
  fm_bg fio --name="$1" --filename="$2" --rw=randwrite --bs=4k --size=16M --numjobs="$3" \
    --time_based --runtime="$SECS" --ioengine=psync --fsync=64 --group_reporting \
    --output="$FM_TMP/logs/fio.$1.out"
  jobs+=("$FM_LAST_BG")
}
job a "$MNT/a.img" 8
job b "$MNT/b.img" 2
job c "$MNT/c.img" 2
job d "$MNT/d.img" 2
sleep 1
fm_cli re-add "$MNT" a.img
fm_cli sync-action "$MNT" b.img check
fm_cli sync-action "$MNT" c.img check
sleep 3
fm_cli sync-action "$MNT" d.img check
for p in "${jobs[@]}"; do
  wait "$p" || fail "fio (pid $p) failed: $(tail -n 5 "$FM_TMP"/logs/fio.*.out)"
done

idle() {
  "$FUSEMIRROR" status "$MNT" --json 2>/dev/null |
    jq -e '[.sets[].images[] | select(.unsynced_chunks > 0 or .sync.action != "idle" or .secondary_ok != true)] | length == 0' >/dev/null
}
fm_wait_for "resync and checks" 120 idle || fail "resync/check not idle after 120s: $(fm_status_json "$MNT")"
for i in "${IMGS[@]}"; do
  fm_cli sync-action "$MNT" "$i.img" check
  fm_wait_for "check $i" 60 idle || fail "check of $i.img did not finish"
  mm=$(fm_image_json "$MNT" "$i.img" | jq -r '.mismatch_cnt')
  [[ $mm == 0 ]] || soft_fail "$i.img: check after the run found mismatch_cnt $mm"
done
fm_unmount "$MNT"
for i in "${IMGS[@]}"; do assert_same "$PRI/$i.img" "$SEC/$i.img"; done
fm_log "concurrency: 14 fio writers on 4 images for ${SECS}s, resync + checks concurrent; legs identical"
fm_pass
