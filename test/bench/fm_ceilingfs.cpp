// fm_ceilingfs — the benchmark's FUSE ceiling: the least a FUSE file system can do to serve
// one image file. It is configuration (f) of test/bench/run (docs/performance.md).
//
// Usage: fm_ceilingfs BACKING_FILE MOUNTPOINT [--threads N] [--cached] [--direct-read]
//                     [--mirror SECOND_FILE [--mirror-writes auto|buffered|direct]]
//   MOUNTPOINT/img is BACKING_FILE. Runs in the foreground until unmounted
//   (fusermount3 -u MOUNTPOINT) or sent SIGTERM/SIGINT.
//
// What it is: libfuse's low-level API (no path lookup: one inode, number 2), one backing
// descriptor opened once, pread/pwrite straight from and into the request buffer, the same
// multi-threaded loop fusemirror runs (64 threads at most, 8 idle), the same open flags
// (FOPEN_DIRECT_IO with the parallel-direct-writes shim, so a loop device's queue of writes
// reaches it concurrently), and fdatasync for FUSE_FSYNC. Nothing else: no bitmap, no
// second leg, no locks, no allocation per request beyond libfuse's own. Whatever a FUSE
// mirror costs above this is the mirror's; whatever this costs above the plain file is
// FUSE's. --cached drops FOPEN_DIRECT_IO (page cache in the kernel), for comparison with a
// --page-cache mount.
//
// --mirror SECOND_FILE makes it the least a FUSE *mirror* can do, configuration (h): every
// write goes to both files, with the cheapest leg writes measured here (docs/performance.md
// "The hot path against (f)"): buffered and one after the other while the file system has
// one write in hand, both at once and O_DIRECT through io_uring (utils/pwrite_pair) when
// two or more are in flight and the write is 4 KiB-aligned — fusemirror's own rule
// (`direct_write_inflight` 2) without its size limit, range locks, bitmap or hashes.
// FUSE_FSYNC flushes both files at once. Reads come from BACKING_FILE only.
// --mirror-writes buffered or direct takes one way for every write (aligned ones, for
// direct), to measure each against the rule above (auto, the default).
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fusemirror/parallel_writes.hpp"
#include "utils/aligned_buffer.hpp"
#include "utils/uring.hpp"

