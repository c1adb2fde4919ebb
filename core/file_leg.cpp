#include "core/file_leg.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/leg_copy.hpp"
#include "utils/io.hpp"
#include "utils/page_cache.hpp"
#include "utils/proc_fd.hpp"

namespace fusemirror::core {

FileLeg::FileLeg(utils::UniqueFd fd, std::string what, std::uint64_t write_piece)
    : fd_(std::move(fd)),
      what_(std::move(what)),
      write_piece_(utils::local_disk_fs(fd_.get()) ? static_cast<std::size_t>(write_piece) : 0) {
  // A hint: a file system that ignores it only keeps its read-ahead.
  if (fd_.valid()) (void)::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_RANDOM);
}

utils::Result<std::size_t> FileLeg::pread(std::span<std::byte> data, std::uint64_t off) {
  return utils::pread_all(fd_.get(), data, off);
}

std::error_code FileLeg::pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) {
  // In pieces, in order, each whole before the next: a write torn between two pieces is
  // the same as a short write pwrite_all already continues, and a failed one reports its
  // bytes done the same way (docs/write-path.md §1, "Leg writes in pieces").
  return utils::pwrite_pieces(fd_.get(), data, off, write_piece_, done);
}

bool FileLeg::open_direct() {
  // The same open file, reached again through /proc: no path, so no rename or symlink can
  // put another file here (as the primary's, core/image_direct.cpp).
  if (!direct_fd_.valid() && fd_.valid())
    direct_fd_ = utils::reopen(fd_.get(), O_RDWR | O_DIRECT);
  return direct_fd_.valid();
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

void FileLeg::drop_cache(std::uint64_t off, std::uint64_t len) {
  // The writeback first: POSIX_FADV_DONTNEED only starts it and skips the pages still
  // under it.
  ::sync_file_range(fd_.get(), static_cast<off_t>(off), static_cast<off_t>(len),
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  (void)::posix_fadvise(fd_.get(), static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
}

void FileLeg::read_ahead(std::uint64_t off, std::uint64_t len) {
  // With POSIX_FADV_RANDOM the kernel reads no more than each pread asks for; a pass that
  // reads the leg in order asks for its range ahead (small folios, as that reads them).
  (void)::posix_fadvise(fd_.get(), static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
}

}  // namespace fusemirror::core
