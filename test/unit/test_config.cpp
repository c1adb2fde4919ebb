// Unit tests for core/config (parse/dump) and utils/size.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/config.hpp"
#include "test_helpers.hpp"
#include "utils/error.hpp"
#include "utils/size.hpp"

using namespace fusemirror;
using nlohmann::json;

namespace {

const char* kUuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

json minimal() {
  return json{{"format", 1}, {"uuid", kUuid}, {"primary", "/srv/a"}, {"secondary", "/srv/b"}};
}

// The message of the utils::Error parse_config throws, or "" when it accepts.
std::string reject(const json& j) {
  try {
    (void)core::parse_config(j.dump(), "test.json");
  } catch (const utils::Error& e) {
    return e.what();
  }
  return "";
}
std::string reject_text(const std::string& text) {
  try {
    (void)core::parse_config(text, "test.json");
  } catch (const utils::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

json with(const char* key, json value) {
  json j = minimal();
  j[key] = std::move(value);
  return j;
}

}  // namespace

TEST_SUITE("config") {

TEST_CASE("a minimal valid config is accepted with defaults") {
  auto c = core::parse_config(minimal().dump(), "test.json");
  CHECK(c.format == 1);
  CHECK(utils::to_string(c.uuid) == kUuid);
  CHECK(c.primary == "/srv/a");
  CHECK(c.secondary == "/srv/b");
  CHECK(c.chunk_size == 65536);
  CHECK(c.daemon_sleep == doctest::Approx(5.0));
  CHECK_FALSE(c.bitmap_dir.has_value());
  CHECK(c.bitmap);
  CHECK(c.write_behind == 0);
  CHECK(c.role == core::Role::mirror);
  CHECK(c.bitmap_root() == "/srv/a/.fusemirror/bitmaps");
}

TEST_CASE("every optional key is read") {
  json j = minimal();
  j["chunk_size"] = 1 << 20;
  j["daemon_sleep"] = 0.5;
  j["bitmap_dir"] = "/var/lib/fm";
  j["bitmap"] = false;
  j["write_behind"] = 16383;
  j["role"] = "backup";
  j["resync_min_rate"] = "1M";
  j["resync_max_rate"] = "2M";
  j["intent_ahead"] = "4M";
  auto c = core::parse_config(j.dump(), "t");
  CHECK(c.intent_ahead == (4u << 20));
  CHECK(core::parse_config(minimal().dump(), "t").intent_ahead == (16u << 20));
  CHECK(c.chunk_size == (1u << 20));
  CHECK(c.daemon_sleep == doctest::Approx(0.5));
  REQUIRE(c.bitmap_dir.has_value());
  CHECK(*c.bitmap_dir == "/var/lib/fm");
  CHECK(c.bitmap_root() == "/var/lib/fm");
  CHECK_FALSE(c.bitmap);
  CHECK(c.write_behind == 16383);
  CHECK(c.role == core::Role::backup);
  CHECK(c.resync_min_rate == (1u << 20));
  CHECK(c.resync_max_rate == (2u << 20));
  // bitmap_dir null means "the default".
  CHECK_FALSE(core::parse_config(with("bitmap_dir", nullptr).dump(), "t").bitmap_dir.has_value());
}

TEST_CASE("leg_write_piece: default 64 KiB, 0 or a power of two from 4 KiB, round trip") {
  CHECK(core::parse_config(minimal().dump(), "t").leg_write_piece == (64u << 10));
  CHECK(core::parse_config(with("leg_write_piece", 0).dump(), "t").leg_write_piece == 0);
  CHECK(core::parse_config(with("leg_write_piece", 4096).dump(), "t").leg_write_piece == 4096);
  auto c = core::parse_config(with("leg_write_piece", "256K").dump(), "t");
  CHECK(c.leg_write_piece == (256u << 10));
  CHECK(core::parse_config(core::dump_config(c), "dumped").leg_write_piece == (256u << 10));
  for (const json& bad : {json(2048), json(3 * 65536), json(2ull << 30), json(-1), json("12K")}) {
    const auto m = reject(with("leg_write_piece", bad));
    CHECK(contains(m, "'leg_write_piece'"));
  }
  const auto m = reject(with("leg_write_piece", 100000));
  CHECK(contains(m, "power of two between 4 KiB and 1 GiB"));
  CHECK(contains(m, "got 100000"));
}

TEST_CASE("direct_write_max / direct_write_inflight: defaults, values, rejections, round trip") {
  const auto d = core::parse_config(minimal().dump(), "t");
  CHECK(d.direct_write_max == (1u << 20));
  CHECK(d.direct_write_inflight == 2);
  auto j = with("direct_write_max", "64K");
  j["direct_write_inflight"] = 1;
  const auto c = core::parse_config(j.dump(), "t");
  CHECK(c.direct_write_max == (64u << 10));
  CHECK(c.direct_write_inflight == 1);
  const auto again = core::parse_config(core::dump_config(c), "dumped");
  CHECK(again.direct_write_max == (64u << 10));
  CHECK(again.direct_write_inflight == 1);
  CHECK(core::parse_config(with("direct_write_max", "1M").dump(), "t").direct_write_max == (1u << 20));
  for (const json& bad : {json(512), json(4096 + 512), json((1 << 20) + 4096), json(-1)}) {
    const auto m = reject(with("direct_write_max", bad));
    CHECK(contains(m, "'direct_write_max'"));
  }
  CHECK(contains(reject(with("direct_write_max", 1000)), "multiple of 4 KiB up to 1 MiB"));
  for (const json& bad : {json(0), json(1025), json(-2), json("x")})
    CHECK(contains(reject(with("direct_write_inflight", bad)), "'direct_write_inflight'"));
  // The bounds themselves are accepted.
  CHECK(core::parse_config(with("direct_write_inflight", 1024).dump(), "t").direct_write_inflight == 1024);
  CHECK(core::parse_config(with("direct_write_max", 0).dump(), "t").direct_write_max == 0);
  CHECK(core::parse_config(with("direct_write_max", 4096).dump(), "t").direct_write_max == 4096);
}

TEST_CASE("activity log keys: defaults, values, rejections") {
  auto d = core::parse_config(minimal().dump(), "t");
  CHECK(d.al_extents == 1024);
  CHECK(d.al_extent_size == (4u << 20));
  // Unset with chunks larger than 4 MiB: an extent is one chunk.
  CHECK(core::parse_config(with("chunk_size", 8 << 20).dump(), "t").al_extent_size == (8u << 20));
  json j = minimal();
  j["al_extents"] = 0;
  j["al_extent_size"] = "1M";
  auto c = core::parse_config(j.dump(), "t");
  CHECK(c.al_extents == 0);
  CHECK(c.al_extent_size == (1u << 20));
  auto m = reject(with("al_extents", 65537));
  CHECK(contains(m, "'al_extents'"));
  CHECK(contains(m, "at most 65536"));
  CHECK(contains(reject(with("al_extents", -1)), "'al_extents'"));
  m = reject(with("al_extent_size", 3 << 20));
  CHECK(contains(m, "'al_extent_size'"));
  CHECK(contains(m, "power of two"));
  j = minimal();
  j["chunk_size"] = 1 << 20;
  j["al_extent_size"] = 65536;
  m = reject(j);
  CHECK(contains(m, "'al_extent_size'"));
  CHECK(contains(m, "not be smaller than chunk_size"));
  // A Config made in code with large chunks dumps an extent of one chunk, and parses again.
  core::Config big = core::parse_config(with("chunk_size", 16 << 20).dump(), "t");
  big.al_extent_size = 4 << 20;
  CHECK(core::parse_config(core::dump_config(big), "dumped").al_extent_size == (16u << 20));
  c.al_extents = 77;
  CHECK(core::parse_config(core::dump_config(c), "dumped").al_extents == 77);
}

TEST_CASE("lag bound keys: defaults, values, rejections") {
  auto d = core::parse_config(minimal().dump(), "t");
  CHECK(d.max_lag_bytes == 0);
  CHECK(d.max_lag_seconds == 0);
  json j = minimal();
  j["max_lag_bytes"] = "64M";
  j["max_lag_seconds"] = 2.5;
  auto c = core::parse_config(j.dump(), "t");
  CHECK(c.max_lag_bytes == (64u << 20));
  CHECK(c.max_lag_seconds == 2.5);
  auto back = core::parse_config(core::dump_config(c), "dumped");
  CHECK(back.max_lag_bytes == (64u << 20));
  CHECK(back.max_lag_seconds == 2.5);
  auto m = reject(with("max_lag_bytes", 65536));
  CHECK(contains(m, "'max_lag_bytes'"));
  CHECK(contains(m, "1 MiB"));
  CHECK(contains(reject(with("max_lag_bytes", "2T")), "'max_lag_bytes'"));
  CHECK(contains(reject(with("max_lag_bytes", -1)), "'max_lag_bytes'"));
  CHECK(contains(reject(with("max_lag_seconds", -1)), "'max_lag_seconds'"));
  CHECK(contains(reject(with("max_lag_seconds", 0.001)), "'max_lag_seconds'"));
  CHECK(contains(reject(with("max_lag_seconds", 86401)), "'max_lag_seconds'"));
  CHECK(contains(reject(with("max_lag_seconds", "5")), "'max_lag_seconds'"));
  CHECK(core::check_max_lag_bytes(0).empty());
  CHECK(core::check_max_lag_bytes(1 << 20).empty());
  CHECK(core::check_max_lag_seconds(0).empty());
  CHECK(core::check_max_lag_seconds(0.01).empty());
}

TEST_CASE("link keys: secondary_timeout, reconnect_min, reconnect_max") {
  auto d = core::parse_config(minimal().dump(), "t");
  CHECK(d.secondary_timeout == doctest::Approx(30));
  CHECK(d.reconnect_min == doctest::Approx(1));
  CHECK(d.reconnect_max == doctest::Approx(60));
  json j = minimal();
  j["secondary_timeout"] = 2.5;
  j["reconnect_min"] = 0;  // off
  j["reconnect_max"] = 0;
  auto c = core::parse_config(j.dump(), "t");
  CHECK(c.secondary_timeout == doctest::Approx(2.5));
  CHECK(c.reconnect_min == 0);
  auto back = core::parse_config(core::dump_config(c), "dumped");
  CHECK(back.secondary_timeout == doctest::Approx(2.5));
  CHECK(back.reconnect_min == 0);
  for (double bad : {0.0, 0.5, 3601.0}) {
    auto m = reject(with("secondary_timeout", bad));
    CHECK(contains(m, "'secondary_timeout'"));
    CHECK(contains(m, "between 1 and 3600 seconds"));
  }
  CHECK(contains(reject(with("secondary_timeout", "30")), "must be a number of seconds"));
  for (double bad : {-1.0, 0.05, 4000.0}) CHECK(contains(reject(with("reconnect_min", bad)), "'reconnect_min'"));
  j = minimal();
  j["reconnect_min"] = 10;
  j["reconnect_max"] = 5;
  auto m = reject(j);
  CHECK(contains(m, "'reconnect_max'"));
  CHECK(contains(m, "between reconnect_min and 86400"));
  CHECK(contains(reject(with("reconnect_max", 1e6)), "'reconnect_max'"));
}

TEST_CASE("rejections name the key and the reason") {
  SUBCASE("unknown key") {
    json j = minimal();
    j["chunksize"] = 65536;
    auto m = reject(j);
    CHECK(contains(m, "chunksize"));
    CHECK(contains(m, "unknown"));
    CHECK(contains(m, "test.json"));
  }
  SUBCASE("missing uuid") {
    json j = minimal();
    j.erase("uuid");
    auto m = reject(j);
    CHECK(contains(m, "'uuid'"));
    CHECK(contains(m, "missing"));
  }
  SUBCASE("missing primary / secondary / format") {
    for (const char* k : {"primary", "secondary", "format"}) {
      json j = minimal();
      j.erase(k);
      INFO(k);
      CHECK(contains(reject(j), std::string("'") + k + "'"));
    }
  }
  SUBCASE("intent_ahead out of range") {
    auto m = reject(with("intent_ahead", "2G"));
    CHECK(contains(m, "'intent_ahead'"));
    CHECK(contains(m, "at most 1 GiB"));
    CHECK(contains(reject(with("intent_ahead", -1)), "'intent_ahead'"));
  }
  SUBCASE("bad uuid") {
    CHECK(contains(reject(with("uuid", "not-a-uuid")), "'uuid'"));
    CHECK(contains(reject(with("uuid", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fZ")), "'uuid'"));
    CHECK(contains(reject(with("uuid", "00000000-0000-0000-0000-000000000000")), "'uuid'"));
    CHECK(contains(reject(with("uuid", 12)), "'uuid'"));
  }
  SUBCASE("unsupported format") {
    CHECK(contains(reject(with("format", 2)), "'format'"));
    CHECK(contains(reject(with("format", "1")), "'format'"));
  }
  SUBCASE("relative primary") {
    auto m = reject(with("primary", "srv/a"));
    CHECK(contains(m, "'primary'"));
    CHECK(contains(m, "absolute"));
    CHECK(contains(reject(with("primary", "")), "'primary'"));
    CHECK(contains(reject(with("secondary", "./b")), "'secondary'"));
    CHECK(contains(reject(with("bitmap_dir", "bm")), "'bitmap_dir'"));
  }
  SUBCASE("chunk_size") {
    CHECK(contains(reject(with("chunk_size", 65537)), "'chunk_size'"));   // not a power of two
    CHECK(contains(reject(with("chunk_size", 100000)), "'chunk_size'"));
    CHECK(contains(reject(with("chunk_size", 2048)), "'chunk_size'"));    // too small
    CHECK(contains(reject(with("chunk_size", 0)), "'chunk_size'"));
    CHECK(contains(reject(with("chunk_size", 1ull << 31)), "'chunk_size'"));  // too large
    auto neg = reject(with("chunk_size", -4096));
    CHECK(contains(neg, "'chunk_size'"));
    CHECK(contains(neg, "negative"));
    CHECK(contains(reject(with("chunk_size", "64Q")), "'chunk_size'"));
    CHECK(contains(reject(with("chunk_size", 65536.5)), "'chunk_size'"));
    CHECK(contains(reject(with("chunk_size", true)), "'chunk_size'"));
    // Accepted: "64K" as a string, and 4 KiB .. 1 GiB powers of two.
    CHECK(core::parse_config(with("chunk_size", "64K").dump(), "t").chunk_size == 65536);
    CHECK(core::parse_config(with("chunk_size", "1M").dump(), "t").chunk_size == (1u << 20));
    CHECK(core::parse_config(with("chunk_size", 4096).dump(), "t").chunk_size == 4096);
    CHECK(core::parse_config(with("chunk_size", 1 << 30).dump(), "t").chunk_size == (1u << 30));
  }
  SUBCASE("daemon_sleep") {
    CHECK(contains(reject(with("daemon_sleep", 0)), "'daemon_sleep'"));
    CHECK(contains(reject(with("daemon_sleep", -1)), "'daemon_sleep'"));
    CHECK(contains(reject(with("daemon_sleep", 3600.5)), "'daemon_sleep'"));
    CHECK(contains(reject(with("daemon_sleep", 3601)), "'daemon_sleep'"));
    CHECK(contains(reject(with("daemon_sleep", "5")), "'daemon_sleep'"));
    CHECK(core::parse_config(with("daemon_sleep", 3600).dump(), "t").daemon_sleep == 3600);
    CHECK(core::parse_config(with("daemon_sleep", 0.001).dump(), "t").daemon_sleep ==
          doctest::Approx(0.001));
  }
  SUBCASE("write_behind") {
    CHECK(contains(reject(with("write_behind", 20000)), "'write_behind'"));
    CHECK(contains(reject(with("write_behind", 16384)), "'write_behind'"));
    CHECK(contains(reject(with("write_behind", -1)), "'write_behind'"));
  }
  SUBCASE("role") {
    auto m = reject(with("role", "foo"));
    CHECK(contains(m, "'role'"));
    CHECK(contains(m, "foo"));
    CHECK(contains(reject(with("role", 1)), "'role'"));
  }
  SUBCASE("bitmap must be a boolean") { CHECK(contains(reject(with("bitmap", "yes")), "'bitmap'")); }
  SUBCASE("min rate > max rate") {
    json j = minimal();
    j["resync_min_rate"] = "10M";
    j["resync_max_rate"] = "1M";
    CHECK(contains(reject(j), "resync_min_rate"));
    j["resync_max_rate"] = 0;  // unlimited: any min is fine
    CHECK(reject(j).empty());
  }
  SUBCASE("primary == secondary") {
    auto m = reject(with("secondary", "/srv/a"));
    CHECK(contains(m, "'secondary'"));
    CHECK(contains(m, "same"));
  }
  SUBCASE("not JSON") {
    auto m = reject_text("{\"format\": 1,");
    CHECK(contains(m, "not valid JSON"));
    CHECK(contains(m, "test.json"));
    CHECK_FALSE(reject_text("").empty());
  }
  SUBCASE("not an object") {
    CHECK(contains(reject_text("[1, 2]"), "object"));
    CHECK(contains(reject_text("\"x\""), "object"));
    CHECK(contains(reject_text("null"), "object"));
  }
}

TEST_CASE("dump_config round-trips") {
  core::Config c;
  c.uuid = *utils::parse_uuid(kUuid);
  c.primary = "/p";
  c.secondary = "/s";
  c.chunk_size = 1 << 22;
  c.daemon_sleep = 2.25;
  c.bitmap = false;
  c.write_behind = 7;
  c.role = core::Role::backup;
  c.resync_min_rate = 12345;
  c.resync_max_rate = 99999;
  c.intent_ahead = 0;
  SUBCASE("with a bitmap_dir") { c.bitmap_dir = "/bm"; }
  SUBCASE("without a bitmap_dir") {}
  const std::string text = core::dump_config(c);
  auto d = core::parse_config(text, "dumped");
  CHECK(d.format == c.format);
  CHECK(d.uuid == c.uuid);
  CHECK(d.primary == c.primary);
  CHECK(d.secondary == c.secondary);
  CHECK(d.chunk_size == c.chunk_size);
  CHECK(d.daemon_sleep == c.daemon_sleep);
  CHECK(d.bitmap_dir == c.bitmap_dir);
  CHECK(d.bitmap == c.bitmap);
  CHECK(d.intent_ahead == c.intent_ahead);
  CHECK(d.write_behind == c.write_behind);
  CHECK(d.role == c.role);
  CHECK(d.resync_min_rate == c.resync_min_rate);
  CHECK(d.resync_max_rate == c.resync_max_rate);
  CHECK(core::dump_config(d) == text);
}

TEST_CASE("member record round-trips; garbage is refused") {
  core::Member m{*utils::parse_uuid(kUuid)};
  auto back = core::parse_member(core::dump_member(m), "member.json");
  CHECK(back.set_uuid == m.set_uuid);
  CHECK_THROWS_AS(core::parse_member("{}", "member.json"), utils::Error);
  CHECK_THROWS_AS(core::parse_member("nope", "member.json"), utils::Error);
  CHECK_THROWS_AS(core::parse_member("{\"set_uuid\": \"xyz\"}", "member.json"), utils::Error);
}

TEST_CASE("load_config and write_file_atomic") {
  fmtest::TempDir d;
  ::mkdir((d / ".fusemirror").c_str(), 0700);
  core::write_file_atomic(d / ".fusemirror", "config.json", minimal().dump());
  struct stat st {};
  REQUIRE(::stat((d / ".fusemirror/config.json").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  std::string where;
  auto c = core::load_config(d.path(), &where);
  CHECK(where == d / ".fusemirror/config.json");
  CHECK(c.primary == "/srv/a");
  // Replacing is atomic: no temp file is left behind.
  core::write_file_atomic(d / ".fusemirror", "config.json", with("primary", "/x").dump());
  CHECK(core::load_config(d / ".fusemirror/config.json").primary == "/x");
  CHECK_FALSE(fmtest::stdfs::exists(d / ".fusemirror/.config.json.tmp"));
  // A directory without a config names the fix.
  fmtest::TempDir empty;
  try {
    (void)core::load_config(empty.path());
    FAIL("load_config accepted a directory without a config");
  } catch (const utils::Error& e) {
    CHECK(contains(e.what(), "create"));
  }
  CHECK_THROWS_AS(core::load_config(d / "does-not-exist"), utils::Error);
}

TEST_CASE("integer keys are range-checked as the JSON numbers they are (issue 12)") {
  SUBCASE("format 4294967297 is not format 1 (get<int> would truncate it)") {
    CHECK(contains(reject(with("format", 4294967297ull)), "'format'"));
    CHECK(contains(reject_text(R"({"format": 4294967297, "uuid": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                                  "primary": "/a", "secondary": "/b"})"), "'format'"));
    CHECK(contains(reject(with("format", -4294967295ll)), "'format'"));
    CHECK(contains(reject(with("format", 1.5)), "'format'"));
    CHECK(contains(reject(with("format", 1.0)), "'format'"));
    CHECK(contains(reject(with("format", 18446744073709551615ull)), "'format'"));
  }
  SUBCASE("negative or fractional values of every integer key are refused with its name") {
    for (const char* k : {"chunk_size", "write_behind", "resync_min_rate", "resync_max_rate", "intent_ahead"}) {
      INFO(k);
      CHECK(contains(reject(with(k, -1)), std::string("'") + k + "'"));
      CHECK(contains(reject(with(k, -9223372036854775807ll)), std::string("'") + k + "'"));
      CHECK(contains(reject(with(k, 4096.5)), std::string("'") + k + "'"));
      CHECK(contains(reject(with(k, 1e300)), std::string("'") + k + "'"));
      CHECK(contains(reject_text(minimal().dump().insert(1, std::string("\"") + k + "\": 18446744073709551616,")),
                     std::string("'") + k + "'"));  // 2^64: parsed as a float by nlohmann
      CHECK(contains(reject(with(k, "99999999999999999999")), std::string("'") + k + "'"));  // overflows
    }
  }
  SUBCASE("upper bounds") {
    CHECK(contains(reject(with("write_behind", 4294967297ull)), "'write_behind'"));  // not 1 after a cast
    CHECK(contains(reject(with("chunk_size", 4294971392ull)), "'chunk_size'"));       // 4 GiB + 4 KiB
    CHECK(contains(reject(with("intent_ahead", 1ull << 32)), "'intent_ahead'"));
    CHECK(contains(reject(with("drain_timeout", 86401)), "'drain_timeout'"));
    CHECK(contains(reject(with("drain_timeout", -0.5)), "'drain_timeout'"));
    CHECK(contains(reject(with("drain_timeout", "60")), "'drain_timeout'"));
  }
  SUBCASE("daemon_sleep below the header's 1 ms unit") {
    for (double v : {1e-300, 1e-4, 0.0009}) {
      INFO(v);
      auto m = reject(with("daemon_sleep", v));
      CHECK(contains(m, "'daemon_sleep'"));
      CHECK(contains(m, "1 ms"));
    }
    CHECK(reject(with("daemon_sleep", 0.001)).empty());
  }
}

TEST_CASE("messages stay one line whatever the keys and values hold (fuzz_config finding)") {
  json j = minimal();
  j["ch\nk_size"] = 1;
  auto m = reject(j);
  CHECK(contains(m, "ch\\nk_size"));
  CHECK(m.find('\n') == std::string::npos);
  m = reject(with("role", "mir\x1b[2J\nror"));
  CHECK(contains(m, "'role'"));
  CHECK(m.find('\n') == std::string::npos);
  CHECK(m.find('\x1b') == std::string::npos);
  m = reject(with("primary", "rel\n"));
  CHECK(m.find('\n') == std::string::npos);
}

TEST_CASE("check_resync_rates is the one rule for the config and the live controls") {
  CHECK(core::check_resync_rates(0, 0).empty());
  CHECK(core::check_resync_rates(1 << 20, 0).empty());       // max 0 = unlimited
  CHECK(core::check_resync_rates(1 << 20, 1 << 20).empty());
  CHECK(core::check_resync_rates(0, 1).empty());
  const auto why = core::check_resync_rates(10 << 20, 1 << 20);
  CHECK(contains(why, "10485760"));
  CHECK(contains(why, "1048576"));
  CHECK(contains(why, "exceed"));
  json j = minimal();
  j["resync_min_rate"] = 2;
  j["resync_max_rate"] = 1;
  auto m = reject(j);
  CHECK(contains(m, "'resync_min_rate'"));
  CHECK(contains(m, why.empty() ? "?" : "exceed"));
}

TEST_CASE("validators") {
  CHECK(core::check_chunk_size(65536).empty());
  CHECK_FALSE(core::check_chunk_size(65535).empty());
  CHECK_FALSE(core::check_chunk_size(2048).empty());
  CHECK_FALSE(core::check_chunk_size(1ull << 31).empty());
  CHECK(core::check_daemon_sleep(5).empty());
  CHECK_FALSE(core::check_daemon_sleep(0).empty());
  CHECK_FALSE(core::check_daemon_sleep(-2).empty());
  CHECK_FALSE(core::check_daemon_sleep(3601).empty());
  CHECK_FALSE(core::check_daemon_sleep(std::numeric_limits<double>::quiet_NaN()).empty());
  CHECK_FALSE(core::check_daemon_sleep(std::numeric_limits<double>::infinity()).empty());
}

TEST_CASE("max_image_size: default 16 TiB, size suffixes, bounds") {
  CHECK(core::parse_config(minimal().dump(), "t").max_image_size == (16ull << 40));
  json j = minimal();
  j["max_image_size"] = "2T";
  CHECK(core::parse_config(j.dump(), "t").max_image_size == (2ull << 40));
  j["max_image_size"] = 1ull << 30;
  CHECK(core::parse_config(j.dump(), "t").max_image_size == (1ull << 30));
  // Round trip through dump_config.
  auto c = core::parse_config(j.dump(), "t");
  CHECK(core::parse_config(core::dump_config(c), "t").max_image_size == (1ull << 30));
  for (json bad : {json(0), json(4096), json(-1), json("lots"), json(~0ull)}) {
    json k = minimal();
    k["max_image_size"] = bad;
    INFO(bad.dump());
    CHECK_THROWS_WITH_AS(core::parse_config(k.dump(), "t"), doctest::Contains("'max_image_size'"),
                         utils::Error);
  }
}

}  // TEST_SUITE

TEST_SUITE("size") {

TEST_CASE("parse_size") {
  using utils::parse_size;
  CHECK(parse_size("64K") == std::optional<std::uint64_t>(65536));
  CHECK(parse_size("64k") == std::optional<std::uint64_t>(65536));
  CHECK(parse_size("64KiB") == std::optional<std::uint64_t>(65536));
  CHECK(parse_size("1M") == std::optional<std::uint64_t>(1u << 20));
  CHECK(parse_size("1MB") == std::optional<std::uint64_t>(1u << 20));
  CHECK(parse_size("1GiB") == std::optional<std::uint64_t>(1u << 30));
  CHECK(parse_size("2T") == std::optional<std::uint64_t>(2ull << 40));
  CHECK(parse_size("4096") == std::optional<std::uint64_t>(4096));
  CHECK(parse_size("4096B") == std::optional<std::uint64_t>(4096));
  CHECK(parse_size("0") == std::optional<std::uint64_t>(0));
  CHECK_FALSE(parse_size("").has_value());
  CHECK_FALSE(parse_size("12Q").has_value());
  CHECK_FALSE(parse_size("K").has_value());
  CHECK_FALSE(parse_size("-1").has_value());
  CHECK_FALSE(parse_size(" 1K").has_value());
  CHECK_FALSE(parse_size("1 K").has_value());
  CHECK_FALSE(parse_size("1.5M").has_value());
  // Overflow, in the digits and in the suffix.
  CHECK_FALSE(parse_size("99999999999999999999T").has_value());
  CHECK_FALSE(parse_size("99999999999999999999").has_value());
  CHECK_FALSE(parse_size("16777216T").has_value());  // 2^24 TiB = 2^64
  CHECK(parse_size("16777215T") == std::optional<std::uint64_t>(16777215ull << 40));
  CHECK(parse_size("18446744073709551609") == std::optional<std::uint64_t>(18446744073709551609ull));
}

TEST_CASE("format_size") {
  using utils::format_size;
  CHECK(format_size(0) == "0 B");
  CHECK(format_size(512) == "512 B");
  CHECK(format_size(1023) == "1023 B");
  CHECK(format_size(1024) == "1 KiB");
  CHECK(format_size(65536) == "64 KiB");
  CHECK(format_size(1536) == "1.50 KiB");
  CHECK(format_size(1ull << 20) == "1 MiB");
  CHECK(format_size(3ull << 29) == "1.50 GiB");
  CHECK(format_size(1ull << 40) == "1 TiB");
  CHECK(format_size(1ull << 50) == "1 PiB");
  CHECK(format_size(1ull << 60) == "1024 PiB");
  // format and parse agree on whole units.
  for (std::uint64_t v : {std::uint64_t{4096}, std::uint64_t{1} << 30}) {
    auto s = format_size(v);
    s.erase(s.find(' '), 1);
    CHECK(utils::parse_size(s) == std::optional<std::uint64_t>(v));
  }
}

}  // TEST_SUITE

TEST_CASE("checksums, verify_reads, scrub_interval, scrub_repair: defaults, values, refusals") {
  core::Config d = core::parse_config(minimal().dump(), "t");
  CHECK(d.checksums);
  CHECK_FALSE(d.verify_reads);
  CHECK(d.scrub_interval == 0);
  CHECK_FALSE(d.scrub_repair);
  json j = minimal();
  j["checksums"] = true;
  j["verify_reads"] = true;
  j["scrub_interval"] = 604800;
  j["scrub_repair"] = true;
  core::Config c = core::parse_config(j.dump(), "t");
  CHECK(c.verify_reads);
  CHECK(c.scrub_interval == 604800);
  CHECK(c.scrub_repair);
  // The dump writes them, and reads back the same.
  core::Config back = core::parse_config(core::dump_config(c), "t");
  CHECK(back.checksums == c.checksums);
  CHECK(back.verify_reads);
  CHECK(back.scrub_interval == 604800);
  CHECK(back.scrub_repair);
  // verify_reads has nothing to verify against without checksums.
  json nock = j;
  nock["checksums"] = false;
  CHECK(reject(nock).find("key 'verify_reads': needs checksums") != std::string::npos);
  for (const char* k : {"checksums", "verify_reads", "scrub_repair"}) {
    json b = minimal();
    b[k] = "yes";
    CHECK(reject(b).find(std::string("key '") + k + "': must be true or false") != std::string::npos);
  }
  for (double bad : {-1.0, 0.5, 315360001.0}) {
    json b = minimal();
    b["scrub_interval"] = bad;
    CHECK(reject(b).find("key 'scrub_interval': must be 0 (off)") != std::string::npos);
  }
  json s = minimal();
  s["scrub_interval"] = "1w";
  CHECK(reject(s).find("key 'scrub_interval': must be a number of seconds") != std::string::npos);
}

TEST_CASE("an NBD secondary is stored as its URI; a bad URI names the key and the reason") {
  auto j = minimal();
  j["secondary"] = "nbd+unix:///?socket=/run/nbd.sock";
  const core::Config c = core::parse_config(j.dump(), "test.json");
  CHECK(c.secondary == "nbd+unix:///?socket=/run/nbd.sock");
  CHECK(c.secondary_is_nbd());
  CHECK(core::parse_config(core::dump_config(c), "again.json").secondary == c.secondary);
  CHECK(!core::parse_config(minimal().dump(), "test.json").secondary_is_nbd());
  j["secondary"] = "nbd://backup:10809";
  CHECK(reject(j).empty());
  j["secondary"] = "nbd://backup/vm.img";
  const std::string why = reject(j);
  CHECK(why.find("'secondary'") != std::string::npos);
  CHECK(why.find("must not name an export") != std::string::npos);
}

TEST_CASE("direct_reads: default on, a boolean, kept by the dump") {
  CHECK(core::parse_config(minimal().dump(), "t").direct_reads);
  json j = minimal();
  j["direct_reads"] = false;
  core::Config c = core::parse_config(j.dump(), "t");
  CHECK_FALSE(c.direct_reads);
  CHECK_FALSE(core::parse_config(core::dump_config(c), "t").direct_reads);
  j["direct_reads"] = 1;
  CHECK(reject(j).find("key 'direct_reads': must be true or false") != std::string::npos);
}
