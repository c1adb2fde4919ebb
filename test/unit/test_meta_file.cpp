// Unit tests for metadata files that are not what they seem (issue 12 §4): config.json,
// member.json and the log file as a FIFO, a symlink, a hard link or oversized; symlinked
// metadata directories; and the set's directory rules shared by create and mount.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>

#include "core/config.hpp"
#include "test_helpers.hpp"
#include "utils/error.hpp"
#include "utils/log.hpp"
#include "utils/meta_file.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

const char* kMember = "{\"format\": 1, \"set_uuid\": \"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\"}\n";

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// Runs fn on another thread: a FIFO must be refused, not block; "" when fn did not throw.
template <class Fn>
std::string refusal(Fn fn) {
  auto fut = std::async(std::launch::async, [fn] {
    try {
      fn();
    } catch (const utils::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  });
  if (fut.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    // The thread stays blocked (and ~future would wait for it): report and stop here.
    std::fputs("test_meta_file: an open blocked for 5 s (a FIFO opened without O_NONBLOCK?)\n", stderr);
    std::_Exit(1);
  }
  return fut.get();
}

std::string make_meta(const TempDir& d) {
  const std::string meta = d / ".fusemirror";
  REQUIRE(::mkdir(meta.c_str(), 0700) == 0);
  return meta;
}

}  // namespace

