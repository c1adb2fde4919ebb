// core/create.hpp — `fusemirror create`: initialise a mirror set.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/config.hpp"

namespace fusemirror::core {

struct CreateOptions {
  std::string primary;
  std::string secondary;
  std::uint64_t chunk_size = 65536;
  double daemon_sleep = 5.0;
  std::optional<std::string> bitmap_dir;
  bool bitmap = true;
  std::uint32_t write_behind = 0;
  Role role = Role::mirror;
  bool force = false;
};

// Validates, writes PRIMARY/.fusemirror/config.json and SECONDARY/.fusemirror/member.json,
// and gives every existing image an all-dirty bitmap (the first mount copies it).
// Throws utils::Error naming the path and the reason; a refused create changes nothing.
Config create_set(const CreateOptions& opts);

}  // namespace fusemirror::core
