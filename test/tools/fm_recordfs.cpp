// fm_recordfs — a test-only FUSE pass-through that records every mutating operation.
//
//   fm_recordfs ROOT MOUNTPOINT --log FILE [-f] [-d] [-o opts]
//
// Mounted over ONE directory that holds a mirror set's primary and secondary (and the
// bitmaps, in PRIMARY/.fusemirror/bitmaps), so that one global order of everything the
// daemon does to its storage exists. Every mutating operation is executed and appended to
// FILE under one mutex, in the order this process executes them: the log is a valid
// linearization of what the kernel handed over. Files are opened with direct_io and the
// writeback cache is off, so each pwrite/pwritev of the daemon reaches this process as one
// WRITE, in syscall order; copy_file_range is implemented (and recorded as a write of the
// bytes it copied), so resync's in-kernel copies are seen too. The log format is in
// test/tools/oplog.hpp (docs/on-disk-format.md §5); fm_powercut replays it.
//
// Durability is what the log models, not what this process does: fsync, fdatasync and a
// directory's fsync are recorded and not executed (the backing directory's own durability
// is irrelevant to the replay), which keeps the recording fast.
//
// Recorded: base (every entry of ROOT at start), create/mknod, mkdir, unlink, rmdir,
// rename (+flags), link, symlink, write, truncate (setattr size, O_TRUNC), fallocate,
// fsync/fdatasync, fsyncdir, chmod. Not recorded: chown, utimens, xattrs (passed through).
//
// Control file MOUNTPOINT/.recordfs (not listed): each write(2) to it is recorded as one
// MARK record holding the written text ("ack disk.img 17 123456789" from the load, say);
// reading it gives "records=N bytes=N writes=N syncs=N".
//
// Stop it with fusermount3 -u MOUNTPOINT (or SIGTERM): the log gets an END record and is
// flushed; a log without END was cut short.
#include "test/tools/passthrough.hpp"  // first: it sets FUSE_USE_VERSION
#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "test/tools/recorder.hpp"

