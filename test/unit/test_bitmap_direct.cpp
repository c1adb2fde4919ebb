// Unit tests for how a bitmap's flushes write its file (docs/write-path.md §3c): O_DIRECT
// through a second descriptor, and the buffered fallback when the file system refuses it.
// Both must leave the same bytes on disk, and readers through buffered descriptors must see
// every flush.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/bitmap.hpp"
#include "core/bitmap_commit.hpp"
#include "test_helpers.hpp"
#include "utils/crash_point.hpp"
#include "utils/io.hpp"

using namespace fusemirror;
using core::Bitmap;
using core::BitmapOpenParams;
using fmtest::DirectIoOff;
using fmtest::TempDir;

namespace {

const utils::Uuid kSet = {1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16};
constexpr std::uint64_t kCs = 65536;
constexpr std::uint64_t kPerPage = core::kBitsPerPage;  // chunks per 4 KiB page of bits
constexpr std::uint64_t kChunks = 3 * kPerPage + 100;   // four pages of bits, the last partial

BitmapOpenParams params(std::uint64_t image_size) {
  BitmapOpenParams p;
  p.set_uuid = kSet;
  p.chunk_size = kCs;
  p.daemon_sleep_ms = 1000;
  p.image_size = image_size;
  p.al_extents = 4;  // the activity log on: activations set whole extents
  return p;
}

std::unique_ptr<Bitmap> open_bm(const std::string& path, std::uint64_t image_size) {
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  std::string why;
  auto r = Bitmap::open(std::move(fd), params(image_size), &why);
  REQUIRE_MESSAGE(r, "Bitmap::open failed: " << r.error().message());
  CHECK(why.empty());
  return std::move(r).value();
}

void write_once(Bitmap& bm, std::uint64_t chunk) {
  REQUIRE_FALSE(bm.start_write(chunk * kCs + 512, 4096));
  bm.end_write(chunk * kCs + 512, 4096, true);
}

std::uint64_t sweep_ok(Bitmap& bm) {
  auto r = bm.sweep([] { return std::error_code{}; });
  REQUIRE_MESSAGE(r, "sweep failed: " << r.error().message());
  return *r;
}

// Whether the file system of `dir` accepts an O_DIRECT open (tmpfs before Linux 6.6 does not).
bool fs_takes_direct(const std::string& dir) {
  const std::string probe = dir + "/probe";
  const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return fd >= 0;
}

// What one scripted life of a bitmap leaves behind: the file after a crash (the Bitmap
// dropped without a clean close), the dirty chunks a reopen finds, and the file after that
// reopen's clean close. Flushes: activations across every page, a grow of the cover, a
// sweep that clears, a shrink that cuts the file, and a regrow.
struct Life {
  std::vector<std::byte> crashed, closed;
  std::vector<std::uint64_t> reopened_dirty;
  bool direct = false;
};

Life live(const std::string& path) {
  Life life;
  fmtest::write_bitmap_file(path, fmtest::clean_header(kSet, kCs, kChunks * kCs));
  {
    auto bm = open_bm(path, kChunks * kCs);
    life.direct = bm->stats().direct_io;
    for (std::uint64_t c : {std::uint64_t{1}, kPerPage + 7, 2 * kPerPage + 64, kChunks - 1}) write_once(*bm, c);
    sweep_ok(*bm);
    sweep_ok(*bm);  // the first writes are idle for a period: written chunks of retired extents clear
    write_once(*bm, 5);
    write_once(*bm, (kChunks + 200) - 1);  // past the cover: it grows (a fifth page, the header)
    REQUIRE_FALSE(bm->resize((2 * kPerPage + 10) * kCs));  // a shrink: the file is cut
    write_once(*bm, 2 * kPerPage + 3);
    REQUIRE_FALSE(bm->resize(kChunks * kCs));  // regrown: the range past the cut reads as zeros
    write_once(*bm, 3 * kPerPage + 1);
    REQUIRE_FALSE(bm->flush());
  }  // dropped: a crash as far as the file is concerned
  life.crashed = fmtest::read_bytes(path);
  {
    auto bm = open_bm(path, kChunks * kCs);
    for (std::uint64_t c = 0; c < kChunks; ++c)
      if (!bm->chunk_clean(c)) life.reopened_dirty.push_back(c);
    REQUIRE_FALSE(bm->close_clean([] { return std::error_code{}; }));
  }
  life.closed = fmtest::read_bytes(path);
  return life;
}

}  // namespace

