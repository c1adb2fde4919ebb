// utils/io.hpp — whole-buffer pread/pwrite (retrying short transfers and EINTR).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "utils/result.hpp"

namespace fusemirror::utils {

// Writes all of `data` at `off`; a short write is retried, a zero-progress write is EIO.
// `written` (when given) gets the bytes written before an error: 0 means the file's bytes
// did not change (the caller may then treat the write as never issued).
std::error_code pwrite_all(int fd, std::span<const std::byte> data, std::uint64_t off,
                           std::size_t* written = nullptr);
// Reads up to data.size() bytes at `off`; returns the count (short only at end of file).
Result<std::size_t> pread_all(int fd, std::span<std::byte> data, std::uint64_t off);
std::error_code fdatasync_fd(int fd);

}  // namespace fusemirror::utils
