// core/scrub.cpp — the scrub schedule; see scrub.hpp.
#include "core/scrub.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>

namespace fusemirror::core {

bool scrub_due(const ScrubRecord& r, double interval_s, std::int64_t now) {
  if (interval_s <= 0) return false;
  if (r.in_progress || r.last_run == 0) return true;
  return static_cast<double>(now - r.last_run) >= interval_s;
}

std::optional<ScrubRecord> read_scrub_record(const Dir& dir, const std::string& rel) {
  auto fd = dir.open_beneath(rel, O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
  if (!fd) return std::nullopt;
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) return std::nullopt;
  auto f = read_cksum_file(fd->get());
  if (!f || !f->header) return std::nullopt;
  return f->scrub.value_or(ScrubRecord{});
}

void ScrubScheduler::tick() {
  if (interval_s_ <= 0) return;
  const auto steady = std::chrono::steady_clock::now();
  if (steady < next_look_) return;
  next_look_ = steady + std::chrono::seconds(2);
  if (resync_.scrub_busy()) return;
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const auto pending = resync_.pending();
  // The best candidate: a pass in progress first, then the oldest last run.
  std::shared_ptr<Image> pick;
  std::string pick_rel;
  ScrubRecord best;
  auto better = [&](const ScrubRecord& r) {
    if (pick_rel.empty()) return true;
    if (r.in_progress != best.in_progress) return r.in_progress;
    return r.last_run < best.last_run;
  };
  for (auto& [img, summary] : table_.listing()) {
    ScrubRecord r;
    std::string rel;
    if (img) {
      // In sync and idle: nothing to resync, no pass queued or running.
      if (!img->secondary_ok() || img->bitmap()->failed() || img->bitmap()->stats().unsynced_chunks ||
          pending.count(img.get()) || resync_.running(img))
        continue;
      r = img->scrub_record();
      rel = img->name();
    } else {
      if (!summary.secondary_ok) continue;
      r = summary.scrub.record;
      rel = summary.name;
    }
    if (!scrub_due(r, interval_s_, now) || !better(r)) continue;
    if (auto it = retry_after_.find(rel); it != retry_after_.end()) {
      if (steady < it->second) continue;
      retry_after_.erase(it);
    }
    pick = img;
    pick_rel = rel;
    best = r;
  }
  if (pick_rel.empty()) return;
  if (!pick) {
    auto loaded = load_(pick_rel);
    if (!loaded) {
      spdlog::warn("{}: cannot be loaded for its scheduled scrub: {}; tried again in 10 minutes", pick_rel,
                   loaded.error().message());
      retry_after_[pick_rel] = steady + std::chrono::minutes(10);
      return;
    }
    pick = *loaded;
  }
  resync_.queue(pick, repair_ ? SyncAction::repair : SyncAction::check, /*scheduled=*/true);
}

}  // namespace fusemirror::core
