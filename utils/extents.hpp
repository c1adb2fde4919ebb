// utils/extents.hpp — where a file has blocks: its allocated extents over a byte range.
#pragma once

#include <cstdint>
#include <vector>

#include "utils/result.hpp"

namespace fusemirror::utils {

struct Extent {
  std::uint64_t off = 0;
  std::uint64_t len = 0;
  // Allocated but never written (fallocate, zero range): reads as zeros and is counted as
  // used space. Only FIEMAP tells; the SEEK_DATA fallback never sets it.
  bool unwritten = false;
};

// The allocated extents of `fd` that overlap [off, end), clipped to it, in order, adjacent
// extents of the same kind merged. Gaps between them are holes.
//
// By FIEMAP: it reads the extent tree, so the answer does not depend on the page cache.
// Dirty pages in the range must have been written back first (sync_file_range), or delayed
// allocations are reported as FIEMAP_EXTENT_DELALLOC, which is returned as written data, and
// unwritten extents under dirty pages as unwritten. errc::operation_not_supported where the
// file system lacks FIEMAP (tmpfs, FUSE, NFS).
Result<std::vector<Extent>> fiemap_extents(int fd, std::uint64_t off, std::uint64_t end);

// The same by SEEK_DATA / SEEK_HOLE, which count cached pages over an unwritten extent as
// data: callers that care drop the range's clean cache first.
Result<std::vector<Extent>> seek_data_extents(int fd, std::uint64_t off, std::uint64_t end);

}  // namespace fusemirror::utils
