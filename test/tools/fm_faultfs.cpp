// fm_faultfs — a test-only FUSE 3 pass-through of a backing directory that injects faults
// (latency, errors, ENOSPC after N bytes, short writes, hung writes), switched at run time.
// Used by the integration tests as a slow or failing SECONDARY.
//
// Usage: fm_faultfs BACKING_DIR MOUNTPOINT [-f] [-d] [-s] [-o opts]
//   Any libfuse option works (-o max_threads=N, the default here is 256, so that hung writes
//   never starve the control file; -o allow_other ...).
//   Send SIGTERM/SIGINT (or fusermount3 -u MOUNTPOINT) to stop it.
//
// Control file MOUNTPOINT/.faultfs (not listed by readdir):
//   reading it gives "key=value" lines, settings then counters;
//   writing "key=value" tokens (separated by newlines, spaces or ';') sets them. Each write(2)
//   is parsed on its own; an unknown key or a bad value fails that write with EINVAL and
//   applies nothing of it.
//
//   settings (0 = off)
//     delay_ms_write   sleep this long in every write and fallocate (concurrent ops overlap)
//     delay_ms_read    ... in every read
//     delay_ms_fsync   ... in every fsync / fdatasync
//     fail_write       errno (number or name, e.g. 5 or EIO, 28 or ENOSPC) for every write
//                      and fallocate
//     fail_read        errno for every read
//     fail_fsync       errno for every fsync / fdatasync
//     fail_after_bytes writes succeed for this many more bytes (counted from the moment it is
//                      set); the write that crosses the limit is short, later ones fail with
//                      fail_after_errno
//     fail_after_errno errno for fail_after_bytes (default 28, ENOSPC)
//     short_write      write at most this many bytes per write request (a short write)
//     hang             1: every write and fallocate blocks until hang is set back to 0
//                      (a blocked request still ends with EINTR if the caller is killed)
//   counters (read-only; "reset=1" zeroes them)
//     reads writes fsyncs fallocates bytes_read bytes_written injected (faults returned)
//     hung (requests blocked by hang right now) inflight_writes inflight_writes_peak
//     fail_after_left (bytes left before fail_after_bytes trips)
//
//   Every setting can also be given at start as an environment variable FAULTFS_<KEY in
//   upper case>, e.g. FAULTFS_DELAY_MS_WRITE=5.
//
// Faults apply only to regular files opened through the mount (read, write, fsync,
// fdatasync, fallocate); directory and metadata operations pass straight through.
//
// Regular files are opened with direct_io (every read/write reaches this process, so
// faults and counters are exact). The kernel serializes direct writes to one inode unless
// the open reply carries FOPEN_PARALLEL_DIRECT_WRITES, which libfuse 3.14 cannot set; this
// program therefore installs a fuse_custom_io shim that adds that flag to OPEN/CREATE
// replies, so concurrent writes to one file overlap (as on a network with latency).
// Environment: FAULTFS_CACHED=1 disables direct_io (page cache; faults then hit writeback),
// FAULTFS_PARALLEL=0 disables the shim. O_DIRECT is not passed on to the backing file.

#include "test/tools/passthrough.hpp"  // first: it sets FUSE_USE_VERSION
#include "fusemirror/parallel_writes.hpp"
#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// ------------------------------------------------------------------ settings & counters

using Atom = std::atomic<long long>;

struct Knobs {
  Atom delay_ms_write{0}, delay_ms_read{0}, delay_ms_fsync{0};
  Atom fail_write{0}, fail_read{0}, fail_fsync{0};
  Atom fail_after_bytes{0}, fail_after_errno{ENOSPC}, short_write{0}, hang{0};
  Atom reads{0}, writes{0}, fsyncs{0}, fallocates{0}, bytes_read{0}, bytes_written{0};
  Atom injected{0}, hung{0}, inflight_writes{0}, inflight_writes_peak{0};
  Atom fab_written{0};  // bytes written since fail_after_bytes was set
};
Knobs K;