namespace {

using fmtest::Op;
using fmtest::Record;

constexpr const char* kCtlPath = "/.recordfs";
constexpr const char* kCtlName = ".recordfs";

namespace pt = fmtest::pt;
using pt::neg_errno;
using pt::rel;
std::unique_ptr<fmtest::Recorder> g_rec;
std::atomic<std::uint64_t> g_writes{0}, g_syncs{0};

struct Handle {
  enum Kind { File, Dir, Ctl } kind;
  explicit Handle(Kind k) : kind(k) {}
  int fd = -1;
  DIR* dir = nullptr;
  std::uint64_t id = 0;
  bool append = false;
  bool root = false;
};

Handle* H(const fuse_file_info* fi) { return fi ? reinterpret_cast<Handle*>(static_cast<uintptr_t>(fi->fh)) : nullptr; }
bool is_ctl(const char* path) { return path && std::strcmp(path, kCtlPath) == 0; }

using Lock = std::lock_guard<std::mutex>;
std::pair<std::string, std::string> split(const char* r) { return fmtest::split_path(r); }
std::uint64_t new_id(ino_t ino) { return g_rec->new_id(ino); }
std::uint64_t id_of_path(const std::string& r) { return g_rec->id_of_path(r); }
std::uint64_t id_of_fd(int fd, const char* what) { return g_rec->id_of_fd(fd, what); }
void log_rec(Op op, std::uint64_t id, std::uint64_t id2 = 0, std::string n1 = {}, std::uint64_t a = 0,
             std::uint64_t b = 0, std::uint64_t c = 0, std::uint64_t id3 = 0, std::string n2 = {}) {
  g_rec->log(op, id, id2, std::move(n1), a, b, c, id3, std::move(n2));
}

// ------------------------------------------------------------------ operations

void* op_init(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->hard_remove = 1;
  cfg->nullpath_ok = 1;
  cfg->use_ino = 1;
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  conn->max_write = 1u << 20;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  return nullptr;
}

void ctl_attr(struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_mode = S_IFREG | 0600;
  st->st_nlink = 1;
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_ino = 0x7ec0ded;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (Handle* h = H(fi)) {
    if (h->kind == Handle::Ctl) return ctl_attr(st), 0;
    int fd = h->kind == Handle::Dir ? dirfd(h->dir) : h->fd;
    return ::fstat(fd, st) == 0 ? 0 : neg_errno();
  }
  if (!path) return -ESTALE;
  if (is_ctl(path)) return ctl_attr(st), 0;
  return ::fstatat(pt::root.fd, rel(path), st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : neg_errno();
}

// A new inode at `path`: executed by `make` (returns 0 or -errno), then logged as `op`.
template <typename F>
int make_entry(const char* path, Op op, F&& make, std::string target = {}) {
  if (is_ctl(path)) return -EEXIST;
  Lock lk(g_rec->mu);
  if (int rc = make(); rc != 0) return rc;
  struct stat st {};
  if (::fstatat(pt::root.fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) != 0) return neg_errno();
  auto [parent, name] = split(rel(path));
  const std::uint64_t pid = id_of_path(parent);
  log_rec(op, new_id(st.st_ino), pid, name, st.st_mode, 0, 0, 0, std::move(target));
  return 0;
}

int op_mknod(const char* path, mode_t mode, dev_t rdev) {
  return make_entry(path, Op::create, [&] { return ::mknodat(pt::root.fd, rel(path), mode, rdev) == 0 ? 0 : neg_errno(); });
}

int op_mkdir(const char* path, mode_t mode) {
  return make_entry(path, Op::mkdir, [&] { return ::mkdirat(pt::root.fd, rel(path), mode) == 0 ? 0 : neg_errno(); });
}

int op_symlink(const char* target, const char* path) {
  return make_entry(
      path, Op::symlink, [&] { return ::symlinkat(target, pt::root.fd, rel(path)) == 0 ? 0 : neg_errno(); }, target);
}

int remove_entry(const char* path, Op op, int flags) {
  if (is_ctl(path)) return -EPERM;
  Lock lk(g_rec->mu);
  const std::uint64_t id = id_of_path(rel(path));
  if (::unlinkat(pt::root.fd, rel(path), flags) != 0) return neg_errno();
  auto [parent, name] = split(rel(path));
  log_rec(op, id, id_of_path(parent), name);
  return 0;
}

int op_unlink(const char* path) { return remove_entry(path, Op::unlink, 0); }
int op_rmdir(const char* path) { return remove_entry(path, Op::rmdir, AT_REMOVEDIR); }

int op_rename(const char* from, const char* to, unsigned int flags) {
  if (is_ctl(from) || is_ctl(to)) return -EPERM;
  Lock lk(g_rec->mu);
  const std::uint64_t id = id_of_path(rel(from));
  const std::uint64_t replaced = id_of_path(rel(to));  // 0: nothing there
  if (::renameat2(pt::root.fd, rel(from), pt::root.fd, rel(to), flags) != 0) return neg_errno();
  auto [pf, nf] = split(rel(from));
  auto [pt, nt] = split(rel(to));
  log_rec(Op::rename, id, id_of_path(pf), nf, flags, replaced, 0, id_of_path(pt), nt);
  return 0;
}

int op_link(const char* from, const char* to) {
  if (is_ctl(from) || is_ctl(to)) return -EPERM;
  Lock lk(g_rec->mu);
  if (::linkat(pt::root.fd, rel(from), pt::root.fd, rel(to), 0) != 0) return neg_errno();
  auto [pt, nt] = split(rel(to));
  log_rec(Op::link, id_of_path(rel(from)), id_of_path(pt), nt);
  return 0;
}

int op_chmod(const char* path, mode_t mode, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return -EPERM;
  Lock lk(g_rec->mu);
  std::uint64_t id = 0;
  if (h && h->kind == Handle::File) {
    if (::fchmod(h->fd, mode) != 0) return neg_errno();
    id = h->id;
  } else {
    if (!path) return -ESTALE;
    if (::fchmodat(pt::root.fd, rel(path), mode, 0) != 0) return neg_errno();
    id = id_of_path(rel(path));
  }
  log_rec(Op::chmod, id, 0, {}, mode);
  return 0;
}

int op_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return -EPERM;
  if (h && h->kind == Handle::File) return ::fchown(h->fd, uid, gid) == 0 ? 0 : neg_errno();
  if (!path) return -ESTALE;
  return ::fchownat(pt::root.fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : neg_errno();
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return 0;
  Lock lk(g_rec->mu);
  std::uint64_t id = 0;
  if (h && h->kind == Handle::File) {
    if (::ftruncate(h->fd, size) != 0) return neg_errno();
    id = h->id;
  } else {
    if (!path) return -ESTALE;
    int fd = ::openat(pt::root.fd, rel(path), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return neg_errno();
    int rc = ::ftruncate(fd, size) == 0 ? 0 : neg_errno();
    if (rc == 0) id = id_of_fd(fd, rel(path));
    ::close(fd);
    if (rc != 0) return rc;
  }
  log_rec(Op::truncate, id, 0, {}, static_cast<std::uint64_t>(size));
  return 0;
}

int op_utimens(const char* path, const timespec tv[2], fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return 0;
  if (h && h->kind == Handle::File) return ::futimens(h->fd, tv) == 0 ? 0 : neg_errno();
  if (!path) return -ESTALE;
  return ::utimensat(pt::root.fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : neg_errno();
}

int open_ctl(fuse_file_info* fi) {
  fi->fh = reinterpret_cast<uintptr_t>(new Handle(Handle::Ctl));
  fi->direct_io = 1;
  return 0;
}

// REQUIRES g_rec->mu. `fd` is open on `path`.
int finish_open(int fd, const char* path, fuse_file_info* fi) {
  auto* h = new Handle(Handle::File);
  h->fd = fd;
  h->id = id_of_fd(fd, rel(path));
  h->append = fi->flags & O_APPEND;
  fi->fh = reinterpret_cast<uintptr_t>(h);
  fi->direct_io = 1;
  fi->keep_cache = 0;
  return 0;
}

// O_DIRECT is not passed on: libfuse's buffers are not aligned for the backing file.
int backing_flags(int flags) { return (flags & ~O_DIRECT) | O_CLOEXEC; }

int op_open(const char* path, fuse_file_info* fi) {
  if (is_ctl(path)) return open_ctl(fi);
  Lock lk(g_rec->mu);
  int fd = ::openat(pt::root.fd, rel(path), backing_flags(fi->flags) & ~(O_CREAT | O_EXCL));
  if (fd < 0) return neg_errno();
  finish_open(fd, path, fi);
  if (fi->flags & O_TRUNC) log_rec(Op::truncate, H(fi)->id, 0, {}, 0);
  return 0;
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
  if (is_ctl(path)) return (fi->flags & O_EXCL) ? -EEXIST : open_ctl(fi);
  Lock lk(g_rec->mu);
  struct stat before {};
  const bool existed = ::fstatat(pt::root.fd, rel(path), &before, AT_SYMLINK_NOFOLLOW) == 0;
  int fd = ::openat(pt::root.fd, rel(path), backing_flags(fi->flags) | O_CREAT, mode);
  if (fd < 0) return neg_errno();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  if (!existed) {
    auto [parent, name] = split(rel(path));
    log_rec(Op::create, new_id(st.st_ino), id_of_path(parent), name, st.st_mode);
  }
  finish_open(fd, path, fi);
  if (existed && (fi->flags & O_TRUNC)) log_rec(Op::truncate, H(fi)->id, 0, {}, 0);
  return 0;
}

int op_read(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind == Handle::Ctl) {
    char text[160];
    std::uint64_t recs = 0, bytes = 0;
    {
      Lock lk(g_rec->mu);
      recs = g_rec->writer().records();
      bytes = g_rec->writer().bytes();
    }
    int n = std::snprintf(text, sizeof text, "records=%llu bytes=%llu writes=%llu syncs=%llu\n",
                          static_cast<unsigned long long>(recs), static_cast<unsigned long long>(bytes),
                          static_cast<unsigned long long>(g_writes.load()),
                          static_cast<unsigned long long>(g_syncs.load()));
    if (off >= n) return 0;
    size_t k = std::min(size, static_cast<size_t>(n - off));
    std::memcpy(buf, text + off, k);
    return static_cast<int>(k);
  }
  if (h->kind != Handle::File) return -EISDIR;
  ssize_t n = ::pread(h->fd, buf, size, off);
  return n < 0 ? neg_errno() : static_cast<int>(n);
}

int op_write(const char*, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  Lock lk(g_rec->mu);
  if (h->kind == Handle::Ctl) {
    Record r;
    r.op = Op::mark;
    r.name1.assign(buf, size);
    g_rec->log_data(std::move(r), nullptr, 0);
    return static_cast<int>(size);
  }
  if (h->kind != Handle::File) return -EISDIR;
  if (h->append) {  // the backing fd appends whatever the offset: log where it lands
    struct stat st {};
    if (::fstat(h->fd, &st) != 0) return neg_errno();
    off = st.st_size;
  }
  ssize_t n = ::pwrite(h->fd, buf, size, off);
  if (n < 0) return neg_errno();
  Record r;
  r.op = Op::write;
  r.id = h->id;
  r.a = static_cast<std::uint64_t>(off);
  g_rec->log_data(std::move(r), buf, static_cast<std::size_t>(n));
  g_writes.fetch_add(1);
  return static_cast<int>(n);
}

ssize_t op_copy_file_range(const char*, fuse_file_info* fi_in, off_t off_in, const char*, fuse_file_info* fi_out,
                           off_t off_out, size_t len, int flags) {
  Handle* in = H(fi_in);
  Handle* out = H(fi_out);
  if (!in || !out || in->kind != Handle::File || out->kind != Handle::File) return -EBADF;
  if (flags != 0) return -EINVAL;
  len = std::min<size_t>(len, 4u << 20);
  std::vector<char> buf(len);
  Lock lk(g_rec->mu);
  ssize_t n = ::pread(in->fd, buf.data(), len, off_in);
  if (n <= 0) return n < 0 ? neg_errno() : 0;
  ssize_t w = ::pwrite(out->fd, buf.data(), static_cast<size_t>(n), off_out);
  if (w < 0) return neg_errno();
  Record r;
  r.op = Op::write;
  r.id = out->id;
  r.a = static_cast<std::uint64_t>(off_out);
  g_rec->log_data(std::move(r), buf.data(), static_cast<std::size_t>(w));
  g_writes.fetch_add(1);
  return w;
}


int op_release(const char*, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (h && h->fd >= 0) ::close(h->fd);
  delete h;
  return 0;
}

int op_fsync(const char*, int datasync, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind != Handle::File) return 0;
  Lock lk(g_rec->mu);
  log_rec(Op::fsync, h->id, 0, {}, datasync ? 1 : 0);
  g_syncs.fetch_add(1);
  return 0;
}

int op_opendir(const char* path, fuse_file_info* fi) {
  if (is_ctl(path)) return -ENOTDIR;
  int fd = ::openat(pt::root.fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return neg_errno();
  DIR* d = ::fdopendir(fd);
  if (!d) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  auto* h = new Handle(Handle::Dir);
  h->dir = d;
  h->root = std::strcmp(rel(path), ".") == 0;
  {
    Lock lk(g_rec->mu);
    h->id = id_of_fd(fd, rel(path));
  }
  fi->fh = reinterpret_cast<uintptr_t>(h);
  return 0;
}

int op_readdir(const char*, void* buf, fuse_fill_dir_t filler, off_t, fuse_file_info* fi, fuse_readdir_flags) {
  Handle* h = H(fi);
  if (!h || h->kind != Handle::Dir) return -EBADF;
  return pt::readdir(h->dir, h->root, kCtlName, buf, filler);
}

int op_releasedir(const char*, fuse_file_info* fi) {
  if (Handle* h = H(fi)) {
    if (h->dir) ::closedir(h->dir);
    delete h;
  }
  return 0;
}

int op_fsyncdir(const char*, int, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h || h->kind != Handle::Dir) return 0;
  Lock lk(g_rec->mu);
  log_rec(Op::fsyncdir, h->id);
  g_syncs.fetch_add(1);
  return 0;
}

int op_fallocate(const char*, int mode, off_t off, off_t len, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind != Handle::File) return h->kind == Handle::Ctl ? -EOPNOTSUPP : -EISDIR;
  Lock lk(g_rec->mu);
  if (::fallocate(h->fd, mode, off, len) != 0) return neg_errno();
  log_rec(Op::fallocate, h->id, 0, {}, static_cast<std::uint64_t>(mode), static_cast<std::uint64_t>(off),
          static_cast<std::uint64_t>(len));
  return 0;
}

off_t op_lseek(const char*, off_t off, int whence, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h || h->kind != Handle::File) return -EBADF;
  off_t r = ::lseek(h->fd, off, whence);
  return r < 0 ? neg_errno() : r;
}

