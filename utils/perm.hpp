// utils/perm.hpp — POSIX permission checks for a caller other than this process (a FUSE
// request's uid, gid and supplementary groups), as the kernel makes them with
// default_permissions. No ACLs: the owner/group/other mode bits only.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <vector>

namespace fusemirror::utils {

struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
  bool in_group(gid_t g) const;
};

// Whether `who` may access a file of `st` for `want` (a mask of R_OK, W_OK, X_OK). Root may
// read and write anything, and execute (search) where anyone may or it is a directory.
bool permits(const struct stat& st, const Credentials& who, int want);

}  // namespace fusemirror::utils
