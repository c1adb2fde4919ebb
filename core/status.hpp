// core/status.hpp — the live state of a set and its images, as data.
//
// Core fills these structs; JSON is made only at the edges (status.json in the mount, and
// `fusemirror status --json`: fusemirror/status_json.cpp). The sync-action vocabulary
// (md's sync_action names) is spelled here and nowhere else.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/bitmap.hpp"
#include "core/checksum_format.hpp"
#include "core/config.hpp"

namespace fusemirror::core {

enum class SyncAction { idle, resync, check, repair };
inline constexpr std::array<const char*, 4> kSyncActionNames = {"idle", "resync", "check", "repair"};
const char* to_string(SyncAction a);
// md's names, and md's aliases "frozen" (idle) and "recover" (resync); nullopt otherwise.
std::optional<SyncAction> parse_sync_action(std::string_view s);

// Speed and ETA of a running pass (md's /proc/mdstat "finish=… speed=…").
struct PassRate {
  double speed = 0;          // bytes/s over the last few seconds (0: not measured yet)
  double eta = -1;           // seconds left at that speed (-1: unknown)
  std::int64_t started = 0;  // unix time the pass was first seen running
};

// Checksums, check/repair/scrub passes and verified reads of one image (docs/operations.md §6).
struct ScrubStatus {
  bool checksums = false;     // the image keeps checksums (config on, sidecar usable)
  std::string checksums_error;  // why the sidecar was given up, "" when it was not
  ScrubRecord record;         // the pass in progress, else the last one; last_run 0: never
  std::uint64_t read_verified = 0;  // chunks verified by reads (verify_reads)
  std::uint64_t read_repaired = 0;  // reads served from the secondary, the primary repaired
  std::uint64_t read_failed = 0;    // reads failed with EIO: neither leg matched
};

// The link to an image's secondary (core/link.hpp).
struct LinkStatus {
  enum class State { connected, connecting, down } state = State::connected;
  std::int64_t since = 0;     // connecting: unix time the loss was seen
  std::uint32_t tries = 0;    // connecting: failed tries so far
  std::string reason;         // connecting: the last try's error; down: why it stays down
  double next_try_s = -1;     // connecting: seconds to the next try (-1: unknown)
};
const char* to_string(LinkStatus::State s);  // "connected", "connecting", "down"
std::optional<LinkStatus::State> parse_link_state(std::string_view s);

struct ImageStatus {
  std::string name;
  std::uint64_t size = 0;
  // bitmap-failed | degraded | checking | resyncing | active | clean (first that applies)
  std::string state;
  bool secondary_ok = true;
  // Why the secondary is out of service ("" when it is in): the failed operation and its
  // error, or what the load found ("export vm.img missing on nbd+unix:///?socket=/s").
  std::string degraded_reason;
  BitmapStats bitmap;
  SyncAction action = SyncAction::idle;
  std::uint64_t sync_done_bytes = 0;
  std::uint64_t sync_total_bytes = 0;
  std::uint64_t resync_copied_bytes = 0;  // data bytes copied by resync, all passes
  std::uint64_t mismatch_cnt = 0;         // chunks found different by the last check/repair
  std::uint32_t wb_outstanding = 0, wb_limit = 0, wb_peak = 0;
  std::uint64_t wb_full_waits = 0;  // writes that waited for a full write-behind queue
  std::uint64_t wb_merged = 0;      // writes that ran joined to an older one's (requests saved)
  double wb_lag_seconds = 0;        // age of the oldest outstanding write-behind write
  std::uint64_t wb_lag_bytes = 0;   // data bytes of the outstanding write-behind writes
  // The lag bound (config max_lag_bytes / max_lag_seconds, 0 = none) and what it did: the
  // writers it holds now, the writes it held (cumulative) and their waiting time.
  std::uint64_t wb_max_lag_bytes = 0;
  double wb_max_lag_seconds = 0;
  std::uint32_t wb_held_writers = 0;
  std::uint64_t wb_lag_holds = 0;
  double wb_lag_held_seconds = 0;
  std::uint64_t secondary_reads = 0;      // reads served by the secondary (primary failed)
  std::uint64_t direct_reads = 0;         // reads served with O_DIRECT (config direct_reads)
  std::uint64_t cached_reads = 0;         // aligned reads direct_reads left to the page cache
  std::uint64_t direct_writes = 0;        // writes issued with O_DIRECT (config direct_write_max)
  std::uint64_t hashes_from_writes = 0;   // chunks the sweep hashed from a direct write's buffer
  std::uint64_t primary_write_piece = 0;    // largest pwrite of a leg write (leg_write_piece); 0: whole
  std::uint64_t secondary_write_piece = 0;  // the same for the secondary (0 for NBD)
  ScrubStatus scrub;
  // Filled by the set, not the image:
  LinkStatus link;
  std::string bitmap_file;
  std::vector<SyncAction> pending;  // queued actions, oldest first
  std::optional<PassRate> rate;     // the running pass's, when one runs
};

// What an evicted image (core/image_table.hpp) shows: the status it was closed clean with,
// or — while the secondary directory is gone — degraded, as its next load would make it.
ImageStatus unloaded_status(ImageStatus summary, bool secondary_vanished);

struct SetStatus {
  utils::Uuid uuid{};
  std::string primary, secondary, mountpoint;
  std::int64_t pid = 0;
  std::uint64_t chunk_size = 0;
  double daemon_sleep = 0;
  std::uint64_t intent_ahead = 0;
  bool bitmap = true;
  std::uint32_t write_behind = 0;
  Role role = Role::mirror;
  std::vector<ImageStatus> images;
};

// One line for systemd's STATUS= and the like: "2 images, 1 degraded[, 1 resyncing]
// [, 1 checking][, 1 bitmap-failed (writes refused)]".
std::string health_summary(const SetStatus& s);

}  // namespace fusemirror::core
