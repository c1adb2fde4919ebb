// fusemirror/fuse_ops.cpp — each FUSE operation unpacks its arguments, calls core, and
// turns the result into a negative errno. No exception ever reaches libfuse: every
// operation runs inside guarded() (bad_alloc -> ENOMEM, anything else -> EIO, logged).
#include "fusemirror/fuse_ops.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>
#include <string>

#include "fusemirror/progress.hpp"
#include "utils/size.hpp"

namespace fusemirror::fuse {
namespace {

bool g_page_cache = false;  // set once before the session starts

struct Handle {
  std::shared_ptr<core::Image> image;  // null for a control file
  std::string content;                 // a control file's snapshot
  bool control = false;                // the write-only control file
  std::string attr_image{};            // a per-image attribute file: its image ...
  const struct AttrDef* attr = nullptr;  // ... and which attribute
};

// The md-sysfs-style files of MOUNT/.fusemirror/images/<image>/ (docs/quickstart.md).
struct AttrDef {
  const char* name;
  bool writable;
};
constexpr AttrDef kAttrs[] = {
    {"sync_action", true},     // idle | resync | check | repair (md's sync_action)
    {"sync_completed", false}, // "DONE / TOTAL" bytes, or "none"
    {"sync_speed", false},     // bytes/s of the running pass (0 when idle)
    {"sync_speed_min", true},  // bytes/s; set-wide (md's is per array too)
    {"sync_speed_max", true},  // bytes/s, 0 = unlimited; set-wide
    {"mismatch_cnt", false},   // chunks found different by the last check/repair
    {"state", false},          // clean | active | resyncing | checking | degraded ...
    {"degraded", false},       // 1 when the secondary is out of service
    {"secondary", true},       // in_sync | recovering | faulty; write fail | re-add
    {"dirty_chunks", false},   // set bits of the bitmap
};

// SECURITY: controls are the mount owner's (and root's) only.
bool caller_owns_mount() {
  const uid_t uid = fuse_get_context()->uid;
  return uid == 0 || uid == ::getuid();
}

core::MirrorSet& set() {
  return *static_cast<core::MirrorSet*>(fuse_get_context()->private_data);
}

// "/a/b" -> "a/b"; "/" -> "".
std::string rel(const char* path) {
  if (!path) return {};
  while (*path == '/') ++path;
  return path;
}

int neg(std::error_code ec) {
  if (!ec) return 0;
  if (ec.category() == std::generic_category() || ec.category() == std::system_category())
    return -ec.value();
  return -EIO;
}

Handle* handle(fuse_file_info* fi) { return fi ? reinterpret_cast<Handle*>(fi->fh) : nullptr; }

template <typename F>
int guarded(const char* op, const char* path, F&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    spdlog::error("{} {}: out of memory", op, path ? path : "(unlinked)");
    return -ENOMEM;
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", op, path ? path : "(unlinked)", e.what());
    return -EIO;
  } catch (...) {
    spdlog::error("{} {}: unknown exception", op, path ? path : "(unlinked)");
    return -EIO;
  }
}

bool is_control_dir(const char* p) { return p && std::strcmp(p, kControlDir) == 0; }
bool is_control(const char* p) {
  return p && std::strncmp(p, kControlDir, std::strlen(kControlDir)) == 0 &&
         (p[std::strlen(kControlDir)] == '\0' || p[std::strlen(kControlDir)] == '/');
}

// What a path under the control directory names.
struct CtlNode {
  enum Kind { none, root, status, control, dir, image, attr } kind = none;
  std::string rel{};            // dir / image / attr: the set-relative path of the dir or image
  const AttrDef* def = nullptr;  // attr: which one
};

// MOUNT/.fusemirror/images mirrors the set's tree: a directory of the set is a directory
// here, an image is a directory of attribute files. A name is an attribute only below an
// image, so an image called "state" in a subdirectory is still reachable.
CtlNode resolve(const char* p) {
  if (!is_control(p)) return {};
  if (is_control_dir(p)) return {CtlNode::root};
  if (std::strcmp(p, kStatusFile) == 0) return {CtlNode::status};
  if (std::strcmp(p, kControlFile) == 0) return {CtlNode::control};
  if (std::strcmp(p, kImagesDir) == 0) return {CtlNode::dir, ""};
  const std::size_t n = std::strlen(kImagesDir);
  if (std::strncmp(p, kImagesDir, n) != 0 || p[n] != '/') return {};
  const std::string rest = p + n + 1;
  if (auto st = set().getattr(rest); st) {
    if (S_ISDIR(st->st_mode)) return {CtlNode::dir, rest};
    if (S_ISREG(st->st_mode)) return {CtlNode::image, rest};
    return {};
  }
  const auto slash = rest.rfind('/');
  if (slash == std::string::npos) return {};
  const std::string parent = rest.substr(0, slash), name = rest.substr(slash + 1);
  for (const auto& a : kAttrs) {
    if (name != a.name) continue;
    if (auto st = set().getattr(parent); st && S_ISREG(st->st_mode)) return {CtlNode::attr, parent, &a};
  }
  return {};
}

utils::Result<std::string> attr_read(const std::string& rel, const AttrDef& a) {
  auto img = set().open_image(rel);
  if (!img) return img.error();
  const core::ImageStatus s = (*img)->status();
  const std::string n = a.name;
  std::string v;
  if (n == "sync_action") v = core::to_string(s.action);
  else if (n == "sync_completed")
    v = s.action == core::SyncAction::idle ? "none"
                                           : std::to_string(s.sync_done_bytes) + " / " + std::to_string(s.sync_total_bytes);
  else if (n == "sync_speed") {
    auto r = ProgressTracker::instance().rate(rel);
    v = std::to_string(s.action != core::SyncAction::idle && r ? static_cast<std::uint64_t>(r->speed) : 0);
  } else if (n == "sync_speed_min") v = std::to_string(set().resync_min_rate());
  else if (n == "sync_speed_max") v = std::to_string(set().resync_max_rate());
  else if (n == "mismatch_cnt") v = std::to_string(s.mismatch_cnt);
  else if (n == "state") v = s.state;
  else if (n == "degraded") v = s.secondary_ok ? "0" : "1";
  else if (n == "secondary") v = !s.secondary_ok ? "faulty" : s.bitmap.unsynced_chunks ? "recovering" : "in_sync";
  else if (n == "dirty_chunks") v = std::to_string(s.bitmap.dirty_chunks);
  return v + "\n";
}

// One write to an attribute file is one command (echo's trailing newline is dropped).
std::error_code attr_write(const std::string& rel, const AttrDef& a, std::string v, std::string* why) {
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ' || v.back() == '\t')) v.pop_back();
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
  const std::string n = a.name;
  if (n == "sync_action") {
    core::SyncAction act;
    if (v == "idle" || v == "frozen") act = core::SyncAction::idle;
    else if (v == "resync" || v == "recover") act = core::SyncAction::resync;
    else if (v == "check") act = core::SyncAction::check;
    else if (v == "repair") act = core::SyncAction::repair;
    else {
      *why = "unknown sync action '" + v + "' (idle, resync, check, repair)";
      return utils::errno_code(EINVAL);
    }
    return set().sync_action(rel, act);
  }
  if (n == "secondary") {
    if (v == "fail" || v == "faulty") return set().fail(rel);
    if (v == "re-add" || v == "readd") return set().readd(rel);
    *why = "write 'fail' or 're-add', not '" + v + "'";
    return utils::errno_code(EINVAL);
  }
  if (n == "sync_speed_min" || n == "sync_speed_max") {
    auto r = utils::parse_size(v);
    if (!r) {
      *why = "'" + v + "' is not a rate in bytes/s (e.g. 1048576 or 10M)";
      return utils::errno_code(EINVAL);
    }
    return n == "sync_speed_min" ? set().set_resync_min_rate(*r, why) : set().set_resync_max_rate(*r, why);
  }
  *why = std::string(a.name) + " is read-only";
  return utils::errno_code(EACCES);
}

void* op_init(fuse_conn_info* conn, fuse_config* cfg) {
  // An unlinked image that is still open is renamed to .fuse_hiddenNNN (and removed at its
  // last close): hard_remove would make fstat() of such a file fail with ESTALE, because
  // the kernel asks for its attributes by name, not by handle.
  cfg->hard_remove = 0;
  cfg->nullpath_ok = 1;  // ops on unlinked-but-open images use the handle
  cfg->use_ino = 0;
  conn->max_write = 1u << 20;  // 1 MiB writes (the kernel negotiates max_pages)
  conn->max_readahead = 1u << 20;
  // Loop devices and QEMU keep many async direct requests in flight; the kernel's default
  // of 12 background requests would cap the concurrency (and the group commit's batches).
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  return fuse_get_context()->private_data;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  return guarded("getattr", path, [&] {
    if (auto* h = handle(fi); h && h->image) {
      auto r = h->image->stat();
      if (!r) return neg(r.error());
      *st = *r;
      return 0;
    }
    if (is_control(path)) {
      // Sizes are 0: the files are direct_io, a read returns what the daemon says now.
      const CtlNode node = resolve(path);
      std::memset(st, 0, sizeof *st);
      st->st_uid = ::getuid();
      st->st_gid = ::getgid();
      st->st_nlink = 1;
      switch (node.kind) {
        case CtlNode::root:
        case CtlNode::dir:
        case CtlNode::image: st->st_mode = S_IFDIR | 0555; st->st_nlink = 2; break;
        case CtlNode::status: st->st_mode = S_IFREG | 0444; break;
        case CtlNode::control: st->st_mode = S_IFREG | 0200; break;
        case CtlNode::attr: st->st_mode = S_IFREG | (node.def->writable ? 0644 : 0444); break;
        case CtlNode::none: return -ENOENT;
      }
      return 0;
    }
    auto r = set().getattr(rel(path));
    if (!r) return neg(r.error());
    *st = *r;
    return 0;
  });
}

// nullpath_ok makes libfuse pass a NULL path to readdir: opendir keeps the path.
int op_opendir(const char* path, fuse_file_info* fi) {
  return guarded("opendir", path, [&] {
    fi->fh = reinterpret_cast<std::uint64_t>(new std::string(path ? path : "/"));
    return 0;
  });
}

int op_releasedir(const char* path, fuse_file_info* fi) {
  delete reinterpret_cast<std::string*>(fi->fh);
  return 0;
}

int op_readdir(const char* path_arg, void* buf, fuse_fill_dir_t filler, off_t,
               fuse_file_info* fi, fuse_readdir_flags) {
  const char* path = fi && fi->fh ? reinterpret_cast<std::string*>(fi->fh)->c_str() : path_arg;
  return guarded("readdir", path, [&] {
    filler(buf, ".", nullptr, 0, fuse_fill_dir_flags{});
    filler(buf, "..", nullptr, 0, fuse_fill_dir_flags{});
    if (is_control(path)) {
      const CtlNode node = resolve(path);
      if (node.kind == CtlNode::root) {
        filler(buf, "status.json", nullptr, 0, fuse_fill_dir_flags{});
        filler(buf, "control", nullptr, 0, fuse_fill_dir_flags{});
        filler(buf, "images", nullptr, 0, fuse_fill_dir_flags{});
      } else if (node.kind == CtlNode::image) {
        for (const auto& a : kAttrs) filler(buf, a.name, nullptr, 0, fuse_fill_dir_flags{});
      } else if (node.kind == CtlNode::dir) {
        auto r = set().readdir(node.rel);
        if (!r) return neg(r.error());
        for (const auto& e : *r) filler(buf, e.name.c_str(), nullptr, 0, fuse_fill_dir_flags{});
      } else {
        return node.kind == CtlNode::none ? -ENOENT : -ENOTDIR;
      }
      return 0;
    }
    auto r = set().readdir(rel(path));
    if (!r) return neg(r.error());
    for (const auto& e : *r) filler(buf, e.name.c_str(), nullptr, 0, fuse_fill_dir_flags{});
    return 0;
  });
}

int op_open(const char* path, fuse_file_info* fi) {
  return guarded("open", path, [&] {
    if (is_control(path) && std::strcmp(path, kControlFile) == 0) {
      if (!caller_owns_mount()) return -EACCES;
      if ((fi->flags & O_ACCMODE) == O_RDONLY) return -EACCES;
      fi->direct_io = 1;
      fi->fh = reinterpret_cast<std::uint64_t>(new Handle{nullptr, {}, true});
      return 0;
    }
    if (is_control(path)) {
      const CtlNode node = resolve(path);
      if (node.kind == CtlNode::none) return -ENOENT;
      const bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
      auto h = std::make_unique<Handle>();
      if (node.kind == CtlNode::status) {
        if (writing) return -EACCES;
        h->content = ProgressTracker::instance().augment(set().status_json());
      } else if (node.kind == CtlNode::attr) {
        // SECURITY: only the mount's owner (and root) may change anything.
        if (writing && (!node.def->writable || !caller_owns_mount())) return -EACCES;
        auto v = attr_read(node.rel, *node.def);
        if (!v) return neg(v.error());
        h->content = std::move(*v);
        h->attr_image = node.rel;
        h->attr = node.def;
      } else {
        return -EISDIR;
      }
      fi->direct_io = 1;  // size unknown to the kernel: read what we return
      fi->fh = reinterpret_cast<std::uint64_t>(h.release());
      return 0;
    }
    auto img = set().open_image(rel(path));
    if (!img) return neg(img.error());
    if (fi->flags & O_TRUNC)
      if (auto ec = (*img)->truncate(0)) return neg(ec);
    fi->direct_io = !g_page_cache;
    fi->fh = reinterpret_cast<std::uint64_t>(new Handle{*img, {}});
    return 0;
  });
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
  return guarded("create", path, [&] {
    if (is_control(path)) return -EPERM;
    const auto* ctx = fuse_get_context();
    const bool as_caller = ::geteuid() == 0;
    auto img = set().create_image(rel(path), mode, as_caller ? ctx->uid : static_cast<uid_t>(-1),
                                  as_caller ? ctx->gid : static_cast<gid_t>(-1));
    if (!img) return neg(img.error());
    fi->direct_io = !g_page_cache;
    fi->fh = reinterpret_cast<std::uint64_t>(new Handle{*img, {}});
    return 0;
  });
}

int op_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return guarded("read", path, [&]() -> int {
    Handle* h = handle(fi);
    if (!h) return -EBADF;
    if (!h->image) {
      if (static_cast<std::size_t>(off) >= h->content.size()) return 0;
      const std::size_t n = std::min(size, h->content.size() - static_cast<std::size_t>(off));
      std::memcpy(buf, h->content.data() + off, n);
      return static_cast<int>(n);
    }
    auto r = h->image->read(std::as_writable_bytes(std::span(buf, size)), static_cast<std::uint64_t>(off));
    if (!r) return neg(r.error());
    return static_cast<int>(*r);
  });
}

