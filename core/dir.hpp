// core/dir.hpp — a backing directory, opened once; every path is resolved beneath it.
//
// Security (docs/reliability.md §5 "Security"): paths are opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so neither `..` nor a symlink planted in
// a backing directory can lead a read or write outside it.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "utils/fd.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

// Checks a relative path ("a/b.img", no leading slash; "" is the root): no empty, ".",
// ".." component and no NUL. Returns EINVAL otherwise.
std::error_code check_relative_path(std::string_view rel);

class Dir {
 public:
  Dir() = default;
  // Opens `path` as a directory (follows symlinks in `path` itself: the operator chose it;
  // with follow_last false, a symlink as the last component is refused: ELOOP/ENOTDIR).
  static utils::Result<Dir> open(const std::string& path, bool follow_last = true);

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  bool valid() const { return fd_.valid(); }

  utils::Result<utils::UniqueFd> open_beneath(std::string_view rel, int flags,
                                              mode_t mode = 0) const;
  // The parent directory of `rel` (O_PATH) and its last component.
  utils::Result<std::pair<utils::UniqueFd, std::string>> parent_of(std::string_view rel) const;
  // Removes the name REL beneath the root (`flags`: 0 or AT_REMOVEDIR), never following a
  // symlink on the way (a symlink at REL itself is removed, not its target).
  std::error_code unlink(std::string_view rel, int flags = 0) const;
  // mkdir -p of `rel` beneath the root (mode for new directories). Each directory it makes
  // is durable when it returns (its parent is fsync'ed): what is created in it next does
  // not vanish with it in a power cut.
  std::error_code mkdirs(std::string_view rel, mode_t mode = 0700) const;
  // fsync of the directory `rel_dir` ("" = the root): the names in it are durable.
  std::error_code sync(std::string_view rel_dir = {}) const;
  // fsync of the directory that holds the name `rel`.
  std::error_code sync_parent(std::string_view rel) const;
  utils::Result<struct stat> lstat(std::string_view rel) const;

 private:
  utils::UniqueFd fd_;
  std::string path_;
};

}  // namespace fusemirror::core
