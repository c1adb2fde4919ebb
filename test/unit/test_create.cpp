// Unit tests for core::create_set on real temp directories.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/bitmap.hpp"
#include "core/config.hpp"
#include "core/create.hpp"
#include "test_helpers.hpp"
#include "utils/error.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

struct Dirs {
  TempDir root;
  std::string p, s;
  Dirs() : p(root / "p"), s(root / "s") {
    REQUIRE(::mkdir(p.c_str(), 0755) == 0);
    REQUIRE(::mkdir(s.c_str(), 0755) == 0);
  }
  core::CreateOptions opts() const {
    core::CreateOptions o;
    o.primary = p;
    o.secondary = s;
    return o;
  }
};

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// create_set must throw utils::Error mentioning `needle`, and leave `root` unchanged.
void expect_refused(const core::CreateOptions& o, const std::string& root, const std::string& needle) {
  const auto before = fmtest::snapshot(root);
  std::string msg;
  try {
    (void)core::create_set(o);
  } catch (const utils::Error& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  CHECK_FALSE(msg.empty());
  CHECK(msg.find(needle) != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);  // one line
  const auto after = fmtest::snapshot(root);
  CHECK(after == before);
  if (after != before) {
    for (const auto& [k, v] : after)
      if (!before.count(k)) MESSAGE("created by the refused create: " << k);
  }
}

}  // namespace