int op_write(const char* path, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return guarded("write", path, [&]() -> int {
    Handle* h = handle(fi);
    if (h && h->control) {
      if (!caller_owns_mount()) return -EACCES;
      std::string line(buf, size);
      while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
      std::string why;
      if (auto ec = set().control(line, &why)) {
        spdlog::warn("control '{}' refused: {}", line, why);
        return neg(ec);
      }
      spdlog::info("control '{}' done", line);
      return static_cast<int>(size);
    }
    if (h && h->attr) {
      if (!caller_owns_mount()) return -EACCES;
      std::string why;
      const std::string v(buf, size);
      if (auto ec = attr_write(h->attr_image, *h->attr, v, &why)) {
        spdlog::warn("{}/{}: write '{}' refused: {}", h->attr_image, h->attr->name,
                     v.substr(0, v.find('\n')), why.empty() ? ec.message() : why);
        return neg(ec);
      }
      spdlog::info("{}/{}: '{}' done", h->attr_image, h->attr->name, v.substr(0, v.find('\n')));
      return static_cast<int>(size);
    }
    if (!h || !h->image) return -EBADF;
    static std::atomic<std::size_t> largest{0};
    if (size > largest.load(std::memory_order_relaxed)) {
      largest.store(size, std::memory_order_relaxed);
      spdlog::debug("largest FUSE write so far: {} bytes", size);
    }
    auto r = h->image->write(std::as_bytes(std::span(buf, size)), static_cast<std::uint64_t>(off));
    if (!r) return neg(r.error());
    return static_cast<int>(*r);
  });
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  return guarded("truncate", path, [&] {
    if (size < 0) return -EINVAL;
    if (auto* h = handle(fi); h && h->image) return neg(h->image->truncate(static_cast<std::uint64_t>(size)));
    // `echo X > FILE` truncates first: a no-op for the control files, the owner's only.
    if (auto* h = handle(fi); h && (h->control || h->attr)) return caller_owns_mount() ? 0 : -EACCES;
    if (is_control(path)) {
      const CtlNode node = resolve(path);
      if (node.kind == CtlNode::control || (node.kind == CtlNode::attr && node.def->writable))
        return caller_owns_mount() ? 0 : -EACCES;
      return node.kind == CtlNode::none ? -ENOENT : -EPERM;
    }
    return neg(set().truncate(rel(path), static_cast<std::uint64_t>(size)));
  });
}

