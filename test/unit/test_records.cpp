// Unit tests for the secondary's records and the coverage proof (core/records.hpp): which
// facts allow a bitmap-only resync and which force a full one, without a mount.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "core/layout.hpp"
#include "core/records.hpp"
#include "test_helpers.hpp"

using namespace fusemirror;

namespace {

const utils::Uuid kSet = *utils::parse_uuid("11111111-2222-4333-8444-555555555555");
const utils::Uuid kImage = *utils::parse_uuid("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
const utils::Uuid kOther = *utils::parse_uuid("99999999-2222-4333-8444-555555555555");

core::LegRecord record(std::uint64_t events, bool clean = false) {
  core::LegRecord r;
  r.set_uuid = kSet;
  r.image_uuid = kImage;
  r.events = events;
  r.clean = clean;
  return r;
}

core::CoverageFacts facts(std::uint64_t bitmap_events, std::uint64_t events_cleared) {
  return {kSet, kImage, bitmap_events, events_cleared, {}};
}

bool covered(const utils::Result<core::LegRecord>& r, const core::CoverageFacts& f) {
  return core::why_not_covered(r, f).empty();
}

// A secondary directory in a temp dir and its records.
struct RecordsFixture {
  fmtest::TempDir d;
  core::Legs legs;
  core::SecondaryRecords recs{legs, kSet};
  RecordsFixture() {
    auto sec = core::Dir::open(d / "");
    REQUIRE(sec);
    legs.secondary = std::move(*sec);
  }
};

}  // namespace

TEST_CASE("coverage proof: a record between events_cleared and the bitmap's events covers") {
  CHECK(covered(record(10), facts(10, 4)));
  CHECK(covered(record(4), facts(10, 4)));
}

TEST_CASE("coverage proof: every reason for a full resync is named") {
  auto why = [](const utils::Result<core::LegRecord>& r, const core::CoverageFacts& f) {
    return core::why_not_covered(r, f);
  };
  CHECK(why(utils::errno_code(ENOENT), facts(10, 4)).find("no record") != std::string::npos);
  CHECK(why(utils::errno_code(EBADMSG), facts(10, 4)).find("unreadable") != std::string::npos);
  CHECK(why(record(11), facts(10, 4)).find("bitmap is older") != std::string::npos);
  CHECK(why(record(3), facts(10, 4)).find("older than the bitmap") != std::string::npos);
  auto foreign = record(10);
  foreign.set_uuid = kOther;
  CHECK(why(foreign, facts(10, 4)).find("another mirror set") != std::string::npos);
  auto other_image = record(10);
  other_image.image_uuid = kOther;
  CHECK(why(other_image, facts(10, 4)).find("another image") != std::string::npos);
}

TEST_CASE("coverage proof: a clean record's file identity must match the copy found") {
  auto r = record(10, true);
  r.file = core::FileIdentity{42, 1 << 20, 1234567};
  auto f = facts(10, 4);
  f.secondary_file = core::FileIdentity{42, 1 << 20, 1234567};
  CHECK(covered(r, f));
  f.secondary_file->mtime_ns += 1;
  CHECK(core::why_not_covered(r, f).find("not the one this set left") != std::string::npos);
  f.secondary_file = core::FileIdentity{43, 1 << 20, 1234567};
  CHECK_FALSE(covered(r, f));
  r.clean = false;  // an active record does not vouch for the file's identity
  CHECK(covered(r, f));
}

TEST_CASE("records: written, read back, renamed, removed; missing and corrupt told apart") {
  RecordsFixture f;
  auto& d = f.d;
  auto& recs = f.recs;
  CHECK(recs.read("a.img").error() == std::errc::no_such_file_or_directory);
  REQUIRE_FALSE(recs.write("dir/a.img", kImage, 7));
  auto r = recs.read("dir/a.img");
  REQUIRE(r);
  CHECK(r->events == 7);
  CHECK(r->set_uuid == kSet);
  CHECK(r->image_uuid == kImage);
  CHECK_FALSE(r->clean);
  CHECK_FALSE(r->file);
  CHECK_FALSE(recs.rename("dir", "dir2", true));
  CHECK(recs.read("dir/a.img").error() == std::errc::no_such_file_or_directory);
  REQUIRE(recs.read("dir2/a.img"));
  std::ofstream(d / core::record_rel("dir2/b.img")) << "{not json";
  CHECK(recs.read("dir2/b.img").error() == std::errc::bad_message);
  CHECK_FALSE(recs.remove("dir2/a.img"));
  CHECK(recs.read("dir2/a.img").error() == std::errc::no_such_file_or_directory);
  // Nothing to remove or to move is no error (an image without a record, a second remove).
  CHECK_FALSE(recs.remove("dir2/a.img"));
  CHECK_FALSE(recs.rename("dir2/none.img", "dir2/other.img", false));
  // A record moved over another one replaces it (rename of an image over another).
  REQUIRE_FALSE(recs.write("x.img", kImage, 3));
  REQUIRE_FALSE(recs.write("y.img", kImage, 9));
  CHECK_FALSE(recs.rename("x.img", "y.img", false));
  CHECK(recs.read("x.img").error() == std::errc::no_such_file_or_directory);
  REQUIRE(recs.read("y.img"));
  CHECK(recs.read("y.img")->events == 3);
}

TEST_CASE("records: a FIFO, a symlink or a hard link in place of a record is no proof, and never blocks") {
  RecordsFixture f;
  auto& d = f.d;
  auto& recs = f.recs;
  REQUIRE_FALSE(recs.write("good.img", kImage, 7));
  const std::string dir = d / (std::string(core::kMetaDirName) + "/" + core::kRecordsDirName);
  REQUIRE(::mkfifo((dir + "/fifo.img.json").c_str(), 0600) == 0);
  REQUIRE(::symlink("good.img.json", (dir + "/link.img.json").c_str()) == 0);
  REQUIRE(::link((dir + "/good.img.json").c_str(), (dir + "/hard.img.json").c_str()) == 0);
  for (const char* rel : {"fifo.img", "link.img", "hard.img"}) {
    auto r = recs.read(rel);  // returns at once: opened O_NONBLOCK, never followed
    CHECK_FALSE(r);
    CHECK_FALSE(core::why_not_covered(r, facts(7, 0)).empty());
  }
  // The good record has two links now: it proves nothing either, until rewritten.
  CHECK_FALSE(recs.read("good.img"));
  REQUIRE_FALSE(recs.write("good.img", kImage, 8));  // replaced by rename: one link again
  REQUIRE(recs.read("good.img"));
  CHECK(recs.read("good.img")->events == 8);
}