enum class KeyKind { Millis, Errno, Bytes, Bool };
struct Setting {
  const char* name;
  Atom Knobs::*field;
  KeyKind kind;
};
constexpr Setting kSettings[] = {
    {"delay_ms_write", &Knobs::delay_ms_write, KeyKind::Millis},
    {"delay_ms_read", &Knobs::delay_ms_read, KeyKind::Millis},
    {"delay_ms_fsync", &Knobs::delay_ms_fsync, KeyKind::Millis},
    {"fail_write", &Knobs::fail_write, KeyKind::Errno},
    {"fail_read", &Knobs::fail_read, KeyKind::Errno},
    {"fail_fsync", &Knobs::fail_fsync, KeyKind::Errno},
    {"fail_after_bytes", &Knobs::fail_after_bytes, KeyKind::Bytes},
    {"fail_after_errno", &Knobs::fail_after_errno, KeyKind::Errno},
    {"short_write", &Knobs::short_write, KeyKind::Bytes},
    {"hang", &Knobs::hang, KeyKind::Bool},
};
struct Counter {
  const char* name;
  Atom Knobs::*field;
};
constexpr Counter kCounters[] = {
    {"reads", &Knobs::reads},
    {"writes", &Knobs::writes},
    {"fsyncs", &Knobs::fsyncs},
    {"fallocates", &Knobs::fallocates},
    {"bytes_read", &Knobs::bytes_read},
    {"bytes_written", &Knobs::bytes_written},
    {"injected", &Knobs::injected},
    {"hung", &Knobs::hung},
    {"inflight_writes", &Knobs::inflight_writes},
    {"inflight_writes_peak", &Knobs::inflight_writes_peak},
};

struct ErrnoName {
  const char* name;
  int value;
};
constexpr ErrnoName kErrnoNames[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC},     {"EDQUOT", EDQUOT}, {"EROFS", EROFS},
    {"EFBIG", EFBIG},   {"EAGAIN", EAGAIN},     {"EINTR", EINTR},   {"ENODEV", ENODEV},
    {"ENXIO", ENXIO},   {"ETIMEDOUT", ETIMEDOUT}, {"ENOTCONN", ENOTCONN}, {"ESTALE", ESTALE},
    {"EPERM", EPERM},   {"EACCES", EACCES},     {"EBADF", EBADF},   {"EINVAL", EINVAL},
    {"ENOMEM", ENOMEM}, {"EBUSY", EBUSY},       {"ENOTSUP", ENOTSUP}, {"EOPNOTSUPP", EOPNOTSUPP},
};

std::mutex g_set_mu;  // serializes control-file writes (so one write applies atomically)

