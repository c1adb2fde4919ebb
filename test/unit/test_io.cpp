// Unit tests for utils/io: whole-buffer writes in aligned pieces (write_in_pieces,
// pwrite_pieces); utils/page_cache: what the page cache holds of a range.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <utility>
#include <vector>

#include "test_helpers.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"
#include "utils/page_cache.hpp"

using namespace fusemirror;

namespace {

constexpr std::size_t KiB = 1024;

// A writer that records each piece it is asked for. `fail_at` (a call index): that call
// writes `partial` bytes and fails with EIO; `short_at`: that call reports success with
// only `partial` bytes done.
struct Recorder {
  std::vector<std::pair<std::uint64_t, std::size_t>> calls;
  std::size_t fail_at = SIZE_MAX, short_at = SIZE_MAX, partial = 0;

  std::error_code operator()(std::span<const std::byte> part, std::uint64_t at, std::size_t* done) {
    const std::size_t i = calls.size();
    calls.emplace_back(at, part.size());
    if (i == fail_at) {
      *done = partial;
      return utils::errno_code(EIO);
    }
    *done = i == short_at ? partial : part.size();
    return {};
  }
};

std::error_code run(Recorder& r, std::size_t len, std::uint64_t off, std::size_t piece, std::size_t* written) {
  std::vector<std::byte> data(len);
  return utils::write_in_pieces(data, off, piece, written, [&r](auto part, auto at, auto* done) { return r(part, at, done); });
}

}  // namespace

TEST_SUITE("io") {

TEST_CASE("write_in_pieces: pieces end on multiples of the piece size, in order, covering the range") {
  Recorder r;
  std::size_t written = 0;
  // 1 MiB at 4 KiB with 64 KiB pieces: 60 KiB up to the first boundary, 15 whole pieces, 4 KiB.
  REQUIRE_FALSE(run(r, 1024 * KiB, 4 * KiB, 64 * KiB, &written));
  CHECK(written == 1024 * KiB);
  REQUIRE(r.calls.size() == 17);
  CHECK(r.calls.front() == std::pair<std::uint64_t, std::size_t>{4 * KiB, 60 * KiB});
  CHECK(r.calls.back() == std::pair<std::uint64_t, std::size_t>{1024 * KiB, 4 * KiB});
  std::uint64_t next = 4 * KiB;
  for (std::size_t i = 0; i < r.calls.size(); ++i) {
    const auto [at, n] = r.calls[i];
    CHECK(at == next);  // in order, no gap, no overlap
    CHECK(n <= 64 * KiB);
    if (i > 0) CHECK(at % (64 * KiB) == 0);
    next = at + n;
  }
  CHECK(next == 4 * KiB + 1024 * KiB);

  SUBCASE("a write inside one piece is one call, even unaligned") {
    Recorder s;
    REQUIRE_FALSE(run(s, 4 * KiB, 68 * KiB, 64 * KiB, nullptr));
    REQUIRE(s.calls.size() == 1);
    CHECK(s.calls[0] == std::pair<std::uint64_t, std::size_t>{68 * KiB, 4 * KiB});
  }
  SUBCASE("a small write across a boundary is two calls") {
    Recorder s;
    REQUIRE_FALSE(run(s, 8 * KiB, 60 * KiB, 64 * KiB, nullptr));
    REQUIRE(s.calls.size() == 2);
    CHECK(s.calls[0] == std::pair<std::uint64_t, std::size_t>{60 * KiB, 4 * KiB});
    CHECK(s.calls[1] == std::pair<std::uint64_t, std::size_t>{64 * KiB, 4 * KiB});
  }
  SUBCASE("piece 0: the whole write in one call") {
    Recorder s;
    REQUIRE_FALSE(run(s, 3 * 1024 * KiB + 5, 7, 0, &written));
    REQUIRE(s.calls.size() == 1);
    CHECK(s.calls[0] == std::pair<std::uint64_t, std::size_t>{7, 3 * 1024 * KiB + 5});
    CHECK(written == 3 * 1024 * KiB + 5);
  }
  SUBCASE("odd offsets and lengths: the last piece is the remainder") {
    Recorder s;
    REQUIRE_FALSE(run(s, 10000, 4097, 4 * KiB, &written));
    REQUIRE(s.calls.size() == 3);  // 4097..8192, ..12288, ..14097
    CHECK(s.calls[0] == std::pair<std::uint64_t, std::size_t>{4097, 4095});
    CHECK(s.calls[1] == std::pair<std::uint64_t, std::size_t>{8192, 4096});
    CHECK(s.calls[2] == std::pair<std::uint64_t, std::size_t>{12288, 14097 - 12288});
    CHECK(written == 10000);
  }
}

TEST_CASE("write_in_pieces: an error mid-way stops the loop and reports the bytes done") {
  Recorder r;
  r.fail_at = 2;
  r.partial = 1000;
  std::size_t written = 0;
  const auto ec = run(r, 256 * KiB, 0, 64 * KiB, &written);
  CHECK(ec == std::errc::io_error);
  CHECK(r.calls.size() == 3);              // no piece after the failed one
  CHECK(written == 2 * 64 * KiB + 1000);  // two whole pieces and what the third wrote

  SUBCASE("a failure in the first piece with nothing written: 0, nothing changed") {
    Recorder s;
    s.fail_at = 0;
    std::size_t w = 77;
    CHECK(run(s, 256 * KiB, 0, 64 * KiB, &w) == std::errc::io_error);
    CHECK(w == 0);
  }
}

TEST_CASE("write_in_pieces: a short success is continued from where it stopped; no progress is EIO") {
  Recorder r;
  r.short_at = 1;
  r.partial = 10 * KiB;
  std::size_t written = 0;
  REQUIRE_FALSE(run(r, 128 * KiB, 0, 64 * KiB, &written));
  CHECK(written == 128 * KiB);
  REQUIRE(r.calls.size() == 3);
  CHECK(r.calls[2] == std::pair<std::uint64_t, std::size_t>{74 * KiB, 54 * KiB});  // to the boundary, no further

  Recorder z;
  z.short_at = 1;
  z.partial = 0;
  CHECK(run(z, 128 * KiB, 0, 64 * KiB, &written) == std::errc::io_error);
  CHECK(written == 64 * KiB);
}

TEST_CASE("pwrite_pieces on a file: the same bytes as one pwrite; a short write then EFBIG reports the bytes written") {
  fmtest::TempDir dir;
  const std::string path = dir / "f";
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  const auto data = fmtest::pattern(1024 * KiB + 333, 5);
  std::size_t written = 0;
  REQUIRE_FALSE(utils::pwrite_pieces(fd.get(), data, 4 * KiB + 1, 64 * KiB, &written));
  CHECK(written == data.size());
  auto back = fmtest::read_bytes(path);
  REQUIRE(back.size() == 4 * KiB + 1 + data.size());
  CHECK(std::equal(data.begin(), data.end(), back.begin() + 4 * KiB + 1));

  // Past RLIMIT_FSIZE the kernel writes up to the limit (a short write, inside a piece),
  // then refuses with EFBIG: the count is what reached the file.
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  auto old_sig = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 2 * 1024 * KiB + 100;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  const auto big = fmtest::pattern(1024 * KiB, 6);
  const std::error_code ec = utils::pwrite_pieces(fd.get(), big, 1024 * KiB + 512 * KiB, 64 * KiB, &written);
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_sig);
  CHECK(ec == std::errc::file_too_large);
  CHECK(written == 512 * KiB + 100);
  back = fmtest::read_bytes(path);
  CHECK(back.size() == 2 * 1024 * KiB + 100);
  CHECK(std::equal(big.begin(), big.begin() + static_cast<std::ptrdiff_t>(written), back.begin() + 1536 * KiB));
}

