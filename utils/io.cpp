#include "utils/io.hpp"

#include <unistd.h>

#include <cerrno>

namespace fusemirror::utils {

std::error_code pwrite_all(int fd, std::span<const std::byte> data, std::uint64_t off,
                           std::size_t* written) {
  std::size_t done = 0;
  std::error_code ec;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      ec = last_errno();
      break;
    }
    if (n == 0) {
      ec = errno_code(EIO);
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (written) *written = done;
  return ec;
}

std::error_code pwrite_pieces(int fd, std::span<const std::byte> data, std::uint64_t off, std::size_t piece,
                              std::size_t* written) {
  return write_in_pieces(data, off, piece, written,
                         [fd](std::span<const std::byte> part, std::uint64_t at, std::size_t* done) {
                           return pwrite_all(fd, part, at, done);
                         });
}

Result<std::size_t> pread_all(int fd, std::span<std::byte> data, std::uint64_t off) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pread(fd, data.data() + done, data.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return last_errno();
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

std::error_code fdatasync_fd(int fd) {
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) return last_errno();
  }
  return {};
}

}  // namespace fusemirror::utils