bool parse_number(std::string_view s, long long& out) {
  if (s.empty() || s.size() > 18) return false;
  long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

bool parse_value(KeyKind kind, std::string_view s, long long& out) {
  if (kind == KeyKind::Errno) {
    for (const auto& e : kErrnoNames)
      if (s == e.name) return out = e.value, true;
    return parse_number(s, out) && out < 4096;
  }
  if (kind == KeyKind::Bytes && !s.empty()) {  // allow K/M/G suffixes (binary)
    long long mult = 1;
    switch (std::toupper(static_cast<unsigned char>(s.back()))) {
      case 'K': mult = 1LL << 10; break;
      case 'M': mult = 1LL << 20; break;
      case 'G': mult = 1LL << 30; break;
      default: break;
    }
    if (mult != 1) s.remove_suffix(1);
    if (!parse_number(s, out) || out > (LLONG_MAX / mult)) return false;
    out *= mult;
    return true;
  }
  if (kind == KeyKind::Bool) return parse_number(s, out) && out <= 1;
  return parse_number(s, out) && out <= 3600 * 1000;
}

void set_value(const Setting& s, long long v) {
  if (s.field == &Knobs::fail_after_bytes) {
    K.fab_written.store(0);
    K.fail_after_bytes.store(v);
  } else {
    (K.*(s.field)).store(v);
  }
}

void reset_counters() {
  for (const auto& c : kCounters) {
    if (c.field == &Knobs::hung || c.field == &Knobs::inflight_writes) continue;  // gauges
    (K.*(c.field)).store(0);
  }
  K.inflight_writes_peak.store(K.inflight_writes.load());
}

// Applies "key=value" tokens; all or nothing. Returns 0 or -EINVAL (msg says why).
int apply_control(std::string_view text, std::string& msg) {
  std::vector<std::pair<const Setting*, long long>> todo;
  bool reset = false;
  size_t i = 0;
  while (i < text.size()) {
    auto is_sep = [](char c) { return c == '\n' || c == '\r' || c == ' ' || c == '\t' || c == ';' || c == '\0'; };
    while (i < text.size() && is_sep(text[i])) ++i;
    if (i >= text.size()) break;
    if (text[i] == '#') {  // comment to end of line
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !is_sep(text[j])) ++j;
    std::string_view tok = text.substr(i, j - i);
    i = j;
    size_t eq = tok.find('=');
    if (eq == std::string_view::npos) return msg = "no '=' in '" + std::string(tok) + "'", -EINVAL;
    std::string_view key = tok.substr(0, eq), val = tok.substr(eq + 1);
    if (key == "reset") {
      if (val != "1" && val != "0") return msg = "reset wants 1", -EINVAL;
      reset = reset || val == "1";
      continue;
    }
    const Setting* found = nullptr;
    for (const auto& s : kSettings)
      if (key == s.name) found = &s;
    long long v = 0;
    if (!found) return msg = "unknown key '" + std::string(key) + "'", -EINVAL;
    if (!parse_value(found->kind, val, v)) return msg = "bad value in '" + std::string(tok) + "'", -EINVAL;
    todo.emplace_back(found, v);
  }
  // reset first, so "reset=1 fail_after_bytes=N" and "fail_after_bytes=N reset=1" agree
  if (reset) reset_counters();
  for (auto& [s, v] : todo) set_value(*s, v);
  return 0;
}

std::string control_text() {
  std::string out;
  char line[128];
  for (const auto& s : kSettings) {
    std::snprintf(line, sizeof line, "%s=%lld\n", s.name, (K.*(s.field)).load());
    out += line;
  }
  for (const auto& c : kCounters) {
    std::snprintf(line, sizeof line, "%s=%lld\n", c.name, (K.*(c.field)).load());
    out += line;
  }
  long long lim = K.fail_after_bytes.load();
  std::snprintf(line, sizeof line, "fail_after_left=%lld\n",
                lim > 0 ? std::max(0LL, lim - K.fab_written.load()) : 0LL);
  out += line;
  return out;
}

void load_env() {
  std::string msg;
  for (const auto& s : kSettings) {
    std::string env = "FAULTFS_";
    for (const char* p = s.name; *p; ++p) env += static_cast<char>(std::toupper(*p));
    const char* v = std::getenv(env.c_str());
    if (!v || !*v) continue;
    long long n = 0;
    if (!parse_value(s.kind, v, n)) {
      std::fprintf(stderr, "fm_faultfs: bad value %s=%s\n", env.c_str(), v);
      std::exit(2);
    }
    set_value(s, n);
  }
}

// ------------------------------------------------------------------ state

namespace pt = fmtest::pt;
using pt::neg_errno;
using pt::rel;
struct fuse* g_fuse = nullptr;
bool g_cached = false;
const timespec g_start = [] {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return t;
}();

constexpr const char* kCtlPath = "/.faultfs";
constexpr const char* kCtlName = ".faultfs";

struct Handle {
  enum Kind { File, Ctl, Dir } kind;
  explicit Handle(Kind k) : kind(k) {}
  int fd = -1;
  bool reg = false;  // a regular file: faults apply
  DIR* dir = nullptr;
  bool root = false;  // the mount root directory
  std::mutex mu;      // Ctl: guards text
  std::string text;
};

Handle* H(const fuse_file_info* fi) {
  return fi ? reinterpret_cast<Handle*>(static_cast<uintptr_t>(fi->fh)) : nullptr;
}

bool is_ctl(const char* path) { return path && std::strcmp(path, kCtlPath) == 0; }


// The worker threads are cancelled (pthread_cancel) when the session loop ends; while this
// process sleeps in a fault it keeps cancellation off and polls for the end instead.
struct NoCancel {
  int old = 0;
  NoCancel() { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old); }
  ~NoCancel() { pthread_setcancelstate(old, nullptr); }
};

