// utils/io.hpp — whole-buffer pread/pwrite (retrying short transfers and EINTR), and a
// whole-buffer pwrite issued in aligned pieces.
#pragma once

#include <algorithm>
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

// Writes all of `data` at `off` in pieces of at most `piece` bytes, aligned to `piece` in
// the file: the first piece ends at the first multiple of `piece` after `off`, every
// later one starts on one (a 1 MiB write at 4 KiB with 64 KiB pieces: 60 KiB, 15 × 64 KiB,
// 4 KiB). `piece` 0: one piece, the whole buffer. The pieces go out in order, each whole
// (`write_at` writes all of its piece or returns an error, `*done` its bytes written
// before it); the first error stops the loop. `written` (when given) gets the bytes
// written before an error, counted across pieces, as pwrite_all's: 0 means nothing
// changed. A piece that reports success short of its length is continued from where it
// stopped; one that makes no progress is EIO.
template <typename WriteAt>
std::error_code write_in_pieces(std::span<const std::byte> data, std::uint64_t off, std::size_t piece,
                                std::size_t* written, WriteAt&& write_at) {
  std::size_t done = 0;
  std::error_code ec;
  while (done < data.size()) {
    std::size_t n = data.size() - done;
    if (piece) n = static_cast<std::size_t>(std::min<std::uint64_t>(n, piece - (off + done) % piece));
    std::size_t got = 0;
    ec = write_at(data.subspan(done, n), off + done, &got);
    done += std::min(got, n);
    if (ec) break;
    if (got == 0) {
      ec = errno_code(EIO);
      break;
    }
  }
  if (written) *written = done;
  return ec;
}

// pwrite_all in pieces (write_in_pieces): a buffered write allocates page-cache folios no
// larger than itself, so pieces of `piece` bytes keep a file's folios at most that large.
std::error_code pwrite_pieces(int fd, std::span<const std::byte> data, std::uint64_t off, std::size_t piece,
                              std::size_t* written = nullptr);

// Reads up to data.size() bytes at `off`; returns the count (short only at end of file).
Result<std::size_t> pread_all(int fd, std::span<std::byte> data, std::uint64_t off);
std::error_code fdatasync_fd(int fd);

}  // namespace fusemirror::utils
