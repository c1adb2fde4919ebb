// core/scrub.hpp — the scrub schedule: a check (or repair) pass over every image every
// `scrub_interval` seconds (config), in the background, within the resync rates, resumable
// across remounts (the cursor is kept in the image's checksum sidecar; docs/write-path.md
// §7.5, docs/operations.md §6).
//
// Owns the clock of the schedule only. The pass itself is the resync engine's (a check or
// repair job marked `scheduled`, which resumes from the image's scrub cursor); what a pass
// finds is the image's (Image::check_step).
//
// Which image, when: one scheduled pass at a time, set-wide (the resync worker runs one job
// at a time anyway). A pass left in progress (interrupted, or the daemon stopped) goes
// first; then the image whose last pass ended longest ago, once `scrub_interval` has passed
// since (an image never scrubbed is due at once). Only an image in sync is scrubbed: its
// secondary in service, nothing to resync, no other pass queued or running. Images closed
// for the descriptor budget are loaded for their pass (their summary carries the record).
//
// Thread safety: tick() is called by one thread (the sweeper's); the rest is const.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/checksum_format.hpp"
#include "core/dir.hpp"
#include "core/image_table.hpp"
#include "core/resync.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

// True when an image whose scrub record is `r` is due for a pass at `now` (unix seconds).
bool scrub_due(const ScrubRecord& r, double interval_s, std::int64_t now);

// The scrub record kept in the checksum file `rel` beneath `dir`, read without changing it
// (for images not loaded); nullopt when there is no usable one.
std::optional<ScrubRecord> read_scrub_record(const Dir& dir, const std::string& rel);

class ScrubScheduler {
 public:
  using Loader = std::function<utils::Result<std::shared_ptr<Image>>(const std::string& rel)>;
  ScrubScheduler(double interval_s, bool repair, ImageTable& table, ResyncEngine& resync, Loader load)
      : interval_s_(interval_s), repair_(repair), table_(table), resync_(resync), load_(std::move(load)) {}

  // Called every sweeper pass; looks at the images at most every few seconds, and queues
  // one scheduled pass when one is due and none is queued or running.
  void tick();

 private:
  const double interval_s_;
  const bool repair_;
  ImageTable& table_;
  ResyncEngine& resync_;
  Loader load_;
  std::chrono::steady_clock::time_point next_look_{};
  // Images that could not be loaded for a pass, and when to try again.
  std::map<std::string, std::chrono::steady_clock::time_point> retry_after_;
};

}  // namespace fusemirror::core
