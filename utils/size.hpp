// utils/size.hpp — human sizes: "64K", "1M", "4096", "1GiB" <-> bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fusemirror::utils {

// Parses a byte count with an optional binary suffix (K, M, G, T, with optional "iB"/"B").
std::optional<std::uint64_t> parse_size(std::string_view s);
// "64 KiB", "1.50 GiB", "512 B".
std::string format_size(std::uint64_t bytes);

inline bool is_power_of_two(std::uint64_t v) { return v && !(v & (v - 1)); }

}  // namespace fusemirror::utils
