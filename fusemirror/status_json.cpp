#include "fusemirror/status_json.hpp"

#include "utils/error.hpp"

namespace fusemirror::fuse {

namespace {

core::SyncAction action_from(const nlohmann::json& j) {
  auto a = core::parse_sync_action(j.get<std::string>());
  if (!a) throw utils::Error("status: unknown sync action '" + j.get<std::string>() + "'");
  return *a;
}

}  // namespace

nlohmann::json to_json(const core::SetStatus& set) {
  nlohmann::json j;
  j["uuid"] = utils::to_string(set.uuid);
  j["primary"] = set.primary;
  j["secondary"] = set.secondary;
  j["mountpoint"] = set.mountpoint;
  j["pid"] = set.pid;
  j["chunk_size"] = set.chunk_size;
  j["daemon_sleep"] = set.daemon_sleep;
  j["intent_ahead"] = set.intent_ahead;
  j["bitmap"] = set.bitmap;
  j["write_behind"] = set.write_behind;
  j["role"] = set.role == core::Role::mirror ? "mirror" : "backup";
  j["images"] = nlohmann::json::array();
  for (const core::ImageStatus& s : set.images) {
    nlohmann::json i;
    i["name"] = s.name;
    i["size"] = s.size;
    i["state"] = s.state;
    i["secondary_ok"] = s.secondary_ok;
    if (!s.degraded_reason.empty()) i["degraded_reason"] = s.degraded_reason;
    // The link to the secondary (core/link.hpp): state, and while connecting since when,
    // the tries, the last try's error and the next try; while down, why.
    {
      nlohmann::json link = {{"state", core::to_string(s.link.state)}};
      if (s.link.state == core::LinkStatus::State::connecting)
        link.update({{"since", s.link.since}, {"tries", s.link.tries}, {"next_try_seconds", s.link.next_try_s}});
      if (!s.link.reason.empty()) link["reason"] = s.link.reason;
      i["link"] = std::move(link);
    }
    i["chunk_size"] = s.bitmap.chunk_size;
    i["dirty_chunks"] = s.bitmap.dirty_chunks;
    i["unsynced_chunks"] = s.bitmap.unsynced_chunks;
    i["total_chunks"] = s.bitmap.total_chunks;
    i["bitmap_file"] = s.bitmap_file;
    i["events"] = s.bitmap.events;
    i["events_cleared"] = s.bitmap.events_cleared;
    i["bitmap_flushes"] = s.bitmap.flushes;
    // The activity log (docs/write-path.md §3b): its active extents, their bound and size
    // (0 when off), and the dirty chunks it set alone (never written: cleared at retirement).
    i["active_extents"] = s.bitmap.active_extents;
    i["al_extents"] = s.bitmap.al_extents;
    i["al_extent_size"] = s.bitmap.al_extent_size;
    i["logged_chunks"] = s.bitmap.logged_chunks;
    i["al_burst_extents"] = s.bitmap.al_burst_extents;
    // Its record of logged chunks (§3d): kept or not, the chunks it spared the resync at
    // this mount, the stores into its slots since.
    i["al_record"] = s.bitmap.al_record;
    i["al_record_spared"] = s.bitmap.al_record_spared;
    i["al_record_writes"] = s.bitmap.al_record_writes;
    i["bitmap_error"] = s.bitmap.error;  // "" unless writes are refused (state bitmap-failed)
    i["write_behind"] = {{"outstanding", s.wb_outstanding}, {"limit", s.wb_limit}, {"peak", s.wb_peak},
                         {"full_waits", s.wb_full_waits}, {"merged", s.wb_merged},
                         {"lag_seconds", s.wb_lag_seconds},
                         {"lag_bytes", s.wb_lag_bytes}, {"max_lag_bytes", s.wb_max_lag_bytes},
                         {"max_lag_seconds", s.wb_max_lag_seconds}, {"held_writers", s.wb_held_writers},
                         {"lag_holds", s.wb_lag_holds}, {"lag_held_seconds", s.wb_lag_held_seconds}};
    i["secondary_reads"] = s.secondary_reads;
    i["direct_reads"] = s.direct_reads;
    i["cached_reads"] = s.cached_reads;
    i["direct_writes"] = s.direct_writes;
    i["hashes_from_writes"] = s.hashes_from_writes;
    i["write_pieces"] = {{"primary", s.primary_write_piece}, {"secondary", s.secondary_write_piece}};
    i["mismatch_cnt"] = s.mismatch_cnt;
    const core::ScrubRecord& r = s.scrub.record;
    i["checksums"] = s.scrub.checksums;
    if (!s.scrub.checksums_error.empty()) i["checksums_error"] = s.scrub.checksums_error;
    i["scrub"] = {{"last_run", r.last_run},
                  {"in_progress", r.in_progress},
                  {"cursor", r.cursor},
                  {"checked_chunks", r.counts.checked},
                  {"unverified_chunks", r.counts.unverified},
                  {"bad_primary", r.counts.bad_primary},
                  {"bad_secondary", r.counts.bad_secondary},
                  {"unrecoverable", r.counts.unrecoverable},
                  {"repaired", r.counts.repaired},
                  {"mismatches", r.counts.mismatches}};
    i["verified_reads"] = {{"chunks", s.scrub.read_verified},
                           {"served_from_secondary", s.scrub.read_repaired},
                           {"failed", s.scrub.read_failed}};
    nlohmann::json pending = nlohmann::json::array();
    for (auto a : s.pending) pending.push_back(core::to_string(a));
    nlohmann::json sync = {{"action", core::to_string(s.action)},
                           {"mismatch_cnt", s.mismatch_cnt},
                           {"done_bytes", s.sync_done_bytes},
                           {"total_bytes", s.sync_total_bytes},
                           {"copied_bytes", s.resync_copied_bytes},
                           {"pending", std::move(pending)}};
    if (s.rate) {
      sync["started"] = s.rate->started;
      sync["speed"] = static_cast<std::uint64_t>(s.rate->speed);
      if (s.rate->eta >= 0) sync["eta_seconds"] = static_cast<std::uint64_t>(s.rate->eta + 0.5);
    }
    i["sync"] = std::move(sync);
    j["images"].push_back(std::move(i));
  }
  return j;
}

core::SetStatus set_status_from_json(const nlohmann::json& j) {
  core::SetStatus s;
  auto uuid = utils::parse_uuid(j.at("uuid").get<std::string>());
  if (!uuid) throw utils::Error("status: bad uuid");
  s.uuid = *uuid;
  s.primary = j.at("primary").get<std::string>();
  s.secondary = j.at("secondary").get<std::string>();
  s.mountpoint = j.at("mountpoint").get<std::string>();
  s.pid = j.at("pid").get<std::int64_t>();
  s.chunk_size = j.at("chunk_size").get<std::uint64_t>();
  s.daemon_sleep = j.at("daemon_sleep").get<double>();
  s.intent_ahead = j.value("intent_ahead", std::uint64_t{0});
  s.bitmap = j.value("bitmap", true);
  s.write_behind = j.value("write_behind", std::uint32_t{0});
  s.role = j.value("role", std::string("mirror")) == "backup" ? core::Role::backup : core::Role::mirror;
  for (const auto& i : j.at("images")) {
    core::ImageStatus m;
    m.name = i.at("name").get<std::string>();
    m.size = i.at("size").get<std::uint64_t>();
    m.state = i.at("state").get<std::string>();
    m.secondary_ok = i.at("secondary_ok").get<bool>();
    m.degraded_reason = i.value("degraded_reason", std::string());
    if (i.contains("link")) {
      const auto& l = i.at("link");
      if (auto st = core::parse_link_state(l.value("state", std::string("connected")))) m.link.state = *st;
      m.link.since = l.value("since", std::int64_t{0});
      m.link.tries = l.value("tries", std::uint32_t{0});
      m.link.next_try_s = l.value("next_try_seconds", -1.0);
      m.link.reason = l.value("reason", std::string());
    }
    m.bitmap.chunk_size = i.at("chunk_size").get<std::uint64_t>();
    m.bitmap.dirty_chunks = i.at("dirty_chunks").get<std::uint64_t>();
    m.bitmap.unsynced_chunks = i.at("unsynced_chunks").get<std::uint64_t>();
    m.bitmap.total_chunks = i.at("total_chunks").get<std::uint64_t>();
    m.bitmap_file = i.at("bitmap_file").get<std::string>();
    m.bitmap.events = i.at("events").get<std::uint64_t>();
    m.bitmap.events_cleared = i.at("events_cleared").get<std::uint64_t>();
    m.bitmap.flushes = i.value("bitmap_flushes", std::uint64_t{0});
    m.bitmap.active_extents = i.value("active_extents", std::uint64_t{0});
    m.bitmap.al_extents = i.value("al_extents", std::uint64_t{0});
    m.bitmap.al_extent_size = i.value("al_extent_size", std::uint64_t{0});
    m.bitmap.logged_chunks = i.value("logged_chunks", std::uint64_t{0});
    m.bitmap.al_burst_extents = i.value("al_burst_extents", std::uint64_t{0});
    m.bitmap.al_record = i.value("al_record", false);
    m.bitmap.al_record_spared = i.value("al_record_spared", std::uint64_t{0});
    m.bitmap.al_record_writes = i.value("al_record_writes", std::uint64_t{0});
    m.bitmap.error = i.value("bitmap_error", std::string());
    const auto& wb = i.at("write_behind");
    m.wb_outstanding = wb.at("outstanding").get<std::uint32_t>();
    m.wb_limit = wb.at("limit").get<std::uint32_t>();
    m.wb_peak = wb.value("peak", std::uint32_t{0});
    m.wb_full_waits = wb.value("full_waits", std::uint64_t{0});
    m.wb_merged = wb.value("merged", std::uint64_t{0});
    m.wb_lag_seconds = wb.value("lag_seconds", 0.0);
    m.wb_lag_bytes = wb.value("lag_bytes", std::uint64_t{0});
    m.wb_max_lag_bytes = wb.value("max_lag_bytes", std::uint64_t{0});
    m.wb_max_lag_seconds = wb.value("max_lag_seconds", 0.0);
    m.wb_held_writers = wb.value("held_writers", std::uint32_t{0});
    m.wb_lag_holds = wb.value("lag_holds", std::uint64_t{0});
    m.wb_lag_held_seconds = wb.value("lag_held_seconds", 0.0);
    m.secondary_reads = i.value("secondary_reads", std::uint64_t{0});
    m.direct_reads = i.value("direct_reads", std::uint64_t{0});
    m.cached_reads = i.value("cached_reads", std::uint64_t{0});
    m.direct_writes = i.value("direct_writes", std::uint64_t{0});
    m.hashes_from_writes = i.value("hashes_from_writes", std::uint64_t{0});
    if (auto wp = i.find("write_pieces"); wp != i.end() && wp->is_object()) {
      m.primary_write_piece = wp->value("primary", std::uint64_t{0});
      m.secondary_write_piece = wp->value("secondary", std::uint64_t{0});
    }
    m.mismatch_cnt = i.value("mismatch_cnt", std::uint64_t{0});
    m.scrub.checksums = i.value("checksums", false);
    m.scrub.checksums_error = i.value("checksums_error", std::string());
    if (i.contains("scrub")) {
      const auto& sc = i.at("scrub");
      core::ScrubRecord& r = m.scrub.record;
      r.last_run = sc.value("last_run", std::int64_t{0});
      r.in_progress = sc.value("in_progress", false);
      r.cursor = sc.value("cursor", std::uint64_t{0});
      r.counts.checked = sc.value("checked_chunks", std::uint64_t{0});
      r.counts.unverified = sc.value("unverified_chunks", std::uint64_t{0});
      r.counts.bad_primary = sc.value("bad_primary", std::uint64_t{0});
      r.counts.bad_secondary = sc.value("bad_secondary", std::uint64_t{0});
      r.counts.unrecoverable = sc.value("unrecoverable", std::uint64_t{0});
      r.counts.repaired = sc.value("repaired", std::uint64_t{0});
      r.counts.mismatches = sc.value("mismatches", std::uint64_t{0});
    }
    if (i.contains("verified_reads")) {
      const auto& vr = i.at("verified_reads");
      m.scrub.read_verified = vr.value("chunks", std::uint64_t{0});
      m.scrub.read_repaired = vr.value("served_from_secondary", std::uint64_t{0});
      m.scrub.read_failed = vr.value("failed", std::uint64_t{0});
    }
    const auto& sy = i.at("sync");
    m.action = action_from(sy.at("action"));
    m.sync_done_bytes = sy.at("done_bytes").get<std::uint64_t>();
    m.sync_total_bytes = sy.at("total_bytes").get<std::uint64_t>();
    m.resync_copied_bytes = sy.value("copied_bytes", std::uint64_t{0});
    for (const auto& a : sy.value("pending", nlohmann::json::array())) m.pending.push_back(action_from(a));
    if (sy.contains("started")) {
      core::PassRate r;
      r.started = sy.at("started").get<std::int64_t>();
      r.speed = sy.value("speed", 0.0);
      r.eta = sy.contains("eta_seconds") ? sy.at("eta_seconds").get<double>() : -1;
      m.rate = r;
    }
    s.images.push_back(std::move(m));
  }
  return s;
}

}  // namespace fusemirror::fuse
