// utils/meta_file.hpp — reading and writing small metadata files (JSON records, configs)
// that someone else may have tampered with.
//
// A metadata file found in place of ours may be a FIFO (an open would block forever), a
// device, a symlink or a hard link to a file elsewhere (a write would land outside our
// directories), or huge (a read would exhaust memory). Every function here:
//   - opens the file with O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, beneath a directory
//     descriptor that was itself opened with O_DIRECTORY | O_NOFOLLOW;
//   - requires, by fstat of what it opened, a regular file with exactly one link and at
//     most `max_size` bytes;
//   - throws utils::Error with one line naming the file and the reason otherwise.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <string>

#include "utils/fd.hpp"

namespace fusemirror::utils {

inline constexpr std::size_t kMaxMetaFileSize = 1 << 20;  // 1 MiB

// Opens directory `path` (O_RDONLY | O_DIRECTORY | O_NOFOLLOW): components before the last
// may be symlinks (the operator's choice of path), the last one may not. `what` names the
// directory in the error ("metadata directory"). Throws utils::Error.
UniqueFd open_dir_nofollow(const std::string& path, const std::string& what);

// Reads NAME beneath the directory `dirfd`; `shown` is the path used in error messages.
std::string read_meta_file_at(int dirfd, const std::string& name, const std::string& shown,
                              std::size_t max_size = kMaxMetaFileSize);
// Reads PATH: its directory is opened with open_dir_nofollow, then read_meta_file_at.
std::string read_meta_file(const std::string& path, std::size_t max_size = kMaxMetaFileSize);

// Why the file open on `fd` is not an acceptable metadata file ("" when it is).
std::string meta_file_problem(int fd, std::size_t max_size = kMaxMetaFileSize);
// The same from a stat result (an lstat: a symlink is named as one).
std::string stat_problem(const struct stat& st, std::size_t max_size = kMaxMetaFileSize);

// Replaces NAME beneath `dirfd` (opened O_RDONLY | O_DIRECTORY, not O_PATH: it is fsync'd)
// with `content`, durably and atomically, mode 0600 (LevelDB's SetCurrentFile):
//   .NAME.tmp created O_CREAT | O_EXCL | O_NOFOLLOW 0600 beneath dirfd -> write -> fsync
//   -> renameat within dirfd -> fsync dirfd.
// A crash leaves the old NAME or the new one, never a mix; no path string is resolved, so a
// symlink swapped into a parent directory cannot redirect it. `shown`: the directory's path
// for messages. Throws utils::Error.
void write_file_atomic_at(int dirfd, const std::string& shown, const std::string& name,
                          const std::string& content);

}  // namespace fusemirror::utils
