#include "utils/meta_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <span>

#include "utils/crc32c.hpp"
#include "utils/error.hpp"
#include "utils/io.hpp"

namespace fusemirror::utils {

namespace {

const char* type_name(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISLNK(m)) return "a symbolic link";
  return "not a regular file";
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::pair<std::string, std::string> split(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

// A refused open with O_NOFOLLOW: ELOOP (or ENOTDIR / EMLINK on some paths) means the last
// component is a symlink; say so rather than "Too many levels of symbolic links".
bool is_symlink_at(int dirfd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

}  // namespace

UniqueFd open_dir_nofollow(const std::string& path, const std::string& what) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd) return fd;
  const int err = errno;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw Error(path + ": the " + what + " is a symbolic link; refusing (it must be a real directory)");
  throw sys_error(path, "cannot open the " + what, err);
}

std::string meta_file_problem(int fd, std::size_t max_size) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::string("cannot stat: ") + std::strerror(errno);
  return stat_problem(st, max_size);
}

std::string stat_problem(const struct stat& st, std::size_t max_size) {
  if (!S_ISREG(st.st_mode)) return std::string("is ") + type_name(st.st_mode) + ", not a regular file";
  if (st.st_nlink != 1)
    return "has " + std::to_string(st.st_nlink) + " hard links (a link could be a file elsewhere)";
  if (static_cast<std::uint64_t>(st.st_size) > max_size)
    return "is " + std::to_string(st.st_size) + " bytes, more than the " + std::to_string(max_size) +
           " a metadata file may have";
  return {};
}

std::string read_meta_file_at(int dirfd, const std::string& name, const std::string& shown,
                              std::size_t max_size) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
  if (!fd) {
    const int err = errno;
    if (is_symlink_at(dirfd, name))
      throw Error(shown + ": is a symbolic link; refusing (a metadata file must be a regular file)");
    throw sys_error(shown, "cannot read", err);
  }
  if (auto why = meta_file_problem(fd.get(), max_size); !why.empty())
    throw Error(shown + ": " + why + "; refusing");
  // Read one byte more than allowed: a file that grew after the fstat is refused too.
  std::string text(max_size + 1, '\0');
  auto n = pread_all(fd.get(), std::as_writable_bytes(std::span(text)), 0);
  if (!n) throw sys_error(shown, "cannot read", n.error().value());
  if (*n > max_size)
    throw Error(shown + ": more than the " + std::to_string(max_size) + " bytes a metadata file may have; refusing");
  text.resize(*n);
  return text;
}

std::string read_meta_file(const std::string& path, std::size_t max_size) {
  const auto [dir, name] = split(path);
  UniqueFd d = open_dir_nofollow(dir, "metadata directory");
  return read_meta_file_at(d.get(), name, path, max_size);
}

void write_file_atomic_at(int dirfd, const std::string& shown, const std::string& name,
                          const std::string& content) {
  // A short temp name of fixed length, so that every NAME that fits NAME_MAX can be
  // written (".NAME.tmp" would not for names of 251-255 bytes), and still one per NAME, so
  // that a temp file a crash left behind is found and removed by the next write. Writers
  // of one directory are serialised by their callers (the namespace lock, or `create`).
  char tmpbuf[32];
  std::snprintf(tmpbuf, sizeof tmpbuf, ".tmp.%08x", crc32c(std::as_bytes(std::span(name.data(), name.size()))));
  const std::string tmp = tmpbuf;
  const std::string tmp_shown = join(shown, tmp), dst_shown = join(shown, name);
  // A temp file left by a crash (or anything planted under its name: unlinkat removes a
  // symlink itself, never its target).
  if (::unlinkat(dirfd, tmp.c_str(), 0) != 0 && errno != ENOENT && errno != EISDIR)
    throw sys_error(tmp_shown, "cannot remove the stale temp file", errno);
  UniqueFd fd(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw sys_error(tmp_shown, "cannot create", errno);
  if (auto ec = pwrite_all(fd.get(), std::as_bytes(std::span(content)), 0)) {
    ::unlinkat(dirfd, tmp.c_str(), 0);
    throw sys_error(tmp_shown, "cannot write", ec.value());
  }
  if (::fsync(fd.get()) != 0) {
    const int err = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    throw sys_error(tmp_shown, "cannot fsync", err);
  }
  fd.reset();
  // rename replaces a symlink or a hard link at NAME itself; it never writes through one.
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
    const int err = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    throw sys_error(dst_shown, "cannot rename into place", err);
  }
  if (::fsync(dirfd) != 0) throw sys_error(shown, "cannot fsync directory", errno);
}

}  // namespace fusemirror::utils
