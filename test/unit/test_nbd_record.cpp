// Unit tests for core/nbd_record (the NBD identity block, docs/on-disk-format.md) and the
// secondary URI parser of core/nbd_leg.
#include <doctest/doctest.h>

#include <vector>

#include "core/nbd_leg.hpp"
#include "core/nbd_record.hpp"
#include "utils/error.hpp"
#include "utils/le.hpp"

using namespace fusemirror;

namespace {
core::NbdRecord sample() {
  core::NbdRecord r;
  for (int i = 0; i < 16; ++i) {
    r.set_uuid[i] = static_cast<std::uint8_t>(0x10 + i);
    r.image_uuid[i] = static_cast<std::uint8_t>(0xA0 + i);
  }
  r.events = 0x0102030405060708ull;
  r.image_size = 1ull << 33;
  r.clean = true;
  r.name_hash = core::nbd_name_hash("dir/vm.img");
  return r;
}
}  // namespace

TEST_CASE("nbd record: round trip, and the documented offsets") {
  std::vector<std::byte> b(core::kNbdRecordBytes);
  const auto r = sample();
  core::encode_nbd_record(r, b);
  CHECK(std::string(reinterpret_cast<const char*>(b.data()), 8) == "FMNBDREC");
  CHECK(utils::get_le<std::uint32_t>(b, 8) == 1);    // version
  CHECK(utils::get_le<std::uint32_t>(b, 12) == 96);  // bytes used
  CHECK(static_cast<std::uint8_t>(b[16]) == 0x10);   // set uuid
  CHECK(static_cast<std::uint8_t>(b[32]) == 0xA0);   // image uuid
  CHECK(utils::get_le<std::uint64_t>(b, 48) == r.events);
  CHECK(utils::get_le<std::uint64_t>(b, 56) == r.image_size);
  CHECK(utils::get_le<std::uint32_t>(b, 64) == 1);  // clean
  CHECK(utils::get_le<std::uint64_t>(b, 72) == r.name_hash);
  for (std::size_t i = 96; i < b.size(); ++i) REQUIRE(b[i] == std::byte{0});
  std::string why;
  auto d = core::decode_nbd_record(b, &why);
  REQUIRE(d);
  CHECK(*d == r);
  CHECK(core::nbd_name_hash("dir/vm.img") != core::nbd_name_hash("dir/vm2.img"));
}

TEST_CASE("nbd record: zeros mean none; every damage is refused with its reason") {
  std::vector<std::byte> b(core::kNbdRecordBytes);
  std::string why;
  auto d = core::decode_nbd_record(b, &why);
  REQUIRE(!d);
  CHECK(d.error() == std::errc::no_such_file_or_directory);

  core::encode_nbd_record(sample(), b);
  SUBCASE("a torn write: a field changed, the checksum not") {
    b[50] ^= std::byte{1};
    d = core::decode_nbd_record(b, &why);
    REQUIRE(!d);
    CHECK(d.error() == std::errc::bad_message);
    CHECK(why.find("checksum") != std::string::npos);
  }
  SUBCASE("another program's data (wrong magic)") {
    b[0] = std::byte{'X'};
    d = core::decode_nbd_record(b, &why);
    REQUIRE(!d);
    CHECK(why.find("magic") != std::string::npos);
  }
  SUBCASE("a newer version") {
    utils::put_le<std::uint32_t>(b, 8, 2);
    d = core::decode_nbd_record(b, &why);
    REQUIRE(!d);
    CHECK(why.find("version 2") != std::string::npos);
  }
  SUBCASE("a block of the wrong size") {
    d = core::decode_nbd_record(std::span(b).first(512), &why);
    REQUIRE(!d);
    CHECK(why.find("4096") != std::string::npos);
  }
}

TEST_CASE("nbd URI: the two accepted forms, and every other form refused with the reason") {
  auto u = core::parse_nbd_uri("nbd+unix:///?socket=/run/nbd.sock");
  CHECK(u.socket == "/run/nbd.sock");
  CHECK(u.host.empty());
  u = core::parse_nbd_uri("nbd://backup.example:10810");
  CHECK(u.host == "backup.example");
  CHECK(u.port == "10810");
  u = core::parse_nbd_uri("nbd://10.0.0.2/");
  CHECK(u.host == "10.0.0.2");
  CHECK(u.port == "10809");
  u = core::parse_nbd_uri("nbd://[::1]:7000");
  CHECK(u.host == "::1");
  CHECK(u.port == "7000");
  CHECK(core::is_nbd_uri("nbd://h"));
  CHECK(!core::is_nbd_uri("/srv/secondary"));
  auto refused = [](const char* s, const char* reason) {
    try {
      (void)core::parse_nbd_uri(s);
      FAIL("accepted " << s);
    } catch (const utils::Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(reason) != std::string::npos, e.what());
    }
  };
  refused("nbds://h?tls-psk-file=rel", "absolute");
  refused("nbds://h?tls-psk-file=/k&tls-certificates=/d", "exclude each other");
  refused("nbds://h?tls=on", "unknown query key 'tls'");
  refused("nbds+unix:///?tls-psk-file=/k", "socket=PATH");
  refused("nbds://h?socket=/s", "unknown query key 'socket'");
  refused("nbds://h?tls-psk-file=/k&tls-psk-file=/j", "twice");
  refused("nbd+unix:///?socket=rel/path", "absolute");
  refused("nbd+unix:///vm.img?socket=/s", "export");
  refused("nbd+unix:///", "socket=PATH");
  refused("nbd://h/vm.img", "export");
  refused("nbd://h:0", "port");
  refused("nbd://h:99999", "port");
  refused("nbd://", "no host");
  refused("nbd+tcp://h", "unknown scheme");
  refused("nbd://[::1", "unterminated");
  refused("nbd://[::1]x", "junk");
  refused("nbd://:80", "no host");
  refused("nbd://h:8a", "port");
  refused("nbd://h?tls=on", "no query");
  refused("nbd+unix:///?socket=/s&tls=on", "exactly one");
  CHECK(core::parse_nbd_uri("nbd+unix://?socket=/s").socket == "/s");  // the spelling
}

TEST_CASE("nbds URI: TLS required, with a pre-shared key or certificates") {
  REQUIRE(core::libnbd_supports_tls());  // Debian's libnbd is built with GnuTLS
  auto u = core::parse_nbd_uri("nbds://backup.example:10810?tls-psk-file=/etc/fm/keys.psk&tls-username=fm");
  CHECK(u.tls);
  CHECK(u.host == "backup.example");
  CHECK(u.port == "10810");
  CHECK(u.tls_psk_file == "/etc/fm/keys.psk");
  CHECK(u.tls_username == "fm");
  u = core::parse_nbd_uri("nbds+unix:///?socket=/run/n.sock&tls-certificates=/etc/pki/fm");
  CHECK(u.tls);
  CHECK(u.socket == "/run/n.sock");
  CHECK(u.tls_certificates == "/etc/pki/fm");
  u = core::parse_nbd_uri("nbds://h");  // libnbd's default certificate directory
  CHECK(u.tls);
  CHECK(u.tls_psk_file.empty());
  CHECK(!core::parse_nbd_uri("nbd://h").tls);
}