TEST_SUITE("create") {

TEST_CASE("create_set writes the config (0600) and the membership record") {
  Dirs d;
  auto c = core::create_set(d.opts());
  const std::string conf = d.p + "/.fusemirror/config.json";
  const std::string member = d.s + "/.fusemirror/member.json";
  REQUIRE(exists(conf));
  REQUIRE(exists(member));
  CHECK(mode_of(conf) == 0600);
  CHECK(mode_of(member) == 0600);
  CHECK(mode_of(d.p + "/.fusemirror") == 0700);
  CHECK(mode_of(d.s + "/.fusemirror") == 0700);
  CHECK(mode_of(d.p + "/.fusemirror/bitmaps") == 0700);
  CHECK_FALSE(utils::is_nil(c.uuid));
  auto loaded = core::load_config(d.p);
  CHECK(loaded.uuid == c.uuid);
  CHECK(loaded.primary == d.p);
  CHECK(loaded.secondary == d.s);
  CHECK(loaded.chunk_size == 65536);
  CHECK(core::parse_member(fmtest::read_text(member), member).set_uuid == c.uuid);
  // No temp files left behind.
  CHECK_FALSE(exists(d.p + "/.fusemirror/.config.json.tmp"));
  CHECK_FALSE(exists(d.s + "/.fusemirror/.member.json.tmp"));
}

TEST_CASE("options are carried into the config; paths are canonical") {
  Dirs d;
  auto o = d.opts();
  o.primary = d.root / "p/../p/";  // not canonical
  o.chunk_size = 1 << 20;
  o.daemon_sleep = 0.25;
  o.bitmap = false;
  REQUIRE(::mkdir((d.root / "bm").c_str(), 0700) == 0);
  o.bitmap_dir = d.root / "bm";
  auto c = core::create_set(o);
  auto loaded = core::load_config(d.p);
  CHECK(loaded.primary == d.p);
  CHECK(loaded.chunk_size == (1u << 20));
  CHECK(loaded.daemon_sleep == doctest::Approx(0.25));
  CHECK_FALSE(loaded.bitmap);
  REQUIRE(loaded.bitmap_dir.has_value());
  CHECK(*loaded.bitmap_dir == d.root / "bm");
  CHECK(c.uuid == loaded.uuid);
}

TEST_CASE("refusals change nothing") {
  Dirs d;
  fmtest::write_bytes(d.p + "/a.img", fmtest::pattern(10000, 1));
  const std::string& root = d.root.path();
  SUBCASE("the same directory twice") {
    auto o = d.opts();
    o.secondary = d.p;
    expect_refused(o, root, "same directory");
  }
  SUBCASE("the same directory through a symlink") {
    REQUIRE(::symlink(d.p.c_str(), (d.root / "link").c_str()) == 0);
    auto o = d.opts();
    o.secondary = d.root / "link";
    expect_refused(o, root, "same directory");
  }
  SUBCASE("the same directory through a trailing slash and ..") {
    auto o = d.opts();
    o.secondary = d.root / "s/../p/";
    expect_refused(o, root, "same directory");
  }
  SUBCASE("secondary inside the primary") {
    REQUIRE(::mkdir((d.p + "/inner").c_str(), 0755) == 0);
    auto o = d.opts();
    o.secondary = d.p + "/inner";
    expect_refused(o, root, "contain");
  }
  SUBCASE("primary inside the secondary") {
    REQUIRE(::mkdir((d.s + "/inner").c_str(), 0755) == 0);
    auto o = d.opts();
    o.primary = d.s + "/inner";
    expect_refused(o, root, "contain");
  }
  SUBCASE("nested through a symlink") {
    REQUIRE(::mkdir((d.p + "/inner").c_str(), 0755) == 0);
    REQUIRE(::symlink((d.p + "/inner").c_str(), (d.root / "innerlink").c_str()) == 0);
    auto o = d.opts();
    o.secondary = d.root / "innerlink";
    expect_refused(o, root, "contain");
  }
  SUBCASE("a sibling sharing a name prefix is not nested") {
    // /x/p and /x/p2 do not contain each other: accepted.
    REQUIRE(::mkdir((d.root / "p2").c_str(), 0755) == 0);
    auto o = d.opts();
    o.secondary = d.root / "p2";
    CHECK_NOTHROW(core::create_set(o));
  }
  SUBCASE("missing secondary") {
    auto o = d.opts();
    o.secondary = d.root / "missing";
    expect_refused(o, root, "missing");
  }
  SUBCASE("missing primary") {
    auto o = d.opts();
    o.primary = d.root / "missing";
    expect_refused(o, root, "missing");
  }
  SUBCASE("secondary is a file") {
    auto o = d.opts();
    o.secondary = d.p + "/a.img";
    expect_refused(o, root, "not a directory");
  }
  SUBCASE("bad chunk size") {
    auto o = d.opts();
    o.chunk_size = 3000;
    expect_refused(o, root, "chunk");
  }
  SUBCASE("bad daemon sleep") {
    auto o = d.opts();
    o.daemon_sleep = 0;
    expect_refused(o, root, "daemon");
  }
  SUBCASE("bitmap dir inside the secondary") {
    REQUIRE(::mkdir((d.s + "/bm").c_str(), 0700) == 0);
    auto o = d.opts();
    o.bitmap_dir = d.s + "/bm";
    expect_refused(o, root, "bitmap");
  }
}

TEST_CASE("an already initialised primary needs --force") {
  Dirs d;
  fmtest::write_bytes(d.p + "/a.img", fmtest::pattern(70000, 2));
  fmtest::write_bytes(d.s + "/a.img", fmtest::pattern(70000, 2));  // an identical copy
  auto c1 = core::create_set(d.opts());
  SUBCASE("refused without force, the same pair") {
    expect_refused(d.opts(), d.root.path(), "already");
  }
  SUBCASE("refused without force, a new secondary") {
    REQUIRE(::mkdir((d.root / "s2").c_str(), 0755) == 0);
    auto o = d.opts();
    o.secondary = d.root / "s2";
    expect_refused(o, d.root.path(), "already");
  }
  SUBCASE("accepted with force: a new set UUID everywhere") {
    auto o = d.opts();
    o.force = true;
    auto c2 = core::create_set(o);
    CHECK(c2.uuid != c1.uuid);
    CHECK(core::load_config(d.p).uuid == c2.uuid);
    const std::string member = d.s + "/.fusemirror/member.json";
    CHECK(core::parse_member(fmtest::read_text(member), member).set_uuid == c2.uuid);
    CHECK(fmtest::header_on_disk(d.p + "/.fusemirror/bitmaps/a.img.fmbm").set_uuid == c2.uuid);
  }
}

TEST_CASE("a secondary of another set is refused without --force") {
  Dirs d;
  auto c1 = core::create_set(d.opts());
  REQUIRE(::mkdir((d.root / "p2").c_str(), 0755) == 0);
  auto o = d.opts();
  o.primary = d.root / "p2";
  expect_refused(o, d.root.path(), "another mirror set");
  SUBCASE("even after the first set's config is gone") {
    REQUIRE(::unlink((d.p + "/.fusemirror/config.json").c_str()) == 0);
    expect_refused(o, d.root.path(), "another mirror set");
  }
  SUBCASE("with force it is taken over") {
    o.force = true;
    auto c2 = core::create_set(o);
    const std::string member = d.s + "/.fusemirror/member.json";
    CHECK(core::parse_member(fmtest::read_text(member), member).set_uuid == c2.uuid);
    CHECK(c2.uuid != c1.uuid);
  }
}

TEST_CASE("a non-empty secondary whose files differ needs --force") {
  Dirs d;
  fmtest::write_bytes(d.p + "/a.img", fmtest::pattern(5000, 4));
  SUBCASE("a different file name") {
    fmtest::write_bytes(d.s + "/b.img", fmtest::pattern(5000, 5));
  }
  SUBCASE("the same name, a different size") {
    fmtest::write_bytes(d.s + "/a.img", fmtest::pattern(5001, 5));
  }
  SUBCASE("the same name and size, different contents") {
    fmtest::write_bytes(d.s + "/a.img", fmtest::pattern(5000, 5));
  }
  SUBCASE("an extra file in a subdirectory") {
    fmtest::write_bytes(d.s + "/a.img", fmtest::pattern(5000, 4));
    REQUIRE(::mkdir((d.s + "/sub").c_str(), 0755) == 0);
    fmtest::write_bytes(d.s + "/sub/x.img", fmtest::pattern(10, 5));
  }
  expect_refused(d.opts(), d.root.path(), "is not empty");
  auto o = d.opts();
  o.force = true;
  CHECK_NOTHROW(core::create_set(o));
  CHECK(exists(d.p + "/.fusemirror/config.json"));
  CHECK(exists(d.s + "/.fusemirror/member.json"));
}

TEST_CASE("a secondary holding the same files is accepted without --force") {
  Dirs d;
  fmtest::write_bytes(d.p + "/a.img", fmtest::pattern(5000, 4));
  fmtest::write_bytes(d.s + "/a.img", fmtest::pattern(5000, 4));
  CHECK_NOTHROW(core::create_set(d.opts()));
}

TEST_CASE("adopted images get all-dirty bitmaps") {
  Dirs d;
  const std::uint64_t a_size = 200000;  // 4 chunks of 64 KiB (the last partial)
  fmtest::write_bytes(d.p + "/a.img", fmtest::pattern(a_size, 6));
  REQUIRE(::mkdir((d.p + "/sub").c_str(), 0755) == 0);
  fmtest::write_bytes(d.p + "/sub/b.img", {});
  fmtest::write_bytes(d.p + "/c.img", fmtest::pattern(1, 7));
  REQUIRE(::symlink("a.img", (d.p + "/l.img").c_str()) == 0);  // not an image: skipped
  auto c = core::create_set(d.opts());
  const std::string broot = d.p + "/.fusemirror/bitmaps";

  auto check_bitmap = [&](const std::string& rel, std::uint64_t size) {
    INFO("image " << rel);
    const std::string path = broot + "/" + rel + ".fmbm";
    REQUIRE(exists(path));
    CHECK(mode_of(path) == 0600);
    auto file = fmtest::read_bytes(path);
    auto h = core::decode_header(file);
    REQUIRE(h);
    CHECK(h->set_uuid == c.uuid);
    CHECK(h->chunk_size == 65536);
    CHECK(h->sync_size == size);
    CHECK(fmtest::has(h->state, core::kStateNeedsFullSync));
    const std::uint64_t n = h->bit_count();
    CHECK(n == (size + 65535) / 65536);
    CHECK(file.size() == core::kHeaderSize + core::bits_bytes(n));
    CHECK(fmtest::count_file_bits(file, n) == n);
    CHECK_FALSE(fmtest::file_bit(file, n));  // padding stays zero
    // Opened as the mount would: untrusted-as-clean, every chunk to copy.
    utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd.valid());
    core::BitmapOpenParams bp;
    bp.set_uuid = c.uuid;
    bp.image_size = size;
    std::string why;
    auto bm = core::Bitmap::open(std::move(fd), bp, &why);
    REQUIRE(bm);
    CHECK((*bm)->stats().unsynced_chunks == n);
    if (n) CHECK_FALSE(why.empty());
  };
  check_bitmap("a.img", a_size);
  check_bitmap("sub/b.img", 0);
  check_bitmap("c.img", 1);
  CHECK_FALSE(exists(broot + "/l.img.fmbm"));
  CHECK(mode_of(broot) == 0700);
  // The secondary got no data, only its record.
  CHECK_FALSE(exists(d.s + "/a.img"));
}

