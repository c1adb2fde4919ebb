#include "core/create.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/filesystem.hpp>
#include <cstring>
#include <vector>
#include <fstream>
#include <map>
#include <sstream>

#include "core/bitmap.hpp"
#include "core/nbd_leg.hpp"
#include "core/dir.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"

namespace fusemirror::core {

namespace fs = boost::filesystem;
using utils::Error;

namespace {

void sync_dir(const std::string& path) {
  utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) throw utils::sys_error(path, "cannot fsync the directory", errno);
}

std::string canonical(const std::string& path) {
  boost::system::error_code ec;
  auto c = fs::canonical(path, ec);
  if (ec) throw Error(path + ": cannot resolve the directory: " + ec.message());
  return c.string();
}

// Regular files under `root` (relative path -> size), skipping the metadata directory.
std::map<std::string, std::uint64_t> list_images(const std::string& root) {
  std::map<std::string, std::uint64_t> out;
  boost::system::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; it != end; it.increment(ec)) {
    if (ec) throw Error(root + ": cannot list: " + ec.message());
    const std::string rel = fs::relative(it->path(), root).string();
    if (rel == kMetaDirName) {
      it.disable_recursion_pending();
      continue;
    }
    if (fs::is_symlink(it->symlink_status())) continue;
    if (fs::is_regular_file(it->symlink_status())) out[rel] = fs::file_size(it->path());
  }
  return out;
}

