// fusemirror/fuse_ops.cpp — each FUSE operation unpacks its arguments, calls core, and
// turns the result into a negative errno. No exception ever reaches libfuse: every
// operation runs inside guarded() (bad_alloc -> ENOMEM, anything else -> EIO, logged).
#include "fusemirror/fuse_ops.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "fusemirror/parallel_writes.hpp"


namespace fusemirror::fuse {
namespace {

bool g_page_cache = false;  // set once before the session starts

core::MirrorSet& set() { return *static_cast<core::MirrorSet*>(fuse_get_context()->private_data); }

// "/a/b" -> "a/b"; "/" -> "".
std::string rel(const char* path) {
  if (!path) return {};
  while (*path == '/') ++path;
  return path;
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

Handle* image_handle(std::shared_ptr<core::Image> img) {
  auto* h = new Handle;
  h->image = std::move(img);
  return h;
}

// The owner a file or directory made through the mount gets: the caller's when the daemon
// can give files away (root), the daemon's otherwise.
std::pair<uid_t, gid_t> new_owner() {
  if (::geteuid() != 0) return {static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
  const auto* ctx = fuse_get_context();
  return {ctx->uid, ctx->gid};
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
  // Shared writable mmap of an image opened with direct I/O (docs/write-path.md §8): the
  // kernel writes the mapping's pages back as WRITE requests, which take the write path.
  if (!g_page_cache) {
    if (kernel_offers_direct_io_mmap()) {
      allow_direct_io_mmap();
      spdlog::info("shared mmap of images allowed: the kernel maps direct-I/O files through its "
                   "page cache and writes them back through the mirror's write path");
    } else {
      spdlog::warn("shared writable mmap of an image fails with ENODEV on this mount: the kernel "
                   "does not offer FUSE_DIRECT_IO_ALLOW_MMAP (Linux >= 6.6); mount with "
                   "--page-cache for programs that map images");
    }
  }
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
    if (is_control(path)) return control_getattr(set(), path, st);
    auto r = set().ns().getattr(rel(path));
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
    if (is_control(path)) return control_readdir(set(), path, buf, filler);
    auto r = set().ns().readdir(rel(path));
    if (!r) return neg(r.error());
    for (const auto& e : *r) filler(buf, e.name.c_str(), nullptr, 0, fuse_fill_dir_flags{});
    return 0;
  });
}

int op_open(const char* path, fuse_file_info* fi) {
  return guarded("open", path, [&] {
    if (is_control(path)) return control_open(set(), path, fi);
    auto img = set().ns().open_image(rel(path));
    if (!img) return neg(img.error());
    if (fi->flags & O_TRUNC)
      if (auto ec = (*img)->truncate(0)) return neg(ec);
    fi->direct_io = !g_page_cache;
    fi->fh = reinterpret_cast<std::uint64_t>(image_handle(*img));
    return 0;
  });
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
  return guarded("create", path, [&] {
    if (is_control(path)) return -EPERM;
    const auto [uid, gid] = new_owner();
    auto img = set().ns().create_image(rel(path), mode, uid, gid);
    if (!img) return neg(img.error());
    fi->direct_io = !g_page_cache;
    fi->fh = reinterpret_cast<std::uint64_t>(image_handle(*img));
    return 0;
  });
}

// Reads go through read_buf, so that the data lands in a buffer aligned to 4 KiB that
// libfuse replies from and frees (free()): an aligned read can then be served by the
// primary's O_DIRECT descriptor (config direct_reads) without a bounce copy. libfuse's own
// read path allocates the same one buffer per request, unaligned.
int op_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info* fi);

int op_read_buf(const char* path, fuse_bufvec** bufp, size_t size, off_t off, fuse_file_info* fi) {
  void* mem = nullptr;
  if (::posix_memalign(&mem, 4096, std::max<size_t>(size, 1)) != 0) return -ENOMEM;
  auto* bv = static_cast<fuse_bufvec*>(std::malloc(sizeof(fuse_bufvec)));
  if (!bv) {
    std::free(mem);
    return -ENOMEM;
  }
  const int n = op_read(path, static_cast<char*>(mem), size, off, fi);
  if (n < 0) {
    std::free(mem);
    std::free(bv);
    return n;
  }
  *bv = FUSE_BUFVEC_INIT(static_cast<size_t>(n));
  bv->buf[0].mem = mem;
  *bufp = bv;
  return 0;
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
    if (h && (h->control || h->attr)) return control_write(set(), *h, buf, size);
    if (!h || !h->image) return -EBADF;
    auto r = h->image->write(std::as_bytes(std::span(buf, size)), static_cast<std::uint64_t>(off));
    if (!r) return neg(r.error());
    return static_cast<int>(*r);
  });
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  return guarded("truncate", path, [&] {
    if (size < 0) return -EINVAL;
    Handle* h = handle(fi);
    if (h && h->image) return neg(h->image->truncate(static_cast<std::uint64_t>(size)));
    if ((h && (h->control || h->attr)) || is_control(path)) return control_truncate(set(), path, h);
    return neg(set().ns().truncate(rel(path), static_cast<std::uint64_t>(size)));
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

// Without it the kernel answers fsync of a directory with success and nothing is made
// durable: a name created through the mount could vanish in a power cut.
int op_fsyncdir(const char* path_arg, int, fuse_file_info* fi) {
  const char* path = fi && fi->fh ? reinterpret_cast<std::string*>(fi->fh)->c_str() : path_arg;
  return guarded("fsyncdir", path, [&] {
    if (is_control(path)) return 0;
    return neg(set().ns().fsyncdir(rel(path)));
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
  return guarded("unlink", path, [&] { return is_control(path) ? -EPERM : neg(set().ns().unlink(rel(path))); });
}

int op_mkdir(const char* path, mode_t mode) {
  return guarded("mkdir", path, [&] {
    if (is_control(path)) return -EPERM;
    const auto [uid, gid] = new_owner();
    return neg(set().ns().mkdir(rel(path), mode, uid, gid));
  });
}

int op_rmdir(const char* path) {
  return guarded("rmdir", path, [&] { return is_control(path) ? -EPERM : neg(set().ns().rmdir(rel(path))); });
}

int op_rename(const char* from, const char* to, unsigned flags) {
  return guarded("rename", from, [&] {
    if (is_control(from) || is_control(to)) return -EPERM;
    return neg(set().ns().rename(rel(from), rel(to), flags));
  });
}

int op_chmod(const char* path, mode_t mode, fuse_file_info*) {
  return guarded("chmod", path, [&] { return is_control(path) ? -EPERM : neg(set().ns().chmod(rel(path), mode)); });
}

int op_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info*) {
  return guarded("chown", path, [&] { return is_control(path) ? -EPERM : neg(set().ns().chown(rel(path), uid, gid)); });
}

int op_utimens(const char* path, const struct timespec ts[2], fuse_file_info*) {
  return guarded("utimens", path, [&] { return is_control(path) ? -EPERM : neg(set().ns().utimens(rel(path), ts)); });
}

int op_statfs(const char* path, struct statvfs* sv) {
  return guarded("statfs", path, [&] {
    auto r = set().ns().statfs();
    if (!r) return neg(r.error());
    *sv = *r;
    return 0;
  });
}

int op_setxattr(const char* path, const char* name, const char* value, size_t size, int flags) {
  return guarded("setxattr", path, [&] {
    return is_control(path) ? -EPERM : neg(set().ns().setxattr(rel(path), name, value, size, flags));
  });
}

int op_getxattr(const char* path, const char* name, char* value, size_t size) {
  return guarded("getxattr", path, [&]() -> int {
    if (is_control(path)) return -ENODATA;
    auto r = set().ns().getxattr(rel(path), name, value, size);
    return r ? static_cast<int>(*r) : neg(r.error());
  });
}

int op_listxattr(const char* path, char* list, size_t size) {
  return guarded("listxattr", path, [&]() -> int {
    if (is_control(path)) return 0;
    auto r = set().ns().listxattr(rel(path), list, size);
    return r ? static_cast<int>(*r) : neg(r.error());
  });
}

int op_removexattr(const char* path, const char* name) {
  return guarded("removexattr", path, [&] {
    return is_control(path) ? -EPERM : neg(set().ns().removexattr(rel(path), name));
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
  ops.read_buf = op_read_buf;
  ops.write = op_write;
  ops.truncate = op_truncate;
  ops.fallocate = op_fallocate;
  ops.fsync = op_fsync;
  ops.fsyncdir = op_fsyncdir;
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