TEST_SUITE("meta_file") {

TEST_CASE("member.json: a regular file is read; FIFO, symlink, hard link, oversize are refused") {
  TempDir d;
  const std::string meta = make_meta(d);
  const std::string member = meta + "/member.json";
  TempDir outside;
  fmtest::write_text(outside / "member.json", kMember);

  SUBCASE("regular") {
    fmtest::write_text(member, kMember);
    CHECK(utils::to_string(core::load_member(member).set_uuid) == "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
  }
  SUBCASE("FIFO: refused at once, not a hang") {
    REQUIRE(::mkfifo(member.c_str(), 0600) == 0);
    auto m = refusal([&] { (void)core::load_member(member); });
    CHECK(contains(m, member));
    CHECK(contains(m, "FIFO"));
  }
  SUBCASE("symlink to a valid record elsewhere") {
    REQUIRE(::symlink((outside / "member.json").c_str(), member.c_str()) == 0);
    auto m = refusal([&] { (void)core::load_member(member); });
    CHECK(contains(m, member));
    CHECK(contains(m, "symbolic link"));
  }
  SUBCASE("hard link") {
    REQUIRE(::link((outside / "member.json").c_str(), member.c_str()) == 0);
    auto m = refusal([&] { (void)core::load_member(member); });
    CHECK(contains(m, member));
    CHECK(contains(m, "hard link"));
  }
  SUBCASE("oversized (sparse, 2 GiB)") {
    fmtest::write_text(member, kMember);
    REQUIRE(::truncate(member.c_str(), 2ll << 30) == 0);
    auto m = refusal([&] { (void)core::load_member(member); });
    CHECK(contains(m, member));
    CHECK(contains(m, "bytes"));
  }
  SUBCASE("a directory or a device") {
    REQUIRE(::mkdir(member.c_str(), 0700) == 0);
    CHECK(contains(refusal([&] { (void)core::load_member(member); }), "directory"));
  }
  SUBCASE("the metadata directory itself is a symlink") {
    TempDir d2;
    fmtest::write_text(outside / "member.json", kMember);
    REQUIRE(::symlink(outside.path().c_str(), (d2 / ".fusemirror").c_str()) == 0);
    auto m = refusal([&] { (void)core::load_member(d2 / ".fusemirror/member.json"); });
    CHECK(contains(m, "symbolic link"));
  }
}

TEST_CASE("config.json: the same refusals through load_config(PRIMARY)") {
  TempDir d;
  const std::string meta = make_meta(d);
  const std::string conf = meta + "/config.json";
  SUBCASE("FIFO") {
    REQUIRE(::mkfifo(conf.c_str(), 0600) == 0);
    auto m = refusal([&] { (void)core::load_config(d.path()); });
    CHECK(contains(m, conf));
    CHECK(contains(m, "FIFO"));
  }
  SUBCASE("symlink") {
    TempDir outside;
    fmtest::write_text(outside / "c.json", "{}");
    REQUIRE(::symlink((outside / "c.json").c_str(), conf.c_str()) == 0);
    CHECK(contains(refusal([&] { (void)core::load_config(d.path()); }), "symbolic link"));
  }
  SUBCASE("hard link") {
    fmtest::write_text(d / "other", "{}");
    REQUIRE(::link((d / "other").c_str(), conf.c_str()) == 0);
    CHECK(contains(refusal([&] { (void)core::load_config(d.path()); }), "hard link"));
  }
  SUBCASE("oversized: 1 MiB + 1 of whitespace") {
    fmtest::write_text(conf, std::string((1 << 20) + 1, ' '));
    CHECK(contains(refusal([&] { (void)core::load_config(d.path()); }), "bytes"));
  }
  SUBCASE("a config path named by the operator may go through a symlink, the file must still be regular") {
    TempDir other;
    REQUIRE(::mkfifo((other / "fifo.json").c_str(), 0600) == 0);
    REQUIRE(::symlink((other / "fifo.json").c_str(), (d / "link.json").c_str()) == 0);
    CHECK(contains(refusal([&] { (void)core::load_config(d / "link.json"); }), "FIFO"));
  }
}

TEST_CASE("write_file_atomic never writes through a symlink") {
  TempDir d, outside;
  SUBCASE("a symlinked directory is refused") {
    REQUIRE(::symlink(outside.path().c_str(), (d / "meta").c_str()) == 0);
    auto m = refusal([&] { core::write_file_atomic(d / "meta", "member.json", kMember); });
    CHECK(contains(m, "symbolic link"));
    CHECK_FALSE(fmtest::stdfs::exists(outside / "member.json"));
    CHECK_FALSE(fmtest::stdfs::exists(outside / ".member.json.tmp"));
  }
  SUBCASE("a symlink at the temp name or the final name is replaced, its target untouched") {
    fmtest::write_text(outside / "victim", "precious");
    REQUIRE(::symlink((outside / "victim").c_str(), (d / ".member.json.tmp").c_str()) == 0);
    REQUIRE(::symlink((outside / "victim").c_str(), (d / "member.json").c_str()) == 0);
    core::write_file_atomic(d.path(), "member.json", kMember);
    CHECK(fmtest::read_text(outside / "victim") == "precious");
    struct stat st {};
    REQUIRE(::lstat((d / "member.json").c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(fmtest::read_text(d / "member.json") == kMember);
  }
  SUBCASE("a hard link at the final name: the other name keeps its content") {
    fmtest::write_text(outside / "victim", "precious");
    REQUIRE(::link((outside / "victim").c_str(), (d / "member.json").c_str()) == 0);
    core::write_file_atomic(d.path(), "member.json", kMember);
    CHECK(fmtest::read_text(outside / "victim") == "precious");
  }
}

TEST_CASE("the log file: never a symlink, FIFO or hard link") {
  TempDir d, outside;
  const std::string log = d / "fusemirror.log";
  std::string soft;
  SUBCASE("created 0600 and appended") {
    utils::UniqueFd fd = utils::open_log_file(log, &soft);
    REQUIRE(fd);
    struct stat st {};
    REQUIRE(::stat(log.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK((::fcntl(fd.get(), F_GETFL) & O_APPEND) != 0);
  }
  SUBCASE("a symlink, even dangling, is refused and its target neither created nor written") {
    REQUIRE(::symlink((outside / "target").c_str(), log.c_str()) == 0);
    auto m = refusal([&] { (void)utils::open_log_file(log, &soft); });
    CHECK(contains(m, log));
    CHECK(contains(m, "symbolic link"));
    CHECK_FALSE(fmtest::stdfs::exists(outside / "target"));
    fmtest::write_text(outside / "target", "precious");
    CHECK(contains(refusal([&] { utils::setup_logging(log, false, false); }), "symbolic link"));
    CHECK(fmtest::read_text(outside / "target") == "precious");
  }
  SUBCASE("a FIFO") {
    REQUIRE(::mkfifo(log.c_str(), 0600) == 0);
    CHECK(contains(refusal([&] { (void)utils::open_log_file(log, &soft); }), "not a regular file"));
  }
  SUBCASE("a hard link") {
    fmtest::write_text(outside / "target", "precious");
    REQUIRE(::link((outside / "target").c_str(), log.c_str()) == 0);
    CHECK(contains(refusal([&] { (void)utils::open_log_file(log, &soft); }), "hard link"));
  }
  SUBCASE("a symlinked directory") {
    REQUIRE(::symlink(outside.path().c_str(), (d / "meta").c_str()) == 0);
    CHECK(contains(refusal([&] { (void)utils::open_log_file(d / "meta/fusemirror.log", &soft); }),
                   "symbolic link"));
    CHECK_FALSE(fmtest::stdfs::exists(outside / "fusemirror.log"));
  }
  SUBCASE("an ordinary failure only loses the file") {
    utils::UniqueFd fd = utils::open_log_file(d / "no-such-dir/fusemirror.log", &soft);
    CHECK_FALSE(fd);
    CHECK(contains(soft, "no-such-dir"));
  }
}

TEST_CASE("check_set_directories: the rules of create, for every mount") {
  TempDir root;
  const std::string p = root / "p", s = root / "s";
  REQUIRE(::mkdir(p.c_str(), 0700) == 0);
  REQUIRE(::mkdir(s.c_str(), 0700) == 0);
  core::Config c;
  c.primary = p;
  c.secondary = s;
  auto why = [&] { return refusal([&] { core::check_set_directories(c); }); };
  CHECK(why().empty());
  SUBCASE("secondary inside the primary") {
    REQUIRE(::mkdir((p + "/nested").c_str(), 0700) == 0);
    c.secondary = p + "/nested";
    CHECK(contains(why(), "must not contain each other"));
  }
  SUBCASE("primary inside the secondary") {
    REQUIRE(::mkdir((s + "/nested").c_str(), 0700) == 0);
    c.primary = s + "/nested";
    CHECK(contains(why(), "must not contain each other"));
  }
  SUBCASE("the same directory under two names") {
    REQUIRE(::symlink(p.c_str(), (root / "alias").c_str()) == 0);
    c.secondary = root / "alias";
    CHECK(contains(why(), "same directory"));
  }
  SUBCASE("bitmap_dir inside the secondary or in the primary's image tree") {
    c.bitmap_dir = s + "/bm";
    CHECK(contains(why(), "inside the secondary"));
    c.bitmap_dir = p + "/bm";
    CHECK(contains(why(), "would show as images"));
    c.bitmap_dir = p + "/.fusemirror/bm";  // beside the metadata: hidden from the mount
    CHECK(why().empty());
    c.bitmap_dir = root / "bm";
    CHECK(why().empty());
  }
  SUBCASE("symlinked metadata directories") {
    TempDir outside;
    SUBCASE("PRIMARY/.fusemirror") {
      REQUIRE(::symlink(outside.path().c_str(), (p + "/.fusemirror").c_str()) == 0);
    }
    SUBCASE("SECONDARY/.fusemirror") {
      REQUIRE(::symlink(outside.path().c_str(), (s + "/.fusemirror").c_str()) == 0);
    }
    SUBCASE("SECONDARY/.fusemirror/images") {
      REQUIRE(::mkdir((s + "/.fusemirror").c_str(), 0700) == 0);
      REQUIRE(::symlink(outside.path().c_str(), (s + "/.fusemirror/images").c_str()) == 0);
    }
    SUBCASE("PRIMARY/.fusemirror/bitmaps") {
      REQUIRE(::mkdir((p + "/.fusemirror").c_str(), 0700) == 0);
      REQUIRE(::symlink(outside.path().c_str(), (p + "/.fusemirror/bitmaps").c_str()) == 0);
    }
    SUBCASE("a configured bitmap_dir") {
      REQUIRE(::symlink(outside.path().c_str(), (root / "bm").c_str()) == 0);
      c.bitmap_dir = root / "bm";
    }
    CHECK(contains(why(), "symbolic link"));
  }
}

}  // TEST_SUITE