// Byte-compares two files (sizes already equal).
bool same_contents(const std::string& a, const std::string& b) {
  utils::UniqueFd fa(::open(a.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  utils::UniqueFd fb(::open(b.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fa || !fb) return false;
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (;;) {
    ssize_t na = ::read(fa.get(), ba.data(), ba.size());
    ssize_t nb = ::read(fb.get(), bb.data(), bb.size());
    if (na < 0 || nb < 0 || na != nb) return false;
    if (na == 0) return true;
    if (std::memcmp(ba.data(), bb.data(), static_cast<std::size_t>(na)) != 0) return false;
  }
}

}  // namespace

Config create_set(const CreateOptions& o) {
  if (auto why = check_chunk_size(o.chunk_size); !why.empty()) throw Error("--chunk-size: " + why);
  if (auto why = check_daemon_sleep(o.daemon_sleep); !why.empty()) throw Error("--daemon-sleep: " + why);
  {
    // The same rules every mount checks (a hand-edited config cannot get past them).
    Config wanted;
    wanted.primary = o.primary;
    wanted.secondary = o.secondary;
    wanted.bitmap_dir = o.bitmap_dir;
    check_set_directories(wanted);
  }
  const std::string primary = canonical(o.primary);
  // An NBD secondary (docs/config.md "secondary"): no directory, no membership file — each
  // export carries its identity record (docs/on-disk-format.md "NBD identity record").
  const bool nbd = is_nbd_uri(o.secondary);
  const std::string secondary = nbd ? o.secondary : canonical(o.secondary);
  std::optional<std::string> bitmap_dir;
  if (o.bitmap_dir) {
    struct stat st {};
    if (::stat(o.bitmap_dir->c_str(), &st) != 0) throw utils::sys_error(*o.bitmap_dir, "bitmap directory", errno);
    if (!S_ISDIR(st.st_mode)) throw Error(*o.bitmap_dir + ": bitmap is not a directory");
    bitmap_dir = canonical(*o.bitmap_dir);
  }

  const std::string pmeta = primary + "/" + kMetaDirName;
  const std::string smeta = secondary + "/" + kMetaDirName;
  const std::string pconf = pmeta + "/" + kConfigName;
  const std::string smember = smeta + "/" + kMemberName;
  if (::access(pconf.c_str(), F_OK) == 0 && !o.force)
    throw Error(primary + ": already a fusemirror primary (" + pconf +
                " exists); use --force to re-create the set");
  if (!nbd && ::access(smember.c_str(), F_OK) == 0) {
    Member m = load_member(smember);
    bool ours = false;
    if (::access(pconf.c_str(), F_OK) == 0) {
      try {
        ours = load_config(pconf).uuid == m.set_uuid;
      } catch (const Error&) {
      }
    }
    if (!ours && !o.force)
      throw Error(secondary + ": belongs to another mirror set (" + utils::to_string(m.set_uuid) +
                  "); use --force to take it over");
  }
  const auto pimgs = list_images(primary);
  const auto simgs = nbd ? decltype(pimgs){} : list_images(secondary);
  if (!simgs.empty() && !o.force) {
    std::string differs;
    if (simgs != pimgs) {
      differs = "its files are not the primary's";
    } else {
      for (const auto& [rel, size] : simgs)
        if (!same_contents(primary + "/" + rel, secondary + "/" + rel)) {
          differs = rel + " differs from the primary's";
          break;
        }
    }
    if (!differs.empty())
      throw Error(secondary + ": is not empty and " + differs +
                  "; use --force to overwrite the secondary from the primary");
  }

  Config c;
  c.uuid = utils::random_uuid();
  c.primary = primary;
  c.secondary = secondary;
  c.chunk_size = o.chunk_size;
  c.daemon_sleep = o.daemon_sleep;
  c.bitmap_dir = bitmap_dir;
  c.bitmap = o.bitmap;
  if (o.write_behind > 16383) throw Error("--write-behind: must be between 0 and 16383 (md's limit)");
  c.write_behind = o.write_behind;
  c.role = o.role;

  // Order: bitmaps first (all dirty), then the secondary's membership, then the config
  // last. A crash before the config leaves no set (create can simply be run again); the
  // config is the commit point, and by then every adopted image has its dirty bitmap.
  // Every directory made here is durable (its parent fsync'ed) before the config commits the
  // set: a power cut after `create` returned cannot take the metadata directory and the
  // config with it (docs/write-path.md §2b).
  for (const auto& dir : {pmeta, smeta}) {
    if (nbd && dir == smeta) continue;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      throw utils::sys_error(dir, "cannot create the metadata directory", errno);
    sync_dir(dir + "/..");
  }
  const std::string broot = c.bitmap_root();
  if (::mkdir(broot.c_str(), 0700) != 0 && errno != EEXIST)
    throw utils::sys_error(broot, "cannot create the bitmap directory", errno);
  sync_dir(broot + "/..");
  // Beneath a descriptor of the bitmap directory (never a symlink: check_set_directories),
  // without following any symlink (openat2 RESOLVE_NO_SYMLINKS): a link planted in a
  // subdirectory cannot send a bitmap elsewhere.
  auto broot_dir = Dir::open(broot, /*follow_last=*/false);
  if (!broot_dir) throw utils::sys_error(broot, "cannot open the bitmap directory", broot_dir.error().value());
  for (const auto& [rel, size] : pimgs) {
    const std::string brel = rel + kBitmapSuffix;
    const std::string bpath = broot + "/" + brel;
    // Metadata directories are 0700, each component (create_directories uses 0777 & umask).
    const auto slash = rel.rfind('/');
    if (slash != std::string::npos)
      if (auto ec = broot_dir->mkdirs(rel.substr(0, slash), 0700))
        throw utils::sys_error(bpath, "cannot create the bitmap directory", ec.value());
    // Whatever is at the bitmap's name (an old bitmap, or a hard link, FIFO or symlink planted
    // there) is replaced, never written through: unlink, then create exclusively.
    if (auto ec = broot_dir->unlink(brel); ec && ec != std::errc::no_such_file_or_directory)
      throw utils::sys_error(bpath, "cannot replace the bitmap", ec.value());
    auto bfd = broot_dir->open_beneath(brel, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (!bfd) throw utils::sys_error(bpath, "cannot create the bitmap", bfd.error().value());
    utils::UniqueFd fd = std::move(*bfd);
    BitmapOpenParams bp;
    bp.set_uuid = c.uuid;
    bp.chunk_size = c.chunk_size;
    bp.daemon_sleep_ms = static_cast<std::uint32_t>(c.daemon_sleep * 1000);
    bp.image_size = size;
    bp.write_behind = c.write_behind;
    if (auto ec = Bitmap::write_all_dirty(fd.get(), bp))
      throw utils::sys_error(bpath, "cannot write the bitmap", ec.value());
  }
  // The adopted images' bitmaps (all dirty) are in place before the config commits.
  if (!pimgs.empty())
    if (auto ec = broot_dir->sync()) throw utils::sys_error(broot, "cannot fsync the bitmap directory", ec.value());
  if (!nbd) write_file_atomic(smeta, kMemberName, dump_member(Member{c.uuid}));
  write_file_atomic(pmeta, kConfigName, dump_config(c));
  return c;
}

}  // namespace fusemirror::core
