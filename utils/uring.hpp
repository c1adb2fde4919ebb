// utils/uring.hpp — one buffer written to two descriptors at once, from the calling thread.
//
// The two writes are submitted together with io_uring (Debian's liburing): one
// io_uring_enter puts both in flight and the thread waits for both completions, with no
// hand-off to another thread. Meant for O_DIRECT descriptors, whose writes io_uring runs
// asynchronously (a buffered write would be copied inline or punted to a kernel worker:
// the same copy, or the same hand-off). Each thread keeps a small ring of its own, made on
// first use (and again in a forked child: a ring is never shared between processes); when
// the thread ends, its ring is kept for the next thread.
// Where io_uring cannot be used — an old kernel (ENOSYS), kernel.io_uring_disabled or a
// seccomp filter (EPERM), no memory for the ring — the thread writes one descriptor after
// the other with pwrite, the same bytes with the same results.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <system_error>

namespace fusemirror::utils {

struct PairWrite {
  std::error_code ec[2];          // each descriptor's error; an error of one never stops the other
  std::size_t done[2] = {0, 0};   // bytes each descriptor took before its error (all on success)
};

// Writes all of `data` at `off` to fd0 and, when fd1 >= 0, to fd1 (see above). A short
// completion is finished with pwrite on the same descriptor (pwrite_all's rules: retried,
// no progress is EIO). `meanwhile`, when given, runs once on the calling thread while the
// writes are in flight (after both were submitted, before waiting for them; on the pwrite
// path, after them): CPU work that would otherwise wait for the disk. It must not write
// `data`, which the kernel may be reading.
PairWrite pwrite_pair(int fd0, int fd1, std::span<const std::byte> data, std::uint64_t off,
                      const std::function<void()>& meanwhile = {});

// Test hook: false makes pwrite_pair take the sequential pwrite path in every thread.
void set_uring_allowed(bool allowed);
// Whether the calling thread's last pwrite_pair went through its ring (tests, logs).
bool uring_used_last();
// Rings this process has made (tests): a thread's ring outlives the thread, kept for the
// next thread that needs one (up to 64), so threads that come and go make no new rings.
std::uint64_t uring_rings_made();

}  // namespace fusemirror::utils
