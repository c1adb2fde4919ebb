#include "core/file_leg.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/leg_copy.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

utils::Result<std::size_t> FileLeg::pread(std::span<std::byte> data, std::uint64_t off) {
  return utils::pread_all(fd_.get(), data, off);
}

std::error_code FileLeg::pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) {
  return utils::pwrite_all(fd_.get(), data, off, done);
}

std::error_code FileLeg::flush(bool datasync) {
  if (datasync) return utils::fdatasync_fd(fd_.get());
  return ::fsync(fd_.get()) ? utils::last_errno() : std::error_code{};
}

utils::Result<std::uint64_t> FileLeg::size() {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return utils::last_errno();
  return static_cast<std::uint64_t>(st.st_size);
}

std::error_code FileLeg::set_size(std::uint64_t size) {
  if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) return utils::last_errno();
  return {};
}

std::error_code FileLeg::fallocate(int mode, std::uint64_t off, std::uint64_t len) {
  return fallocate_secondary(fd_.get(), mode, off, len);
}

std::error_code FileLeg::punch(std::uint64_t off, std::uint64_t len) { return core::punch(fd_.get(), off, len); }

void FileLeg::start_writeback(std::uint64_t off, std::uint64_t len) {
  ::sync_file_range(fd_.get(), static_cast<off_t>(off), static_cast<off_t>(len), SYNC_FILE_RANGE_WRITE);
}

}  // namespace fusemirror::core
