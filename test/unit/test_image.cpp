// Unit tests for core::Image over two real temp files and a real bitmap file.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/resource.h>
#include <csignal>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "core/image.hpp"
#include "image_fixture.hpp"
#include "test_helpers.hpp"
#include "utils/extents.hpp"
#include "utils/thread_pool.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

const utils::Uuid kSet = {7, 7, 7, 7, 7, 7, 0x47, 7, 0x87, 7, 7, 7, 7, 7, 7, 7};
constexpr std::uint64_t kCs = 65536;

struct Fixture {
  TempDir dir;
  std::string ppath = dir / "p.img", spath = dir / "s.img", bpath = dir / "img.fmbm";
  utils::ThreadPool pool{2};  // declared before img: outlives it
  std::unique_ptr<core::Image> img;
  std::string why;

  // `image_size`: both files are created with this size (holes); the bitmap file is new.
  // `secondary_flags`: how the secondary is opened (O_RDONLY makes every write fail: EBADF).
  explicit Fixture(std::uint64_t image_size = 0, int secondary_flags = O_RDWR,
                   bool clean_bitmap = true) {
    for (const auto& p : {ppath, spath}) {
      utils::UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      REQUIRE(fd.valid());
      REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(image_size)) == 0);
    }
    if (clean_bitmap)
      fmtest::write_bitmap_file(bpath, fmtest::clean_header(kSet, kCs, image_size));
    open(secondary_flags);
  }

  // `primary_flags` O_RDONLY: every primary pwrite fails (EBADF).
  void open(int secondary_flags = O_RDWR, int primary_flags = O_RDWR) {
    img.reset();
    utils::UniqueFd p(::open(ppath.c_str(), primary_flags | O_CLOEXEC));
    utils::UniqueFd s(::open(spath.c_str(), secondary_flags | O_CLOEXEC));
    utils::UniqueFd b(::open(bpath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(p.valid());
    REQUIRE(s.valid());
    REQUIRE(b.valid());
    struct stat st {};
    REQUIRE(::fstat(p.get(), &st) == 0);
    auto bm = fmtest::open_bitmap(std::move(b), kSet, kCs, static_cast<std::uint64_t>(st.st_size), &why);
    img = std::make_unique<core::Image>("img", std::move(p), std::move(s), std::move(bm), &pool);
  }

  void write(const std::vector<std::byte>& data, std::uint64_t off) {
    auto r = img->write(data, off);
    REQUIRE_MESSAGE(r, "write failed: " << r.error().message());
    CHECK(*r == data.size());
  }
  std::vector<std::byte> read(std::uint64_t off, std::size_t n) {
    std::vector<std::byte> buf(n);
    auto r = img->read(buf, off);
    REQUIRE(r);
    buf.resize(*r);
    return buf;
  }
};

std::vector<std::byte> slice(const std::vector<std::byte>& v, std::uint64_t off, std::size_t n) {
  if (off >= v.size()) return {};
  n = std::min<std::size_t>(n, v.size() - off);
  return {v.begin() + static_cast<std::ptrdiff_t>(off), v.begin() + static_cast<std::ptrdiff_t>(off + n)};
}

// A file size limit (RLIMIT_FSIZE) for this process while in scope: past it both legs
// refuse to grow a file with EFBIG, as a file system past its maximum file size does.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_) == 0);
    old_sig_ = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of the signal
    struct rlimit r = old_;
    r.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &r) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_sig_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  struct rlimit old_ {};
  void (*old_sig_)(int) = SIG_DFL;
};

bool all_zero(const std::vector<std::byte>& v) {
  for (auto b : v)
    if (b != std::byte{0}) return false;
  return true;
}

}  // namespace

