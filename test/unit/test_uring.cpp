// Unit tests for utils::pwrite_pair (utils/uring.hpp): one buffer to two descriptors at
// once through the thread's io_uring, or one after the other where io_uring is not used.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "test_helpers.hpp"
#include "utils/fd.hpp"
#include "utils/uring.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

utils::UniqueFd open_file(const std::string& path, int flags) {
  utils::UniqueFd fd(::open(path.c_str(), flags | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  return fd;
}

struct UringOff {
  UringOff() { utils::set_uring_allowed(false); }
  ~UringOff() { utils::set_uring_allowed(true); }
};

// Writes 64 KiB of a pattern at 1 MiB to both files (O_DIRECT when `direct`) and checks
// both hold it.
void both_written(bool direct) {
  TempDir d;
  const int flags = O_RDWR | (direct ? O_DIRECT : 0);
  auto a = open_file(d / "a", flags), b = open_file(d / "b", flags);
  auto data = fmtest::pattern(65536, 7);
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(4096, data.size()));
  REQUIRE(raw);
  std::unique_ptr<std::byte, decltype(&std::free)> hold(raw, &std::free);
  std::memcpy(raw, data.data(), data.size());
  const auto r = utils::pwrite_pair(a.get(), b.get(), {raw, data.size()}, 1 << 20);
  CHECK_FALSE(r.ec[0]);
  CHECK_FALSE(r.ec[1]);
  CHECK(r.done[0] == data.size());
  CHECK(r.done[1] == data.size());
  for (const char* f : {"a", "b"}) {
    auto got = fmtest::read_bytes(d / f);
    REQUIRE(got.size() == (1u << 20) + data.size());
    CHECK(std::memcmp(got.data() + (1 << 20), data.data(), data.size()) == 0);
  }
}

}  // namespace

TEST_CASE("pwrite_pair: both descriptors get the bytes, through the ring") {
  both_written(false);
  CHECK(utils::uring_used_last());  // this kernel has io_uring; a machine without it fails here
  both_written(true);
  CHECK(utils::uring_used_last());
}

TEST_CASE("pwrite_pair: without io_uring, one after the other, the same bytes") {
  UringOff off;
  both_written(false);
  CHECK_FALSE(utils::uring_used_last());
  both_written(true);
}

TEST_CASE("pwrite_pair: one descriptor's error never stops the other's write") {
  TempDir d;
  auto good = open_file(d / "good", O_RDWR);
  auto ro = open_file(d / "ro", O_RDONLY);  // writes fail with EBADF
  auto data = fmtest::pattern(8192, 3);
  for (bool ring : {true, false}) {
    utils::set_uring_allowed(ring);
    const auto r = utils::pwrite_pair(ro.get(), good.get(), std::as_bytes(std::span(data)), 4096);
    CHECK(r.ec[0] == std::errc::bad_file_descriptor);
    CHECK(r.done[0] == 0);
    CHECK_FALSE(r.ec[1]);
    CHECK(r.done[1] == data.size());
  }
  utils::set_uring_allowed(true);
  auto got = fmtest::read_bytes(d / "good");
  REQUIRE(got.size() == 4096 + data.size());
  CHECK(std::memcmp(got.data() + 4096, data.data(), data.size()) == 0);
}

TEST_CASE("pwrite_pair: one descriptor (fd1 -1) writes only fd0") {
  TempDir d;
  auto a = open_file(d / "a", O_RDWR);
  auto data = fmtest::pattern(4096, 5);
  const auto r = utils::pwrite_pair(a.get(), -1, std::as_bytes(std::span(data)), 0);
  CHECK_FALSE(r.ec[0]);
  CHECK(r.done[0] == data.size());
  CHECK(r.done[1] == 0);
  CHECK(fmtest::read_bytes(d / "a") == data);
}

TEST_CASE("pwrite_pair: a forked child makes its own ring (the parent's is not shared)") {
  TempDir d;
  auto a = open_file(d / "a", O_RDWR), b = open_file(d / "b", O_RDWR);
  auto first = fmtest::pattern(4096, 11), second = fmtest::pattern(4096, 12);
  REQUIRE_FALSE(utils::pwrite_pair(a.get(), b.get(), std::as_bytes(std::span(first)), 0).ec[0]);
  REQUIRE(utils::uring_used_last());  // this thread's ring exists before the fork
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const auto r = utils::pwrite_pair(a.get(), b.get(), std::as_bytes(std::span(second)), 4096);
    ::_exit(!r.ec[0] && !r.ec[1] && r.done[0] == 4096 && r.done[1] == 4096 && utils::uring_used_last() ? 0 : 1);
  }
  int st = 0;
  REQUIRE(::waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  // And the parent's ring still works.
  auto third = fmtest::pattern(4096, 13);
  const auto r = utils::pwrite_pair(a.get(), b.get(), std::as_bytes(std::span(third)), 8192);
  CHECK_FALSE(r.ec[0]);
  CHECK(utils::uring_used_last());
  for (const char* f : {"a", "b"}) {
    auto got = fmtest::read_bytes(d / f);
    REQUIRE(got.size() == 3 * 4096);
    CHECK(std::memcmp(got.data(), first.data(), 4096) == 0);
    CHECK(std::memcmp(got.data() + 4096, second.data(), 4096) == 0);
    CHECK(std::memcmp(got.data() + 8192, third.data(), 4096) == 0);
  }
}

TEST_CASE("pwrite_pair: a thread that ended leaves its ring to the next thread") {
  TempDir d;
  auto a = open_file(d / "a", O_RDWR), b = open_file(d / "b", O_RDWR);
  auto data = fmtest::pattern(4096, 21);
  auto write_from_new_thread = [&](std::uint64_t off) {
    bool ok = false, ring = false;
    std::thread([&] {
      const auto r = utils::pwrite_pair(a.get(), b.get(), std::as_bytes(std::span(data)), off);
      ok = !r.ec[0] && !r.ec[1] && r.done[0] == data.size() && r.done[1] == data.size();
      ring = utils::uring_used_last();
    }).join();
    CHECK(ok);
    CHECK(ring);
  };
  write_from_new_thread(0);  // makes a ring, or takes one an earlier test's thread left
  const std::uint64_t made = utils::uring_rings_made();
  for (int i = 1; i <= 8; ++i) write_from_new_thread(4096 * i);
  CHECK(utils::uring_rings_made() == made);  // eight threads, no new ring
  for (const char* f : {"a", "b"}) {
    auto got = fmtest::read_bytes(d / f);
    REQUIRE(got.size() == 9 * 4096);
    for (int i = 0; i < 9; ++i) CHECK(std::memcmp(got.data() + 4096 * i, data.data(), 4096) == 0);
  }
  // A forked child never takes a ring its parent kept (its submission queue is the
  // parent's): its thread makes one of its own.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::uint64_t before = utils::uring_rings_made();
    bool ok = false;
    std::thread([&] {
      const auto r = utils::pwrite_pair(a.get(), b.get(), std::as_bytes(std::span(data)), 9 * 4096);
      ok = !r.ec[0] && !r.ec[1] && utils::uring_used_last();
    }).join();
    ::_exit(ok && utils::uring_rings_made() == before + 1 ? 0 : 1);
  }
  int st = 0;
  REQUIRE(::waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  write_from_new_thread(10 * 4096);  // the parent's kept ring still serves
  CHECK(utils::uring_rings_made() == made);
}
