#include "fusemirror/metrics.hpp"

#include <cstdio>
#include <iostream>

#include "fusemirror/cli.hpp"
#include "utils/error.hpp"
#include "utils/printable.hpp"
#include "utils/prometheus.hpp"

namespace fusemirror::cli {

namespace prom = utils::prometheus;

namespace {

// The image states of core::ImageStatus::state, each one sample of fusemirror_image_state.
constexpr const char* kStates[] = {"clean",    "active",   "resyncing",
                                   "checking", "degraded", "bitmap-failed"};

void declare(prom::Exposition& x) {
  auto g = [&](const char* n, const char* h) { x.family(n, "gauge", h); };
  auto c = [&](const char* n, const char* h) { x.family(n, "counter", h); };
  g("fusemirror_up", "1 when the set's daemon answered (its status.json was read), else 0.");
  g("fusemirror_set_info",
    "Always 1; the set's uuid, primary and secondary directories as labels.");
  g("fusemirror_images", "Images in the set.");
  g("fusemirror_images_degraded", "Images whose secondary is out of service.");
  g("fusemirror_image_size_bytes", "The image's size.");
  g("fusemirror_image_degraded",
    "1 while the image's secondary is out of service (state degraded, [U_]).");
  g("fusemirror_image_state",
    "1 for the image's current state (label state: clean, active, resyncing, checking, degraded, "
    "bitmap-failed), "
    "0 for the others.");
  g("fusemirror_dirty_chunks",
    "Bits set in the image's bitmap: chunks that may differ between the legs.");
  g("fusemirror_unsynced_chunks", "Dirty chunks the resync has still to copy.");
  g("fusemirror_unsynced_bytes",
    "Bytes the resync has still to copy (unsynced chunks x chunk size).");
  g("fusemirror_chunks", "Bits in the image's bitmap.");
  g("fusemirror_chunk_size_bytes", "Bytes per bitmap bit.");
  g("fusemirror_bitmap_events", "The bitmap's event counter (md's events).");
  g("fusemirror_bitmap_failed",
    "1 while the bitmap cannot be written (writes to the image are refused).");
  c("fusemirror_bitmap_flushes_total",
    "Bitmap write + fdatasync rounds since the image was opened.");
  g("fusemirror_active_extents",
    "Extents of the bitmap's activity log active now (their bits stay set while they are hot).");
  g("fusemirror_sync_action",
    "1 for the running sync action (label action: idle, resync, check, repair), 0 for the others.");
  g("fusemirror_sync_done_bytes", "Progress of the running resync, check or repair.");
  g("fusemirror_sync_total_bytes", "Size of the running resync, check or repair.");
  g("fusemirror_sync_progress_ratio", "sync_done_bytes / sync_total_bytes (0 when nothing runs).");
  g("fusemirror_sync_speed_bytes_per_second",
    "Speed of the running pass over the last seconds (0: not measured).");
  c("fusemirror_resync_copied_bytes_total", "Data bytes copied by resync since the mount.");
  g("fusemirror_mismatch_chunks",
    "Chunks found different by the last check, or rewritten by the last repair.");
  g("fusemirror_write_behind_outstanding", "Asynchronous secondary writes queued or running.");
  g("fusemirror_write_behind_limit", "The most write-behind writes outstanding (0: synchronous).");
  g("fusemirror_write_behind_peak",
    "The most write-behind writes outstanding at once since the image was opened.");
  g("fusemirror_write_behind_lag_seconds", "Age of the oldest outstanding write-behind write.");
  g("fusemirror_write_behind_lag_bytes", "Data bytes of the outstanding write-behind writes.");
  g("fusemirror_write_behind_max_lag_bytes", "The lag bound in bytes (config max_lag_bytes; 0: none).");
  g("fusemirror_write_behind_max_lag_seconds", "The lag bound in seconds (config max_lag_seconds; 0: none).");
  g("fusemirror_write_behind_held_writers", "Writers waiting now because the lag bound would be passed.");
  c("fusemirror_write_behind_lag_holds_total", "Writes that waited for the lag bound.");
  c("fusemirror_write_behind_lag_held_seconds_total", "Time writes waited for the lag bound, summed.");
  c("fusemirror_write_behind_full_waits_total",
    "Writes that waited because the write-behind queue was full.");
  c("fusemirror_write_behind_merged_total",
    "Write-behind writes that ran joined to the one they continue (requests saved).");
  c("fusemirror_secondary_reads_total", "Reads served by the secondary (the primary failed them).");
  c("fusemirror_direct_reads_total", "Reads served with O_DIRECT from the primary (config direct_reads).");
  c("fusemirror_cached_reads_total",
    "Aligned reads config direct_reads left to the page cache: it held their range, or a lone reader read on.");
  c("fusemirror_direct_writes_total", "Writes issued to the legs with O_DIRECT (config direct_write_max).");
  c("fusemirror_hashes_from_writes_total",
    "Chunks whose checksum the sweep took from a direct write's buffer instead of reading the primary.");
  g("fusemirror_link_state",
    "1 for the link's state to the secondary (label state: connected, connecting, down), 0 for the others.");
  g("fusemirror_link_reconnect_tries", "Failed automatic reconnect tries since the link was lost.");
}

void add_set(prom::Exposition& x, const std::string& mp, const core::SetStatus& s) {
  const std::string mount = prom::label_value(mp);
  x.add("fusemirror_up", {{"mount", mount}}, 1);
  x.add("fusemirror_set_info",
        {{"mount", mount},
         {"uuid", utils::to_string(s.uuid)},
         {"primary", prom::label_value(s.primary)},
         {"secondary", prom::label_value(s.secondary)}},
        1);
  std::size_t degraded = 0;
  for (const auto& i : s.images)
    if (!i.secondary_ok) ++degraded;
  x.add("fusemirror_images", {{"mount", mount}}, static_cast<double>(s.images.size()));
  x.add("fusemirror_images_degraded", {{"mount", mount}}, static_cast<double>(degraded));
  for (const auto& i : s.images) {
    const prom::Labels l = {{"mount", mount}, {"image", prom::label_value(i.name)}};
    auto add = [&](const char* n, double v) { x.add(n, l, v); };
    auto with = [&](const char* key, const char* value) {
      prom::Labels m = l;
      m.emplace_back(key, value);
      return m;
    };
    add("fusemirror_image_size_bytes", static_cast<double>(i.size));
    add("fusemirror_image_degraded", i.secondary_ok ? 0 : 1);
    for (const char* st : kStates)
      x.add("fusemirror_image_state", with("state", st), i.state == st ? 1 : 0);
    add("fusemirror_dirty_chunks", static_cast<double>(i.bitmap.dirty_chunks));
    add("fusemirror_unsynced_chunks", static_cast<double>(i.bitmap.unsynced_chunks));
    add("fusemirror_unsynced_bytes",
        static_cast<double>(i.bitmap.unsynced_chunks * i.bitmap.chunk_size));
    add("fusemirror_chunks", static_cast<double>(i.bitmap.total_chunks));
    add("fusemirror_chunk_size_bytes", static_cast<double>(i.bitmap.chunk_size));
    add("fusemirror_bitmap_events", static_cast<double>(i.bitmap.events));
    add("fusemirror_bitmap_failed", i.bitmap.error.empty() ? 0 : 1);
    add("fusemirror_bitmap_flushes_total", static_cast<double>(i.bitmap.flushes));
    add("fusemirror_active_extents", static_cast<double>(i.bitmap.active_extents));
    for (const char* a : core::kSyncActionNames)
      x.add("fusemirror_sync_action", with("action", a),
            std::string_view(core::to_string(i.action)) == a ? 1 : 0);
    add("fusemirror_sync_done_bytes", static_cast<double>(i.sync_done_bytes));
    add("fusemirror_sync_total_bytes", static_cast<double>(i.sync_total_bytes));
    add("fusemirror_sync_progress_ratio",
        i.sync_total_bytes
            ? static_cast<double>(i.sync_done_bytes) / static_cast<double>(i.sync_total_bytes)
            : 0);
    add("fusemirror_sync_speed_bytes_per_second",
        i.rate ? static_cast<double>(static_cast<std::uint64_t>(i.rate->speed)) : 0);
    add("fusemirror_resync_copied_bytes_total", static_cast<double>(i.resync_copied_bytes));
    add("fusemirror_mismatch_chunks", static_cast<double>(i.mismatch_cnt));
    add("fusemirror_write_behind_outstanding", i.wb_outstanding);
    add("fusemirror_write_behind_limit", i.wb_limit);
    add("fusemirror_write_behind_peak", i.wb_peak);
    add("fusemirror_write_behind_lag_seconds", i.wb_lag_seconds);
    add("fusemirror_write_behind_full_waits_total", static_cast<double>(i.wb_full_waits));
    add("fusemirror_write_behind_merged_total", static_cast<double>(i.wb_merged));
    add("fusemirror_write_behind_lag_bytes", static_cast<double>(i.wb_lag_bytes));
    add("fusemirror_write_behind_max_lag_bytes", static_cast<double>(i.wb_max_lag_bytes));
    add("fusemirror_write_behind_max_lag_seconds", i.wb_max_lag_seconds);
    add("fusemirror_write_behind_held_writers", i.wb_held_writers);
    add("fusemirror_write_behind_lag_holds_total", static_cast<double>(i.wb_lag_holds));
    add("fusemirror_write_behind_lag_held_seconds_total", i.wb_lag_held_seconds);
    add("fusemirror_secondary_reads_total", static_cast<double>(i.secondary_reads));
    add("fusemirror_direct_reads_total", static_cast<double>(i.direct_reads));
    add("fusemirror_cached_reads_total", static_cast<double>(i.cached_reads));
    add("fusemirror_direct_writes_total", static_cast<double>(i.direct_writes));
    add("fusemirror_hashes_from_writes_total", static_cast<double>(i.hashes_from_writes));
    for (auto st : {core::LinkStatus::State::connected, core::LinkStatus::State::connecting, core::LinkStatus::State::down})
      x.add("fusemirror_link_state", with("state", core::to_string(st)), i.link.state == st ? 1 : 0);
    add("fusemirror_link_reconnect_tries", i.link.tries);
  }
}

}  // namespace

std::string format_metrics(const std::vector<MountMetrics>& mounts) {
  prom::Exposition x;
  declare(x);
  for (const auto& m : mounts) {
    if (m.status)
      add_set(x, m.mountpoint, *m.status);
    else
      x.add("fusemirror_up", {{"mount", prom::label_value(m.mountpoint)}}, 0);
  }
  return x.text();
}

int metrics(const std::vector<std::string>& named) {
  const std::vector<std::string> mps = named.empty() ? fusemirror_mounts() : named;
  std::vector<MountMetrics> all;
  for (const auto& mp : mps) {
    MountMetrics m{mp, std::nullopt};
    try {
      m.status = read_status(mp);
    } catch (const utils::Error& e) {
      // Still written, as fusemirror_up 0: the collector's file must say the set is down.
      std::fprintf(stderr, "fusemirror: %s\n", utils::printable(e.what(), false).c_str());
    }
    all.push_back(std::move(m));
  }
  std::cout << format_metrics(all) << std::flush;
  if (!std::cout) throw utils::Error("metrics: cannot write to standard output");
  return 0;
}

}  // namespace fusemirror::cli
