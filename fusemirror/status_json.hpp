// fusemirror/status_json.hpp — the status as JSON: the one place the schema of status.json
// and `fusemirror status --json` is written and read (documented in docs/quickstart.md).
#pragma once

#include <nlohmann/json.hpp>

#include "core/status.hpp"

namespace fusemirror::fuse {

nlohmann::json to_json(const core::SetStatus& s);
// Throws nlohmann::json::exception (or utils::Error) when `j` is not a set's status.
core::SetStatus set_status_from_json(const nlohmann::json& j);

}  // namespace fusemirror::fuse