TEST_SUITE("bitmap_direct") {

TEST_CASE("flushes write O_DIRECT, and a buffered reader with the pages cached sees each flush") {
  TempDir d;
  if (!fs_takes_direct(d.path())) {
    MESSAGE("the file system of " << d.path() << " refuses O_DIRECT: nothing to test here");
    return;
  }
  const auto path = d / "img.fmbm";
  fmtest::write_bitmap_file(path, fmtest::clean_header(kSet, kCs, kChunks * kCs));
  auto bm = open_bm(path, kChunks * kCs);
  CHECK(bm->stats().direct_io);
  // A reader that has every page of the file in the page cache before the direct writes.
  utils::UniqueFd reader(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(reader.valid());
  auto read_all = [&] {
    std::vector<std::byte> b(core::kHeaderSize + 4 * 4096);
    auto got = utils::pread_all(reader.get(), b, 0);
    REQUIRE(got);
    b.resize(*got);
    return b;
  };
  auto before = read_all();
  CHECK_FALSE(fmtest::file_bit(before, kPerPage + 7));
  for (std::uint64_t c : {std::uint64_t{0}, kPerPage + 7, 3 * kPerPage + 99}) {
    write_once(*bm, c);  // returns once its flush (pwrite O_DIRECT + fdatasync) is done
    const auto now = read_all();
    CHECK(fmtest::file_bit(now, c));
    // The activity log's extent (4 MiB = 64 chunks) came in the same flush.
    CHECK(fmtest::file_bit(now, (c / 64) * 64));
    CHECK(fmtest::header_on_disk(path).sync_size == kChunks * kCs);
  }
  // A new descriptor agrees with the cached one byte for byte.
  CHECK(fmtest::read_bytes(path) == read_all());
}

TEST_CASE("the O_DIRECT path and the buffered fallback leave the same bytes and reopen the same") {
  TempDir d;
  const Life direct = live(d / "direct.fmbm");
  Life buffered;
  {
    DirectIoOff off;
    buffered = live(d / "buffered.fmbm");
  }
  CHECK_FALSE(buffered.direct);
  if (fs_takes_direct(d.path())) CHECK(direct.direct);
  CHECK(direct.crashed.size() == buffered.crashed.size());
  CHECK(direct.crashed == buffered.crashed);
  CHECK(direct.reopened_dirty == buffered.reopened_dirty);
  CHECK(direct.closed == buffered.closed);
  // The script did leave bits: the comparison is not between two empty files.
  CHECK(direct.reopened_dirty.size() > 64);
  CHECK(std::find(direct.reopened_dirty.begin(), direct.reopened_dirty.end(), 3 * kPerPage + 1) !=
        direct.reopened_dirty.end());
  CHECK(fmtest::has(fmtest::header_on_disk(d / "direct.fmbm").state, core::kStateClean));
}

#ifdef FUSEMIRROR_CRASH_POINTS
TEST_CASE("a direct write refused with EINVAL falls back to buffered writes, same bytes") {
  TempDir d;
  Life reference;
  {
    DirectIoOff off;
    reference = live(d / "reference.fmbm");
  }
  // An O_DIRECT open that succeeds and a first write that fails (some FUSE file systems).
  utils::set_fault_points("bitmap.direct_einval");
  const Life fell = live(d / "fell.fmbm");
  utils::set_fault_points("");
  CHECK_FALSE(fell.direct);
  CHECK(fell.crashed == reference.crashed);
  CHECK(fell.reopened_dirty == reference.reopened_dirty);
  CHECK(fell.closed == reference.closed);
}
#endif

}  // TEST_SUITE
