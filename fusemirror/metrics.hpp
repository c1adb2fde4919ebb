// fusemirror/metrics.hpp — `fusemirror metrics`: the sets' status in the Prometheus text
// exposition format, for node_exporter's textfile collector (docs/operations.md
// "Metrics" lists every metric and the timer line).
//
// Built from the same status the daemon serves as status.json (read through
// cli::read_status, decoded by fusemirror/status_json): every value equals the matching
// field of `fusemirror status --json`. Every metric is named fusemirror_..., labelled
// mount="MOUNTPOINT" and, per image, image="NAME" (utils/prometheus.hpp escapes them).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace fusemirror::cli {

// One mount's result: its status, or nullopt when its daemon did not answer (up 0).
struct MountMetrics {
  std::string mountpoint;
  std::optional<core::SetStatus> status;
};

// The exposition text for these mounts.
std::string format_metrics(const std::vector<MountMetrics>& mounts);

// The command: MOUNTS (default: every mounted set) to stdout. A named mount that is not a
// fusemirror mount still gets fusemirror_up 0 (the collector's file says it is down);
// returns 0 unless nothing could be written.
int metrics(const std::vector<std::string>& mounts);

}  // namespace fusemirror::cli
