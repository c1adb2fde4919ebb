// fusemirror/cli_text.hpp — small helpers shared by the subcommands (cli.cpp, examine.cpp).
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

#include "core/layout.hpp"

namespace fusemirror::cli {

// A Unix time as local "YYYY-MM-DD HH:MM:SS"; "never" for 0.
inline std::string time_text(std::int64_t unix_s) {
  if (!unix_s) return "never";
  char b[64];
  const std::time_t t = static_cast<std::time_t>(unix_s);
  std::strftime(b, sizeof b, "%F %T", std::localtime(&t));
  return b;
}

// FILE.fmbm -> FILE + `suffix` ("" when FILE is not a bitmap's name): the checksum file
// (core::kChecksumSuffix) or the activity log's record (core::kAlRecordSuffix) beside it.
inline std::string sidecar_of(const std::string& bitmap, const char* suffix) {
  const std::string sfx = core::kBitmapSuffix;
  if (bitmap.size() <= sfx.size() || bitmap.compare(bitmap.size() - sfx.size(), sfx.size(), sfx) != 0) return {};
  return bitmap.substr(0, bitmap.size() - sfx.size()) + suffix;
}

}  // namespace fusemirror::cli
