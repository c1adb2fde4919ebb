// fm_cksumcheck — the checksum invariant after a crash (docs/write-path.md §9.1, invariant C):
// no checksum that a mount would trust accuses a leg that holds the data.
//
//   fm_cksumcheck PRIMARY SECONDARY BITMAP CHECKSUMS
//
// Reads the files as a mount would find them (nothing is changed). When the bitmap or the
// checksum file would not be trusted (the mount then starts the checksums over), says so
// and exits 0. Otherwise, for every chunk whose bit is clear and whose entry page is valid,
// hashes the chunk on both legs: an entry that differs from either leg's hash is an
// accusation. Prints "entries E accusing A clean C" and exits 1 when A > 0 (2: usage/I/O).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/bitmap_format.hpp"
#include "core/checksum_format.hpp"
#include "core/chunk_check.hpp"

using namespace fusemirror;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: fm_cksumcheck PRIMARY SECONDARY BITMAP CHECKSUMS\n");
    return 2;
  }
  const int p = ::open(argv[1], O_RDONLY | O_CLOEXEC), s = ::open(argv[2], O_RDONLY | O_CLOEXEC);
  if (p < 0 || s < 0) return std::perror("legs"), 2;
  const int m = ::open(argv[3], O_RDONLY | O_CLOEXEC);
  auto bf = m < 0 ? utils::Result<core::BitmapFile>(core::BitmapFile{}) : core::read_bitmap_file(m);
  if (!bf) return std::perror("bitmap"), 2;
  constexpr std::uint32_t kUntrusting = core::kStateStale | core::kStateNeedsFullSync;
  if (!bf->header || !bf->problem.empty() || (bf->header->state & kUntrusting)) {
    std::printf("bitmap untrusted (%s): the checksums are reset at load\n",
                bf->problem.empty() ? "stale or full sync pending" : bf->problem.c_str());
    return 0;
  }
  const core::BitmapHeader& bh = *bf->header;
  const int c = ::open(argv[4], O_RDONLY | O_CLOEXEC);
  if (c < 0) {
    std::printf("no checksum file: nothing to trust\n");
    return 0;
  }
  auto cf = core::read_cksum_file(c);
  if (!cf) return std::perror("checksums"), 2;
  if (!cf->header) {
    std::printf("checksum file not trusted (%s): reset at load\n", cf->problem.c_str());
    return 0;
  }
  const core::CksumHeader& ch = *cf->header;
  if (ch.set_uuid != bh.set_uuid || ch.image_uuid != bh.image_uuid || ch.chunk_size != bh.chunk_size) {
    std::printf("checksum file of another image or chunk size: reset at load\n");
    return 0;
  }
  struct stat ps {};
  ::fstat(p, &ps);
  const std::uint64_t cs = bh.chunk_size, bits = bh.bit_count();
  const std::uint64_t size = static_cast<std::uint64_t>(ps.st_size);
  std::vector<std::byte> buf(1 << 20);
  std::uint64_t entries = 0, accusing = 0, clean = 0;
  core::CksumEntries e{};
  std::uint64_t page = UINT64_MAX;
  for (std::uint64_t k = 0; k < bits && k * cs < size; ++k) {
    const bool dirty = k / 8 < bf->bits.size() && ((static_cast<unsigned>(bf->bits[k / 8]) >> (k % 8)) & 1);
    if (dirty) continue;
    ++clean;
    if (k / core::kEntriesPerPage != page) {
      page = k / core::kEntriesPerPage;
      auto st = core::read_cksum_page(c, ch, page, &e);
      if (!st) return std::perror("checksum page"), 2;
      if (*st != core::PageState::valid) e.fill(0);
    }
    const std::uint64_t v = e[k % core::kEntriesPerPage];
    if (!v) continue;
    ++entries;
    auto hp = core::hash_chunk(p, k, cs, buf), hs = core::hash_chunk(s, k, cs, buf);
    if (!hp || !hs) return std::perror("reading a leg"), 2;
    if (*hp != v || *hs != v) {
      ++accusing;
      if (accusing <= 5)
        std::fprintf(stderr, "ACCUSING chunk %llu: its clear bit's checksum matches %s\n",
                     static_cast<unsigned long long>(k),
                     *hp == v ? "the primary only" : *hs == v ? "the secondary only" : "neither leg");
    }
  }
  std::printf("entries %llu accusing %llu clean %llu\n", static_cast<unsigned long long>(entries),
              static_cast<unsigned long long>(accusing), static_cast<unsigned long long>(clean));
  return accusing ? 1 : 0;
}
