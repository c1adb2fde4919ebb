// utils/log.hpp — logging setup: spdlog to stderr and, optionally, a log file.
#pragma once

#include <string>

namespace fusemirror::utils {

// Installs the default logger. `file` may be empty. Safe to call again (replaces it).
void setup_logging(const std::string& file, bool to_stderr, bool verbose);

}  // namespace fusemirror::utils