int op_fallocate(const char* path, int mode, off_t off, off_t len, fuse_file_info* fi) {
  return guarded("fallocate", path, [&] {
    Handle* h = handle(fi);
    if (!h || !h->image) return -EBADF;
    if (off < 0 || len <= 0) return -EINVAL;
    return neg(h->image->fallocate(mode, static_cast<std::uint64_t>(off), static_cast<std::uint64_t>(len)));
  });
}

int op_fsync(const char* path, int datasync, fuse_file_info* fi) {
  return guarded("fsync", path, [&] {
    Handle* h = handle(fi);
    if (!h || !h->image) return 0;
    return neg(h->image->fsync(datasync != 0));
  });
}

int op_flush(const char*, fuse_file_info*) { return 0; }

int op_release(const char* path, fuse_file_info* fi) {
  return guarded("release", path, [&] {
    delete handle(fi);
    return 0;
  });
}

off_t op_lseek(const char* path, off_t off, int whence, fuse_file_info* fi) {
  try {
    Handle* h = handle(fi);
    if (!h || !h->image) return -EBADF;
    off_t r = ::lseek(h->image->primary_fd(), off, whence);
    return r < 0 ? -errno : r;
  } catch (...) {
    return -EIO;
  }
}

int op_unlink(const char* path) {
  return guarded("unlink", path, [&] { return is_control(path) ? -EPERM : neg(set().unlink(rel(path))); });
}

