#include "fusemirror/parallel_writes.hpp"

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace fusemirror::fuse {
namespace {

// The FUSE wire format (linux/fuse.h), the parts used here.
constexpr std::uint32_t kOpOpen = 14, kOpCreate = 35;
constexpr std::uint32_t kFopenDirectIo = 1u << 0, kFopenParallelDirectWrites = 1u << 6;
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

ssize_t shim_read(int fd, void* buf, size_t len, void*) {
  const ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(InHeader))) {
    InHeader in;
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode == kOpOpen || in.opcode == kOpCreate) {
      std::lock_guard lk(g_mu);
      g_open_requests.insert(in.unique);
    }
  }
  return n;
}

ssize_t shim_writev(int fd, struct iovec* iov, int count, void*) {
  if (count >= 1 && iov[0].iov_len >= sizeof(OutHeader)) {
    OutHeader out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    bool open_reply = false;
    if (out.unique != 0) {
      std::lock_guard lk(g_mu);
      open_reply = g_open_requests.erase(out.unique) > 0;
    }
    if (open_reply && out.error == 0) {
      std::vector<char> flat;
      for (int i = 0; i < count; ++i) {
        const char* p = static_cast<const char*>(iov[i].iov_base);
        flat.insert(flat.end(), p, p + iov[i].iov_len);
      }
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

}  // namespace fusemirror::fuse
