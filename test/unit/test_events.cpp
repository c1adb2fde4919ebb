// Unit tests for core/events (the event ring behind MOUNT/.fusemirror/events and
// `fusemirror monitor`): sequence numbers, overflow, the permission filter, the file's text
// with hostile names, and the events the image and the resync engine post.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "core/events.hpp"
#include "core/image.hpp"
#include "core/resync.hpp"
#include "core/status.hpp"
#include "image_fixture.hpp"
#include "test_helpers.hpp"

using namespace fusemirror;
using core::Event;
using core::EventLog;

namespace {

std::vector<std::string> names(const core::EventSnapshot& s) {
  std::vector<std::string> out;
  for (const auto& e : s.events) out.push_back(e.name);
  return out;
}

constexpr std::uint64_t kCs = fmtest::kImageChunk;

// An image over two temp files, posting to `log` (declared before the image: outlives it).
struct ImageFixture {
  EventLog log;
  fmtest::ImageFixture files;
  std::shared_ptr<core::Image>& img = files.img;
  std::string& ppath = files.ppath;
  std::string& spath = files.spath;
  explicit ImageFixture(std::uint64_t size) : files(size, options(&log), "dir/disk one.img") {}
  static core::ImageOptions options(EventLog* log) {
    core::ImageOptions io;
    io.events = log;
    return io;
  }
};

}  // namespace

