// utils/page_cache.hpp — does the host's page cache hold a file range? (cachestat(2),
// Linux 6.5 and later). Lets a reader that owns an O_DIRECT descriptor serve from the
// cache what is already there and read the rest around it. And: is a file's page cache
// this host's own, written back to a local disk later (local_disk_fs)?
#pragma once

#include <cstdint>
#include <system_error>

#include "utils/result.hpp"

namespace fusemirror::utils {

// True when every page of [off, off + len) of the file behind `fd` is in the page cache
// (clean or dirty); false when any is missing (pages past the end of the file count as
// missing). An error is the kernel's: ENOSYS before Linux 6.5 (or under a seccomp filter
// that does not know the call), EBADF, EINVAL for a range the call rejects.
Result<bool> range_cached(int fd, std::uint64_t off, std::uint64_t len);

// True when the file behind `fd` lives on a local disk file system, whose writes land in
// this host's page cache and reach the disk later: ext2/3/4, XFS, Btrfs, F2FS, bcachefs,
// tmpfs, and overlayfs (over one of them). There a buffered write costs a copy into the
// cache, and the size of the folios it allocates matters. False for the others — FUSE,
// NFS, SMB, Ceph, 9p, and any type this list does not name — where a write may be a
// request to another process or host, each paying its latency; false when fstatfs fails.
bool local_disk_fs(int fd);
// The same test on a statfs(2) f_type.
bool local_disk_fs_type(std::uint64_t f_type);

}  // namespace fusemirror::utils
