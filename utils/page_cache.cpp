// utils/page_cache.cpp — see page_cache.hpp. Debian 12's glibc and kernel headers predate
// cachestat, so the call is made by number with the kernel's own structures (the numbers
// and layouts are ABI: include/uapi/linux/mman.h, the generic syscall table).
#include "utils/page_cache.hpp"

#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#ifndef __NR_cachestat
#define __NR_cachestat 451  // the same on every architecture (unified table, Linux 6.5)
#endif

namespace fusemirror::utils {
namespace {

struct CachestatRange {
  std::uint64_t off;
  std::uint64_t len;  // 0: to the end of the file
};

struct Cachestat {
  std::uint64_t nr_cache;  // pages of the range in the page cache
  std::uint64_t nr_dirty;
  std::uint64_t nr_writeback;
  std::uint64_t nr_evicted;
  std::uint64_t nr_recently_evicted;
};

std::uint64_t page_size() {
  static const std::uint64_t size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace

Result<bool> range_cached(int fd, std::uint64_t off, std::uint64_t len) {
  if (len == 0) return true;
  CachestatRange range{off, len};
  Cachestat cs{};
  if (::syscall(__NR_cachestat, fd, &range, &cs, 0) != 0) return errno_code(errno);
  // The kernel counts the pages of the range it finds, folios cut at the range's edges.
  const std::uint64_t ps = page_size();
  const std::uint64_t pages = (off + len + ps - 1) / ps - off / ps;
  return cs.nr_cache >= pages;
}

bool local_disk_fs_type(std::uint64_t f_type) {
  // The magic numbers are ABI (include/uapi/linux/magic.h; bcachefs's from its own tree).
  switch (f_type) {
    case 0xEF53:      // ext2, ext3, ext4
    case 0x58465342:  // XFS
    case 0x9123683E:  // Btrfs
    case 0xF2F52010:  // F2FS
    case 0xCA451A4E:  // bcachefs
    case 0x01021994:  // tmpfs
    case 0x794C7630:  // overlayfs
      return true;
    default:
      return false;
  }
}

bool local_disk_fs(int fd) {
  struct statfs st {};
  if (::fstatfs(fd, &st) != 0) return false;
  return local_disk_fs_type(static_cast<std::uint64_t>(static_cast<unsigned long>(st.f_type)));
}

}  // namespace fusemirror::utils