TEST_SUITE("image") {

TEST_CASE("write/read round trip; both legs hold the data") {
  Fixture f;
  auto data = fmtest::pattern(100000, 11);
  f.write(data, 0);
  CHECK(f.read(0, data.size()) == data);
  CHECK(f.read(1000, 10) == slice(data, 1000, 10));
  CHECK(f.read(data.size(), 10).empty());  // end of file
  CHECK(fmtest::read_bytes(f.ppath) == data);
  CHECK(fmtest::read_bytes(f.spath) == data);
  auto st = f.img->status();
  CHECK(st.secondary_ok);
  CHECK(st.state == "active");
  CHECK(st.size == data.size());
  CHECK(st.bitmap.dirty_chunks == 2);
  CHECK(f.img->stat()->st_size == static_cast<off_t>(data.size()));
  // An empty write is a no-op.
  auto r = f.img->write({}, 5);
  REQUIRE(r);
  CHECK(*r == 0);
}

TEST_CASE("legs stay identical under unaligned and overlapping concurrent writes") {
  Fixture f;
  SUBCASE("sequential, unaligned") {
    const std::uint64_t offs[] = {1, 4095, 65535, 65536 * 3 - 7, 12345, 200001, 0};
    unsigned seed = 1;
    for (auto off : offs) {
      f.write(fmtest::pattern(4097 + seed * 1000, seed), off);
      ++seed;
    }
  }
  SUBCASE("concurrent, overlapping") {
    std::vector<std::thread> ts;
    std::atomic<int> failures{0};
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t + 1));
        for (int i = 0; i < 60; ++i) {
          const std::uint64_t off = rng() % (256 * 1024);
          const std::size_t len = 1 + rng() % 20000;
          auto r = f.img->write(fmtest::pattern(len, rng()), off);
          if (!r || *r != len) ++failures;
        }
      });
    for (auto& t : ts) t.join();
    CHECK(failures == 0);
  }
  const auto p = fmtest::read_bytes(f.ppath), s = fmtest::read_bytes(f.spath);
  CHECK(p.size() == s.size());
  CHECK(p == s);
  CHECK(f.img->status().secondary_ok);
}

TEST_CASE("truncate keeps both legs the same size") {
  Fixture f;
  f.write(fmtest::pattern(3 * kCs, 3), 0);
  for (std::uint64_t size : {std::uint64_t{10 * kCs}, std::uint64_t{1000}, std::uint64_t{0},
                             std::uint64_t{kCs + 1}}) {
    INFO("size " << size);
    REQUIRE_FALSE(f.img->truncate(size));
    CHECK(fmtest::file_size(f.ppath) == size);
    CHECK(fmtest::file_size(f.spath) == size);
    CHECK(f.img->status().size == size);
    CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
  }
  // Data after a shrink and regrow reads as zeros past the shrink point.
  CHECK(all_zero(f.read(0, kCs + 1)));
  CHECK(f.img->status().secondary_ok);
}

TEST_CASE("fallocate on both legs") {
  Fixture f;
  const auto data = fmtest::pattern(4 * kCs, 4);
  f.write(data, 0);
  SUBCASE("punch hole reads zeros on both legs") {
    REQUIRE_FALSE(f.img->fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kCs + 100, kCs));
    for (const auto& path : {f.ppath, f.spath}) {
      INFO(path);
      auto b = fmtest::read_bytes(path);
      CHECK(b.size() == data.size());
      CHECK(all_zero(slice(b, kCs + 100, kCs)));
      CHECK(slice(b, 0, kCs + 100) == slice(data, 0, kCs + 100));
      CHECK(slice(b, 2 * kCs + 100, 10000) == slice(data, 2 * kCs + 100, 10000));
    }
    CHECK(all_zero(f.read(kCs + 100, kCs)));
  }
  SUBCASE("zero range") {
    REQUIRE_FALSE(f.img->fallocate(FALLOC_FL_ZERO_RANGE, 3 * kCs, 2 * kCs));  // extends
    CHECK(fmtest::file_size(f.ppath) == 5 * kCs);
    CHECK(fmtest::file_size(f.spath) == 5 * kCs);
    CHECK(all_zero(slice(fmtest::read_bytes(f.spath), 3 * kCs, 2 * kCs)));
  }
  SUBCASE("plain allocation extends both legs") {
    REQUIRE_FALSE(f.img->fallocate(0, 4 * kCs, kCs));
    CHECK(fmtest::file_size(f.ppath) == 5 * kCs);
    CHECK(fmtest::file_size(f.spath) == 5 * kCs);
  }
  SUBCASE("unsupported mode and zero length are refused, nothing changes") {
    CHECK(f.img->fallocate(FALLOC_FL_COLLAPSE_RANGE, 0, kCs) == std::errc::operation_not_supported);
    CHECK(f.img->fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 0) ==
          std::errc::invalid_argument);
    CHECK(fmtest::read_bytes(f.ppath) == data);
  }
  CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
  CHECK(f.img->status().secondary_ok);
}