bool session_over() { return g_fuse && fuse_session_exited(fuse_get_session(g_fuse)); }

// Sleeps ms; false if the request was interrupted or the session ended meanwhile.
bool sleep_ms(long long ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    if (now >= end) return true;
    if (fuse_interrupted() || session_over()) return false;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(end - now, std::chrono::milliseconds(20)));
  }
}

// hang + write delay; 0 to go on, else -errno
int write_gate() {
  if (K.hang.load()) {
    K.hung.fetch_add(1);
    while (K.hang.load()) {
      if (fuse_interrupted() || session_over()) {
        K.hung.fetch_sub(1);
        return -EINTR;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    K.hung.fetch_sub(1);
  }
  if (long long d = K.delay_ms_write.load(); d > 0 && !sleep_ms(d)) return -EINTR;
  if (long long e = K.fail_write.load(); e > 0) {
    K.injected.fetch_add(1);
    return static_cast<int>(-e);
  }
  return 0;
}

void ctl_attr(struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_mode = S_IFREG | 0600;
  st->st_nlink = 1;
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_size = static_cast<off_t>(control_text().size());
  st->st_blksize = 4096;
  st->st_ino = 0x7fa17f5;
  st->st_atim = st->st_mtim = st->st_ctim = g_start;
}

// ------------------------------------------------------------------ operations

void* op_init(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->hard_remove = 1;
  cfg->nullpath_ok = 1;
  cfg->use_ino = 1;
  cfg->entry_timeout = 0;  // the tests change the backing directory behind our back
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 0;  // decided per open
  cfg->kernel_cache = 0;
  conn->max_write = 1u << 20;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  return nullptr;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (Handle* h = H(fi)) {
    if (h->kind == Handle::Ctl) return ctl_attr(st), 0;
    int fd = h->kind == Handle::Dir ? dirfd(h->dir) : h->fd;
    return fstat(fd, st) == 0 ? 0 : neg_errno();
  }
  if (!path) return -ESTALE;
  if (is_ctl(path)) return ctl_attr(st), 0;
  return fstatat(pt::root.fd, rel(path), st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : neg_errno();
}

int op_mkdir(const char* path, mode_t mode) {
  if (is_ctl(path)) return -EEXIST;
  return mkdirat(pt::root.fd, rel(path), mode) == 0 ? 0 : neg_errno();
}

int op_unlink(const char* path) {
  if (is_ctl(path)) return -EPERM;
  return unlinkat(pt::root.fd, rel(path), 0) == 0 ? 0 : neg_errno();
}

int op_rmdir(const char* path) {
  if (is_ctl(path)) return -ENOTDIR;
  return unlinkat(pt::root.fd, rel(path), AT_REMOVEDIR) == 0 ? 0 : neg_errno();
}

int op_symlink(const char* target, const char* link) {
  if (is_ctl(link)) return -EEXIST;
  return symlinkat(target, pt::root.fd, rel(link)) == 0 ? 0 : neg_errno();
}

int op_rename(const char* from, const char* to, unsigned int flags) {
  if (is_ctl(from) || is_ctl(to)) return -EPERM;
  return renameat2(pt::root.fd, rel(from), pt::root.fd, rel(to), flags) == 0 ? 0 : neg_errno();
}

int op_link(const char* from, const char* to) {
  if (is_ctl(from) || is_ctl(to)) return -EPERM;
  return linkat(pt::root.fd, rel(from), pt::root.fd, rel(to), 0) == 0 ? 0 : neg_errno();
}

int op_chmod(const char* path, mode_t mode, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return -EPERM;
  if (h && h->kind == Handle::File) return fchmod(h->fd, mode) == 0 ? 0 : neg_errno();
  if (!path) return -ESTALE;
  return fchmodat(pt::root.fd, rel(path), mode, 0) == 0 ? 0 : neg_errno();
}

int op_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return -EPERM;
  if (h && h->kind == Handle::File) return fchown(h->fd, uid, gid) == 0 ? 0 : neg_errno();
  if (!path) return -ESTALE;
  return fchownat(pt::root.fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : neg_errno();
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return 0;  // "echo x > .faultfs"
  if (h && h->kind == Handle::File) return ftruncate(h->fd, size) == 0 ? 0 : neg_errno();
  if (!path) return -ESTALE;
  int fd = openat(pt::root.fd, rel(path), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return neg_errno();
  int rc = ftruncate(fd, size) == 0 ? 0 : neg_errno();
  close(fd);
  return rc;
}

int op_utimens(const char* path, const timespec tv[2], fuse_file_info* fi) {
  Handle* h = H(fi);
  if (is_ctl(path) || (h && h->kind == Handle::Ctl)) return 0;
  if (h && h->kind == Handle::File) return futimens(h->fd, tv) == 0 ? 0 : neg_errno();
  if (!path) return -ESTALE;
  return utimensat(pt::root.fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : neg_errno();
}

int open_ctl(fuse_file_info* fi) {
  auto* h = new Handle(Handle::Ctl);
  h->text = control_text();
  fi->fh = reinterpret_cast<uintptr_t>(h);
  fi->direct_io = 1;
  fi->keep_cache = 0;
  return 0;
}

int finish_open(int fd, fuse_file_info* fi) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  auto* h = new Handle(Handle::File);
  h->fd = fd;
  h->reg = S_ISREG(st.st_mode);
  fi->fh = reinterpret_cast<uintptr_t>(h);
  fi->direct_io = g_cached ? 0 : 1;
  fi->keep_cache = 0;
  return 0;
}

// O_DIRECT is not passed on: libfuse hands write data at an unaligned address, which the
// backing file system would refuse (EINVAL). The backing file goes through its page cache;
// fsync still makes it durable.
int backing_flags(int flags) { return (flags & ~O_DIRECT) | O_CLOEXEC; }

int op_open(const char* path, fuse_file_info* fi) {
  if (is_ctl(path)) return open_ctl(fi);
  int fd = openat(pt::root.fd, rel(path), backing_flags(fi->flags) & ~(O_CREAT | O_EXCL));
  if (fd < 0) return neg_errno();
  return finish_open(fd, fi);
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
  if (is_ctl(path)) {
    if (fi->flags & O_EXCL) return -EEXIST;
    return open_ctl(fi);
  }
  int fd = openat(pt::root.fd, rel(path), backing_flags(fi->flags) | O_CREAT, mode);
  if (fd < 0) return neg_errno();
  return finish_open(fd, fi);
}

int op_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind == Handle::Ctl) {
    std::lock_guard lk(h->mu);
    if (off == 0) h->text = control_text();
    if (off >= static_cast<off_t>(h->text.size())) return 0;
    size_t n = std::min(size, h->text.size() - static_cast<size_t>(off));
    std::memcpy(buf, h->text.data() + off, n);
    return static_cast<int>(n);
  }
  if (h->kind != Handle::File) return -EISDIR;
  if (h->reg) {
    NoCancel nc;
    K.reads.fetch_add(1);
    if (long long d = K.delay_ms_read.load(); d > 0 && !sleep_ms(d)) return -EINTR;
    if (long long e = K.fail_read.load(); e > 0) {
      K.injected.fetch_add(1);
      return static_cast<int>(-e);
    }
  }
  ssize_t n = pread(h->fd, buf, size, off);
  if (n < 0) return neg_errno();
  if (h->reg) K.bytes_read.fetch_add(n);
  return static_cast<int>(n);
}

int do_write(Handle* h, const char* buf, size_t size, off_t off) {
  if (!h->reg) {
    ssize_t n = pwrite(h->fd, buf, size, off);
    return n < 0 ? neg_errno() : static_cast<int>(n);
  }
  NoCancel nc;
  K.writes.fetch_add(1);
  if (int rc = write_gate(); rc != 0) return rc;
  long long want = static_cast<long long>(size);
  if (long long sw = K.short_write.load(); sw > 0 && want > sw) want = sw;
  long long reserved = 0;
  if (long long lim = K.fail_after_bytes.load(); lim > 0 && want > 0) {
    long long cur = K.fab_written.load();
    for (;;) {
      if (cur >= lim) {
        K.injected.fetch_add(1);
        long long e = K.fail_after_errno.load();
        return static_cast<int>(e > 0 ? -e : -ENOSPC);
      }
      long long take = std::min(want, lim - cur);
      if (K.fab_written.compare_exchange_weak(cur, cur + take)) {
        reserved = take;
        want = take;
        break;
      }
    }
  }
  ssize_t n = pwrite(h->fd, buf, static_cast<size_t>(want), off);
  int err = errno;
  if (reserved > 0 && n < reserved) K.fab_written.fetch_sub(reserved - std::max<ssize_t>(n, 0));
  if (n < 0) return -err;
  K.bytes_written.fetch_add(n);
  return static_cast<int>(n);
}

int op_write(const char* path, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind == Handle::Ctl) {
    std::string msg;
    std::lock_guard lk(g_set_mu);
    int rc = apply_control(std::string_view(buf, size), msg);
    if (rc != 0) {
      std::fprintf(stderr, "fm_faultfs: control write rejected: %s\n", msg.c_str());
      return rc;
    }
    return static_cast<int>(size);
  }
  if (h->kind != Handle::File) return -EISDIR;
  long long inflight = K.inflight_writes.fetch_add(1) + 1;
  long long peak = K.inflight_writes_peak.load();
  while (inflight > peak && !K.inflight_writes_peak.compare_exchange_weak(peak, inflight)) {
  }
  int rc = do_write(h, buf, size, off);
  K.inflight_writes.fetch_sub(1);
  return rc;
}

int op_flush(const char* path, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h || h->kind != Handle::File) return 0;
  // like close(2) on the backing file: reports deferred errors of some file systems
  int fd = dup(h->fd);
  if (fd < 0) return neg_errno();
  return close(fd) == 0 ? 0 : neg_errno();
}

