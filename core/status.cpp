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

}  // namespace fusemirror::core