TEST_CASE("a failing secondary degrades the image, the write still succeeds") {
  Fixture f(0, O_RDONLY);  // every secondary pwrite fails with EBADF
  const auto ev0 = fmtest::header_on_disk(f.bpath).events;
  CHECK(f.img->status().secondary_ok);  // not known yet
  const auto data = fmtest::pattern(5000, 5);
  f.write(data, 2 * kCs + 10);
  CHECK(f.read(2 * kCs + 10, data.size()) == data);
  CHECK(slice(fmtest::read_bytes(f.ppath), 2 * kCs + 10, data.size()) == data);
  CHECK(fmtest::file_size(f.spath) == 0);

  auto st = f.img->status();
  CHECK_FALSE(st.secondary_ok);
  CHECK_FALSE(f.img->secondary_ok());
  CHECK(st.state == "degraded");
  // Durably recorded: the degraded flag and an events bump.
  auto h = fmtest::header_on_disk(f.bpath);
  CHECK(fmtest::has(h.state, core::kStateDegraded));
  CHECK(h.events == ev0 + 1);
  CHECK(fmtest::file_bit(fmtest::read_bytes(f.bpath), 2));
  // The chunk stays dirty (and awaiting resync) through any number of sweeps.
  for (int i = 0; i < 3; ++i) CHECK_FALSE(f.img->sweep());
  CHECK(f.img->status().bitmap.dirty_chunks >= 1);
  CHECK(f.img->status().bitmap.unsynced_chunks >= 1);
  CHECK(fmtest::file_bit(fmtest::read_bytes(f.bpath), 2));
  // Later writes go to the primary only, succeed, and accumulate bits; events stay.
  f.write(data, 5 * kCs);
  CHECK(fmtest::file_bit(fmtest::read_bytes(f.bpath), 5));
  CHECK(fmtest::header_on_disk(f.bpath).events == ev0 + 1);
  for (int i = 0; i < 3; ++i) CHECK_FALSE(f.img->sweep());
  CHECK(f.img->status().bitmap.dirty_chunks == 2);
  // Resync cannot run while degraded.
  std::vector<std::byte> buf(kCs);
  std::uint64_t copied = 0;
  CHECK_FALSE(f.img->resync_step(0, kCs, buf, &copied));
  // A clean unmount keeps the bits.
  CHECK_FALSE(f.img->close_clean());
  auto file = fmtest::read_bytes(f.bpath);
  CHECK(fmtest::file_bit(file, 2));
  CHECK(fmtest::file_bit(file, 5));
}

TEST_CASE("an error both legs share is refused with nothing changed: no bit, not degraded") {
  Fixture f(4 * kCs);
  const auto data = fmtest::pattern(4 * kCs, 4);
  f.write(data, 0);
  for (int i = 0; i < 2; ++i) REQUIRE_FALSE(f.img->sweep());  // clean again
  REQUIRE(f.img->status().bitmap.dirty_chunks == 0);
  const auto bm0 = fmtest::read_bytes(f.bpath);
  // The files are sparse: the limit is far above what the test writes, anything else this
  // process may write while it holds (a log) stays below it.
  constexpr std::uint64_t kLimit = 64 << 20;
  auto nothing_changed = [&](const char* what) {
    INFO(what);
    const auto st = f.img->status();
    CHECK(st.secondary_ok);
    CHECK(st.state == "clean");
    CHECK(st.bitmap.total_chunks == 4);
    CHECK(st.bitmap.dirty_chunks == 0);
    CHECK(st.bitmap.unsynced_chunks == 0);
    CHECK(fmtest::read_bytes(f.ppath) == data);
    CHECK(fmtest::read_bytes(f.spath) == data);
    REQUIRE_FALSE(f.img->bitmap()->flush());
    CHECK(fmtest::read_bytes(f.bpath) == bm0);
  };
  SUBCASE("EFBIG past the largest file both legs allow") {
    FileSizeLimit limit(kLimit);
    CHECK(f.img->truncate(2 * kLimit) == std::errc::file_too_large);
    nothing_changed("truncate");
    CHECK(f.img->fallocate(0, 0, 2 * kLimit) == std::errc::file_too_large);
    nothing_changed("fallocate");
    CHECK(f.img->fallocate(FALLOC_FL_ZERO_RANGE, kCs, 2 * kLimit) == std::errc::file_too_large);
    nothing_changed("zero range");
    auto w = f.img->write(fmtest::pattern(4096, 1), kLimit + 4096);  // small: primary first
    CHECK(w.error() == std::errc::file_too_large);
    nothing_changed("small write");
    w = f.img->write(fmtest::pattern(256 * 1024, 2), 2 * kLimit);  // large: both legs at once
    CHECK(w.error() == std::errc::file_too_large);
    nothing_changed("large write");
  }
  SUBCASE("EFBIG while degraded adds nothing to what the secondary misses") {
    f.img->fail_secondary("test", std::make_error_code(std::errc::io_error));
    const auto before = f.img->status().bitmap;
    FileSizeLimit limit(kLimit);
    CHECK(f.img->truncate(2 * kLimit) == std::errc::file_too_large);
    CHECK(f.img->fallocate(0, 0, 2 * kLimit) == std::errc::file_too_large);
    const auto after = f.img->status().bitmap;
    CHECK(after.total_chunks == before.total_chunks);
    CHECK(after.dirty_chunks == before.dirty_chunks);
    CHECK(after.unsynced_chunks == before.unsynced_chunks);
    CHECK(fmtest::file_size(f.ppath) == 4 * kCs);
  }
  SUBCASE("both legs read-only: EBADF on both") {
    f.open(O_RDONLY, O_RDONLY);
    auto w = f.img->write(fmtest::pattern(4096, 1), kCs);
    CHECK(w.error() == std::errc::bad_file_descriptor);
    w = f.img->write(fmtest::pattern(256 * 1024, 2), 0);
    CHECK(w.error() == std::errc::bad_file_descriptor);
    CHECK(f.img->status().secondary_ok);
    CHECK(f.img->status().bitmap.dirty_chunks == 0);
  }
}

