// utils/printable.hpp — make untrusted text (image names, paths) safe to show on a
// terminal or in a line-oriented log.
//
// A name may hold any byte but '/' and NUL: an ESC sequence in it can clear or rewrite the
// operator's terminal, a newline can forge a line of `fusemirror status` or of the log.
// printable() keeps printable ASCII and valid UTF-8 as they are and escapes the rest:
//   '\\' -> "\\\\", '\n' -> "\\n", '\r' -> "\\r", '\t' -> "\\t",
//   other C0 controls (< 0x20) and DEL (0x7f) -> "\\xNN",
//   bytes that are not part of valid UTF-8 (stray continuation bytes, among them raw C1
//   0x80-0x9f, overlong forms, surrogates, > U+10FFFF, truncated sequences) -> "\\xNN"
//   per byte,
//   valid UTF-8 that a terminal or an editor treats as a control or a line break: C1
//   controls U+0080-U+009F (xterm honours U+009B as CSI), U+2028/U+2029 (line and
//   paragraph separators) and the bidirectional overrides U+202A-U+202E, U+2066-U+2069
//   ("trojan source") -> "\\xNN" per byte of their encoding.
// The result is one line of valid UTF-8 with no control character, and distinct inputs give
// distinct outputs (the escaping is reversible). Thread-safe, no allocation beyond the
// result.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace fusemirror::utils {

//
// escape_backslash false leaves '\\' as it is: for a message that may already hold escapes
// (an error built from core's escaped text), so that they are not doubled. The result is
// still one safe line, but no longer reversible.
std::string printable(std::string_view s, bool escape_backslash = true);

// True when printable(s) == s (nothing to escape): lets a caller skip a copy.
bool is_printable(std::string_view s);

// The inverse of printable(s) (with escape_backslash): "\\\\", "\\n", "\\r", "\\t" and
// "\\xNN" turned back into their bytes. nullopt when `s` holds any other backslash sequence
// (it is not printable()'s output).
std::optional<std::string> unprintable(std::string_view s);

// One space-free field of a line-oriented file (MOUNT/.fusemirror/events, the monitor's
// output): printable(s) with ' ' also escaped ("\\x20"), and "-" for the empty string (a
// lone "-" is written "\\x2d"). unprintable() reverses it, except for the "-" of the empty
// string, which unfield() handles.
std::string field(std::string_view s);
std::optional<std::string> unfield(std::string_view f);

}  // namespace fusemirror::utils
