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
#include <unistd.h>

#include <cstdio>

#include "test/tools/cksum_audit.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: fm_cksumcheck PRIMARY SECONDARY BITMAP CHECKSUMS\n");
    return 2;
  }
  const int p = ::open(argv[1], O_RDONLY | O_CLOEXEC), s = ::open(argv[2], O_RDONLY | O_CLOEXEC);
  if (p < 0 || s < 0) return std::perror("legs"), 2;
  const int m = ::open(argv[3], O_RDONLY | O_CLOEXEC), c = ::open(argv[4], O_RDONLY | O_CLOEXEC);
  auto a = fmtest::audit_checksums(p, s, m, c);
  if (!a) {
    std::fprintf(stderr, "fm_cksumcheck: %s\n", a.error().message().c_str());
    return 2;
  }
  if (!a->not_trusted.empty()) {
    std::printf("%s\n", a->not_trusted.c_str());
    return 0;
  }
  for (std::size_t i = 0; i < a->accusations.size() && i < 5; ++i)
    std::fprintf(stderr, "ACCUSING chunk %llu: its clear bit's checksum matches %s\n",
                 static_cast<unsigned long long>(a->accusations[i].first), a->accusations[i].second.c_str());
  std::printf("entries %llu accusing %llu clean %llu\n", static_cast<unsigned long long>(a->entries),
              static_cast<unsigned long long>(a->accusing), static_cast<unsigned long long>(a->clean));
  return a->accusing ? 1 : 0;
}
