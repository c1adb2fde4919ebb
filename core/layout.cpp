#include "core/layout.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "utils/error.hpp"

namespace fusemirror::core {

std::error_code check_image_name(std::string_view rel) {
  const auto slash = rel.rfind('/');
  const std::size_t len = slash == std::string_view::npos ? rel.size() : rel.size() - slash - 1;
  if (len > kMaxImageNameBytes) return {ENAMETOOLONG, std::generic_category()};
  return {};
}

bool reserved_name(std::string_view rel) {
  const std::string_view meta = kMetaDirName;
  return rel == meta || (rel.size() > meta.size() && rel.substr(0, meta.size()) == meta &&
                         rel[meta.size()] == '/');
}

std::string parent_rel(std::string_view rel) {
  const auto slash = rel.rfind('/');
  return slash == std::string_view::npos ? std::string{} : std::string(rel.substr(0, slash));
}

std::string bitmap_rel(std::string_view image_rel) { return std::string(image_rel) + kBitmapSuffix; }

std::string checksum_rel(std::string_view image_rel) { return std::string(image_rel) + kChecksumSuffix; }

std::string al_record_rel(std::string_view image_rel) { return std::string(image_rel) + kAlRecordSuffix; }

std::string record_rel(std::string_view rel, bool dir) {
  return std::string(kMetaDirName) + "/" + kRecordsDirName + "/" + std::string(rel) +
         (dir ? "" : kRecordSuffix);
}

std::string meta_dir(const std::string& dir) { return dir + "/" + kMetaDirName; }

utils::UniqueFd lock_set_dir(const std::string& dir, const std::string& what) {
  const std::string path = meta_dir(dir) + "/" + kLockName;
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw utils::sys_error(path, "cannot open the " + what + " lock", errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw utils::Error(dir + ": the " + what + " is in use by another running fusemirror (lock " +
                         path + " held)");
    throw utils::sys_error(path, "cannot lock", errno);
  }
  return fd;
}

SetLock probe_set_lock(const std::string& dir) {
  const std::string path = meta_dir(dir) + "/" + kLockName;
  utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return SetLock::kGone;
    throw utils::sys_error(path, "cannot open the set lock", errno);
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return SetLock::kFree;  // released on close
  if (errno == EWOULDBLOCK) return SetLock::kHeld;
  throw utils::sys_error(path, "cannot lock", errno);
}

}  // namespace fusemirror::core