TEST_CASE("range_cached: true only when every page of the range is in the page cache") {
  fmtest::TempDir dir;
  const std::string path = dir / "f";
  fmtest::write_bytes(path, fmtest::pattern(256 * KiB, 7));
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  REQUIRE(fd.valid());
  auto cached = [&](std::uint64_t off, std::uint64_t len) {
    auto r = utils::range_cached(fd.get(), off, len);
    REQUIRE(r);
    return *r;
  };
  CHECK(cached(0, 256 * KiB));  // just written: all of it dirty in the cache
  fmtest::evict_cache(path);
  CHECK_FALSE(cached(0, 4 * KiB));
  CHECK(cached(0, 0));          // an empty range holds nothing to miss
  std::vector<std::byte> buf(8 * KiB);
  REQUIRE(::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM) == 0);  // no readahead around it
  REQUIRE(utils::pread_all(fd.get(), std::span(buf).first(4 * KiB), 64 * KiB));  // one page back
  CHECK(cached(64 * KiB, 4 * KiB));
  CHECK(cached(64 * KiB + 100, 200));      // inside that page
  CHECK_FALSE(cached(64 * KiB, 8 * KiB));  // the next page is not there
  CHECK_FALSE(cached(60 * KiB, 8 * KiB));  // nor the one before
  REQUIRE_FALSE(utils::pwrite_all(fd.get(), std::span(buf).first(4 * KiB), 68 * KiB));
  CHECK(cached(64 * KiB, 8 * KiB));        // a written page is there (dirty)
  CHECK_FALSE(cached(252 * KiB, 8 * KiB)); // past the end of the file: never cached
  CHECK(utils::range_cached(-1, 0, 4096).error() == std::errc::bad_file_descriptor);
}

TEST_CASE("local_disk_fs: local disk file systems by type; FUSE, NFS, SMB and the unknown are not") {
  for (const std::uint64_t t : {0xEF53ull, 0x58465342ull, 0x9123683Eull, 0xF2F52010ull, 0xCA451A4Eull,
                                0x01021994ull, 0x794C7630ull}) {
    CAPTURE(t);
    CHECK(utils::local_disk_fs_type(t));
  }
  // FUSE, NFS, SMB2, CIFS, Ceph, 9p, proc, and no type at all.
  for (const std::uint64_t t : {0x65735546ull, 0x6969ull, 0xFE534D42ull, 0xFF534D42ull, 0x00C36400ull,
                                0x01021997ull, 0x9FA0ull, 0ull}) {
    CAPTURE(t);
    CHECK_FALSE(utils::local_disk_fs_type(t));
  }
  CHECK_FALSE(utils::local_disk_fs(-1));  // fstatfs fails: not local
  utils::UniqueFd proc(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
  REQUIRE(proc.valid());
  CHECK_FALSE(utils::local_disk_fs(proc.get()));
  fmtest::TempDir dir;
  const std::string path = dir / "f";
  fmtest::write_bytes(path, fmtest::pattern(4 * KiB, 1));
  utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.valid());
  struct statfs st {};
  REQUIRE(::fstatfs(fd.get(), &st) == 0);
  CHECK(utils::local_disk_fs(fd.get()) ==
        utils::local_disk_fs_type(static_cast<std::uint64_t>(static_cast<unsigned long>(st.f_type))));
}

}  // TEST_SUITE
