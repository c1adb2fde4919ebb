// fusemirror/parallel_writes.hpp — the kernel features libfuse 3.14 cannot ask for, added
// to its replies on /dev/fuse.
//
// 1. Parallel direct writes. With FOPEN_DIRECT_IO alone the kernel holds the inode lock
//    across each write, so a loop device's or QEMU's queue of writes to one image reaches
//    us one at a time. Kernels >= 6.2 drop that for files opened with
//    FOPEN_PARALLEL_DIRECT_WRITES, a flag libfuse 3.14 cannot set: the shim adds it to
//    successful OPEN/CREATE replies which carry FOPEN_DIRECT_IO. Safe: overlapping writes
//    are ordered by core's range locks, not by the kernel's inode lock.
// 2. Shared mmap of direct-I/O files (FUSE_DIRECT_IO_ALLOW_MMAP, an INIT flag of kernels
//    >= 6.6, bit 36: bit 4 of fuse_init_out.flags2, read only with FUSE_INIT_EXT). Without
//    it a MAP_SHARED mapping of a file opened with FOPEN_DIRECT_IO fails with ENODEV. With
//    it the kernel maps such a file through its page cache (and keeps that cache coherent
//    with the direct reads and writes of other descriptors); the pages it writes back
//    reach the daemon as ordinary WRITE requests. Offered only after allow_direct_io_mmap().
//
// Both work by a fuse_custom_io over the session's /dev/fuse descriptor: reads note the
// requests (OPEN, CREATE, INIT) whose replies change, writes patch those replies.
#pragma once

struct fuse_session;

namespace fusemirror::fuse {

// Installs the shim. Returns false when libfuse refused the custom I/O (writes then
// serialise and shared mmap of a direct-I/O file fails with ENODEV; still correct).
bool enable_parallel_direct_writes(fuse_session* se);

// Whether the kernel's INIT request offered FUSE_DIRECT_IO_ALLOW_MMAP. Known once the INIT
// request was read: from the file system's init() callback on (libfuse calls it while
// handling INIT, before the reply is written). False without the shim.
bool kernel_offers_direct_io_mmap();
// Asks the shim to accept that offer in the INIT reply; call it from init() (later is too
// late: the reply is sent). No effect when the kernel did not offer it.
void allow_direct_io_mmap();

}  // namespace fusemirror::fuse
