// core/legs.hpp — the set's three backing directories, and the one rule for everything
// fusemirror creates on them.
//
// The rule (docs/reliability.md "Hostile users"): a file or directory is created private
// (0600 / 0700, O_EXCL, never through a symlink), then given its source's owner and group,
// and only then its mode; setuid and setgid bits are set only when the owner change
// succeeded, so no copy is ever a setuid file of an owner other than its source's. The
// "source" of a secondary copy is the primary's file or directory; of a file created
// through the mount, the caller.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string_view>
#include <system_error>

#include <memory>
#include <optional>
#include <string>

#include "core/dir.hpp"
#include "core/leg.hpp"
#include "core/nbd_leg.hpp"
#include "utils/fd.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

struct Legs {
  Dir primary;
  Dir secondary;  // replaced (under the namespace's exclusive lock) when a vanished one returns
  Dir bitmaps;
  // A secondary on an NBD server (docs/config.md "secondary"): `secondary` is then not
  // opened (invalid) and each image's copy is the export named after it.
  std::optional<NbdUri> nbd;
  // Config leg_write_piece: the largest pwrite to a file secondary (core/file_leg.hpp).
  std::uint64_t write_piece = 64 << 10;
  bool remote() const { return nbd.has_value(); }
};

// Who a new file or directory belongs to and the mode it gets (uid -1: keep the daemon's).
struct Owner {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  mode_t mode = 0600;
  static Owner of(const struct stat& st) { return {st.st_uid, st.st_gid, st.st_mode & 07777}; }
};

// Who a file or directory made through the mount belongs to, and its mode: the caller's
// uid, gid and `mode` as the kernel passed it (the caller's umask already applied, setuid
// and setgid kept), except in a setgid directory (`parent`): there it takes the
// directory's group, and a new directory keeps the setgid bit — the inheritance a local
// file system gives (which adopt() would otherwise undo on the backing directories).
Owner new_node_owner(const struct stat& parent, uid_t uid, gid_t gid, mode_t mode, bool is_dir);

// Gives the open file or directory `fd` its owner, then its mode (see the rule above).
std::error_code adopt(int fd, const Owner& owner);

// Creates regular file REL beneath `dir` (O_EXCL, 0600) and adopts `owner`; the parent must
// exist. Returns the descriptor opened O_RDWR.
utils::Result<utils::UniqueFd> create_file(const Dir& dir, std::string_view rel, const Owner& owner);
// Creates directory REL beneath `dir` (0700) and adopts `owner`.
std::error_code create_dir(const Dir& dir, std::string_view rel, const Owner& owner);
// mkdir -p of REL_DIR beneath `dst`: each missing directory is made with create_dir(), as
// the same directory of `src` is owned (the secondary's tree follows the primary's).
std::error_code mkdirs_like(const Dir& dst, const Dir& src, std::string_view rel_dir);

// EPERM unless `fd` is a regular file with a single link (a hard link planted in a
// backing directory could redirect writes to a file outside it).
std::error_code check_single_link(int fd);

// Opens the secondary's copy of image REL read-write, making it (empty) when missing:
// parents with mkdirs_like(), the file with create_file() and the primary's owner.
// `*created` tells whether it was made. Refuses a copy that is not a regular file with a
// single link.
utils::Result<utils::UniqueFd> open_secondary_copy(const Legs& legs, std::string_view rel,
                                                   const struct stat& primary_st, bool* created);

// The image's secondary leg: the file (open_secondary_copy; `*created` as there) or, for
// an NBD set, a connection to the export named REL. On failure `*why` says why for the
// status and the log ("export vm.img missing on nbd+unix:///?socket=/s"), and the error
// is the errno (EMFILE and ENFILE only when the daemon is out of descriptors).
utils::Result<std::unique_ptr<Leg>> open_secondary_leg(const Legs& legs, const std::string& rel,
                                                       const struct stat& primary_st, bool* created,
                                                       std::string* why);

}  // namespace fusemirror::core
