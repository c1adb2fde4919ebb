// Unit tests for direct writes (config direct_write_max; docs/write-path.md §1b): which
// writes go to the legs with O_DIRECT, that both legs and every read see exactly what a
// buffered write would have left, and the fallbacks (EINVAL, no io_uring, write-behind).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "image_fixture.hpp"
#include "utils/crash_point.hpp"
#include "utils/uring.hpp"

using namespace fusemirror;

namespace {

constexpr std::uint64_t kSize = 4 << 20;

core::ImageOptions direct_opts() {
  core::ImageOptions io;
  io.direct_write_max = 65536;
  io.direct_write_inflight = 1;  // one writer: every qualifying write goes direct
  return io;
}

// A 4 KiB-aligned copy of `v` (so the image need not copy it) — or, with `skew`, the
// same bytes 512 bytes into the allocation (the request buffer libfuse hands over).
struct Buf {
  std::unique_ptr<std::byte, decltype(&std::free)> raw{nullptr, &std::free};
  std::span<const std::byte> span;
  Buf(const std::vector<std::byte>& v, std::size_t skew = 0) {
    // aligned_alloc takes a multiple of the alignment (ASan enforces it)
    raw.reset(static_cast<std::byte*>(std::aligned_alloc(4096, (v.size() + skew + 4095) / 4096 * 4096)));
    REQUIRE(raw);
    std::memcpy(raw.get() + skew, v.data(), v.size());
    span = {raw.get() + skew, v.size()};
  }
};

// Writes `data` at `off` through the image and into `model` (what both legs must hold).
void put(core::Image& img, std::vector<std::byte>& model, std::span<const std::byte> data, std::uint64_t off) {
  auto r = img.write(data, off);
  REQUIRE_MESSAGE(r, "write at " << off << ": " << r.error().message());
  CHECK(*r == data.size());
  if (model.size() < off + data.size()) model.resize(off + data.size());
  std::memcpy(model.data() + off, data.data(), data.size());
}

void legs_hold(const fmtest::ImageFixture& f, const std::vector<std::byte>& model) {
  auto p = fmtest::read_bytes(f.ppath), s = fmtest::read_bytes(f.spath);
  REQUIRE(p.size() == model.size());
  CHECK(p == model);
  CHECK(s == p);
}

}  // namespace

TEST_CASE("direct writes: small aligned writes go direct to both legs, the others buffered") {
  fmtest::ImageFixture f(kSize, direct_opts());
  std::vector<std::byte> model(kSize);
  const std::uint64_t before = f.img->direct_writes();
  put(*f.img, model, Buf(fmtest::pattern(4096, 1)).span, 0);               // direct
  put(*f.img, model, Buf(fmtest::pattern(65536, 2)).span, 1 << 20);        // direct (at the limit)
  put(*f.img, model, Buf(fmtest::pattern(8192, 3), 80).span, 8192);        // direct, copied to align
  CHECK(f.img->direct_writes() == before + 3);
  put(*f.img, model, Buf(fmtest::pattern(131072, 4)).span, 2 << 20);       // over the limit: buffered
  put(*f.img, model, Buf(fmtest::pattern(5000, 5)).span, 12345);           // unaligned: buffered
  put(*f.img, model, Buf(fmtest::pattern(4096, 6)).span, 3 * 65536 + 512); // offset unaligned
  CHECK(f.img->direct_writes() == before + 3);
  legs_hold(f, model);
}

TEST_CASE("direct writes: reads see them over a page cache the buffered path filled") {
  fmtest::ImageFixture f(kSize, direct_opts());
  std::vector<std::byte> model(kSize);
  // Buffered data, read back (cached, some of it dirty), then overwritten direct in the
  // middle: the kernel writes the range back and drops it around the direct write, so
  // every later read — buffered, through the image — returns the direct write's bytes.
  put(*f.img, model, Buf(fmtest::pattern(262144, 7)).span, 0);  // 256 KiB: buffered
  std::vector<std::byte> got(262144);
  REQUIRE(f.img->read(got, 0));
  CHECK(std::memcmp(got.data(), model.data(), got.size()) == 0);
  put(*f.img, model, Buf(fmtest::pattern(4096, 8)).span, 65536);
  put(*f.img, model, Buf(fmtest::pattern(12288, 9)).span, 200704);
  REQUIRE(f.img->read(got, 0));
  CHECK(std::memcmp(got.data(), model.data(), got.size()) == 0);
  // And a buffered write over a direct one's range, read back.
  put(*f.img, model, Buf(fmtest::pattern(3000, 10)).span, 65536 + 100);
  REQUIRE(f.img->read(got, 0));
  CHECK(std::memcmp(got.data(), model.data(), got.size()) == 0);
  CHECK(f.img->direct_writes() == 2);
  legs_hold(f, model);
}

