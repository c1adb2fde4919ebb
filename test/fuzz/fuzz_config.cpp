// fuzz_config — libFuzzer target for core::parse_config (the set's JSON config) and
// core::parse_member (the secondary's member.json).
//
// Properties: whatever the bytes, the parsers either return a config or throw
// fusemirror::utils::Error with a one-line message naming the file ("config SOURCE: ...");
// any other exception, a crash, a leak (ASan) or UB (UBSan) is a finding. An accepted config
// is valid: chunk size a power of two in [4 KiB, 1 GiB], daemon sleep in (0, 3600],
// write-behind <= 16383, min rate <= a non-zero max rate, and dump_config() of it parses
// back to an equivalent config.
// Build: cmake -DFUSEMIRROR_FUZZ=ON with clang (test/fuzz/CMakeLists.txt); run:
//   build-fuzz/test/fuzz/fuzz_config -max_total_time=60 -dict=test/fuzz/config.dict \
//       test/fuzz/corpus/config
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/config.hpp"
#include "utils/error.hpp"

namespace fc = fusemirror::core;

static void one_line(const std::string& what, const char* prefix) {
  if (what.empty() || what.find('\n') != std::string::npos) std::abort();
  if (prefix && what.rfind(prefix, 0) != 0) std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    fc::Config c = fc::parse_config(text, "fuzz.json");
    if (c.chunk_size < 4096 || c.chunk_size > (1ull << 30) || (c.chunk_size & (c.chunk_size - 1)))
      std::abort();
    if (!(c.daemon_sleep > 0 && c.daemon_sleep <= 3600)) std::abort();
    if (c.write_behind > 16383) std::abort();
    if (c.resync_max_rate != 0 && c.resync_min_rate > c.resync_max_rate) std::abort();
    if (c.primary.empty() || c.secondary.empty() || c.primary == c.secondary) std::abort();
    const std::string dumped = fc::dump_config(c);
    fc::Config d = fc::parse_config(dumped, "dumped.json");  // must not throw
    if (fc::dump_config(d) != dumped) std::abort();
  } catch (const fusemirror::utils::Error& e) {
    one_line(e.what(), "config fuzz.json");
  }
  try {
    (void)fc::parse_member(text, "member.json");
  } catch (const fusemirror::utils::Error& e) {
    one_line(e.what(), nullptr);
  }
  return 0;
}
