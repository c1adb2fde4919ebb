// core/bitmap_format.hpp — the on-disk format of a write-intent bitmap sidecar file.
//
// Layout (all integers little-endian; documented byte by byte in docs/on-disk-format.md):
//
//   [0, 4096)        header, one 4 KiB block (so the bits start block-aligned)
//   [4096, ...)      bits, one per chunk, chunk i is bit (i % 8) of byte 4096 + i / 8
//
// Header fields (offset: size  name):
//    0: 8  magic            "FMBITMAP"
//    8: 2  version_major    kVersionMajor; a reader refuses a larger major
//   10: 2  version_minor    new fields only in zeroed reserved space; readers ignore it
//   12: 4  header_size      4096
//   16: 16 set_uuid         the mirror set this bitmap belongs to
//   32: 16 image_uuid       random per image, made when its bitmap is made
//   48: 8  events           bumped on every state change (mount, degrade, re-add, clean)
//   56: 8  events_cleared   events when the secondary was last known complete: from here
//                           on the bits mean "differs from the secondary since then"
//   64: 8  chunk_size       bytes per bit, a power of two >= 4096
//   72: 4  daemon_sleep_ms  idle time before a bit may be cleared
//   76: 4  write_behind     max outstanding secondary writes (0 = synchronous)
//   80: 8  sync_size        image bytes the bits cover (bits = ceil(sync_size / chunk_size))
//   88: 4  state            kState* flags below
//   92: 4  reserved (0)
//   96: 3996 reserved (0)
// 4092: 4  crc32c           CRC32C of bytes [0, 4092)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "utils/result.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

inline constexpr std::size_t kHeaderSize = 4096;
inline constexpr std::array<char, 8> kMagic = {'F', 'M', 'B', 'I', 'T', 'M', 'A', 'P'};
inline constexpr std::uint16_t kVersionMajor = 1;
inline constexpr std::uint16_t kVersionMinor = 0;
inline constexpr std::size_t kCrcOffset = 4092;

// state flags
inline constexpr std::uint32_t kStateClean = 1u << 0;          // cleanly unmounted: bits exact
inline constexpr std::uint32_t kStateStale = 1u << 1;          // bits cannot be trusted
inline constexpr std::uint32_t kStateNeedsFullSync = 1u << 2;  // next mount copies everything
inline constexpr std::uint32_t kStateDegraded = 1u << 3;       // the secondary left; bits accumulate
// With degraded: the operator failed it, so only `re-add` brings it back (no automatic
// reconnect, core/link.hpp). Never set without degraded.
inline constexpr std::uint32_t kStateHeld = 1u << 4;
// Written by a daemon with bitmap "none" (config `bitmap` false): the file holds the header
// alone, and its clean flag is all there is (docs/on-disk-format.md §2.3). A daemon with
// bits that finds it clean (and not degraded) starts with every bit clear; otherwise all
// dirty. Never set by a daemon that keeps bits.
inline constexpr std::uint32_t kStateNoBits = 1u << 5;

inline constexpr std::uint32_t kStateKnown =
    kStateClean | kStateStale | kStateNeedsFullSync | kStateDegraded | kStateHeld | kStateNoBits;

inline constexpr std::uint64_t kMinChunkSize = 4096;
inline constexpr std::uint64_t kMaxChunkSize = 1ull << 30;
// Plausibility bounds of a decoded header (header_implausible below).
inline constexpr std::uint32_t kMaxDaemonSleepMs = 3600u * 1000u;  // config daemon_sleep <= 3600 s
inline constexpr std::uint32_t kMaxWriteBehind = 16383;            // md's limit, as the config
inline constexpr std::uint64_t kMaxSyncSize = (1ull << 63) - 1;     // off_t's maximum
// The default of the config key max_image_size (bytes): the largest image a mount serves.
inline constexpr std::uint64_t kDefaultMaxImageSize = 16ull << 40;  // 16 TiB

struct BitmapHeader {
  std::uint16_t version_major = kVersionMajor;
  std::uint16_t version_minor = kVersionMinor;
  utils::Uuid set_uuid{};
  utils::Uuid image_uuid{};
  std::uint64_t events = 0;
  std::uint64_t events_cleared = 0;
  std::uint64_t chunk_size = 65536;
  std::uint32_t daemon_sleep_ms = 5000;
  std::uint32_t write_behind = 0;
  std::uint64_t sync_size = 0;
  std::uint32_t state = 0;

  // Overflow-free: a decoded sync_size may be anything.
  std::uint64_t bit_count() const {
    return chunk_size ? sync_size / chunk_size + (sync_size % chunk_size != 0) : 0;
  }
  friend bool operator==(const BitmapHeader&, const BitmapHeader&) = default;
};

// Bytes needed for `bits` bits, rounded up to whole 4 KiB pages.
std::uint64_t bits_bytes(std::uint64_t bits);

// Encodes `h` into exactly kHeaderSize bytes, CRC included.
std::array<std::byte, kHeaderSize> encode_header(const BitmapHeader& h);

// Why a header was refused; each has a message naming the reason.
enum class HeaderError {
  ok = 0,
  truncated,        // fewer than kHeaderSize bytes
  bad_magic,        // not a fusemirror bitmap
  bad_checksum,     // torn or corrupted header
  future_version,   // written by a newer fusemirror
  bad_header_size,
  bad_chunk_size,   // not a power of two in [kMinChunkSize, kMaxChunkSize]
};
const std::error_category& header_category();
std::error_code make_error_code(HeaderError e);

// Decodes and validates a header. Never returns a header that failed any check.
utils::Result<BitmapHeader> decode_header(std::span<const std::byte> bytes);

std::string state_string(std::uint32_t state);

// A header that decoded (magic, CRC, version, chunk size all fine) may still say something
// no fusemirror writes: unknown state flags, events_cleared > events, a daemon sleep of 0 or
// above an hour, a write-behind limit above md's, a sync_size no file can have. Returns
// why (a one-line reason), or "" when every field is plausible. Such a header is never
// trusted: a mount rebuilds the bitmap all dirty, rescale refuses it, examine says so.
std::string header_implausible(const BitmapHeader& h);

// The reason a file of `file_size` bytes cannot hold the bits `h` describes, or "".
std::string bits_truncated_problem(const BitmapHeader& h, std::uint64_t file_size);

// A bitmap file as found on disk: what `mount` (Bitmap::open), `examine-bitmap` and
// `rescale-bitmap` all read, so that they agree on what is valid.
struct BitmapFile {
  // The header did not decode: `problem` says why and nothing else is set.
  std::optional<BitmapHeader> header;
  // ceil(bit_count / 8) bytes when `with_bits` and the file holds them all; the padding up
  // to a whole page that the daemon writes holds no bits and is not required.
  std::vector<std::byte> bits;
  bool bits_truncated = false;  // the file ends before the last bit; `bits` has what it holds
  bool no_bits = false;         // kStateNoBits: bitmap "none" wrote it; `bits` is empty
  // The header decoded but header_implausible() refused it (`problem` says why); no bits
  // were read (their count is not to be believed).
  bool implausible = false;
  std::string problem;  // empty when the header decoded and the bits are complete
};
// Reads the header and (with `with_bits`) the bits of the bitmap file open on `fd`.
// Only I/O errors are errors; a bad header or short bits are described in `problem`.
utils::Result<BitmapFile> read_bitmap_file(int fd, bool with_bits = true);

}  // namespace fusemirror::core

template <>
struct std::is_error_code_enum<fusemirror::core::HeaderError> : std::true_type {};