TEST_CASE("direct writes: the bitmap tracks them like buffered ones (fsync, sweep, clean)") {
  fmtest::ImageFixture f(kSize, direct_opts());
  std::vector<std::byte> model(kSize);
  put(*f.img, model, Buf(fmtest::pattern(4096, 11)).span, 5 * 65536);
  REQUIRE_FALSE(f.img->fsync(true));
  CHECK(f.img->direct_writes() == 1);
  legs_hold(f, model);
  CHECK(f.img->status().secondary_ok);
}

TEST_CASE("direct writes: without io_uring the legs are written one after the other") {
  utils::set_uring_allowed(false);
  fmtest::ImageFixture f(kSize, direct_opts());
  std::vector<std::byte> model(kSize);
  for (int i = 0; i < 16; ++i)
    put(*f.img, model, Buf(fmtest::pattern(4096 * (1 + i % 4), 20 + i)).span, 65536ull * i * 3);
  utils::set_uring_allowed(true);
  CHECK(f.img->direct_writes() == 16);
  legs_hold(f, model);
}

#ifdef FUSEMIRROR_CRASH_POINTS  // the fault point exists in test builds only
TEST_CASE("direct writes: a leg that refuses O_DIRECT (EINVAL) turns them off, the bytes go buffered") {
  fmtest::ImageFixture f(kSize, direct_opts());
  std::vector<std::byte> model(kSize);
  put(*f.img, model, Buf(fmtest::pattern(4096, 30)).span, 0);
  CHECK(f.img->direct_writes() == 1);
  utils::set_fault_points("image.direct_einval");
  put(*f.img, model, Buf(fmtest::pattern(8192, 31)).span, 65536);
  utils::set_fault_points("");
  put(*f.img, model, Buf(fmtest::pattern(4096, 32)).span, 131072);  // off for good: buffered
  CHECK(f.img->direct_writes() == 1);
  legs_hold(f, model);
}
#endif

TEST_CASE("direct_write_inflight 2: a writer alone writes buffered") {
  core::ImageOptions io = direct_opts();
  io.direct_write_inflight = 2;
  fmtest::ImageFixture f(kSize, io);
  std::vector<std::byte> model(kSize);
  for (int i = 0; i < 8; ++i) put(*f.img, model, Buf(fmtest::pattern(4096, 50 + i)).span, 65536ull * i);
  CHECK(f.img->direct_writes() == 0);
  legs_hold(f, model);
}

TEST_CASE("direct_write_inflight 2: a writer alone goes direct only within the window after concurrent writes") {
  for (const bool wide : {true, false}) {
    CAPTURE(wide);
    core::ImageOptions io = direct_opts();
    io.direct_write_inflight = 2;
    io.direct_concurrent_window_ns = wide ? std::int64_t{3600} * 1'000'000'000 : 0;
    fmtest::ImageFixture f(kSize, io);
    std::vector<std::byte> model(kSize);
    // Two writers until one write found the other in flight (it goes direct).
    const Buf a(fmtest::pattern(4096, 60)), b(fmtest::pattern(4096, 61));
    std::atomic<bool> stop{false};
    auto writer = [&](const Buf& d, std::uint64_t off) {
      for (int i = 0; i < 100000 && !stop.load(); ++i) CHECK(f.img->write(d.span, off));
    };
    std::thread t1(writer, std::cref(a), 0), t2(writer, std::cref(b), 65536);
    for (int i = 0; i < 20000 && f.img->direct_writes() == 0; ++i) std::this_thread::sleep_for(std::chrono::microseconds(100));
    stop = true;
    t1.join();
    t2.join();
    REQUIRE(f.img->direct_writes() > 0);
    std::memcpy(model.data(), a.span.data(), 4096);
    std::memcpy(model.data() + 65536, b.span.data(), 4096);
    // Then one writer alone: direct within the window, buffered once it has passed.
    const std::uint64_t before = f.img->direct_writes();
    put(*f.img, model, Buf(fmtest::pattern(4096, 62)).span, 131072);
    CHECK(f.img->direct_writes() == before + (wide ? 1 : 0));
    legs_hold(f, model);
  }
}

TEST_CASE("direct writes: none with direct_write_max 0, none in write-behind mode") {
  {
    core::ImageOptions off;
    off.direct_write_max = 0;
    off.direct_write_inflight = 1;
    fmtest::ImageFixture f(kSize, off);
    std::vector<std::byte> model(kSize);
    put(*f.img, model, Buf(fmtest::pattern(4096, 40)).span, 0);
    CHECK(f.img->direct_writes() == 0);
    legs_hold(f, model);
  }
  core::ImageOptions io = direct_opts();
  io.write_behind = 4;
  fmtest::ImageFixture f(kSize, io);
  std::vector<std::byte> model(kSize);
  put(*f.img, model, Buf(fmtest::pattern(4096, 41)).span, 0);
  REQUIRE_FALSE(f.img->fsync(true));
  CHECK(f.img->direct_writes() == 0);
}