int op_release(const char* path, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return 0;
  if (h->fd >= 0) close(h->fd);
  delete h;
  return 0;
}

int op_fsync(const char* path, int datasync, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind != Handle::File) return 0;
  if (h->reg) {
    NoCancel nc;
    K.fsyncs.fetch_add(1);
    if (long long d = K.delay_ms_fsync.load(); d > 0 && !sleep_ms(d)) return -EINTR;
    if (long long e = K.fail_fsync.load(); e > 0) {
      K.injected.fetch_add(1);
      return static_cast<int>(-e);
    }
  }
  int rc = datasync ? fdatasync(h->fd) : fsync(h->fd);
  return rc == 0 ? 0 : neg_errno();
}

int op_opendir(const char* path, fuse_file_info* fi) {
  if (is_ctl(path)) return -ENOTDIR;
  int fd = openat(pt::root.fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return neg_errno();
  DIR* d = fdopendir(fd);
  if (!d) {
    int e = errno;
    close(fd);
    return -e;
  }
  auto* h = new Handle(Handle::Dir);
  h->dir = d;
  h->root = std::strcmp(rel(path), ".") == 0;
  fi->fh = reinterpret_cast<uintptr_t>(h);
  return 0;
}

int op_readdir(const char* path, void* buf, fuse_fill_dir_t filler, off_t off, fuse_file_info* fi,
               fuse_readdir_flags flags) {
  Handle* h = H(fi);
  if (!h || h->kind != Handle::Dir) return -EBADF;
  return pt::readdir(h->dir, h->root, kCtlName, buf, filler);
}

int op_releasedir(const char* path, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (h) {
    if (h->dir) closedir(h->dir);
    delete h;
  }
  return 0;
}

int op_fsyncdir(const char* path, int datasync, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h || h->kind != Handle::Dir) return 0;
  int fd = dirfd(h->dir);
  return (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : neg_errno();
}

int op_fallocate(const char* path, int mode, off_t off, off_t len, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind == Handle::Ctl) return -EOPNOTSUPP;
  if (h->kind != Handle::File) return -EISDIR;
  if (h->reg) {
    NoCancel nc;
    K.fallocates.fetch_add(1);
    if (int rc = write_gate(); rc != 0) return rc;
  }
  return fallocate(h->fd, mode, off, len) == 0 ? 0 : neg_errno();
}

