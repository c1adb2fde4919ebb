#include "core/status.hpp"

namespace fusemirror::core {

const char* to_string(SyncAction a) { return kSyncActionNames[static_cast<std::size_t>(a)]; }

std::optional<SyncAction> parse_sync_action(std::string_view s) {
  for (std::size_t i = 0; i < kSyncActionNames.size(); ++i)
    if (s == kSyncActionNames[i]) return static_cast<SyncAction>(i);
  if (s == "frozen") return SyncAction::idle;
  if (s == "recover") return SyncAction::resync;
  return std::nullopt;
}

ImageStatus unloaded_status(ImageStatus s, bool secondary_vanished) {
  if (secondary_vanished && s.state == "clean") {
    s.state = "degraded";
    s.secondary_ok = false;
  }
  return s;
}

std::string health_summary(const SetStatus& s) {
  std::size_t degraded = 0, failed = 0, resyncing = 0, checking = 0;
  for (const auto& i : s.images) {
    if (i.state == "bitmap-failed") ++failed;
    if (!i.secondary_ok) ++degraded;
    else if (i.state == "resyncing") ++resyncing;
    else if (i.state == "checking") ++checking;
  }
  std::string out = std::to_string(s.images.size()) + (s.images.size() == 1 ? " image, " : " images, ") +
                    std::to_string(degraded) + " degraded";
  if (resyncing) out += ", " + std::to_string(resyncing) + " resyncing";
  if (checking) out += ", " + std::to_string(checking) + " checking";
  if (failed) out += ", " + std::to_string(failed) + " bitmap-failed (writes refused)";
  return out;
}

const char* to_string(LinkStatus::State s) {
  switch (s) {
    case LinkStatus::State::connected: return "connected";
    case LinkStatus::State::connecting: return "connecting";
    case LinkStatus::State::down: return "down";
  }
  return "down";
}

std::optional<LinkStatus::State> parse_link_state(std::string_view s) {
  for (auto st : {LinkStatus::State::connected, LinkStatus::State::connecting, LinkStatus::State::down})
    if (s == to_string(st)) return st;
  return std::nullopt;
}

}  // namespace fusemirror::core
