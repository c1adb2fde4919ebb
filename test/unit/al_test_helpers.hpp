// Shared fixture of the activity log's unit tests (test_activity_log.cpp, test_al_record.cpp):
// one geometry (64 KiB chunks, 4 MiB extents, a 64 MiB image), the bitmap parameters for it,
// and the small steps both suites take (open, write one chunk, sweep).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/bitmap.hpp"
#include "utils/fd.hpp"

namespace fmtest::al {

inline constexpr std::uint64_t kCs = 65536;
inline constexpr std::uint64_t kExt = 4 << 20;  // 64 chunks per extent
inline constexpr std::uint64_t kExtChunks = kExt / kCs;
inline constexpr std::uint64_t kImage = 16 * kExt;  // 16 extents, 1024 chunks

// The parameters of a bitmap of set `set` with the log bounded to `al_extents` extents.
inline fusemirror::core::BitmapOpenParams params(const fusemirror::utils::Uuid& set, std::uint64_t al_extents,
                                                 std::uint64_t image_size = kImage) {
  fusemirror::core::BitmapOpenParams p;
  p.set_uuid = set;
  p.chunk_size = kCs;
  p.daemon_sleep_ms = 1000;
  p.image_size = image_size;
  p.al_extents = al_extents;
  p.al_extent_size = kExt;
  return p;
}

inline fusemirror::utils::UniqueFd open_rw(const std::string& path) {
  fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  return fd;
}

// Bitmap::open of the file at `path`; fails the test when it cannot.
inline std::unique_ptr<fusemirror::core::Bitmap> open_at(const std::string& path,
                                                         const fusemirror::core::BitmapOpenParams& p) {
  std::string why;
  auto r = fusemirror::core::Bitmap::open(open_rw(path), p, &why);
  REQUIRE_MESSAGE(r, "Bitmap::open failed: " << r.error().message());
  return std::move(r).value();
}

inline std::error_code ok_sync() { return {}; }

// One 4 KiB write at byte `at` of chunk c, through start_write/end_write.
inline void write_chunk(fusemirror::core::Bitmap& bm, std::uint64_t c, std::uint64_t at = 0) {
  REQUIRE_FALSE(bm.start_write(c * kCs + at, 4096));
  bm.end_write(c * kCs + at, 4096, true);
}

inline std::uint64_t sweep(fusemirror::core::Bitmap& bm,
                           const std::function<std::error_code()>& sync = ok_sync) {
  auto r = bm.sweep(sync);
  REQUIRE_MESSAGE(r, "sweep failed: " << r.error().message());
  return *r;
}

}  // namespace fmtest::al
