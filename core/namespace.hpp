// core/namespace.hpp — the mirrored namespace: every operation on names, directories and
// attributes, applied to the primary and then to the secondary (whose failure is logged,
// never returned: the primary is the truth the user sees), plus opening and creating
// images. Paths are relative to the set's root ("" is the root), already stripped of FUSE's
// leading slash; the metadata directory is never reachable through them.
//
// Owns the namespace lock. Lock order: mu_ (shared for operations that change no name,
// exclusive for create/unlink/rename/rmdir/load) -> ImageTable -> Image internals.
//
// Errors: std::error_code / utils::Result (errno values), as everywhere on core's runtime
// paths (docs/design.md "Errors").
#pragma once

#include <sys/statvfs.h>

#include <memory>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <vector>

#include "core/image_loader.hpp"
#include "core/image_table.hpp"
#include "core/legs.hpp"
#include "core/records.hpp"
#include "utils/perm.hpp"

namespace fusemirror::core {

struct DirEntry {
  std::string name;
  bool is_dir = false;
};

class Namespace {
 public:
  Namespace(const Legs& legs, ImageTable& table, SecondaryRecords& records, ImageLoader& loader)
      : legs_(legs), table_(table), records_(records), loader_(loader) {}

  utils::Result<struct stat> getattr(const std::string& rel) const;
  utils::Result<std::vector<DirEntry>> readdir(const std::string& rel) const;
  // uid/gid -1: the daemon's (an unprivileged daemon cannot give files away).
  std::error_code mkdir(const std::string& rel, mode_t mode, uid_t uid, gid_t gid);
  std::error_code rmdir(const std::string& rel);
  std::error_code unlink(const std::string& rel);
  std::error_code rename(const std::string& from, const std::string& to, unsigned flags);
  // fsync of the directory REL through the mount: the names in it are durable on the
  // primary, on the secondary and in the bitmap and record directories that follow it.
  std::error_code fsyncdir(const std::string& rel);
  std::error_code chmod(const std::string& rel, mode_t mode);
  std::error_code chown(const std::string& rel, uid_t uid, gid_t gid);
  std::error_code utimens(const std::string& rel, const struct timespec ts[2]);
  std::error_code truncate(const std::string& rel, std::uint64_t size);
  utils::Result<struct statvfs> statfs() const;
  std::error_code setxattr(const std::string& rel, const std::string& name, const char* value,
                           std::size_t size, int flags);
  utils::Result<std::size_t> getxattr(const std::string& rel, const std::string& name, char* value,
                                      std::size_t size) const;
  utils::Result<std::size_t> listxattr(const std::string& rel, char* list, std::size_t size) const;
  std::error_code removexattr(const std::string& rel, const std::string& name);

  // Whether `who` could reach REL through the mount: search permission on the root and on
  // every existing directory above REL (what the kernel checks with default_permissions);
  // the walk ends at a component that is missing or not a directory. The control tree and
  // the status show a caller only what this allows.
  bool reachable_by(const std::string& rel, const utils::Credentials& who) const;

  utils::Result<std::shared_ptr<Image>> open_image(const std::string& rel);
  utils::Result<std::shared_ptr<Image>> create_image(const std::string& rel, mode_t mode, uid_t uid, gid_t gid);

  // For the set's assembly, shutdown and re-add: no namespace change runs while it is held.
  std::unique_lock<std::shared_mutex> lock_exclusive() { return std::unique_lock(mu_); }

 private:
  void secondary_error(const char* op, const std::string& rel, std::error_code ec) const;
  // The owner and mode of REL, about to be made through the mount (new_node_owner()).
  Owner owner_for_new(const std::string& rel, uid_t uid, gid_t gid, mode_t mode, bool is_dir) const;
  // Removes what create_image made for REL when its load failed (docs/reliability.md §8).
  void discard_new_image(const std::string& rel);
  // Applies `fn` to REL on the primary (its error is returned), then on the secondary.
  template <typename F>
  std::error_code on_both(const char* op, const std::string& rel, F&& fn);

  const Legs& legs_;
  ImageTable& table_;
  SecondaryRecords& records_;
  ImageLoader& loader_;
  mutable std::shared_mutex mu_;
};

}  // namespace fusemirror::core