int op_mkdir(const char* path, mode_t mode) {
  return guarded("mkdir", path, [&] {
    if (is_control(path)) return -EPERM;
    const auto* ctx = fuse_get_context();
    const bool as_caller = ::geteuid() == 0;
    return neg(set().mkdir(rel(path), mode, as_caller ? ctx->uid : static_cast<uid_t>(-1),
                           as_caller ? ctx->gid : static_cast<gid_t>(-1)));
  });
}

int op_rmdir(const char* path) {
  return guarded("rmdir", path, [&] { return is_control(path) ? -EPERM : neg(set().rmdir(rel(path))); });
}

int op_rename(const char* from, const char* to, unsigned flags) {
  return guarded("rename", from, [&] {
    if (is_control(from) || is_control(to)) return -EPERM;
    return neg(set().rename(rel(from), rel(to), flags));
  });
}

int op_chmod(const char* path, mode_t mode, fuse_file_info*) {
  return guarded("chmod", path, [&] { return is_control(path) ? -EPERM : neg(set().chmod(rel(path), mode)); });
}

int op_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info*) {
  return guarded("chown", path, [&] { return is_control(path) ? -EPERM : neg(set().chown(rel(path), uid, gid)); });
}

int op_utimens(const char* path, const struct timespec ts[2], fuse_file_info*) {
  return guarded("utimens", path, [&] { return is_control(path) ? -EPERM : neg(set().utimens(rel(path), ts)); });
}

