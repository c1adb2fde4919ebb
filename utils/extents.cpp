#include "utils/extents.hpp"

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <memory>

namespace fusemirror::utils {
namespace {

void append(std::vector<Extent>& out, Extent e) {
  if (e.len == 0) return;
  if (!out.empty() && out.back().off + out.back().len == e.off && out.back().unwritten == e.unwritten) {
    out.back().len += e.len;
    return;
  }
  out.push_back(e);
}

}  // namespace

Result<std::vector<Extent>> fiemap_extents(int fd, std::uint64_t off, std::uint64_t end) {
  std::vector<Extent> out;
  if (end <= off) return out;
  constexpr std::uint32_t kBatch = 128;
  const std::size_t bytes = sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent);
  auto storage = std::make_unique<std::uint64_t[]>((bytes + 7) / 8);
  auto* fm = reinterpret_cast<struct fiemap*>(storage.get());
  std::uint64_t pos = off;
  while (pos < end) {
    std::fill_n(storage.get(), (bytes + 7) / 8, 0);
    fm->fm_start = pos;
    fm->fm_length = end - pos;
    fm->fm_flags = 0;  // no FIEMAP_FLAG_SYNC: that writes back the whole file, not the range
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
      if (errno == EINTR) continue;
      if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL)
        return errno_code(EOPNOTSUPP);
      return last_errno();
    }
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    std::uint64_t next = pos;
    for (std::uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const struct fiemap_extent& fe = fm->fm_extents[i];
      const std::uint64_t s = std::max<std::uint64_t>(fe.fe_logical, pos);
      const std::uint64_t e = std::min<std::uint64_t>(fe.fe_logical + fe.fe_length, end);
      // Delayed allocation and "unknown" (inline, encoded) extents hold data: copy them.
      if (e > s) append(out, Extent{s, e - s, (fe.fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0});
      next = std::max<std::uint64_t>(next, fe.fe_logical + fe.fe_length);
      if (fe.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last || next <= pos) break;
    pos = next;
  }
  return out;
}

Result<std::vector<Extent>> seek_data_extents(int fd, std::uint64_t off, std::uint64_t end) {
  std::vector<Extent> out;
  std::uint64_t pos = off;
  while (pos < end) {
    const off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // nothing but a hole to the end of the file
      return last_errno();
    }
    const std::uint64_t d = static_cast<std::uint64_t>(data);
    if (d >= end) break;
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0 && errno != ENXIO) return last_errno();
    const std::uint64_t h = hole < 0 ? end : std::min<std::uint64_t>(end, static_cast<std::uint64_t>(hole));
    if (h <= d) break;
    append(out, Extent{d, h - d, false});
    pos = h;
  }
  return out;
}

}  // namespace fusemirror::utils