TEST_CASE("what the primary refuses and the secondary took is resynced; not degraded") {
  Fixture f(4 * kCs);
  f.open(O_RDWR, O_RDONLY);  // the primary refuses every write
  auto w = f.img->write(fmtest::pattern(256 * 1024, 5), 0);  // large: both legs at once
  CHECK(w.error() == std::errc::bad_file_descriptor);
  CHECK(f.img->status().secondary_ok);
  CHECK(f.img->status().bitmap.unsynced_chunks == 4);
  std::vector<std::byte> buf(kCs);
  std::uint64_t copied = 0;
  auto r = f.img->resync_step(0, 4 * kCs, buf, &copied);
  REQUIRE(r);
  CHECK(fmtest::read_bytes(f.spath) == fmtest::read_bytes(f.ppath));
}

TEST_CASE("an image without a secondary starts degraded") {
  TempDir d;
  const auto ppath = d / "p.img", bpath = d / "b.fmbm";
  fmtest::write_bytes(ppath, {});
  utils::ThreadPool pool(1);
  utils::UniqueFd p(::open(ppath.c_str(), O_RDWR | O_CLOEXEC));
  utils::UniqueFd b(::open(bpath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  core::BitmapOpenParams bp;
  bp.set_uuid = kSet;
  auto bm = core::Bitmap::open(std::move(b), bp, nullptr);
  REQUIRE(bm);
  core::Image img("x", std::move(p), utils::UniqueFd{}, std::move(*bm), &pool);
  CHECK(img.status().state == "degraded");
  CHECK(fmtest::has(fmtest::header_on_disk(bpath).state, core::kStateDegraded));
  auto r = img.write(fmtest::pattern(10, 1), 0);
  REQUIRE(r);
  CHECK(img.status().bitmap.unsynced_chunks == 1);
}

TEST_CASE("a sequential stream marks intent ahead once it is 1 MiB long; random writes do not") {
  Fixture f(32 * 1024 * 1024);  // 512 chunks; default intent_ahead 16 MiB
  const auto data = fmtest::pattern(kCs, 41);
  const auto f0 = f.img->bitmap()->stats().flushes;
  for (std::uint64_t c = 0; c < 128; ++c) f.write(data, c * kCs);  // 8 MiB, in order
  const auto seq = f.img->bitmap()->stats().flushes - f0;
  MESSAGE("128 sequential 64 KiB writes: " << seq << " bitmap flushes");
  // The first 1 MiB (16 writes) is not yet a stream: one flush each. Then the window
  // doubles with the stream: 1 MiB ahead at 1 MiB written, 2 at 2, 4 at 4 (8 MiB total).
  CHECK(seq >= 16);
  CHECK(seq <= 16 + 4);
  CHECK(f.img->bitmap()->stats().dirty_chunks >= 128);
  CHECK(f.img->bitmap()->stats().dirty_chunks <= 128 + 128);
  // Writes that do not continue a stream mark nothing ahead.
  const auto f1 = f.img->bitmap()->stats().flushes;
  const auto d1 = f.img->bitmap()->stats().dirty_chunks;
  for (std::uint64_t c : {500, 450, 480, 470, 460}) f.write(data, c * kCs);
  CHECK(f.img->bitmap()->stats().flushes - f1 == 5);
  CHECK(f.img->bitmap()->stats().dirty_chunks == d1 + 5);
  CHECK(f.read(0, 128 * kCs).size() == 128 * kCs);
}

TEST_CASE("resync_step gives the secondary the primary's preallocation, not written zeros") {
  // Primary: chunk 0 data; chunk 1 preallocated (unwritten) and READ, so its clean pages
  // sit in the page cache, where SEEK_DATA reports them as data on ext4; chunk 2 half data,
  // half preallocated; chunk 3 a hole. The secondary must get the same layout.
  Fixture f(4 * kCs, O_RDWR, /*clean_bitmap=*/false);
  f.img.reset();
  const auto c0 = fmtest::pattern(kCs, 31), c2 = fmtest::pattern(kCs / 2, 32);
  {
    utils::UniqueFd p(::open(f.ppath.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE_FALSE(utils::pwrite_all(p.get(), c0, 0));
    if (::fallocate(p.get(), FALLOC_FL_KEEP_SIZE, kCs, 2 * kCs) != 0) {
      MESSAGE("no fallocate on this file system; case skipped");
      return;
    }
    REQUIRE_FALSE(utils::pwrite_all(p.get(), c2, 2 * kCs));
    REQUIRE(::fsync(p.get()) == 0);
    std::vector<std::byte> junk(kCs);
    REQUIRE(utils::pread_all(p.get(), junk, kCs));  // cache the unwritten chunk's pages
  }
  {
    utils::UniqueFd p(::open(f.ppath.c_str(), O_RDONLY | O_CLOEXEC));
    auto pm = utils::fiemap_extents(p.get(), 0, 4 * kCs);
    if (!pm) {
      MESSAGE("no FIEMAP on this file system; case skipped");
      return;
    }
  }
  ::unlink(f.bpath.c_str());
  f.open();
  std::vector<std::byte> buf(1 << 20);
  std::uint64_t copied = 0;
  auto r = f.img->resync_step(0, 4 * kCs, buf, &copied);
  REQUIRE(r);
  CHECK(*r == 4);
  CHECK(copied == c0.size() + c2.size());  // the unwritten range was not copied as zeros
  CHECK(fmtest::read_bytes(f.ppath) == fmtest::read_bytes(f.spath));
  utils::UniqueFd s(::open(f.spath.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(s.valid());
  REQUIRE(::fsync(s.get()) == 0);
  auto sm = utils::fiemap_extents(s.get(), 0, 4 * kCs);
  REQUIRE(sm);
  // Written [0, kCs) and [2 kCs, 2.5 kCs); unwritten [kCs, 2 kCs) and [2.5 kCs, 3 kCs).
  std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>> got;
  for (const auto& e : *sm) got.emplace_back(e.off, e.len, e.unwritten);
  const std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>> want = {
      {0, kCs, false}, {kCs, kCs, true}, {2 * kCs, kCs / 2, false}, {2 * kCs + kCs / 2, kCs / 2, true}};
  CHECK(got == want);
}

TEST_CASE("resync_step copies unsynced chunks and keeps holes as holes") {
  // Primary: chunk 0 data, chunk 1 hole, chunk 2 partly data, chunk 3 hole (to EOF).
  // Secondary: garbage everywhere. Bitmap: new, over an image holding data: all unsynced.
  Fixture f(4 * kCs, O_RDWR, /*clean_bitmap=*/false);
  f.img.reset();
  const auto c0 = fmtest::pattern(kCs, 21), c2 = fmtest::pattern(10000, 22);
  {
    utils::UniqueFd p(::open(f.ppath.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE_FALSE(utils::pwrite_all(p.get(), c0, 0));
    REQUIRE_FALSE(utils::pwrite_all(p.get(), c2, 2 * kCs));
    REQUIRE(::fsync(p.get()) == 0);
    std::vector<std::byte> junk(4 * kCs, std::byte{0xAA});
    utils::UniqueFd s(::open(f.spath.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE_FALSE(utils::pwrite_all(s.get(), junk, 0));
    REQUIRE(::fsync(s.get()) == 0);
  }
  ::unlink(f.bpath.c_str());
  f.open();
  CHECK_FALSE(f.why.empty());
  REQUIRE(f.img->status().bitmap.unsynced_chunks == 4);
  CHECK(f.img->status().state == "resyncing");

  std::vector<std::byte> buf(16384);  // smaller than a chunk: several preads per run
  std::uint64_t total_copied = 0, steps = 0, from = 0;
  SUBCASE("one big run") {
    for (;;) {
      std::uint64_t copied = 0;
      auto r = f.img->resync_step(from, 1 << 20, buf, &copied);
      REQUIRE(r);
      total_copied += copied;
      ++steps;
      if (*r >= 4) break;
      from = *r;
    }
    CHECK(steps == 1);
  }
  SUBCASE("one chunk per step") {
    for (;;) {
      std::uint64_t copied = 0;
      auto r = f.img->resync_step(from, kCs, buf, &copied);
      REQUIRE(r);
      total_copied += copied;
      if (*r >= 4) break;
      CHECK(*r == from + 1);
      from = *r;
      ++steps;
    }
    CHECK(steps == 3);
  }
  MESSAGE("resync copied " << total_copied << " bytes in " << steps << " step(s)");
  // Data extents are copied whole (file-system blocks), holes not at all.
  const std::uint64_t c2_blocks = (c2.size() + 4095) / 4096 * 4096;
  CHECK(total_copied >= c0.size() + c2.size());
  CHECK(total_copied <= c0.size() + c2_blocks);
  const auto p = fmtest::read_bytes(f.ppath), s = fmtest::read_bytes(f.spath);
  CHECK(p.size() == s.size());
  CHECK(p == s);
  // Holes stayed holes on the secondary.
  utils::UniqueFd sfd(::open(f.spath.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(sfd.valid());
  const off_t d1 = ::lseek(sfd.get(), static_cast<off_t>(kCs), SEEK_DATA);
  CHECK(d1 == static_cast<off_t>(2 * kCs));  // chunk 1 is a hole
  const off_t h2 = ::lseek(sfd.get(), static_cast<off_t>(2 * kCs), SEEK_HOLE);
  CHECK(h2 <= static_cast<off_t>(3 * kCs));
  errno = 0;
  const off_t d3 = ::lseek(sfd.get(), static_cast<off_t>(3 * kCs), SEEK_DATA);
  const int d3_errno = errno;  // before any CHECK: doctest may change errno
  CHECK(d3 == -1);  // nothing but a hole to EOF
  CHECK(d3_errno == ENXIO);
  // Now an ordinary dirty image: cleared after idle.
  auto st = f.img->status();
  CHECK(st.bitmap.unsynced_chunks == 0);
  CHECK(st.resync_copied_bytes == total_copied);
  CHECK(st.state == "active");
  CHECK_FALSE(f.img->sweep());
  CHECK_FALSE(f.img->sweep());
  CHECK(f.img->status().bitmap.dirty_chunks == 0);
  CHECK(f.img->status().state == "clean");
  // Nothing left: resync_step says so.
  std::uint64_t copied = 0;
  auto r = f.img->resync_step(0, 1 << 20, buf, &copied);
  REQUIRE(r);
  CHECK(*r == 4);
  CHECK(copied == 0);
}

TEST_CASE("resync_step copies only the unsynced chunks") {
  Fixture f(4 * kCs);
  f.img.reset();
  {
    utils::UniqueFd p(::open(f.ppath.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE_FALSE(utils::pwrite_all(p.get(), fmtest::pattern(4 * kCs, 31), 0));
  }
  f.open();
  REQUIRE(f.img->status().bitmap.dirty_chunks == 0);
  REQUIRE_FALSE(f.img->bitmap()->mark_unsynced(kCs, 1));
  std::vector<std::byte> buf(kCs);
  std::uint64_t copied = 0;
  auto r = f.img->resync_step(0, 1 << 20, buf, &copied);
  REQUIRE(r);
  CHECK(*r == 2);
  CHECK(copied == kCs);
  const auto p = fmtest::read_bytes(f.ppath), s = fmtest::read_bytes(f.spath);
  CHECK(slice(s, kCs, kCs) == slice(p, kCs, kCs));
  CHECK(all_zero(slice(s, 0, kCs)));      // untouched
  CHECK(all_zero(slice(s, 2 * kCs, kCs)));
}

TEST_CASE("fsync, sync_legs and close_clean") {
  Fixture f;
  f.write(fmtest::pattern(3 * kCs, 41), 0);
  CHECK_FALSE(f.img->fsync(true));
  CHECK_FALSE(f.img->fsync(false));
  CHECK_FALSE(f.img->sync_legs());
  CHECK_FALSE(f.img->close_clean());
  auto h = fmtest::header_on_disk(f.bpath);
  CHECK(fmtest::has(h.state, core::kStateClean));
  CHECK(fmtest::count_file_bits(fmtest::read_bytes(f.bpath), 3) == 0);
  CHECK(f.img->status().state == "clean");
}

TEST_CASE("max_image_size: EFBIG before either leg or the bitmap changes") {
  TempDir dir;
  const auto pp = dir / "p.img", sp = dir / "s.img", bp = dir / "b.fmbm";
  for (const auto& p : {pp, sp}) fmtest::write_bytes(p, fmtest::pattern(100000, 3), 0600);
  utils::ThreadPool pool{2};
  core::BitmapOpenParams par;
  par.set_uuid = kSet;
  par.chunk_size = kCs;
  par.image_size = 100000;
  par.max_image_size = 1 << 20;
  utils::UniqueFd b(::open(bp.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  std::string why;
  auto bm = core::Bitmap::open(std::move(b), par, &why);
  REQUIRE(bm);
  core::ImageOptions io;
  io.max_image_size = 1 << 20;
  core::Image img("img", utils::UniqueFd(::open(pp.c_str(), O_RDWR | O_CLOEXEC)),
                  utils::UniqueFd(::open(sp.c_str(), O_RDWR | O_CLOEXEC)), std::move(*bm), &pool, io);
  const auto before = img.bitmap()->stats();
  const auto bm_before = fmtest::read_bytes(bp);
  auto data = fmtest::pattern(4096, 9);
  CHECK(img.truncate((1 << 20) + 1) == std::errc::file_too_large);
  CHECK(img.truncate(1ull << 50) == std::errc::file_too_large);
  auto w = img.write(data, (1 << 20) - 100);
  REQUIRE_FALSE(w);
  CHECK(w.error() == std::errc::file_too_large);
  CHECK(img.fallocate(0, 0, (1 << 20) + 1) == std::errc::file_too_large);
  CHECK(img.fallocate(0, ~0ull - 10, 100) == std::errc::file_too_large);
  CHECK(fmtest::file_size(pp) == 100000);
  CHECK(fmtest::file_size(sp) == 100000);
  CHECK(img.bitmap()->stats().total_chunks == before.total_chunks);
  CHECK(img.bitmap()->stats().dirty_chunks == before.dirty_chunks);
  CHECK(fmtest::read_bytes(bp) == bm_before);
  // Up to the limit is fine; a KEEP_SIZE punch past it does not grow the cover.
  CHECK_FALSE(img.truncate(1 << 20));
  CHECK(img.write(data, (1 << 20) - 4096));
  CHECK_FALSE(img.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 64ull << 20));
  CHECK(img.bitmap()->stats().total_chunks == 16);
  CHECK(fmtest::file_size(pp) == (1 << 20));
}

TEST_CASE("a failed bitmap shows as bitmap-failed, refuses truncate, and recovers in sweep") {
  Fixture f(4 * kCs);
  // The bitmap's descriptor is the one opened last by the fixture: find it by its path.
  int fdnum = -1;
  for (int fd = 3; fd < 1024 && fdnum < 0; ++fd) {
    char link[64], target[4096];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const auto n = ::readlink(link, target, sizeof target - 1);
    if (n > 0 && std::string(target, static_cast<std::size_t>(n)) == f.bpath) fdnum = fd;
  }
  REQUIRE(fdnum >= 0);
  const int saved = ::dup(fdnum);
  {
    utils::UniqueFd full(::open("/dev/full", O_RDWR | O_CLOEXEC));
    REQUIRE(::dup2(full.get(), fdnum) == fdnum);
  }
  auto data = fmtest::pattern(1000, 5);
  CHECK_FALSE(f.img->write(data, 0));
  auto st = f.img->status();
  CHECK(st.state == "bitmap-failed");
  CHECK_FALSE(st.bitmap.error.empty());
  CHECK(f.img->truncate(8 * kCs));
  CHECK(fmtest::file_size(f.ppath) == 4 * kCs);
  CHECK_FALSE(f.img->sweep());  // still full: logged once, not an error to repeat
  CHECK(f.img->status().state == "bitmap-failed");
  REQUIRE(::dup2(saved, fdnum) == fdnum);
  ::close(saved);
  CHECK_FALSE(f.img->sweep());
  CHECK(f.img->status().state != "bitmap-failed");
  CHECK(f.img->status().bitmap.error.empty());
  f.write(data, 0);
}

}  // TEST_SUITE

TEST_CASE("direct_reads: aligned reads the cache does not hold go direct and return every acknowledged write") {
  core::ImageOptions io;
  io.direct_reads = true;
  fmtest::ImageFixture f(1 << 20, io);
  auto data = fmtest::pattern(1 << 20, 23);
  for (std::uint64_t off : {0ull, 4096ull, 12345ull, 65536ull * 3 + 7, (1ull << 20) - 5000})
    REQUIRE(f.img->write(std::as_bytes(std::span(data).subspan(off, 5000 - off % 7)), off));
  auto want = fmtest::read_bytes(f.ppath);  // every page of the primary now in the cache
  REQUIRE(want.size() == data.size());
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(4096, 3 << 16));
  REQUIRE(raw);
  std::unique_ptr<std::byte, decltype(&std::free)> hold(raw, &std::free);
  auto check = [&](std::byte* at, std::uint64_t off, std::size_t len) {
    auto r = f.img->read(std::span(at, len), off);
    REQUIRE(r);
    const std::size_t n = std::min<std::size_t>(len, want.size() - off);
    CHECK(*r == n);
    CHECK(std::memcmp(at, want.data() + off, n) == 0);
  };
  // The whole file is cached: aligned reads copy from the cache, none goes to the disk.
  check(raw, 0, 3 << 16);
  check(raw, 4096, 8192);
  CHECK(f.img->cached_reads() == 2);
  CHECK(f.img->direct_reads() == 0);

  // Dropped from the cache, then written again without a sync: each range below misses
  // pages, and the dirty ones of a recent write are written back by the direct read first.
  fmtest::evict_cache(f.ppath);
  auto more = fmtest::pattern(4096, 99);
  REQUIRE(f.img->write(std::as_bytes(std::span(more)), 8192));
  std::memcpy(want.data() + 8192, more.data(), 4096);
  check(raw, 0, 3 << 16);                     // aligned, page 2 dirty, the rest gone: direct
  check(raw, 4096, 8192);                     // aligned: direct
  check(raw, (1 << 20) - 4096, 8192);         // aligned, across the end: short, direct
  CHECK(f.img->direct_reads() == 3);
  CHECK(f.img->cached_reads() == 2);
  check(raw + 512, 4096, 4096);               // buffer not 4 KiB aligned: buffered
  check(raw, 12345, 4096);                    // offset unaligned: buffered
  check(raw, 8192, 1000);                     // length unaligned: buffered
  CHECK(f.img->direct_reads() == 3);
  CHECK(f.img->cached_reads() == 2);          // neither counter counts unaligned reads
  // Direct reads leave nothing in the cache; a buffered read brings a range in, and the
  // next aligned read of it is served from there.
  fmtest::evict_cache(f.ppath);
  check(raw, 65536, 4096);
  CHECK(f.img->direct_reads() == 4);
  check(raw, 65536, 4096);
  CHECK(f.img->direct_reads() == 5);          // still not cached: a direct read keeps no page
  check(raw + 512, 65536, 4096);              // buffered: brings the page in
  check(raw, 65536, 4096);
  CHECK(f.img->cached_reads() == 3);
  CHECK(f.img->status().cached_reads == 3);
}

TEST_CASE("direct_reads: a reader alone reading on is left to the read-ahead, unless reads found company within the window") {
  for (const bool wide : {false, true}) {
    CAPTURE(wide);
    core::ImageOptions io;
    io.direct_reads = true;
    io.direct_concurrent_window_ns = wide ? std::int64_t{3600} * 1'000'000'000 : 0;
    fmtest::ImageFixture f(4 << 20, io);
    auto data = fmtest::pattern(4 << 20, 31);
    REQUIRE(f.img->write(std::as_bytes(std::span(data)), 0));
    fmtest::evict_cache(f.ppath);
    auto* raw = static_cast<std::byte*>(std::aligned_alloc(4096, 2 * 65536));
    REQUIRE(raw);
    std::unique_ptr<std::byte, decltype(&std::free)> hold(raw, &std::free);
    auto read_at = [&](std::byte* at, std::uint64_t off) {
      auto r = f.img->read(std::span(at, 65536), off);
      REQUIRE(r);
      REQUIRE(*r == 65536);
      CHECK(std::memcmp(at, data.data() + off, 65536) == 0);
    };
    // Two readers at once, each re-reading its own range (never a continuation, never
    // cached: all direct). A direct read sleeps on the disk, so the two overlap.
    auto reader = [&](std::byte* at, std::uint64_t off) {
      for (int i = 0; i < 2000; ++i) read_at(at, off);
    };
    std::thread t1(reader, raw, 0), t2(reader, raw + 65536, 1 << 20);
    t1.join();
    t2.join();
    REQUIRE(f.img->direct_reads() == 4000);
    // Then one reader alone, reading on: the first read is not a continuation (direct);
    // the next continues it — left to the read-ahead unless the window is still open.
    const std::uint64_t direct0 = f.img->direct_reads(), cached0 = f.img->cached_reads();
    read_at(raw, 2 << 20);
    read_at(raw, (2 << 20) + 65536);
    read_at(raw, (2 << 20) + 2 * 65536);
    if (wide) {
      CHECK(f.img->direct_reads() == direct0 + 3);
      CHECK(f.img->cached_reads() == cached0);
    } else {
      CHECK(f.img->direct_reads() == direct0 + 1);
      CHECK(f.img->cached_reads() == cached0 + 2);
    }
  }
}

TEST_CASE("direct_reads off: no read is direct") {
  fmtest::ImageFixture f(1 << 20);
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(4096, 4096));
  std::unique_ptr<std::byte, decltype(&std::free)> hold(raw, &std::free);
  REQUIRE(f.img->read(std::span(raw, 4096), 0));
  CHECK(f.img->direct_reads() == 0);
  CHECK(f.img->cached_reads() == 0);
}