void op_destroy(void*) {
  Lock lk(g_rec->mu);
  log_rec(Op::end, 0);
  g_rec->writer().flush();
}

int usage() {
  std::fprintf(stderr, "usage: fm_recordfs ROOT MOUNTPOINT --log FILE [-f] [-d] [-o opts]\n");
  return 2;
}

}  // namespace

int main(int argc, char* argv[]) {
  pt::Args args = pt::parse_args(argc, argv, {"--log"});
  const char* log = args.values.count("--log") ? args.values["--log"] : nullptr;
  if (args.help || !args.backing || !log) return usage();
  if (!pt::open_root("fm_recordfs", args.backing)) return 1;
  try {
    g_rec = std::make_unique<fmtest::Recorder>(pt::root.fd, log);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm_recordfs: %s\n", e.what());
    return 1;
  }

  static fuse_operations ops{};
  pt::set_path_ops(ops, kCtlPath);
  ops.getattr = op_getattr;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.chmod = op_chmod;
  ops.chown = op_chown;
  ops.truncate = op_truncate;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = [](const char*, fuse_file_info*) { return 0; };
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.init = op_init;
  ops.destroy = op_destroy;
  ops.create = op_create;
  ops.utimens = op_utimens;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  ops.copy_file_range = op_copy_file_range;

  pt::Session s;
  s.name = "fm_recordfs";
  s.extra_args.push_back("-osubtype=fm_recordfs");
  s.default_threads = 64;
  s.usage = [] { usage(); };
  const int res = pt::serve(args, ops, s);
  g_rec.reset();  // flushes the log
  return res;
}
