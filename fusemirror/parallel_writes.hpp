// fusemirror/parallel_writes.hpp — lets the kernel send concurrent direct writes to one file.
//
// With FOPEN_DIRECT_IO alone the kernel holds the inode lock across each write, so a loop
// device's or QEMU's queue of writes to one image reaches us one at a time. Kernels >= 6.2
// drop that for files opened with FOPEN_PARALLEL_DIRECT_WRITES, a flag libfuse 3.14 cannot
// set. This installs a fuse_custom_io over the session's /dev/fuse descriptor that adds the
// flag to successful OPEN/CREATE replies which carry FOPEN_DIRECT_IO. Safe: overlapping
// writes are ordered by core's range locks, not by the kernel's inode lock.
#pragma once

struct fuse_session;

namespace fusemirror::fuse {

// Returns false when libfuse refused the custom I/O (writes then serialise; still correct).
bool enable_parallel_direct_writes(fuse_session* se);

}  // namespace fusemirror::fuse
