#include "core/legs.hpp"

#include "core/file_leg.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "core/layout.hpp"

namespace fusemirror::core {

Owner new_node_owner(const struct stat& parent, uid_t uid, gid_t gid, mode_t mode, bool is_dir) {
  Owner o{uid, gid, mode & 07777};
  if (S_ISDIR(parent.st_mode) && (parent.st_mode & S_ISGID)) {
    // uid/gid -1 (an unprivileged daemon) gives nothing away: the backing directory is
    // setgid too, so its file system already gave the new node the directory's group.
    if (gid != static_cast<gid_t>(-1)) o.gid = parent.st_gid;
    if (is_dir) o.mode |= S_ISGID;
  }
  return o;
}

std::error_code adopt(int fd, const Owner& owner) {
  mode_t mode = owner.mode & 07777;
  if (owner.uid != static_cast<uid_t>(-1) || owner.gid != static_cast<gid_t>(-1)) {
    // Not fatal: an unprivileged daemon cannot give files away; the file then stays the
    // daemon's, and setuid/setgid would make it a setuid file of the wrong owner.
    if (::fchown(fd, owner.uid, owner.gid) != 0) mode &= ~static_cast<mode_t>(S_ISUID | S_ISGID);
  }
  if (::fchmod(fd, mode) != 0) return utils::last_errno();
  return {};
}

utils::Result<utils::UniqueFd> create_file(const Dir& dir, std::string_view rel, const Owner& owner) {
  auto fd = dir.open_beneath(rel, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (!fd) return fd.error();
  if (auto ec = adopt(fd->get(), owner)) return ec;
  return std::move(*fd);
}

std::error_code create_dir(const Dir& dir, std::string_view rel, const Owner& owner) {
  auto parent = dir.parent_of(rel);
  if (!parent) return parent.error();
  if (::mkdirat(parent->first.get(), parent->second.c_str(), 0700) != 0) return utils::last_errno();
  auto fd = dir.open_beneath(rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return fd.error();
  return adopt(fd->get(), owner);
}

std::error_code mkdirs_like(const Dir& dst, const Dir& src, std::string_view rel_dir) {
  if (auto ec = check_relative_path(rel_dir)) return ec;
  std::size_t pos = 0;
  while (pos < rel_dir.size()) {
    std::size_t slash = rel_dir.find('/', pos);
    if (slash == std::string_view::npos) slash = rel_dir.size();
    const std::string_view part = rel_dir.substr(0, slash);
    if (!dst.lstat(part)) {
      auto st = src.lstat(part);
      const Owner owner = st && S_ISDIR(st->st_mode) ? Owner::of(*st) : Owner{.mode = 0700};
      if (auto ec = create_dir(dst, part, owner); ec && ec != std::errc::file_exists) return ec;
    }
    pos = slash + 1;
  }
  return {};
}

std::error_code check_single_link(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return utils::last_errno();
  if (!S_ISREG(st.st_mode) || st.st_nlink > 1) return utils::errno_code(EPERM);
  return {};
}

utils::Result<utils::UniqueFd> open_secondary_copy(const Legs& legs, std::string_view rel,
                                                   const struct stat& primary_st, bool* created) {
  *created = false;
  auto fd = legs.secondary.open_beneath(rel, O_RDWR | O_NOFOLLOW);
  if (!fd && fd.error() == std::errc::no_such_file_or_directory) {
    if (auto ec = mkdirs_like(legs.secondary, legs.primary, parent_rel(rel))) return ec;
    fd = create_file(legs.secondary, rel, Owner::of(primary_st));
    *created = fd.ok();
  }
  if (!fd) return fd.error();
  if (auto ec = check_single_link(fd->get())) return ec;
  return fd;
}

utils::Result<std::unique_ptr<Leg>> open_secondary_leg(const Legs& legs, const std::string& rel,
                                                       const struct stat& primary_st, bool* created,
                                                       std::string* why) {
  *created = false;
  if (legs.remote()) {
    auto leg = NbdLeg::connect(*legs.nbd, rel, why);
    if (!leg) return leg.error();
    const auto size = static_cast<std::uint64_t>(primary_st.st_size);
    if ((*leg)->capacity() < size) {
      *why = (*leg)->describe() + " is smaller than the image: " + std::to_string((*leg)->capacity()) +
             " bytes available (its last 4096 are the identity block), the image has " + std::to_string(size);
      return utils::errno_code(EFBIG);
    }
    return std::unique_ptr<Leg>(std::move(*leg));
  }
  auto fd = open_secondary_copy(legs, rel, primary_st, created);
  if (!fd) {
    *why = "secondary unusable: " +
           (fd.error() == std::errc::operation_not_permitted
                ? std::string("not a regular file with a single link (a hard link could redirect writes)")
                : fd.error().message());
    return fd.error();
  }
  return std::unique_ptr<Leg>(std::make_unique<FileLeg>(std::move(*fd), legs.secondary.path() + "/" + rel, legs.write_piece));
}

}  // namespace fusemirror::core