TEST_SUITE("events") {
  TEST_CASE("sequence numbers start at 1 and only grow; the snapshot says first and next") {
    EventLog log;
    auto s0 = log.snapshot();
    CHECK(s0.first == 1);
    CHECK(s0.next == 1);
    CHECK(s0.events.empty());
    CHECK_FALSE(s0.start.empty());
    log.post(Event::fail, "a.img", "write: Input/output error");
    log.post(Event::new_image, "b.img");
    auto s = log.snapshot();
    REQUIRE(s.events.size() == 2);
    CHECK(s.first == 1);
    CHECK(s.next == 3);
    CHECK(s.events[0].seq == 1);
    CHECK(s.events[0].name == "Fail");
    CHECK(s.events[0].image == "a.img");
    CHECK(s.events[0].detail == "write: Input/output error");
    CHECK(s.events[1].seq == 2);
    CHECK(s.events[1].name == "NewImage");
    CHECK(s.start == s0.start);
    // Another log (another daemon's life) has another start id.
    CHECK(EventLog().start_id() != log.start_id());
  }

  TEST_CASE("a full ring drops the oldest: first tells a reader how many it lost") {
    EventLog log(4);
    for (int i = 0; i < 10; ++i) log.post(Event::rebuild20, "img" + std::to_string(i));
    auto s = log.snapshot();
    CHECK(s.first == 7);
    CHECK(s.next == 11);
    REQUIRE(s.events.size() == 4);
    CHECK(s.events.front().seq == 7);
    CHECK(s.events.front().image == "img6");
    CHECK(s.events.back().seq == 10);
  }

  TEST_CASE("the filter hides images, never set-wide events, and leaves first/next alone") {
    EventLog log;
    log.post(Event::fail, "secret/a.img");
    log.post(Event::fail, "open/b.img");
    log.post(Event::lag_exceeded, "");
    auto s = log.snapshot([](const std::string& image) { return image.rfind("secret/", 0) != 0; });
    CHECK(s.first == 1);
    CHECK(s.next == 4);
    REQUIRE(s.events.size() == 2);
    CHECK(s.events[0].image == "open/b.img");
    CHECK(s.events[1].image.empty());
  }

  TEST_CASE("detail is bounded") {
    EventLog log;
    log.post(Event::fail, "a", std::string(10000, 'x'));
    CHECK(log.snapshot().events.at(0).detail.size() == EventLog::kMaxDetail);
  }

  TEST_CASE("wait_for_event wakes at a post, and times out without one") {
    EventLog log;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(log.wait_for_event(1, std::chrono::milliseconds(30)) == 1);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(25));
    std::thread t([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      log.post(Event::new_image, "x");
    });
    CHECK(log.wait_for_event(1, std::chrono::seconds(30)) == 2);
    t.join();
    CHECK(log.wait_for_event(1, std::chrono::milliseconds(1)) == 2);  // already there
  }

  TEST_CASE("the file's text: one line per event whatever the names hold, and it parses back") {
    EventLog log;
    const std::vector<std::string> images = {"plain.img",
                                             "with space.img",
                                             "new\nline.img",
                                             "back\\slash",
                                             "-",
                                             "  ",
                                             "\x1b[2Jesc",
                                             "bad\xff\xfeutf8",
                                             "caf\xc3\xa9/\xe6\x97\xa5.img",
                                             "tab\there",
                                             std::string("nul\0inside", 10)};
    for (const auto& i : images)
      log.post(Event::fail, i, "op: err\nwith newline and  two spaces\\");
    log.post(Event::lag_exceeded, "", " leading space");
    log.post(Event::new_image, "x", "");
    const auto snap = log.snapshot();
    const std::string text = core::format_events(snap);
    CHECK(std::count(text.begin(), text.end(), '\n') == static_cast<long>(snap.events.size()) + 1);
    for (unsigned char c : text)
      CHECK_MESSAGE((c >= 0x20 || c == '\n'), "raw control byte in the text");
    std::string why;
    auto back = core::parse_events(text, &why);
    REQUIRE_MESSAGE(back, why);
    CHECK(back->start == snap.start);
    CHECK(back->first == snap.first);
    CHECK(back->next == snap.next);
    REQUIRE(back->events.size() == snap.events.size());
    for (std::size_t k = 0; k < snap.events.size(); ++k) {
      CHECK(back->events[k].seq == snap.events[k].seq);
      CHECK(back->events[k].time_ms == snap.events[k].time_ms);
      CHECK(back->events[k].name == snap.events[k].name);
      CHECK(back->events[k].image == snap.events[k].image);
      CHECK(back->events[k].detail == snap.events[k].detail);
    }
    // A line reads as documented: SEQ TIME EVENT IMAGE DETAIL.
    CHECK(text.find("\n2 ") != std::string::npos);
    CHECK(text.find(" Fail with\\x20space.img op: err\\nwith newline and  two spaces\\\\\n") !=
          std::string::npos);
    CHECK(text.find(" LagExceeded -  leading space\n") != std::string::npos);
    CHECK(text.find(" Fail \\x2d ") != std::string::npos);
  }

  TEST_CASE("parse_events refuses what is not an events file") {
    std::string why;
    CHECK_FALSE(core::parse_events("", &why));
    CHECK(why.find("not a fusemirror events file") != std::string::npos);
    CHECK_FALSE(core::parse_events("{\"sets\": []}\n", &why));
    CHECK_FALSE(core::parse_events("# fusemirror-events 2 start=x first=1 next=1\n", &why));
    CHECK_FALSE(core::parse_events("# fusemirror-events 1 start=x first=3 next=2\n",
                                   &why));  // first > next
    CHECK_FALSE(core::parse_events("# fusemirror-events 1 start=x first=1\n", &why));
    CHECK(why.find("bad header") != std::string::npos);
    const std::string h = "# fusemirror-events 1 start=x first=1 next=2\n";
    CHECK(core::parse_events(h));
    CHECK_FALSE(core::parse_events(h + "1 2026-11-30T23:06:10.123Z Fail\n", &why));  // no image
    CHECK_FALSE(core::parse_events(h + "x 2026-11-30T23:06:10.123Z Fail a\n", &why));
    CHECK_FALSE(core::parse_events(h + "1 yesterday Fail a\n", &why));
    CHECK_FALSE(
        core::parse_events(h + "1 2026-11-30T23:06:10.123Z Fail a\\q\n", &why));  // bad escape
    CHECK_FALSE(core::parse_events(h + "1 2026-11-30T23:06:10.123Z Fail a det\\x4\n", &why));
    auto ok = core::parse_events(h + "1 2026-11-30T23:06:10.123Z Fail a\n");
    REQUIRE(ok);
    REQUIRE(ok->events.size() == 1);
    CHECK(core::format_event_time(ok->events[0].time_ms) == "2026-11-30T23:06:10.123Z");
  }

  TEST_CASE("an image posts Fail when its secondary fails and SecondaryReconnected at re-add") {
    ImageFixture f(4 * kCs);
    f.img->fail_secondary("write", std::error_code(EIO, std::generic_category()));
    f.img->fail_secondary("write", std::error_code(EIO, std::generic_category()));  // once only
    auto s = f.log.snapshot();
    REQUIRE(s.events.size() == 1);
    CHECK(s.events[0].name == "Fail");
    CHECK(s.events[0].image == "dir/disk one.img");
    CHECK(s.events[0].detail == "write: Input/output error");
    utils::UniqueFd sec(::open(f.spath.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE_FALSE(f.img->readd(std::move(sec), /*full=*/true));
    s = f.log.snapshot();
    REQUIRE(s.events.size() == 2);
    CHECK(s.events[1].name == "SecondaryReconnected");
    CHECK(s.events[1].detail == "full resync of 4 chunks");
  }

  TEST_CASE(
      "a resync posts RebuildStarted, Rebuild20..80 in order and RebuildFinished; a check "
      "CheckFinished and "
      "MismatchesFound") {
    constexpr std::uint64_t kSize = 32 << 20;  // 8 steps of 4 MiB: every 20 % is crossed mid-pass
    ImageFixture f(kSize);
    {
      utils::UniqueFd p(::open(f.ppath.c_str(), O_RDWR | O_CLOEXEC));
      for (std::uint64_t off = 0; off < kSize; off += 1 << 20)
        REQUIRE_FALSE(utils::pwrite_all(
            p.get(), fmtest::pattern(4096, static_cast<unsigned>(off >> 20)), off));
    }
    REQUIRE_FALSE(f.img->bitmap()->mark_unsynced(0, kSize));
    core::ResyncEngine engine(0, 0, &f.log);
    engine.start();
    engine.queue(f.img, core::SyncAction::resync);
    engine.wait_idle();
    auto s = f.log.snapshot();
    CHECK(names(s) == std::vector<std::string>{"RebuildStarted", "Rebuild20", "Rebuild40",
                                               "Rebuild60", "Rebuild80", "RebuildFinished"});
    CHECK(s.events.front().detail.find("512 chunks") != std::string::npos);
    CHECK(s.events.back().detail.rfind("done: 512 chunks", 0) == 0);
    // A clean check: CheckFinished only.
    engine.queue(f.img, core::SyncAction::check);
    engine.wait_idle();
    s = f.log.snapshot();
    CHECK(names(s).back() == "CheckFinished");
    CHECK(s.events.back().detail.rfind("check done: mismatch_cnt 0", 0) == 0);
    // Two chunks differ on the secondary: the check reports them.
    {
      utils::UniqueFd sec(::open(f.spath.c_str(), O_RDWR | O_CLOEXEC));
      REQUIRE_FALSE(utils::pwrite_all(sec.get(), fmtest::pattern(100, 77), 3 * kCs));
      REQUIRE_FALSE(utils::pwrite_all(sec.get(), fmtest::pattern(100, 78), 40 * kCs));
    }
    const auto n0 = s.next;
    engine.queue(f.img, core::SyncAction::check);
    engine.wait_idle();
    s = f.log.snapshot();
    std::vector<std::string> tail;
    for (const auto& e : s.events)
      if (e.seq >= n0) tail.push_back(e.name + ": " + e.detail);
    REQUIRE(tail.size() == 2);
    CHECK(tail[0].rfind("CheckFinished: check done: mismatch_cnt 2", 0) == 0);
    CHECK(tail[1] == "MismatchesFound: 2 chunks differ between the legs (check)");
    engine.stop();
  }

  TEST_CASE("health_summary: the one line systemd's STATUS= shows") {
    core::SetStatus st;
    CHECK(core::health_summary(st) == "0 images, 0 degraded");
    auto img = [](const char* state, bool ok) {
      core::ImageStatus i;
      i.state = state;
      i.secondary_ok = ok;
      return i;
    };
    st.images = {img("clean", true)};
    CHECK(core::health_summary(st) == "1 image, 0 degraded");
    st.images = {img("clean", true), img("degraded", false), img("resyncing", true), img("checking", true),
                 img("bitmap-failed", true)};
    CHECK(core::health_summary(st) ==
          "5 images, 1 degraded, 1 resyncing, 1 checking, 1 bitmap-failed (writes refused)");
  }

}  // TEST_SUITE
