#include "core/dir.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace fusemirror::core {

std::error_code check_relative_path(std::string_view rel) {
  if (rel.empty()) return {};
  if (rel.front() == '/' || rel.find('\0') != std::string_view::npos)
    return utils::errno_code(EINVAL);
  std::size_t start = 0;
  while (start <= rel.size()) {
    std::size_t slash = rel.find('/', start);
    if (slash == std::string_view::npos) slash = rel.size();
    std::string_view comp = rel.substr(start, slash - start);
    if (comp.empty() || comp == "." || comp == "..") return utils::errno_code(EINVAL);
    start = slash + 1;
  }
  return {};
}

namespace {
int openat2_beneath(int dirfd, const char* path, int flags, mode_t mode) {
  struct open_how how {};
  how.flags = static_cast<std::uint64_t>(flags) | O_CLOEXEC;
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long r = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (r >= 0 || errno != EAGAIN) return static_cast<int>(r);
  }
}
}  // namespace

utils::Result<Dir> Dir::open(const std::string& path, bool follow_last) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow_last ? 0 : O_NOFOLLOW));
  if (fd < 0) return utils::last_errno();
  Dir d;
  d.fd_.reset(fd);
  d.path_ = path;
  return d;
}

utils::Result<utils::UniqueFd> Dir::open_beneath(std::string_view rel, int flags,
                                                 mode_t mode) const {
  if (auto ec = check_relative_path(rel)) return ec;
  std::string p = rel.empty() ? std::string(".") : std::string(rel);
  int fd = openat2_beneath(fd_.get(), p.c_str(), flags, mode);
  if (fd < 0) return utils::last_errno();
  return utils::UniqueFd(fd);
}

utils::Result<std::pair<utils::UniqueFd, std::string>> Dir::parent_of(std::string_view rel) const {
  if (auto ec = check_relative_path(rel)) return ec;
  if (rel.empty()) return utils::errno_code(EINVAL);
  const auto slash = rel.rfind('/');
  std::string_view parent = slash == std::string_view::npos ? std::string_view{} : rel.substr(0, slash);
  std::string name(slash == std::string_view::npos ? rel : rel.substr(slash + 1));
  auto fd = open_beneath(parent, O_PATH | O_DIRECTORY);
  if (!fd) return fd.error();
  return std::pair<utils::UniqueFd, std::string>(std::move(*fd), std::move(name));
}

std::error_code Dir::unlink(std::string_view rel, int flags) const {
  auto parent = parent_of(rel);
  if (!parent) return parent.error();
  if (::unlinkat(parent->first.get(), parent->second.c_str(), flags) != 0) return utils::last_errno();
  return {};
}

std::error_code Dir::mkdirs(std::string_view rel, mode_t mode) const {
  if (auto ec = check_relative_path(rel)) return ec;
  std::size_t pos = 0;
  while (pos < rel.size()) {
    std::size_t slash = rel.find('/', pos);
    if (slash == std::string_view::npos) slash = rel.size();
    auto parent = parent_of(rel.substr(0, slash));
    if (!parent) return parent.error();
    if (::mkdirat(parent->first.get(), parent->second.c_str(), mode) == 0) {
      if (auto ec = sync_parent(rel.substr(0, slash))) return ec;
    } else if (errno != EEXIST) {
      return utils::last_errno();
    }
    pos = slash + 1;
  }
  return {};
}

std::error_code Dir::sync(std::string_view rel_dir) const {
  auto fd = open_beneath(rel_dir, O_RDONLY | O_DIRECTORY);
  if (!fd) return fd.error();
  if (::fsync(fd->get()) != 0) return utils::last_errno();
  return {};
}

std::error_code Dir::sync_parent(std::string_view rel) const {
  const auto slash = rel.rfind('/');
  return sync(slash == std::string_view::npos ? std::string_view{} : rel.substr(0, slash));
}

utils::Result<struct stat> Dir::lstat(std::string_view rel) const {
  struct stat st {};
  if (rel.empty()) {
    if (::fstat(fd_.get(), &st) != 0) return utils::last_errno();
    return st;
  }
  auto parent = parent_of(rel);
  if (!parent) return parent.error();
  if (::fstatat(parent->first.get(), parent->second.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return utils::last_errno();
  return st;
}

}  // namespace fusemirror::core
