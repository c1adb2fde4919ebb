// test/unit/image_fixture.hpp — one core::Image over two temp files (both `size` bytes,
// holes) and a new clean bitmap file, for the unit tests of what an image does.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "core/image.hpp"
#include "test_helpers.hpp"
#include "utils/thread_pool.hpp"

namespace fmtest {

inline const fusemirror::utils::Uuid kImageSet = {9,    9, 9, 9, 9, 9, 0x49, 9,
                                                  0x89, 9, 9, 9, 9, 9, 9,    9};
inline constexpr std::uint64_t kImageChunk = 65536;

struct ImageFixture {
  TempDir dir;
  std::string ppath = dir / "p.img", spath = dir / "s.img", bpath = dir / "img.fmbm";
  fusemirror::utils::ThreadPool pool{2};  // declared before img: outlives it
  std::shared_ptr<fusemirror::core::Image> img;

  explicit ImageFixture(std::uint64_t size, fusemirror::core::ImageOptions io = {},
                        std::string name = "img") {
    namespace fm = fusemirror;
    for (const auto& p : {ppath, spath}) {
      fm::utils::UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      REQUIRE(fd.valid());
      REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    }
    write_bitmap_file(bpath, clean_header(kImageSet, kImageChunk, size));
    fm::utils::UniqueFd p(::open(ppath.c_str(), O_RDWR | O_CLOEXEC));
    fm::utils::UniqueFd s(::open(spath.c_str(), O_RDWR | O_CLOEXEC));
    fm::utils::UniqueFd b(::open(bpath.c_str(), O_RDWR | O_CLOEXEC));
    img = std::make_shared<fm::core::Image>(std::move(name), std::move(p), std::move(s),
                                            open_bitmap(std::move(b), kImageSet, kImageChunk, size), &pool, io);
  }
};

}  // namespace fmtest
