#include "fusemirror/parallel_writes.hpp"

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace fusemirror::fuse {
namespace {

// The FUSE wire format (linux/fuse.h), the parts used here.
constexpr std::uint32_t kOpOpen = 14, kOpInit = 26, kOpCreate = 35;
constexpr std::uint32_t kFopenDirectIo = 1u << 0, kFopenParallelDirectWrites = 1u << 6;
constexpr std::uint32_t kInitExt = 1u << 30;  // FUSE_INIT_EXT: flags2 is valid
// FUSE_DIRECT_IO_ALLOW_MMAP is bit 36 of the INIT flags: bit 4 of flags2.
constexpr std::uint32_t kDirectIoAllowMmap2 = 1u << (36 - 32);
// fuse_init_in: u32 major, minor, max_readahead, flags, flags2 (with FUSE_INIT_EXT), ...
constexpr std::size_t kInitInFlags = 12, kInitInFlags2 = 16;
// fuse_init_out: u32 major, minor, max_readahead, flags; u16 max_background,
// congestion_threshold; u32 max_write, time_gran; u16 max_pages, map_alignment; u32 flags2
constexpr std::size_t kInitOutFlags = 12, kInitOutFlags2 = 32;
struct InHeader {
  std::uint32_t len, opcode;
  std::uint64_t unique, nodeid;
  std::uint32_t uid, gid, pid;
  std::uint16_t total_extlen, padding;
};
struct OutHeader {
  std::uint32_t len;
  std::int32_t error;
  std::uint64_t unique;
};
constexpr std::size_t kOpenOutSize = 16;  // fuse_open_out: u64 fh, u32 open_flags, u32 padding

std::mutex g_mu;
std::unordered_set<std::uint64_t> g_open_requests;  // guarded by g_mu: awaiting a reply
std::uint64_t g_init_unique = 0;                    // guarded by g_mu: the INIT awaiting its reply
std::atomic<bool> g_kernel_mmap{false};             // the INIT request offered the flag
std::atomic<bool> g_want_mmap{false};               // allow_direct_io_mmap() was called

std::uint32_t u32_at(const void* base, std::size_t off) {
  std::uint32_t v;
  std::memcpy(&v, static_cast<const char*>(base) + off, sizeof v);
  return v;
}

ssize_t shim_read(int fd, void* buf, size_t len, void*) {
  const ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(InHeader))) {
    InHeader in;
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode == kOpOpen || in.opcode == kOpCreate) {
      std::lock_guard lk(g_mu);
      g_open_requests.insert(in.unique);
    } else if (in.opcode == kOpInit &&
               static_cast<std::size_t>(n) >= sizeof(InHeader) + kInitInFlags2 + 4) {
      const char* arg = static_cast<const char*>(buf) + sizeof(InHeader);
      const bool ext = u32_at(arg, kInitInFlags) & kInitExt;
      g_kernel_mmap = ext && (u32_at(arg, kInitInFlags2) & kDirectIoAllowMmap2);
      std::lock_guard lk(g_mu);
      g_init_unique = in.unique;
    }
  }
  return n;
}

std::vector<char> flatten(const struct iovec* iov, int count) {
  std::vector<char> flat;
  for (int i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    flat.insert(flat.end(), p, p + iov[i].iov_len);
  }
  return flat;
}

// The INIT reply accepts FUSE_DIRECT_IO_ALLOW_MMAP: FUSE_INIT_EXT in flags (libfuse 3.14
// may not set it; then its flags2 holds nothing of its own) and the bit in flags2.
void accept_direct_io_mmap(std::vector<char>& flat) {
  if (flat.size() < sizeof(OutHeader) + kInitOutFlags2 + 4) return;  // an old protocol's reply
  char* arg = flat.data() + sizeof(OutHeader);
  std::uint32_t flags = u32_at(arg, kInitOutFlags);
  std::uint32_t flags2 = (flags & kInitExt) ? u32_at(arg, kInitOutFlags2) : 0;
  flags |= kInitExt;
  flags2 |= kDirectIoAllowMmap2;
  std::memcpy(arg + kInitOutFlags, &flags, sizeof flags);
  std::memcpy(arg + kInitOutFlags2, &flags2, sizeof flags2);
}

ssize_t shim_writev(int fd, struct iovec* iov, int count, void*) {
  if (count >= 1 && iov[0].iov_len >= sizeof(OutHeader)) {
    OutHeader out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    bool open_reply = false, init_reply = false;
    if (out.unique != 0) {
      std::lock_guard lk(g_mu);
      open_reply = g_open_requests.erase(out.unique) > 0;
      if (out.unique == g_init_unique) {
        init_reply = true;
        g_init_unique = 0;
      }
    }
    if (init_reply && out.error == 0 && g_kernel_mmap && g_want_mmap) {
      std::vector<char> flat = flatten(iov, count);
      accept_direct_io_mmap(flat);
      struct iovec one {flat.data(), flat.size()};
      return ::writev(fd, &one, 1);
    }
    if (open_reply && out.error == 0) {
      std::vector<char> flat = flatten(iov, count);
      if (flat.size() >= sizeof(OutHeader) + kOpenOutSize) {
        // fuse_open_out is the reply's last payload (CREATE puts the entry before it).
        char* flags_at = flat.data() + flat.size() - kOpenOutSize + 8;
        std::uint32_t flags;
        std::memcpy(&flags, flags_at, sizeof flags);
        if (flags & kFopenDirectIo) {
          flags |= kFopenParallelDirectWrites;
          std::memcpy(flags_at, &flags, sizeof flags);
        }
        struct iovec one {flat.data(), flat.size()};
        return ::writev(fd, &one, 1);
      }
    }
  }
  return ::writev(fd, iov, count);
}

}  // namespace

bool enable_parallel_direct_writes(fuse_session* se) {
  static const fuse_custom_io io = {shim_writev, shim_read, nullptr, nullptr};
  return fuse_session_custom_io(se, &io, fuse_session_fd(se)) == 0;
}

bool kernel_offers_direct_io_mmap() { return g_kernel_mmap; }

void allow_direct_io_mmap() { g_want_mmap = true; }

}  // namespace fusemirror::fuse
