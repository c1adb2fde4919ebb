// core/chunk_check.hpp — hashing a chunk of a leg, and judging a chunk's two legs against
// its checksum (docs/write-path.md §9.3).
//
// The hash of chunk c (format algorithm 1): XXH3-64 of the chunk_size bytes
// [c × chunk_size, (c + 1) × chunk_size) of the image, bytes at or past the end of the file
// read as zeros (so that growing a file keeps the last chunk's hash; holes read as zeros
// anyway), stored as cksum_entry(hash).
//
// Pure functions over file descriptors: no locks, no bitmap. The caller holds whatever
// makes the chunk stable (the sweep's idle rule, or the chunk's range lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "utils/result.hpp"

namespace fusemirror::core {

// Streaming XXH3-64 of one chunk.
class ChunkHasher {
 public:
  ChunkHasher();
  ~ChunkHasher();
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;
  void reset();
  void update(std::span<const std::byte> data);
  void zeros(std::uint64_t n);  // n bytes of zeros (the part of a chunk past the end of file)
  std::uint64_t entry() const;  // cksum_entry() of the hash so far

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// The entry of chunk c of the file `fd`, read in buf.size() pieces (buf non-empty).
// Reads up to data.size() bytes at an offset; short only at the end (pread_all's contract).
// A file's descriptor (fd_reader) or a secondary leg (core/leg.hpp).
using ReadAt = std::function<utils::Result<std::size_t>(std::span<std::byte>, std::uint64_t)>;
ReadAt fd_reader(int fd);

utils::Result<std::uint64_t> hash_chunk(const ReadAt& read, std::uint64_t c, std::uint64_t chunk_size,
                                        std::span<std::byte> buf);
inline utils::Result<std::uint64_t> hash_chunk(int fd, std::uint64_t c, std::uint64_t chunk_size, std::span<std::byte> buf) {
  return hash_chunk(fd_reader(fd), c, chunk_size, buf);
}

// Chunk c of both legs, read once each (a.size() == b.size() pieces).
struct ChunkReading {
  std::uint64_t primary_entry = 0, secondary_entry = 0;  // cksum_entry() of each leg
  std::error_code primary_error;  // the primary could not be read (EIO: a bad sector)
  bool differ = false;            // the legs' bytes differ (or their sizes)
  std::uint64_t first_diff = 0, last_diff = 0;  // image offsets of the first/last differing byte
};
// Errors: the secondary's read error (the caller degrades the image). A primary read error
// is in `primary_error` (the rest of the chunk is read from the secondary only).
utils::Result<ChunkReading> read_both(const ReadAt& primary, const ReadAt& secondary, std::uint64_t c,
                                      std::uint64_t chunk_size, std::span<std::byte> a, std::span<std::byte> b);
inline utils::Result<ChunkReading> read_both(int primary_fd, int secondary_fd, std::uint64_t c, std::uint64_t chunk_size,
                                             std::span<std::byte> a, std::span<std::byte> b) {
  return read_both(fd_reader(primary_fd), fd_reader(secondary_fd), c, chunk_size, a, b);
}

enum class Verdict {
  ok,                // both legs match the checksum
  bad_primary,       // the primary does not (or cannot be read), the secondary does
  bad_secondary,     // the secondary does not, the primary does
  unrecoverable,     // neither does
  unverified_same,   // no trusted checksum; the legs are equal
  unverified_differ, // no trusted checksum; the legs differ (md's mismatch)
};
const char* to_string(Verdict v);
// `entry`: the chunk's trusted checksum, nullopt when it has none.
Verdict judge(const std::optional<std::uint64_t>& entry, const ChunkReading& r);

}  // namespace fusemirror::core