off_t op_lseek(const char* path, off_t off, int whence, fuse_file_info* fi) {
  Handle* h = H(fi);
  if (!h) return -EBADF;
  if (h->kind == Handle::Ctl) {
    off_t size = static_cast<off_t>(control_text().size());
    if (whence == SEEK_DATA) return off < size ? off : -ENXIO;
    if (whence == SEEK_HOLE) return off < size ? size : -ENXIO;
    return -EINVAL;
  }
  if (h->kind != Handle::File) return -EISDIR;
  off_t r = lseek(h->fd, off, whence);
  return r < 0 ? neg_errno() : r;
}

// ------------------------------------------------------------------ main

int usage() {
  std::fprintf(stderr,
               "usage: fm_faultfs BACKING_DIR MOUNTPOINT [-f] [-d] [-s] [-o opts]\n"
               "control: MOUNTPOINT/.faultfs (read: settings and counters; write key=value)\n");
  return 2;
}

}  // namespace

int main(int argc, char* argv[]) {
  pt::Args args = pt::parse_args(argc, argv, {});
  if (args.help) usage();
  if (!args.backing) return usage();
  if (!pt::open_root("fm_faultfs", args.backing)) return 1;
  load_env();
  const char* cached = std::getenv("FAULTFS_CACHED");
  g_cached = cached && std::strcmp(cached, "1") == 0;
  const char* par = std::getenv("FAULTFS_PARALLEL");
  const bool parallel = !(par && std::strcmp(par, "0") == 0);

  static fuse_operations ops{};
  pt::set_path_ops(ops, kCtlPath);
  ops.getattr = op_getattr;
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
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.init = op_init;
  ops.create = op_create;
  ops.utimens = op_utimens;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;

  pt::Session s;
  s.name = "fm_faultfs";
  s.extra_args.push_back("-osubtype=fm_faultfs");
  if (pt::root.path.find_first_of(",\\ ") == std::string::npos) s.extra_args.push_back("-ofsname=faultfs:" + pt::root.path);
  s.default_threads = 256;  // libfuse's default of 10 would cap the overlap of delayed requests
  s.usage = [] { usage(); };
  s.handle = &g_fuse;
  s.mounted = [parallel](struct fuse* f) {
    // The same shim fusemirror uses (fusemirror/parallel_writes.hpp).
    if (parallel && !g_cached && !fusemirror::fuse::enable_parallel_direct_writes(fuse_get_session(f)))
      std::fprintf(stderr, "fm_faultfs: custom io failed; direct writes to one file serialize\n");
  };
  return pt::serve(args, ops, s);
}