namespace {

constexpr fuse_ino_t kImgIno = 2;
constexpr const char* kImgName = "img";

int g_fd = -1;
bool g_cached = false;
int g_direct_fd = -1;  // --direct-read
int g_fd2 = -1;                           // --mirror: the second file, buffered
int g_dfd[2] = {-1, -1};                  // --mirror: both files with O_DIRECT
std::atomic<unsigned> g_inflight{0};      // --mirror: writes in hand
enum class Legs { kAuto, kBuffered, kDirect } g_legs = Legs::kAuto;  // --mirror-writes

bool stat_of(fuse_ino_t ino, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  if (ino == FUSE_ROOT_ID) {
    st->st_ino = ino;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return true;
  }
  if (ino != kImgIno) return false;
  if (::fstat(g_fd, st) != 0) return false;
  st->st_ino = kImgIno;
  return true;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e{};
  if (parent != FUSE_ROOT_ID || std::strcmp(name, kImgName) != 0 || !stat_of(kImgIno, &e.attr)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  e.ino = kImgIno;
  e.attr_timeout = 1.0;
  e.entry_timeout = 1.0;
  fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat st;
  if (!stat_of(ino, &st)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_reply_attr(req, &st, 1.0);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  if (ino != kImgIno) {
    fuse_reply_err(req, EPERM);
    return;
  }
  if ((to_set & FUSE_SET_ATTR_SIZE) && ::ftruncate(g_fd, attr->st_size) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  struct stat st;
  stat_of(ino, &st);
  fuse_reply_attr(req, &st, 1.0);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kImgIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  fi->direct_io = g_cached ? 0 : 1;
  fi->keep_cache = g_cached ? 1 : 0;
  fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  // One buffer per thread, grown to the largest request seen (max_read is 128 KiB by
  // default, 1 MiB with big writes); no allocation per request once warm.
  thread_local std::vector<char> buf;
  if (buf.size() < size + 4096) buf.resize(size + 4096);
  // --direct-read: aligned requests are read with O_DIRECT into a 4 KiB-aligned buffer
  // (no page cache on the backing file's read side), the others buffered.
  char* p = buf.data() + (4096 - reinterpret_cast<std::uintptr_t>(buf.data()) % 4096) % 4096;
  const bool direct = g_direct_fd >= 0 && off % 4096 == 0 && size % 4096 == 0;
  const ssize_t n = ::pread(direct ? g_direct_fd : g_fd, p, size, off);
  if (n < 0) {
    fuse_reply_err(req, errno);
    return;
  }
  fuse_reply_buf(req, p, static_cast<size_t>(n));
}

int write_all(int fd, const char* data, size_t size, off_t off) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<size_t>(n);
  }
  return 0;
}

// A mirror's write (--mirror, see the head of the file).
int mirror_write(const char* data, size_t size, off_t off) {
  const unsigned inflight = g_inflight.fetch_add(1, std::memory_order_relaxed) + 1;
  int err = 0;
  // libfuse places a write's data 80 bytes into its receive buffer: O_DIRECT needs a
  // 4 KiB-aligned copy (one per thread, kept), as fusemirror makes.
  thread_local fusemirror::utils::AlignedBuffer aligned;
  const bool direct = g_legs == Legs::kDirect || (g_legs == Legs::kAuto && inflight >= 2);
  std::byte* p = nullptr;
  if (direct && off % 4096 == 0 && size % 4096 == 0 && (p = aligned.get(size)) != nullptr) {
    std::memcpy(p, data, size);
    const auto r = fusemirror::utils::pwrite_pair(g_dfd[0], g_dfd[1], std::span<const std::byte>(p, size),
                                                  static_cast<std::uint64_t>(off));
    err = r.ec[0] ? r.ec[0].value() : r.ec[1].value();
  } else if ((err = write_all(g_fd, data, size, off)) == 0) {
    err = write_all(g_fd2, data, size, off);
  }
  g_inflight.fetch_sub(1, std::memory_order_relaxed);
  return err;
}

void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info*) {
  const int err = g_fd2 >= 0 ? mirror_write(data, size, off) : write_all(g_fd, data, size, off);
  if (err != 0)
    fuse_reply_err(req, err);
  else
    fuse_reply_write(req, size);
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  if (g_fd2 < 0) {
    fuse_reply_err(req, ::fdatasync(g_fd) == 0 ? 0 : errno);
    return;
  }
  int err2 = 0;
  std::thread second([&err2] { err2 = ::fdatasync(g_fd2) == 0 ? 0 : errno; });
  const int err = ::fdatasync(g_fd) == 0 ? 0 : errno;
  second.join();
  fuse_reply_err(req, err != 0 ? err : err2);
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  fuse_reply_open(req, fi);
}

void op_readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  std::vector<char> buf(size);
  size_t used = 0;
  const char* names[] = {".", "..", kImgName};
  const fuse_ino_t inos[] = {FUSE_ROOT_ID, FUSE_ROOT_ID, kImgIno};
  for (off_t i = off; i < 3; ++i) {
    struct stat st{};
    st.st_ino = inos[i];
    st.st_mode = i == 2 ? S_IFREG : S_IFDIR;
    const size_t need = fuse_add_direntry(req, buf.data() + used, size - used, names[i], &st, i + 1);
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void op_init(void*, fuse_conn_info* conn) {
  // The same connection settings as fusemirror's mount (fusemirror/fuse_ops.cpp op_init).
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
}

int usage() {
  std::fprintf(stderr, "usage: fm_ceilingfs BACKING_FILE MOUNTPOINT [--threads N] [--cached] [--direct-read]\n"
               "       [--mirror SECOND_FILE [--mirror-writes auto|buffered|direct]]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string backing = argv[1], mountpoint = argv[2];
  unsigned threads = 64;
  bool direct_read = false;
  std::string second;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
      if (threads == 0) return usage();
    } else if (a == "--cached") {
      g_cached = true;
    } else if (a == "--direct-read") {
      direct_read = true;
    } else if (a == "--mirror" && i + 1 < argc) {
      second = argv[++i];
    } else if (a == "--mirror-writes" && i + 1 < argc) {
      const std::string w = argv[++i];
      if (w == "auto") g_legs = Legs::kAuto;
      else if (w == "buffered") g_legs = Legs::kBuffered;
      else if (w == "direct") g_legs = Legs::kDirect;
      else return usage();
    } else {
      std::fprintf(stderr, "fm_ceilingfs: unknown argument '%s'\n", a.c_str());
      return usage();
    }
  }
  g_fd = ::open(backing.c_str(), O_RDWR | O_CLOEXEC);
  if (g_fd < 0) {
    std::fprintf(stderr, "fm_ceilingfs: cannot open %s: %s\n", backing.c_str(), std::strerror(errno));
    return 1;
  }
  if (direct_read && (g_direct_fd = ::open(backing.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC)) < 0) {
    std::fprintf(stderr, "fm_ceilingfs: cannot open %s with O_DIRECT: %s\n", backing.c_str(), std::strerror(errno));
    return 1;
  }

  if (!second.empty()) {
    g_fd2 = ::open(second.c_str(), O_RDWR | O_CLOEXEC);
    g_dfd[0] = ::open(backing.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    g_dfd[1] = ::open(second.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (g_fd2 < 0 || g_dfd[0] < 0 || g_dfd[1] < 0) {
      std::fprintf(stderr, "fm_ceilingfs: cannot open %s and %s (buffered and O_DIRECT): %s\n",
                   backing.c_str(), second.c_str(), std::strerror(errno));
      return 1;
    }
  }

  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.fsync = op_fsync;
  ops.flush = op_flush;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;

  char arg0[] = "fm_ceilingfs", o[] = "-o", opts[] = "default_permissions,fsname=fm_ceilingfs";
  char* fargv[] = {arg0, o, opts, nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, fargv);
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, nullptr);
  if (se == nullptr) return 1;
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, mountpoint.c_str()) == 0) {
      if (!fusemirror::fuse::enable_parallel_direct_writes(se))
        std::fprintf(stderr, "fm_ceilingfs: parallel direct writes unavailable; writes serialise\n");
      fuse_loop_config* lc = fuse_loop_cfg_create();
      fuse_loop_cfg_set_clone_fd(lc, 0);
      fuse_loop_cfg_set_max_threads(lc, threads);
      fuse_loop_cfg_set_idle_threads(lc, 8);
      rc = fuse_session_loop_mt(se, lc) == 0 ? 0 : 1;
      fuse_loop_cfg_destroy(lc);
      fuse_session_unmount(se);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  ::close(g_fd);
  return rc;
}
