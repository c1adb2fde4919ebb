// Unit tests for leg writes in pieces (config leg_write_piece, docs/performance.md "Large
// folios"): an Image whose writes go out in pieces leaves both legs with the bytes one
// whole pwrite would, synchronous and write-behind; 0 writes each request whole.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "image_fixture.hpp"
#include "test_helpers.hpp"
#include "utils/fd.hpp"
#include "utils/page_cache.hpp"

using namespace fusemirror;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t kSize = 4 << 20;

// Write system calls made by this process so far (all threads; /proc/self/io).
std::uint64_t write_syscalls() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::uint64_t v = 0;
  while (io >> key >> v)
    if (key == "syscw:") return v;
  return 0;
}

// Writes at offsets and lengths chosen to start and end off every piece boundary (and
// some on them), up to 1 MiB + 1, through the image, and into `model` the same way.
void write_mix(core::Image& img, std::vector<std::byte>& model) {
  std::mt19937 rng(42);
  const std::uint64_t lens[] = {1, 4 * KiB, 4 * KiB + 1, 60 * KiB, 64 * KiB, 64 * KiB + 7, 300 * KiB, 1024 * KiB + 1};
  for (int i = 0; i < 40; ++i) {
    const std::uint64_t len = lens[static_cast<std::size_t>(i) % std::size(lens)];
    std::uint64_t off = rng() % (kSize - len);
    if (i % 5 == 0) off &= ~(64 * KiB - 1);  // some aligned
    const auto data = fmtest::pattern(len, static_cast<unsigned>(rng()));
    auto r = img.write(data, off);
    REQUIRE(r);
    CHECK(*r == len);
    std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
  }
}

}  // namespace

TEST_SUITE("leg pieces") {

TEST_CASE("writes in pieces leave both legs with the bytes written, for every piece size and 0") {
  for (const std::uint64_t piece : {std::uint64_t{0}, 4 * KiB, 64 * KiB, 256 * KiB}) {
    for (const std::uint32_t wb : {0u, 4u}) {
      CAPTURE(piece);
      CAPTURE(wb);
      core::ImageOptions io;
      io.leg_write_piece = piece;
      io.write_behind = wb;
      fmtest::ImageFixture f(kSize, io);
      std::vector<std::byte> model(kSize);
      write_mix(*f.img, model);
      REQUIRE_FALSE(f.img->close_clean());  // drains write-behind, syncs both legs
      CHECK(f.img->status().secondary_ok);
      CHECK(fmtest::read_bytes(f.ppath) == model);
      CHECK(fmtest::read_bytes(f.spath) == model);
    }
  }
}

TEST_CASE("concurrent overlapping writes in pieces: the legs stay identical") {
  core::ImageOptions io;
  io.leg_write_piece = 4 * KiB;  // many pieces per write: the most interleaving
  fmtest::ImageFixture f(kSize, io);
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t + 7));
      for (int i = 0; i < 40; ++i) {
        const std::uint64_t off = rng() % (512 * KiB);
        const std::size_t len = 1 + rng() % (200 * KiB);
        auto r = f.img->write(fmtest::pattern(len, rng()), off);
        if (!r || *r != len) ++failures;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(failures == 0);
  CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
}

TEST_CASE("each leg gets one pwrite per piece; 0 writes each request whole") {
  // 1 MiB at 4 KiB with 64 KiB pieces: 17 pieces a leg (60 KiB, 15 × 64 KiB, 4 KiB). The
  // bitmap's own flush adds a few writes; the legs' count dominates.
  const auto data = fmtest::pattern(1024 * KiB, 3);
  {
    fmtest::TempDir probe;
    utils::UniqueFd dfd(::open(probe.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!utils::local_disk_fs(dfd.get())) {  // pieces are for local disk file systems only
      MESSAGE("/tmp is not on a local disk file system: legs there are written whole; not counted");
      return;
    }
  }
  auto count = [&](std::uint64_t piece) {
    core::ImageOptions io;
    io.leg_write_piece = piece;
    fmtest::ImageFixture f(kSize, io);
    REQUIRE(f.img->write(fmtest::pattern(4 * KiB, 1), 2 << 20));  // the bitmap's first flush
    const std::uint64_t before = write_syscalls();
    REQUIRE(f.img->write(data, 4 * KiB));
    const std::uint64_t n = write_syscalls() - before;
    CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
    return n;
  };
  {
    core::ImageOptions io;  // status says what each leg is cut into
    io.leg_write_piece = 64 * KiB;
    fmtest::ImageFixture f(kSize, io);
    CHECK(f.img->status().primary_write_piece == 64 * KiB);
    CHECK(f.img->status().secondary_write_piece == 64 * KiB);
  }
  const std::uint64_t whole = count(0), pieces = count(64 * KiB);
  CHECK(whole >= 2);
  CHECK(whole < 2 + 10);
  CHECK(pieces >= 2 * 17);
  CHECK(pieces < 2 * 17 + 10);
}

}  // TEST_SUITE
