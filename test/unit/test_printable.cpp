// Unit tests for utils/printable: untrusted names made safe for a terminal and a log line.
#include <doctest/doctest.h>

#include <string>

#include "utils/printable.hpp"

using fusemirror::utils::is_printable;
using fusemirror::utils::printable;

namespace {
bool has_raw_control(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}
}  // namespace

TEST_SUITE("printable") {

TEST_CASE("plain ASCII and valid UTF-8 pass unchanged") {
  for (const std::string s : {"", "disk.img", "vm/a b-c_1.qcow2", "caf\xc3\xa9.img", "\xe6\x97\xa5\xe6\x9c\xac.img",
                              "\xf0\x9f\x92\xbe.raw", "~!@#$%^&*()[]{};:'\",.<>?"}) {
    CHECK(printable(s) == s);
    CHECK(is_printable(s));
  }
}

TEST_CASE("control characters, DEL and backslash are escaped") {
  CHECK(printable("a\nb") == "a\\nb");
  CHECK(printable("a\rb\tc") == "a\\rb\\tc");
  CHECK(printable("\x1b[2J\x1b[H") == "\\x1b[2J\\x1b[H");
  CHECK(printable(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(printable("\x07\x08\x7f") == "\\x07\\x08\\x7f");
  CHECK(printable("a\\nb") == "a\\\\nb");  // a literal backslash-n cannot pass for an escape
  CHECK_FALSE(is_printable("a\\b"));
  CHECK_FALSE(is_printable("a\nb"));
}

TEST_CASE("bytes that are not UTF-8 are escaped one by one") {
  CHECK(printable("\x9b" "31m") == "\\x9b31m");        // raw C1 CSI
  CHECK(printable("\x80\x9f") == "\\x80\\x9f");        // stray continuation bytes
  CHECK(printable("\xc3") == "\\xc3");                 // truncated sequence
  CHECK(printable("\xc3(") == "\\xc3(");               // bad continuation
  CHECK(printable("\xc0\xaf") == "\\xc0\\xaf");        // overlong '/'
  CHECK(printable("\xe0\x80\xaf") == "\\xe0\\x80\\xaf");  // overlong, 3 bytes
  CHECK(printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // surrogate U+D800
  CHECK(printable("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
  CHECK(printable("\xff\xfe") == "\\xff\\xfe");
}

TEST_CASE("valid UTF-8 that acts as a control or a line break is escaped") {
  CHECK(printable("\xc2\x9b" "2J") == "\\xc2\\x9b2J");          // U+009B, CSI in xterm
  CHECK(printable("a\xe2\x80\xa8" "b") == "a\\xe2\\x80\\xa8b");  // U+2028 line separator
  CHECK(printable("\xe2\x80\xae" "gpj.exe") == "\\xe2\\x80\\xaegpj.exe");  // U+202E RLO
  CHECK(printable("\xe2\x81\xa6") == "\\xe2\\x81\\xa6");        // U+2066 LRI
  CHECK(printable("\xc2\xa0") == "\xc2\xa0");                   // U+00A0 is printable
}

TEST_CASE("every single byte and byte pair gives one line without a raw control") {
  for (int a = 0; a < 256; ++a) {
    const std::string one(1, static_cast<char>(a));
    CHECK_FALSE(has_raw_control(printable(one)));
    for (int b = 0; b < 256; b += 7) {
      std::string two = one + static_cast<char>(b);
      CHECK_FALSE(has_raw_control(printable(two)));
      CHECK(is_printable(two) == (printable(two) == two));
    }
  }
}

TEST_CASE("messages that may hold escapes already keep their backslashes") {
  CHECK(printable("key 'a\\x0ab': bad\n", false) == "key 'a\\x0ab': bad\\n");
  CHECK(printable("a\\b", false) == "a\\b");
}

TEST_CASE("distinct names stay distinct") {
  CHECK(printable("a\nb") != printable("a\\nb"));
  CHECK(printable("\x1b") != printable("\\x1b"));
}

}  // TEST_SUITE

TEST_SUITE("printable") {

TEST_CASE("unprintable reverses printable; field/unfield make one space-free field") {
  using fusemirror::utils::field;
  using fusemirror::utils::unfield;
  using fusemirror::utils::unprintable;
  for (const std::string& s : {std::string(""), std::string("disk.img"), std::string("a b"), std::string("-"),
                              std::string("\\x20"), std::string("new\nline\r\t"), std::string("\x1b[2J"),
                              std::string("bad\xff\xfe"), std::string("nul\0x", 5), std::string("\xc2\x9b"),
                              std::string("caf\xc3\xa9 \xe2\x80\xae"), std::string("back\\slash")}) {
    CHECK(unprintable(printable(s)) == s);
    const std::string f = field(s);
    CHECK(f.find(' ') == std::string::npos);
    CHECK_FALSE(f.empty());
    CHECK(unfield(f) == s);
  }
  CHECK(field("") == "-");
  CHECK(field("-") == "\\x2d");
  CHECK(field("a b") == "a\\x20b");
  CHECK_FALSE(unprintable("a\\"));
  CHECK_FALSE(unprintable("a\\q"));
  CHECK_FALSE(unprintable("a\\x4"));
  CHECK_FALSE(unprintable("a\\xzz"));
}

}  // TEST_SUITE
