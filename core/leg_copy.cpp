#include "core/leg_copy.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <span>

#include "core/leg.hpp"
#include "utils/crash_point.hpp"
#include "utils/extents.hpp"
#include "utils/io.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

namespace {
std::error_code write_zeros(int fd, std::uint64_t off, std::uint64_t len) {
  static const std::vector<std::byte> zeros(1 << 20);
  while (len > 0) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, zeros.size()));
    if (auto ec = utils::pwrite_all(fd, std::span(zeros.data(), n), off)) return ec;
    off += n;
    len -= n;
  }
  return {};
}

}  // namespace

std::error_code do_fallocate(int fd, int mode, std::uint64_t off, std::uint64_t len) {
  while (::fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
    if (errno != EINTR) return utils::last_errno();
  }
  return {};
}

std::error_code punch(int fd, std::uint64_t off, std::uint64_t len) {
  auto ec = do_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
  if (ec == std::errc::operation_not_supported) return write_zeros(fd, off, len);
  return ec;
}

std::error_code fallocate_secondary(int fd, int mode, std::uint64_t off, std::uint64_t len) {
  auto ec = do_fallocate(fd, mode, off, len);
  if (ec != std::errc::operation_not_supported) return ec;
  if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return utils::last_errno();
    const auto size = static_cast<std::uint64_t>(st.st_size);
    const std::uint64_t end = (mode & FALLOC_FL_KEEP_SIZE) ? std::min(size, off + len) : off + len;
    if (end > off)
      if (auto e = punch(fd, off, std::min(end, std::max(size, off)) - off)) return e;
    if (end > size && ::ftruncate(fd, static_cast<off_t>(end)) != 0) return utils::last_errno();
    return {};
  }
  return ec;
}

LegCopy copy_layout(int pfd, Leg& s, std::uint64_t off, std::uint64_t stop, std::vector<std::byte>& buf,
                    std::uint64_t* copied, std::atomic<bool>& copy_file_range_ok) {
  struct stat st {};
  if (::fstat(pfd, &st) != 0) return {utils::last_errno(), {}};
  const std::uint64_t data_end = std::min<std::uint64_t>(stop, static_cast<std::uint64_t>(st.st_size));
  if (data_end <= off) return {};
  // The secondary gets the primary's layout, not only its bytes: data where it has data,
  // an unwritten (preallocated) extent where it has one, a hole where it has a hole. The
  // layout comes from the extent tree (FIEMAP), which the page cache cannot disguise — on
  // ext4 SEEK_DATA reports clean cached pages over an unwritten extent as data, and the
  // copy would then write zeros where the primary has none. The range's dirty pages are
  // written back first, so delayed allocations and unwritten extents under new data are
  // settled in the tree (the range lock keeps new writes out until the copy is done).
  ::sync_file_range(pfd, static_cast<off_t>(off), static_cast<off_t>(data_end - off),
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  auto map = utils::fiemap_extents(pfd, off, data_end);
  if (!map && map.error() == std::errc::operation_not_supported) {
    // No FIEMAP (tmpfs, FUSE, NFS): SEEK_DATA, with the range's clean cache dropped first
    // (best effort: a page that cannot be dropped is copied as zeros, never lost).
    ::posix_fadvise(pfd, static_cast<off_t>(off), static_cast<off_t>(data_end - off), POSIX_FADV_DONTNEED);
    map = utils::seek_data_extents(pfd, off, data_end);
  }
  if (!map) return {map.error(), {}};
  std::uint64_t pos = off;
  std::error_code sec_err;
  for (const utils::Extent& e : *map) {
    // A hole on the primary becomes a hole on the secondary, never written zeros.
    if (e.off > pos && (sec_err = s.punch(pos, e.off - pos))) break;
    pos = e.off + e.len;
    if (e.unwritten) {
      // Zeros that stay allocated, as the primary's preallocation is (a hole where the
      // secondary's file system cannot zero a range).
      if ((sec_err = s.fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, e.off, e.len))) break;
      continue;
    }
    for (std::uint64_t p = e.off; p < pos;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(pos - p, buf.size()));
      // In the kernel where it can (no bytes through user space; only over written
      // extents, so it cannot fill a hole); any failure is redone by pread/pwrite, which
      // tells a primary read error from a secondary write error.
      std::size_t done = 0;
      const int sfd = s.fd();
      if (sfd >= 0 && copy_file_range_ok.load(std::memory_order_relaxed)) {
        loff_t in = static_cast<loff_t>(p), out = static_cast<loff_t>(p);
        const ssize_t c = ::copy_file_range(pfd, &in, sfd, &out, n, 0);
        if (c > 0) {
          done = static_cast<std::size_t>(c);
        } else if (c < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP ||
                             errno == ENOSYS || errno == EBADF)) {
          copy_file_range_ok.store(false, std::memory_order_relaxed);
        }
      }
      if (done == 0) {
        auto r = utils::pread_all(pfd, std::span(buf.data(), n), p);
        if (!r) return {r.error(), {}};
        if (*r == 0) break;
        sec_err = s.pwrite(std::span<const std::byte>(buf.data(), *r), p);
        if (sec_err) break;
        done = *r;
      }
      FM_CRASH_POINT("resync.mid_copy");
      *copied += done;
      p += done;
    }
    if (sec_err) break;
  }
  if (!sec_err && pos < data_end) sec_err = s.punch(pos, data_end - pos);
  return {{}, sec_err};
}

}  // namespace fusemirror::core
