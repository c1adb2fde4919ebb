#include "core/bitmap_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <spdlog/spdlog.h>

#include "utils/meta_file.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

namespace {

// Opens `rel` without blocking; on success the descriptor is blocking again.
utils::Result<utils::UniqueFd> open_nonblock(const Dir& dir, const std::string& rel, std::string* problem) {
  auto fd = dir.open_beneath(rel, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (!fd) {
    switch (fd.error().value()) {
      case ELOOP: *problem = "is a symlink"; break;
      case EISDIR: *problem = "is a directory, not a regular file"; break;
      case ENXIO: case ENODEV: case ETXTBSY: *problem = "is not a regular file"; break;
      default: return fd.error();
    }
    return utils::UniqueFd{};
  }
  // A bitmap is a metadata file of any size: regular, one link (a hard link's writes could
  // reach a file outside the bitmap directory).
  *problem = utils::meta_file_problem(fd->get(), SIZE_MAX);
  if (!problem->empty()) return utils::UniqueFd{};
  const int fl = ::fcntl(fd->get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd->get(), F_SETFL, fl & ~O_NONBLOCK) != 0) return utils::last_errno();
  return std::move(*fd);
}

}  // namespace

std::string bitmap_path_problem(const Dir& dir, const std::string& rel) {
  auto st = dir.lstat(rel);
  if (!st) return {};
  return utils::stat_problem(*st, SIZE_MAX);
}

utils::Result<utils::UniqueFd> open_sidecar_file(const Dir& dir, const std::string& rel, const char* what,
                                                 std::string* refused) {
  const std::string path = dir.path() + "/" + rel;
  std::string problem;
  auto fd = open_nonblock(dir, rel, &problem);
  if (!fd) return fd.error();
  if (!problem.empty()) {
    // Refused: moved aside (never opened for writing, never unlinked: the operator may want
    // to look at it), and a new file made in its place, O_EXCL so nothing planted between
    // the two steps is taken.
    auto parent = dir.parent_of(rel);
    if (!parent) return parent.error();
    const std::string& base = parent->second;
    std::string aside = "." + base + ".refused-" + std::to_string(::time(nullptr));
    for (int i = 1; ::faccessat(parent->first.get(), aside.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0; ++i)
      aside = "." + base + ".refused-" + std::to_string(::time(nullptr)) + "-" + std::to_string(i);
    if (::renameat(parent->first.get(), base.c_str(), parent->first.get(), aside.c_str()) != 0) {
      const int e = errno;
      spdlog::error("{}: {} refused: {}; it cannot be moved aside ({}): image not served",
                    path, what, problem, std::strerror(e));
      return utils::errno_code(e);
    }
    spdlog::error("{}: {} refused: {}; moved aside to {}; a new one replaces it", path, what, problem, aside);
    const int nfd = ::openat(parent->first.get(), base.c_str(),
                             O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (nfd < 0) return utils::last_errno();
    fd = utils::UniqueFd(nfd);
  }
  if (refused) *refused = problem;
  return fd;
}

utils::Result<std::unique_ptr<Bitmap>> open_bitmap_file(const Dir& dir, const std::string& rel,
                                                        const BitmapOpenParams& params,
                                                        std::string* why_untrusted) {
  const std::string path = dir.path() + "/" + rel;
  std::string problem;
  // A refused bitmap is replaced by a new, empty one: Bitmap::open rebuilds it all dirty.
  auto fd = open_sidecar_file(dir, rel, "bitmap", &problem);
  if (!fd) return fd.error();
  std::string why;
  auto bm = Bitmap::open(std::move(*fd), params, &why);
  if (!bm) return bm.error();
  if (!problem.empty()) {
    // A fresh file over an image holding data reads "no bitmap existed": say what happened.
    why = "the bitmap file was refused (" + problem + ")";
  }
  if (why_untrusted) *why_untrusted = why;
  if (auto ec = (*bm)->error()) {
    // Issue 12 §5: say what to free, where.
    std::uint64_t avail = 0;
    struct statvfs vfs {};
    const auto dslash = path.rfind('/');
    const std::string dirpath = path.substr(0, dslash);
    if (::statvfs(dirpath.c_str(), &vfs) == 0) avail = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    spdlog::error("{}: cannot write the bitmap: {}; the file system holding {} needs {} more "
                  "({} available): free space there (or move bitmap_dir). Until then the image "
                  "is served with writes refused (state bitmap-failed); they resume by themselves",
                  path, ec.message(), dirpath, utils::format_size((*bm)->bytes_short()),
                  utils::format_size(avail));
  }
  return bm;
}

}  // namespace fusemirror::core
