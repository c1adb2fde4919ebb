// Unit tests for core/dir: relative-path checks and opening beneath a directory.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dir.hpp"
#include "test_helpers.hpp"

using namespace fusemirror;
using fmtest::TempDir;

TEST_SUITE("dir") {

TEST_CASE("check_relative_path") {
  for (const char* ok : {"", "a", "a.img", "dir/b.img", "a/b/c", "..a", "a..", "a b"}) {
    INFO("'" << ok << "'");
    CHECK_FALSE(core::check_relative_path(ok));
  }
  for (const char* bad : {"/a", "..", ".", "a/..", "../a", "a/./b", "a//b", "a/", "/"}) {
    INFO("'" << bad << "'");
    CHECK(core::check_relative_path(bad) == std::errc::invalid_argument);
  }
  using namespace std::string_view_literals;
  CHECK(core::check_relative_path("a\0b"sv) == std::errc::invalid_argument);
}

TEST_CASE("open_beneath never leaves the directory") {
  TempDir d;
  const std::string root = d / "root";
  REQUIRE(::mkdir(root.c_str(), 0755) == 0);
  fmtest::write_text(root + "/file", "inside");
  fmtest::write_text(d / "outside", "outside");
  REQUIRE(::symlink((d / "outside").c_str(), (root + "/abs_link").c_str()) == 0);
  REQUIRE(::symlink("../outside", (root + "/rel_link").c_str()) == 0);
  REQUIRE(::symlink("file", (root + "/inner_link").c_str()) == 0);
  REQUIRE(::symlink(d.path().c_str(), (root + "/dir_link").c_str()) == 0);
  auto dir = core::Dir::open(root);
  REQUIRE(dir);
  CHECK(dir->path() == root);

  auto f = dir->open_beneath("file", O_RDONLY);
  REQUIRE(f);
  char buf[16] = {};
  CHECK(::pread(f->get(), buf, sizeof buf, 0) == 6);
  CHECK(std::string(buf) == "inside");

  for (const char* rel : {"abs_link", "rel_link", "inner_link", "dir_link/outside"}) {
    INFO(rel);
    auto r = dir->open_beneath(rel, O_RDONLY);
    CHECK_FALSE(r);
  }
  CHECK(dir->open_beneath("../outside", O_RDONLY).error() == std::errc::invalid_argument);
  CHECK(dir->open_beneath("/etc/passwd", O_RDONLY).error() == std::errc::invalid_argument);
  CHECK(dir->open_beneath("missing", O_RDONLY).error() == std::errc::no_such_file_or_directory);
  // Creating beneath, with a mode.
  auto c = dir->open_beneath("new", O_RDWR | O_CREAT | O_EXCL, 0600);
  REQUIRE(c);
  struct stat st {};
  REQUIRE(::fstat(c->get(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Writing "through" a symlink creates nothing outside.
  CHECK_FALSE(dir->open_beneath("dir_link/planted", O_RDWR | O_CREAT, 0600));
  CHECK_FALSE(fmtest::stdfs::exists(d / "planted"));
}

TEST_CASE("mkdirs, parent_of and lstat") {
  TempDir d;
  auto dir = core::Dir::open(d.path());
  REQUIRE(dir);
  REQUIRE_FALSE(dir->mkdirs("a/b/c", 0700));
  struct stat st {};
  REQUIRE(::stat((d / "a/b/c").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0777) == 0700);
  CHECK_FALSE(dir->mkdirs("a/b/c"));  // existing: fine
  CHECK(dir->mkdirs("a/../x") == std::errc::invalid_argument);
  REQUIRE(::symlink(d.path().c_str(), (d / "a/link").c_str()) == 0);
  CHECK(dir->mkdirs("a/link/evil"));
  CHECK_FALSE(fmtest::stdfs::exists(d / "evil"));

  auto p = dir->parent_of("a/b/file");
  REQUIRE(p);
  CHECK(p->second == "file");
  CHECK(dir->parent_of("").error() == std::errc::invalid_argument);

  auto l = dir->lstat("a/link");
  REQUIRE(l);
  CHECK(S_ISLNK(l->st_mode));  // not followed
  auto r = dir->lstat("");
  REQUIRE(r);
  CHECK(S_ISDIR(r->st_mode));
  CHECK_FALSE(dir->lstat("nope"));
  CHECK_FALSE(core::Dir::open(d / "nope"));

  // fsync of a directory, of the directory holding a name; never through a symlink.
  CHECK_FALSE(dir->sync());
  CHECK_FALSE(dir->sync("a/b"));
  CHECK_FALSE(dir->sync_parent("a/b/file-not-needed"));
  CHECK_FALSE(dir->sync_parent("top-level-name"));
  CHECK(dir->sync("nope") == std::errc::no_such_file_or_directory);
  CHECK(dir->sync("a/link"));
  CHECK(dir->sync("a/../a") == std::errc::invalid_argument);
}

}  // TEST_SUITE