int op_statfs(const char* path, struct statvfs* sv) {
  return guarded("statfs", path, [&] {
    auto r = set().statfs();
    if (!r) return neg(r.error());
    *sv = *r;
    return 0;
  });
}

int op_setxattr(const char* path, const char* name, const char* value, size_t size, int flags) {
  return guarded("setxattr", path, [&] {
    return is_control(path) ? -EPERM : neg(set().setxattr(rel(path), name, value, size, flags));
  });
}

int op_getxattr(const char* path, const char* name, char* value, size_t size) {
  return guarded("getxattr", path, [&]() -> int {
    if (is_control(path)) return -ENODATA;
    auto r = set().getxattr(rel(path), name, value, size);
    return r ? static_cast<int>(*r) : neg(r.error());
  });
}

int op_listxattr(const char* path, char* list, size_t size) {
  return guarded("listxattr", path, [&]() -> int {
    if (is_control(path)) return 0;
    auto r = set().listxattr(rel(path), list, size);
    return r ? static_cast<int>(*r) : neg(r.error());
  });
}

int op_removexattr(const char* path, const char* name) {
  return guarded("removexattr", path, [&] {
    return is_control(path) ? -EPERM : neg(set().removexattr(rel(path), name));
  });
}

fuse_operations make_ops() {
  fuse_operations ops{};
  ops.init = op_init;
  ops.getattr = op_getattr;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.open = op_open;
  ops.create = op_create;
  ops.read = op_read;
  ops.write = op_write;
  ops.truncate = op_truncate;
  ops.fallocate = op_fallocate;
  ops.fsync = op_fsync;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.lseek = op_lseek;
  ops.unlink = op_unlink;
  ops.mkdir = op_mkdir;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.chmod = op_chmod;
  ops.chown = op_chown;
  ops.utimens = op_utimens;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  return ops;
}

}  // namespace

void set_page_cache(bool on) { g_page_cache = on; }
bool page_cache() { return g_page_cache; }

const fuse_operations& operations() {
  static const fuse_operations ops = make_ops();
  return ops;
}

}  // namespace fusemirror::fuse
