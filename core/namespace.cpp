#include "core/namespace.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "core/layout.hpp"
#include "utils/proc_fd.hpp"

namespace fusemirror::core {

namespace {

using utils::proc_fd_path;

// Applies `fn(path)` to `rel` in `dir`, through an O_PATH descriptor opened beneath it
// (never following a symlink) and its /proc/self/fd path.
template <typename F>
std::error_code via_path(const Dir& dir, const std::string& rel, F&& fn) {
  auto fd = dir.open_beneath(rel, O_PATH | O_NOFOLLOW);
  if (!fd) return fd.error();
  if (fn(proc_fd_path(fd->get()).c_str()) != 0) return utils::last_errno();
  return {};
}

}  // namespace

Owner Namespace::owner_for_new(const std::string& rel, uid_t uid, gid_t gid, mode_t mode,
                               bool is_dir) const {
  // The primary's directory is the one the caller sees (and the secondary's mirrors it).
  auto parent = legs_.primary.lstat(parent_rel(rel));
  if (!parent) return Owner{uid, gid, mode & 07777};  // the create itself fails and says why
  return new_node_owner(*parent, uid, gid, mode, is_dir);
}

void Namespace::secondary_error(const char* op, const std::string& rel, std::error_code ec) const {
  spdlog::error("{}/{}: secondary {} failed: {}", legs_.secondary.path(), rel, op, ec.message());
}

template <typename F>
std::error_code Namespace::on_both(const char* op, const std::string& rel, F&& fn) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(mu_);
  if (auto ec = via_path(legs_.primary, rel, fn)) return ec;
  if (legs_.remote()) return {};  // an export has no metadata to follow
  if (auto ec = via_path(legs_.secondary, rel, fn)) secondary_error(op, rel, ec);
  return {};
}

utils::Result<struct stat> Namespace::getattr(const std::string& rel) const {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto st = legs_.primary.lstat(rel);
  if (!st) return st;
  if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode)) return utils::errno_code(ENOENT);
  return st;
}

utils::Result<std::vector<DirEntry>> Namespace::readdir(const std::string& rel) const {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto dfd = legs_.primary.open_beneath(rel, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.error();
  DIR* d = ::fdopendir(dfd->release());
  if (!d) return utils::last_errno();
  std::vector<DirEntry> out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (rel.empty() && name == kMetaDirName) continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
    }
    if (type == DT_DIR || type == DT_REG) out.push_back({name, type == DT_DIR});
  }
  ::closedir(d);
  return out;
}

std::error_code Namespace::mkdir(const std::string& rel, mode_t mode, uid_t uid, gid_t gid) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(mu_);
  const Owner owner = owner_for_new(rel, uid, gid, mode, true);
  if (auto ec = create_dir(legs_.primary, rel, owner)) return ec;
  if (legs_.remote()) return {};  // an NBD server's exports have no directories
  if (auto ec = create_dir(legs_.secondary, rel, owner); ec && ec != std::errc::file_exists)
    secondary_error("mkdir", rel, ec);
  return {};
}

std::error_code Namespace::rmdir(const std::string& rel) {
  if (reserved_name(rel) || rel.empty()) return utils::errno_code(EPERM);
  std::unique_lock ns(mu_);
  if (auto ec = legs_.primary.unlink(rel, AT_REMOVEDIR)) return ec;
  if (legs_.remote()) {
  } else if (auto ec = legs_.secondary.unlink(rel, AT_REMOVEDIR); ec && ec != std::errc::no_such_file_or_directory)
    secondary_error("rmdir", rel, ec);
  (void)legs_.bitmaps.unlink(rel, AT_REMOVEDIR);  // may not exist
  return {};
}