// docs/on-disk-format.md §1: "Metadata files are created mode 0600 (directories 0700)".
// create_set makes the bitmap subdirectory of an image in a subdirectory with
// boost::filesystem::create_directories, i.e. 0777 & ~umask (0755 here).
TEST_CASE("bitmap subdirectories for nested images are created 0700") {
  Dirs d;
  REQUIRE(::mkdir((d.p + "/sub").c_str(), 0755) == 0);
  REQUIRE(::mkdir((d.p + "/sub/deeper").c_str(), 0755) == 0);
  fmtest::write_bytes(d.p + "/sub/deeper/b.img", fmtest::pattern(10, 1));
  (void)core::create_set(d.opts());
  const std::string broot = d.p + "/.fusemirror/bitmaps";
  REQUIRE(exists(broot + "/sub/deeper/b.img.fmbm"));
  CHECK(mode_of(broot) == 0700);
  CHECK(mode_of(broot + "/sub") == 0700);
  CHECK(mode_of(broot + "/sub/deeper") == 0700);
}

TEST_CASE("bitmaps go to bitmap_dir when given") {
  Dirs d;
  fmtest::write_bytes(d.p + "/a.img", fmtest::pattern(100, 8));
  REQUIRE(::mkdir((d.root / "bm").c_str(), 0700) == 0);
  auto o = d.opts();
  o.bitmap_dir = d.root / "bm";
  auto c = core::create_set(o);
  CHECK(exists(d.root / "bm/a.img.fmbm"));
  CHECK_FALSE(exists(d.p + "/.fusemirror/bitmaps/a.img.fmbm"));
  CHECK(fmtest::header_on_disk(d.root / "bm/a.img.fmbm").set_uuid == c.uuid);
}

}  // TEST_SUITE
