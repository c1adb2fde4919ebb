#include "utils/printable.hpp"

#include <cstdint>

namespace fusemirror::utils {

namespace {

// Length of the valid UTF-8 sequence starting at s[i] (2..4), or 0 when s[i] does not start
// one (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). `cp` gets the
// code point.
std::size_t utf8_seq(std::string_view s, std::size_t i, std::uint32_t* cp) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  std::size_t n;
  std::uint32_t v;
  unsigned char lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, v = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, v = c & 0x0f;
    if (c == 0xe0) lo = 0xa0;  // overlong
    if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, v = c & 0x07;
    if (c == 0xf0) lo = 0x90;  // overlong
    if (c == 0xf4) hi = 0x8f;  // > U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  v = (v << 6) | (b(1) & 0x3f);
  for (std::size_t k = 2; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3f);
  }
  *cp = v;
  return n;
}

// Valid code points that still act as controls or line breaks on a terminal / in an editor.
bool dangerous(std::uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

void hex(std::string& out, unsigned char c) {
  static const char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 0xf];
}

}  // namespace

std::string printable(std::string_view s, bool escape_backslash) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '\\': out += escape_backslash ? "\\\\" : "\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || c == 0x7f) hex(out, c);
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t n = utf8_seq(s, i, &cp);
    if (n == 0) {  // not UTF-8: this byte alone
      hex(out, c);
      ++i;
    } else if (dangerous(cp)) {
      for (std::size_t k = 0; k < n; ++k) hex(out, static_cast<unsigned char>(s[i + k]));
      i += n;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

bool is_printable(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c >= 0x7f || c == '\\') return printable(s) == s;
  return true;
}

}  // namespace fusemirror::utils