std::error_code Namespace::unlink(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::unique_lock ns(mu_);
  auto st = legs_.primary.lstat(rel);
  if (!st) return st.error();
  // The record first, durably: once it is gone, no power cut can bring back a record that
  // vouches for this name while a later image takes it (docs/write-path.md §2b); the copy
  // and the bitmap that a power cut may bring back are then only worth a full resync.
  if (S_ISREG(st->st_mode))
    if (auto ec = records_.remove(rel)) secondary_error("record removal", rel, ec);
  // Primary next: once it is gone the image is gone for the user; a crash before the
  // secondary's unlink leaves an orphan copy there, which is harmless and logged at mount.
  if (auto ec = legs_.primary.unlink(rel)) return ec;
  table_.erase(rel);
  (void)legs_.bitmaps.unlink(bitmap_rel(rel));
  (void)legs_.bitmaps.unlink(checksum_rel(rel));  // follows the bitmap (may not exist)
  (void)legs_.bitmaps.unlink(al_record_rel(rel));
  // An export is the server's: it stays (its identity record names the image it held).
  if (legs_.remote()) return {};
  if (auto ec = legs_.secondary.unlink(rel); ec && ec != std::errc::no_such_file_or_directory)
    secondary_error("unlink", rel, ec);
  return {};
}

