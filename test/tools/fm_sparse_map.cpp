// fm_sparse_map — print a file's allocated extents, one "start end" line each (end
// exclusive), adjacent extents merged. Used by the integration tests to check that the
// primary and secondary copies of an image are equally sparse.
//
// FIEMAP where the file system has it: written and unwritten (preallocated, zero-ranged)
// extents both count as allocated, which is what "equally sparse" means for space. Whether
// a block is written or unwritten is not compared: ext4 may zero out a small unwritten
// extent next to a write instead of splitting it, and which one it does depends on the
// order of writes, which two legs written concurrently need not share.
// Elsewhere lseek(SEEK_DATA) / lseek(SEEK_HOLE).
// --written: FIEMAP's written extents only, the same answer SEEK_DATA gives with the page
// cache dropped — for comparing a file on a file system with FIEMAP against one without
// (a FUSE view of it, say).
//
// Usage: fm_sparse_map [--size] [--drop-cache] FILE
//   --size        print "size N" as the first line
//   --written     count written extents only (unwritten ones as holes), see above
//   --drop-cache  fdatasync the file and drop its clean page cache first. On ext4 an
//                 unwritten (fallocated / zero-ranged) extent counts as data while its
//                 pages sit uptodate in the page cache, so a file that was merely read
//                 (the primary, through the mount) would otherwise map differently from
//                 an identical file that was not (the secondary).
//
// A file with no data prints nothing. Exit status: 0 ok, 1 I/O error, 2 usage.
// Note: file systems report extents at their own granularity (page for tmpfs, block for
// ext4); compare maps of files on the same file system type.

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

namespace {

int usage() {
  std::fprintf(stderr, "usage: fm_sparse_map [--size] [--written] [--drop-cache] FILE\n");
  return 2;
}

// Allocated extents by FIEMAP, merged; false if the file system has no FIEMAP.
bool fiemap_map(int fd, off_t size, bool written_only, std::vector<std::pair<off_t, off_t>>& out, int& err) {
  constexpr unsigned kBatch = 256;
  std::vector<unsigned char> raw(sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent));
  auto* fm = reinterpret_cast<struct fiemap*>(raw.data());
  unsigned long long pos = 0;
  while (pos < static_cast<unsigned long long>(size)) {
    std::fill(raw.begin(), raw.end(), 0);
    fm->fm_start = pos;
    fm->fm_length = static_cast<unsigned long long>(size) - pos;
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
      if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL) return false;
      err = errno;
      return true;
    }
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
      const auto& fe = fm->fm_extents[i];
      off_t s = static_cast<off_t>(fe.fe_logical);
      off_t e = std::min<off_t>(size, static_cast<off_t>(fe.fe_logical + fe.fe_length));
      if (written_only && (fe.fe_flags & FIEMAP_EXTENT_UNWRITTEN)) e = s;
      if (e > s) {
        if (!out.empty() && out.back().second >= s)
          out.back().second = std::max(out.back().second, e);
        else
          out.emplace_back(s, e);
      }
      pos = std::max<unsigned long long>(pos, fe.fe_logical + fe.fe_length);
      if (fe.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last) break;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool print_size = false;
  bool drop_cache = false;
  bool written_only = false;
  const char* path = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--size") {
      print_size = true;
    } else if (a == "--written") {
      written_only = true;
    } else if (a == "--drop-cache") {
      drop_cache = true;
    } else if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else if (!a.empty() && a[0] == '-' && a != "-") {
      return usage();
    } else if (path == nullptr) {
      path = argv[i];
    } else {
      return usage();
    }
  }
  if (path == nullptr) return usage();

  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "fm_sparse_map: %s: %s\n", path, std::strerror(errno));
    return 1;
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    std::fprintf(stderr, "fm_sparse_map: %s: fstat: %s\n", path, std::strerror(errno));
    return 1;
  }
  if (!S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "fm_sparse_map: %s: not a regular file\n", path);
    return 1;
  }
  if (drop_cache) {
    if (::fdatasync(fd) != 0) {
      std::fprintf(stderr, "fm_sparse_map: %s: fdatasync: %s\n", path, std::strerror(errno));
      return 1;
    }
    int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (rc != 0) {
      std::fprintf(stderr, "fm_sparse_map: %s: posix_fadvise: %s\n", path, std::strerror(rc));
      return 1;
    }
  }
  const off_t size = st.st_size;
  if (print_size) std::printf("size %lld\n", static_cast<long long>(size));

  std::vector<std::pair<off_t, off_t>> extents;
  int err = 0;
  if (fiemap_map(fd, size, written_only, extents, err)) {
    if (err != 0) {
      std::fprintf(stderr, "fm_sparse_map: %s: FIEMAP: %s\n", path, std::strerror(err));
      return 1;
    }
    for (auto [s, e] : extents) std::printf("%lld %lld\n", static_cast<long long>(s), static_cast<long long>(e));
    ::close(fd);
    return std::fflush(stdout) != 0 ? 1 : 0;
  }
  off_t pos = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      std::fprintf(stderr, "fm_sparse_map: %s: SEEK_DATA at %lld: %s\n", path,
                   static_cast<long long>(pos), std::strerror(errno));
      return 1;
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      if (errno == ENXIO) {
        hole = size;  // raced with a truncate; treat as end
      } else {
        std::fprintf(stderr, "fm_sparse_map: %s: SEEK_HOLE at %lld: %s\n", path,
                     static_cast<long long>(data), std::strerror(errno));
        return 1;
      }
    }
    if (hole > size) hole = size;
    if (hole <= data) break;
    std::printf("%lld %lld\n", static_cast<long long>(data), static_cast<long long>(hole));
    pos = hole;
  }
  ::close(fd);
  if (std::fflush(stdout) != 0) return 1;
  return 0;
}
