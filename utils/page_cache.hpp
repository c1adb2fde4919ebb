// utils/page_cache.hpp — does the host's page cache hold a file range? (cachestat(2),
// Linux 6.5 and later). Lets a reader that owns an O_DIRECT descriptor serve from the
// cache what is already there and read the rest around it.
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

}  // namespace fusemirror::utils
