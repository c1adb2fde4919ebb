// utils/proc_fd.hpp — the /proc/self/fd path of a descriptor: the open file itself, reached
// by a path that no rename or symlink can redirect (reopen, xattrs by path, readlink).
#pragma once

#include <string>

namespace fusemirror::utils {

inline std::string proc_fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace fusemirror::utils
