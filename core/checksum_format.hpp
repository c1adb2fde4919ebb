// core/checksum_format.hpp — the on-disk format of an image's checksum sidecar (*.fmck).
//
// Layout (all integers little-endian; byte by byte in docs/on-disk-format.md §4):
//
//   [0, 4096)          header block: identity of the checksums (set, image, chunk size,
//                      algorithm, generation) and the primary's identity at a clean close
//   [4096, 8192)       scrub block: the scrub's cursor and counters (rewritten often, so
//                      it has a CRC of its own and holds no checksum)
//   [8192 + 4096 p, …) entry page p: the checksums of chunks [510 p, 510 p + 510)
//
// Header block (offset: size  name):
//    0: 8  magic            "FMCHKSUM"
//    8: 2  version_major    kCksumVersionMajor; a reader refuses a larger major
//   10: 2  version_minor    new fields only in zeroed reserved space
//   12: 4  header_size      4096
//   16: 16 set_uuid         the mirror set (as the bitmap's)
//   32: 16 image_uuid       the bitmap's image_uuid: the image these checksums belong to
//   48: 8  chunk_size       the bitmap's chunk size they were computed for
//   56: 4  algorithm        kAlgoXxh3 (1): XXH3-64 of the whole chunk, zeros past EOF
//   60: 4  generation       random, non-zero, new at every reset; every page carries it
//   64: 4  state            kCksumStateClean: closed clean, the primary_* fields are set
//   68: 4  reserved (0)
//   72: 8  primary_ino      the primary file at the clean close (inode, size, mtime in ns)
//   80: 8  primary_size
//   88: 8  primary_mtime_ns
//   96: 3996 reserved (0)
// 4092: 4  crc32c           CRC32C of bytes [0, 4092)
//
// Scrub block:
//    0: 8  magic "FMSCRUB\0";  8: 4 generation (the header's);  12: 4 flags (1 = a pass is
//    in progress);  16: 8 cursor;  24: 8 pass_started;  32: 8 last_run;  40..95: the
//    counters (checked, unverified, bad_primary, bad_secondary, unrecoverable, repaired,
//    mismatches), u64 each;  4092: 4 crc32c of [0, 4092).
//
// Entry page: 510 u64 entries (0 = no checksum; a hash that is 0 is stored as 1), then
//   4080: 8 page index;  4088: 4 generation;  4092: 4 crc32c of [0, 4092).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "utils/result.hpp"

#include "utils/uuid.hpp"

namespace fusemirror::core {

inline constexpr std::size_t kCksumBlock = 4096;
inline constexpr std::array<char, 8> kCksumMagic = {'F', 'M', 'C', 'H', 'K', 'S', 'U', 'M'};
inline constexpr std::array<char, 8> kScrubMagic = {'F', 'M', 'S', 'C', 'R', 'U', 'B', '\0'};
inline constexpr std::uint16_t kCksumVersionMajor = 1;
inline constexpr std::uint16_t kCksumVersionMinor = 0;
inline constexpr std::uint64_t kScrubBlockOffset = 4096;
inline constexpr std::uint64_t kCksumPagesOffset = 8192;
inline constexpr std::uint64_t kEntriesPerPage = 510;
inline constexpr std::uint32_t kAlgoXxh3 = 1;
inline constexpr std::uint32_t kCksumStateClean = 1u << 0;

// The file offset of entry page p.
inline std::uint64_t cksum_page_offset(std::uint64_t p) { return kCksumPagesOffset + p * kCksumBlock; }

struct CksumHeader {
  std::uint16_t version_major = kCksumVersionMajor;
  std::uint16_t version_minor = kCksumVersionMinor;
  utils::Uuid set_uuid{};
  utils::Uuid image_uuid{};
  std::uint64_t chunk_size = 0;
  std::uint32_t algorithm = kAlgoXxh3;
  std::uint32_t generation = 0;
  std::uint32_t state = 0;
  std::uint64_t primary_ino = 0, primary_size = 0;
  std::int64_t primary_mtime_ns = 0;
  friend bool operator==(const CksumHeader&, const CksumHeader&) = default;
};

std::array<std::byte, kCksumBlock> encode_cksum_header(const CksumHeader& h);
// "" and *out set when `b` holds a valid header; otherwise why not (nothing is set).
// Checked in this order: truncated, bad magic, bad checksum, future version, bad header
// size, unknown algorithm, zero generation, bad chunk size, unknown state flags.
std::string decode_cksum_header(std::span<const std::byte> b, CksumHeader* out);

// What one pass of check/repair/scrub found (the status's `scrub` counters).
struct ScrubCounts {
  std::uint64_t checked = 0;        // chunks compared
  std::uint64_t unverified = 0;     // of those, without a trusted checksum (legs compared)
  std::uint64_t bad_primary = 0;    // the primary did not match its checksum, the secondary did
  std::uint64_t bad_secondary = 0;  // the reverse
  std::uint64_t unrecoverable = 0;  // neither leg matched: nothing written
  std::uint64_t repaired = 0;       // chunks rewritten (and, with a checksum, verified)
  std::uint64_t mismatches = 0;     // chunks whose legs differed (md's mismatch_cnt)
  friend bool operator==(const ScrubCounts&, const ScrubCounts&) = default;
};

struct ScrubRecord {
  std::uint32_t generation = 0;
  bool in_progress = false;
  std::uint64_t cursor = 0;        // next chunk of the pass in progress
  std::int64_t pass_started = 0;   // unix seconds
  std::int64_t last_run = 0;       // unix seconds the last whole pass ended; 0: never
  ScrubCounts counts;              // of the pass in progress, else of the last one
  friend bool operator==(const ScrubRecord&, const ScrubRecord&) = default;
};

std::array<std::byte, kCksumBlock> encode_scrub_block(const ScrubRecord& r);
// "" and *out set when valid; otherwise why not.
std::string decode_scrub_block(std::span<const std::byte> b, ScrubRecord* out);

using CksumEntries = std::array<std::uint64_t, kEntriesPerPage>;
std::array<std::byte, kCksumBlock> encode_cksum_page(std::uint64_t index, std::uint32_t generation,
                                                     const CksumEntries& e);
enum class PageState {
  valid,  // CRC, index and generation check: the entries are the page's
  empty,  // all zeros (a hole: never written): no entry
  bad,    // anything else — torn, corrupted, of another generation or index: no entry
};
PageState decode_cksum_page(std::span<const std::byte> b, std::uint64_t index, std::uint32_t generation,
                            CksumEntries* out);

// A checksum file as found on disk, for readers that change nothing (examine-bitmap, the
// scrub schedule of images not loaded, the crash tests' checker).
struct CksumFile {
  std::optional<CksumHeader> header;  // unset: `problem` says why
  std::string problem;
  std::optional<ScrubRecord> scrub;   // a valid scrub block of the header's generation
  std::uint64_t file_size = 0;
};
// Reads the header and the scrub block of the file open on `fd`. Only I/O errors are errors.
utils::Result<CksumFile> read_cksum_file(int fd);
// Reads entry page p of the file open on `fd` (whose header is `h`).
utils::Result<PageState> read_cksum_page(int fd, const CksumHeader& h, std::uint64_t p, CksumEntries* out);

// The entry stored for a chunk whose XXH3-64 is `hash` (0 means "no checksum").
inline std::uint64_t cksum_entry(std::uint64_t hash) { return hash ? hash : 1; }

}  // namespace fusemirror::core
