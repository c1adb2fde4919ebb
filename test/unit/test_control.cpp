// Unit tests for the control-line parser and the sync-action vocabulary (core/control.hpp,
// core/status.hpp), without a mount.
#include <doctest/doctest.h>

#include "core/control.hpp"
#include "core/status.hpp"

using namespace fusemirror;
using core::ControlLine;

namespace {
std::optional<ControlLine> parse(std::string_view line, std::string* why = nullptr) {
  std::string w;
  auto c = core::parse_control_line(line, why ? why : &w);
  return c;
}
}  // namespace

TEST_CASE("sync actions: one vocabulary with md's aliases") {
  for (auto a : {core::SyncAction::idle, core::SyncAction::resync, core::SyncAction::check, core::SyncAction::repair})
    CHECK(core::parse_sync_action(core::to_string(a)) == a);
  CHECK(core::parse_sync_action("frozen") == core::SyncAction::idle);
  CHECK(core::parse_sync_action("recover") == core::SyncAction::resync);
  CHECK_FALSE(core::parse_sync_action("Check"));
  CHECK_FALSE(core::parse_sync_action(""));
}

TEST_CASE("control lines: verbs and plain names") {
  auto c = parse("fail disk.img");
  REQUIRE(c);
  CHECK(c->verb == ControlLine::Verb::fail);
  CHECK(c->image == "disk.img");
  c = parse("re-add dir/disk.img\n");
  REQUIRE(c);
  CHECK(c->verb == ControlLine::Verb::readd);
  CHECK(c->image == "dir/disk.img");
  c = parse("  sync-action vm.img   check  ");
  REQUIRE(c);
  CHECK(c->verb == ControlLine::Verb::sync_action);
  CHECK(c->image == "vm.img");
  CHECK(c->action == core::SyncAction::check);
}

TEST_CASE("control lines: names with spaces, unquoted and quoted") {
  auto c = parse("fail my disk.img");
  REQUIRE(c);
  CHECK(c->image == "my disk.img");
  c = parse("sync-action my  vm disk.img repair");
  REQUIRE(c);
  CHECK(c->image == "my  vm disk.img");
  CHECK(c->action == core::SyncAction::repair);
  c = parse(R"(re-add " lead and trail ")");
  REQUIRE(c);
  CHECK(c->image == " lead and trail ");
  c = parse(R"(sync-action "a\"b\\c\x01\n.img" idle)");
  REQUIRE(c);
  CHECK(c->image == std::string("a\"b\\c\x01\n.img"));
  CHECK(c->action == core::SyncAction::idle);
}

TEST_CASE("control lines: refusals say why") {
  std::string why;
  CHECK_FALSE(parse("", &why));
  CHECK(why.find("usage") != std::string::npos);
  CHECK_FALSE(parse("explode disk.img", &why));
  CHECK(why.find("unknown control 'explode'") != std::string::npos);
  CHECK_FALSE(parse("fail", &why));
  CHECK(why.find("usage") != std::string::npos);
  CHECK_FALSE(parse("sync-action disk.img", &why));  // the name is taken as the action
  CHECK_FALSE(parse("sync-action disk.img fast", &why));
  CHECK(why.find("unknown sync action 'fast'") != std::string::npos);
  CHECK_FALSE(parse(R"(fail "unterminated)", &why));
  CHECK(why.find("unterminated") != std::string::npos);
  CHECK_FALSE(parse(R"(fail "bad\q")", &why));
  CHECK(why.find("escape") != std::string::npos);
  CHECK_FALSE(parse(R"(fail "x\x4")", &why));
  CHECK_FALSE(parse(R"(fail "a" extra)", &why));
  CHECK(why.find("extra") != std::string::npos);
  CHECK_FALSE(parse(R"(fail "")", &why));
}

TEST_CASE("attribute table") {
  REQUIRE(core::find_attribute("sync_action"));
  CHECK(core::find_attribute("sync_action")->writable);
  CHECK_FALSE(core::find_attribute("state")->writable);
  CHECK_FALSE(core::find_attribute("nope"));
  CHECK(core::attributes().size() == 10);
}

TEST_CASE("control lines: format_control_line round-trips every name") {
  for (std::string name : {"disk.img", "my disk.img", " lead", "trail ", "\"q\"", "a\\b", "nl\nx", "esc\x1b[2J",
                           "dir/sub/x.img", "\x7f"}) {
    for (auto verb : {ControlLine::Verb::fail, ControlLine::Verb::readd, ControlLine::Verb::sync_action}) {
      const ControlLine c{verb, name, core::SyncAction::repair};
      std::string why;
      auto back = core::parse_control_line(core::format_control_line(c), &why);
      REQUIRE_MESSAGE(back, why);
      CHECK(back->image == name);
      CHECK(back->verb == verb);
      if (verb == ControlLine::Verb::sync_action) CHECK(back->action == core::SyncAction::repair);
    }
  }
}
