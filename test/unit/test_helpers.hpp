// test/unit/test_helpers.hpp — shared helpers for the unit tests (temp dirs, file bytes,
// bitmap files made by hand from the documented format).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "core/bitmap.hpp"
#include "core/bitmap_commit.hpp"
#include "core/bitmap_format.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"

// doctest cannot print std::error_code by itself (libstdc++'s operator<< is ambiguous here).
namespace doctest {
template <>
struct StringMaker<std::error_code> {
  static String convert(const std::error_code& ec) {
    return (std::string(ec.category().name()) + ":" + std::to_string(ec.value()) + " (" +
            ec.message() + ")").c_str();
  }
};
}  // namespace doctest

namespace fmtest {

inline bool has(std::uint32_t state, std::uint32_t flag) { return (state & flag) != 0; }

// While alive, bitmaps opened in this process write their files buffered (the fallback for
// a file system that refuses O_DIRECT): for tests that sabotage the descriptor they opened.
struct DirectIoOff {
  DirectIoOff() { fusemirror::core::BitmapCommit::allow_direct_io(false); }
  ~DirectIoOff() { fusemirror::core::BitmapCommit::allow_direct_io(true); }
  DirectIoOff(const DirectIoOff&) = delete;
  DirectIoOff& operator=(const DirectIoOff&) = delete;
};

namespace stdfs = std::filesystem;

// A fresh directory under /tmp, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/fm_unit_XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    stdfs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

inline std::vector<std::byte> read_bytes(const std::string& path) {
  fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw std::runtime_error("cannot open " + path);
  struct stat st {};
  ::fstat(fd.get(), &st);
  std::vector<std::byte> out(static_cast<std::size_t>(st.st_size));
  auto r = fusemirror::utils::pread_all(fd.get(), out, 0);
  if (!r) throw std::runtime_error("cannot read " + path);
  out.resize(*r);
  return out;
}

// Drops the file's pages from the page cache: written back first, so none is dirty and
// every one can go (POSIX_FADV_DONTNEED leaves dirty pages behind).
inline void evict_cache(const std::string& path) {
  fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::fdatasync(fd.get()) != 0 || ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED) != 0)
    throw std::runtime_error("cannot drop the page cache of " + path);
}

inline void write_bytes(const std::string& path, const std::vector<std::byte>& data,
                        mode_t mode = 0644) {
  fusemirror::utils::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw std::runtime_error("cannot create " + path);
  if (fusemirror::utils::pwrite_all(fd.get(), data, 0)) throw std::runtime_error("cannot write " + path);
}

inline void write_text(const std::string& path, const std::string& s) {
  std::vector<std::byte> b(s.size());
  std::transform(s.begin(), s.end(), b.begin(), [](char c) { return static_cast<std::byte>(c); });
  write_bytes(path, b);
}

inline std::string read_text(const std::string& path) {
  auto b = read_bytes(path);
  std::string s(b.size(), '\0');
  std::transform(b.begin(), b.end(), s.begin(), [](std::byte c) { return static_cast<char>(c); });
  return s;
}

inline std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 12345u;
  for (auto& b : v) {
    x = x * 1103515245u + 12345u;
    b = static_cast<std::byte>((x >> 16) & 0xFF);
  }
  return v;
}

inline std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path);
  return static_cast<std::uint64_t>(st.st_size);
}

// Writes a well-formed bitmap file by hand: header as given, then zero bits (plus the
// bits listed in `set`), sized to exactly the bits' pages.
inline void write_bitmap_file(const std::string& path, const fusemirror::core::BitmapHeader& h,
                              const std::vector<std::uint64_t>& set = {}) {
  using namespace fusemirror::core;
  auto raw = encode_header(h);
  std::vector<std::byte> file(raw.begin(), raw.end());
  file.resize(kHeaderSize + bits_bytes(h.bit_count()), std::byte{0});
  for (auto c : set) file[kHeaderSize + c / 8] |= std::byte(1u << (c % 8));
  write_bytes(path, file, 0600);
}

inline fusemirror::core::BitmapHeader clean_header(const fusemirror::utils::Uuid& set_uuid,
                                                   std::uint64_t chunk_size,
                                                   std::uint64_t sync_size) {
  fusemirror::core::BitmapHeader h;
  h.set_uuid = set_uuid;
  h.image_uuid = fusemirror::utils::Uuid{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  h.events = 10;
  h.events_cleared = 10;
  h.chunk_size = chunk_size;
  h.sync_size = sync_size;
  h.state = fusemirror::core::kStateClean;
  return h;
}

// Loads the bitmap open on `fd` (Bitmap::open) for an image of `image_size` bytes of set
// `set_uuid`, chunk size `chunk_size` for a new one; fails the test when it cannot.
inline std::unique_ptr<fusemirror::core::Bitmap> open_bitmap(fusemirror::utils::UniqueFd fd,
                                                              const fusemirror::utils::Uuid& set_uuid,
                                                              std::uint64_t chunk_size, std::uint64_t image_size,
                                                              std::string* why = nullptr) {
  fusemirror::core::BitmapOpenParams bp;
  bp.set_uuid = set_uuid;
  bp.chunk_size = chunk_size;
  bp.image_size = image_size;
  std::string w;
  auto bm = fusemirror::core::Bitmap::open(std::move(fd), bp, &w);
  REQUIRE_MESSAGE(bm, "Bitmap::open: " << bm.error().message());
  if (why) *why = w;
  return std::move(*bm);
}

// Bit c of a bitmap file's bits region (false when the file is too short to hold it).
inline bool file_bit(const std::vector<std::byte>& file, std::uint64_t c) {
  const std::size_t at = fusemirror::core::kHeaderSize + c / 8;
  if (file.size() <= at) return false;
  return (static_cast<unsigned>(file[at]) >> (c % 8)) & 1u;
}

// Number of set bits among the first `n` chunk bits of a bitmap file.
inline std::uint64_t count_file_bits(const std::vector<std::byte>& file, std::uint64_t n) {
  std::uint64_t k = 0;
  for (std::uint64_t c = 0; c < n; ++c) k += file_bit(file, c) ? 1 : 0;
  return k;
}

// Decodes the header of a bitmap file on disk (throws when it does not decode).
inline fusemirror::core::BitmapHeader header_on_disk(const std::string& path) {
  auto b = read_bytes(path);
  auto h = fusemirror::core::decode_header(b);
  if (!h) throw std::runtime_error(path + ": header does not decode: " + h.error().message());
  return *h;
}

// A recursive listing: relative path -> (type, size, mode, content for regular files).
inline std::map<std::string, std::string> snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  for (auto it = stdfs::recursive_directory_iterator(root); it != stdfs::recursive_directory_iterator(); ++it) {
    const std::string rel = stdfs::relative(it->path(), root).string();
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string desc = std::to_string(st.st_mode) + ":" + std::to_string(st.st_size);
    if (S_ISREG(st.st_mode)) desc += ":" + read_text(it->path().string());
    if (S_ISLNK(st.st_mode)) {
      it.disable_recursion_pending();
      desc += "->" + stdfs::read_symlink(it->path()).string();
    }
    out[rel] = desc;
  }
  return out;
}

}  // namespace fmtest
