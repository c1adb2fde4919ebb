// utils/log.hpp — logging setup: spdlog to stderr and, optionally, a log file.
#pragma once

#include <string>

#include "utils/fd.hpp"

namespace fusemirror::utils {

// Installs the default logger. `file` may be empty. Safe to call again (replaces it).
//
// Every message is passed through utils::printable() before any sink sees it: a name
// holding ESC sequences or newlines cannot rewrite the operator's terminal or forge a line
// of the log, whichever log site printed it.
//
// The log file is opened by open_log_file(); a file that is not what it seems (a symlink,
// a FIFO or device, a hard link, or a symlinked directory) throws utils::Error naming it.
// The descriptor is kept for the logger's life (there is no reopen by path). Any other failure to open it (EACCES, EROFS...) is logged as a warning on stderr and the
// logger goes on without the file (it is a convenience; stderr still works).
void setup_logging(const std::string& file, bool to_stderr, bool verbose);

// Opens (creating 0600) the log file `path` for appending: its directory with
// O_DIRECTORY | O_NOFOLLOW, the file beneath it with O_WRONLY | O_APPEND | O_CREAT |
// O_NOFOLLOW | O_NONBLOCK; fstat must show a regular file with one link. A symlink in place
// of the file is never followed (not even to create its target). Throws utils::Error for
// what looks like tampering; any other failure returns an invalid fd and sets *soft_error.
UniqueFd open_log_file(const std::string& path, std::string* soft_error);

}  // namespace fusemirror::utils
