// utils/uuid.hpp — 16-byte random (version 4) UUIDs, text form 8-4-4-4-12.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fusemirror::utils {

using Uuid = std::array<std::uint8_t, 16>;

// Never throws: falls back to a unique (time, pid, counter) UUID should getrandom fail.
Uuid random_uuid() noexcept;
std::string to_string(const Uuid& u);
std::optional<Uuid> parse_uuid(std::string_view s);
inline bool is_nil(const Uuid& u) {
  for (auto b : u)
    if (b) return false;
  return true;
}

}  // namespace fusemirror::utils
