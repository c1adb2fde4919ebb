// utils/proc_fd.hpp — the /proc/self/fd path of a descriptor: the open file itself, reached
// by a path that no rename or symlink can redirect (reopen, xattrs by path, readlink).
#pragma once

#include <fcntl.h>

#include <string>

#include "utils/fd.hpp"

namespace fusemirror::utils {

inline std::string proc_fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// The same open file as `fd`, opened again with `flags` (O_CLOEXEC added): a second
// descriptor with other flags (O_DIRECT) that no path change can point elsewhere. Invalid on
// failure, errno set.
inline UniqueFd reopen(int fd, int flags) { return UniqueFd(::open(proc_fd_path(fd).c_str(), flags | O_CLOEXEC)); }

}  // namespace fusemirror::utils