std::error_code Namespace::rename(const std::string& from, const std::string& to, unsigned flags) {
  if (reserved_name(from) || reserved_name(to)) return utils::errno_code(EPERM);
  if (flags & RENAME_EXCHANGE) return utils::errno_code(EINVAL);
  std::unique_lock ns(mu_);
  auto pf = legs_.primary.parent_of(from);
  auto pt = legs_.primary.parent_of(to);
  if (!pf) return pf.error();
  if (!pt) return pt.error();
  struct stat st {};
  if (::fstatat(pf->first.get(), pf->second.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return utils::last_errno();
  const bool is_dir = S_ISDIR(st.st_mode);
  if (!is_dir)
    if (auto ec = check_image_name(to)) return ec;  // its bitmap and record could not follow
  // Power-cut order (docs/write-path.md §2b). The primary, the bitmap, the secondary copy and
  // the record each move with their own rename, and a power cut may keep any of them. A
  // record vouches for the other three under its name, so: the record of an image this
  // rename replaces goes first, durably; then primary, bitmap and copy move, each made
  // durable; the record moves last. Until it has, `to` has no record (a full resync if the
  // power fails); `from` keeps a record only while its primary is still there.
  // (Two names of one file: rename(2) does nothing, and neither does this.)
  if (struct stat tst {}; !is_dir && !(flags & RENAME_NOREPLACE) &&
                          ::fstatat(pt->first.get(), pt->second.c_str(), &tst, AT_SYMLINK_NOFOLLOW) == 0 &&
                          S_ISREG(tst.st_mode) && (tst.st_ino != st.st_ino || tst.st_dev != st.st_dev))
    if (auto ec = records_.remove(to)) secondary_error("record removal", to, ec);
  if (::renameat2(pf->first.get(), pf->second.c_str(), pt->first.get(), pt->second.c_str(), flags) != 0)
    return utils::last_errno();
  // Each leg's directories (or its parent directories) made durable; a failure leaves the
  // record where it is, so that `to` is resynced in full after a power cut.
  bool durable = true;
  auto sync_both = [&](const Dir& d, const std::string& a, const std::string& b) {
    std::error_code ec = d.sync_parent(a);
    if (!ec && parent_rel(a) != parent_rel(b)) ec = d.sync_parent(b);
    if (ec) {
      durable = false;
      spdlog::error("{}: cannot make the rename of {} to {} durable: {}", d.path(), a, b, ec.message());
    }
  };
  sync_both(legs_.primary, from, to);
  // The bitmap follows the primary: a crash between the two leaves an image without its
  // bitmap, which the next mount treats as all dirty (full resync), never as clean.
  const std::string bfrom = is_dir ? from : bitmap_rel(from);
  const std::string bto = is_dir ? to : bitmap_rel(to);
  if (auto ec = legs_.bitmaps.mkdirs(parent_rel(bto), 0700); !ec) {
    auto bf = legs_.bitmaps.parent_of(bfrom), bt = legs_.bitmaps.parent_of(bto);
    if (bf && bt && ::renameat(bf->first.get(), bf->second.c_str(), bt->first.get(), bt->second.c_str()) == 0) {
      // The checksums follow the bitmap (a directory's move took them already), in the same
      // two directories, so one sync of both covers both names. A crash between the two
      // leaves a checksum file naming another image uuid: reset at load.
      // The activity log's record follows too (a stale one at TO names another image uuid
      // and is never believed; it is removed all the same).
      if (!is_dir)
        for (const auto& side : {checksum_rel, al_record_rel}) {
          auto cf = legs_.bitmaps.parent_of(side(from)), ct = legs_.bitmaps.parent_of(side(to));
          if (cf && ct && ::renameat(cf->first.get(), cf->second.c_str(), ct->first.get(), ct->second.c_str()) != 0 &&
              errno == ENOENT)
            (void)legs_.bitmaps.unlink(side(to));  // none to move: none may stay at TO either
        }
      sync_both(legs_.bitmaps, bfrom, bto);
    }
  }
  table_.rename(from, to, is_dir);
  // An NBD set: the image now mirrors to the export named TO, which the server must serve;
  // its identity record (written for another name, or none) makes the next load copy it
  // in full (docs/operations.md "replicating to another host").
  if (legs_.remote()) {
    // A loaded image is still connected to the export FROM: it leaves service now, and
    // `fusemirror re-add TO` connects it to its new export.
    for (auto& img : table_.snapshot()) {
      const std::string n = img->name();
      if (n == to || (is_dir && n.starts_with(to + "/")))
        img->fail_secondary("rename", utils::errno_code(ENOENT));
    }
    return {};
  }
  auto sf = legs_.secondary.parent_of(from);
  auto stt = legs_.secondary.parent_of(to);
  if (!stt) {
    (void)mkdirs_like(legs_.secondary, legs_.primary, parent_rel(to));
    stt = legs_.secondary.parent_of(to);
  }
  if (sf && stt) {
    if (::renameat2(sf->first.get(), sf->second.c_str(), stt->first.get(), stt->second.c_str(),
                    flags & ~RENAME_NOREPLACE) != 0)
      secondary_error("rename", from, utils::last_errno());
    else
      sync_both(legs_.secondary, from, to);
  }
  if (durable)
    if (auto ec = records_.rename(from, to, is_dir)) secondary_error("record rename", from, ec);
  return {};
}

std::error_code Namespace::fsyncdir(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(mu_);
  // The primary's is the user's: its error is the answer. The others only spare a resync
  // (a name missing there after a power cut costs a full copy, never data).
  if (auto ec = legs_.primary.sync(rel)) return ec;
  if (legs_.remote()) return {};
  if (auto ec = legs_.secondary.sync(rel); ec && ec != std::errc::no_such_file_or_directory)
    secondary_error("directory fsync", rel, ec);
  (void)legs_.bitmaps.sync(rel);  // may not exist
  (void)legs_.secondary.sync(rel.empty() ? std::string(kMetaDirName) + "/" + kRecordsDirName
                                         : record_rel(rel, /*dir=*/true));  // may not exist
  return {};
}

std::error_code Namespace::chmod(const std::string& rel, mode_t mode) {
  return on_both("chmod", rel, [mode](const char* p) { return ::chmod(p, mode); });
}

std::error_code Namespace::chown(const std::string& rel, uid_t uid, gid_t gid) {
  return on_both("chown", rel, [uid, gid](const char* p) { return ::chown(p, uid, gid); });
}

std::error_code Namespace::utimens(const std::string& rel, const struct timespec ts[2]) {
  return on_both("utimens", rel, [ts](const char* p) { return ::utimensat(AT_FDCWD, p, ts, 0); });
}

std::error_code Namespace::setxattr(const std::string& rel, const std::string& name, const char* value,
                                    std::size_t size, int flags) {
  return on_both("setxattr", rel,
                 [&](const char* p) { return ::setxattr(p, name.c_str(), value, size, flags); });
}

std::error_code Namespace::removexattr(const std::string& rel, const std::string& name) {
  return on_both("removexattr", rel, [&](const char* p) { return ::removexattr(p, name.c_str()); });
}

std::error_code Namespace::truncate(const std::string& rel, std::uint64_t size) {
  auto img = open_image(rel);
  if (!img) return img.error();
  return (*img)->truncate(size);
}

utils::Result<struct statvfs> Namespace::statfs() const {
  struct statvfs sv {};
  if (::fstatvfs(legs_.primary.fd(), &sv) != 0) return utils::last_errno();
  return sv;
}

utils::Result<std::size_t> Namespace::getxattr(const std::string& rel, const std::string& name, char* value,
                                               std::size_t size) const {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto fd = legs_.primary.open_beneath(rel, O_PATH | O_NOFOLLOW);
  if (!fd) return fd.error();
  ssize_t n = ::getxattr(proc_fd_path(fd->get()).c_str(), name.c_str(), value, size);
  if (n < 0) return utils::last_errno();
  return static_cast<std::size_t>(n);
}

utils::Result<std::size_t> Namespace::listxattr(const std::string& rel, char* list, std::size_t size) const {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto fd = legs_.primary.open_beneath(rel, O_PATH | O_NOFOLLOW);
  if (!fd) return fd.error();
  ssize_t n = ::listxattr(proc_fd_path(fd->get()).c_str(), list, size);
  if (n < 0) return utils::last_errno();
  return static_cast<std::size_t>(n);
}

bool Namespace::reachable_by(const std::string& rel, const utils::Credentials& who) const {
  if (who.uid == 0) return true;
  std::string dir;  // "" (the root), then each ancestor of REL
  for (std::size_t pos = 0;;) {
    auto st = legs_.primary.lstat(dir);
    // A missing component or one that is not a directory ends the walk: the caller learns
    // nothing past it that the mount would not tell.
    if (!st || !S_ISDIR(st->st_mode)) return true;
    if (!utils::permits(*st, who, X_OK)) return false;
    const std::size_t slash = rel.find('/', pos);
    if (slash == std::string::npos) return true;
    dir = rel.substr(0, slash);
    pos = slash + 1;
  }
}

utils::Result<std::shared_ptr<Image>> Namespace::open_image(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  if (auto img = table_.find(rel)) return img;
  // Not loaded: a file that appeared in the primary behind our back, or a retry.
  std::unique_lock ns(mu_);
  return loader_.load_within_budget(rel);
}

utils::Result<std::shared_ptr<Image>> Namespace::create_image(const std::string& rel, mode_t mode, uid_t uid,
                                                              gid_t gid) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  if (auto ec = check_image_name(rel)) return ec;  // before anything is made
  std::unique_lock ns(mu_);
  const Owner owner = owner_for_new(rel, uid, gid, mode, false);
  auto fd = create_file(legs_.primary, rel, owner);
  if (!fd && fd.error() != std::errc::file_exists) return fd.error();
  if (fd) {
    fd->reset();
    // A new image: the secondary copy is (re)made empty and the bitmap starts clean. (An
    // export is the server's: the new bitmap's image uuid is in no record there, so the
    // load copies it in full — its size is zero.)
    if (!legs_.remote()) {
      if (auto ec = mkdirs_like(legs_.secondary, legs_.primary, parent_rel(rel))) secondary_error("mkdir", rel, ec);
      // Remove whatever the secondary has there (never truncate through it: it could be a
      // hard link to a file outside the secondary), then make a new empty copy.
      (void)legs_.secondary.unlink(rel);
      if (auto s = create_file(legs_.secondary, rel, owner); !s) secondary_error("create", rel, s.error());
    }
    // The old bitmap is unlinked, never truncated through (it could be a hard link).
    (void)legs_.bitmaps.unlink(bitmap_rel(rel));
    (void)legs_.bitmaps.unlink(checksum_rel(rel));
    (void)legs_.bitmaps.unlink(al_record_rel(rel));
    table_.erase(rel);
  }
  auto img = loader_.load_within_budget(rel);
  if (!img && fd) discard_new_image(rel);  // a failed create leaves nothing behind
  if (img && fd && loader_.events()) loader_.events()->post(Event::new_image, rel);
  return img;
}

void Namespace::discard_new_image(const std::string& rel) {
  // The primary first: once it is gone the create never happened for the user (the load
  // already removed the copy and bitmap it made; these are the ones create_image made).
  const std::pair<const Dir*, std::string> made[] = {{&legs_.primary, rel},
                                                     {&legs_.secondary, rel},
                                                     {&legs_.bitmaps, bitmap_rel(rel)},
                                                     {&legs_.bitmaps, checksum_rel(rel)},
                                                     {&legs_.bitmaps, al_record_rel(rel)}};
  for (const auto& [d, r] : made) {
    if (!d->valid()) continue;  // an NBD set has no secondary directory
    if (auto ec = d->unlink(r); ec && ec != std::errc::no_such_file_or_directory)
      spdlog::error("{}/{}: could not remove it after a failed create: {}", d->path(), r, ec.message());
  }
  (void)records_.remove(rel);
}

}  // namespace fusemirror::core
