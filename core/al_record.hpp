// core/al_record.hpp — the activity log's record of its never-written chunks, for one boot.
//
// Why (docs/write-path.md §3d): the activity log sets the bits of a whole extent when the
// extent becomes active, so a crash leaves every chunk of every active extent set and the
// recovery copies them all — up to al_extents x al_extent_size for a few chunks written.
// Most of those chunks are the log's own ("logged": clean when their extent was activated,
// not written since), equal on both legs. This file names them, so that after a crash of
// the *daemon* the recovery copies the chunks that were written and no more, as md would.
//
// It is written with plain pwrite()s and never flushed: what it promises lasts as long as
// the page cache, i.e. until the machine stops. So a reader trusts it only within the boot
// that wrote it (the header holds /proc/sys/kernel/random/boot_id) and only for the mount
// whose bitmap it matches (set and image uuid, chunk size, the bitmap header's events).
// After a power cut or a reboot it is ignored and the recovery copies whole extents, as
// without it. Each mount starts it anew with a random generation that every page carries,
// so no page of an earlier mount's record is ever taken for this one's.
//
// Layout (little-endian; byte by byte in docs/on-disk-format.md §6):
//   [0, 4096)            header: magic "FMALREC\0", version, uuids, events, chunk size,
//                        boot id, generation, chunks per page; crc32c of [0, 4092) at 4092
//   [4096 + 4096 p, ...) page p: the logged bits of chunks [32256 p, 32256 (p + 1)) as 504
//                        u64 words (chunk 32256 p + i is bit i % 64 of word i / 64), then
//                        at 4032 the page index (u64), at 4040 the generation (u64), zeros,
//                        and at 4092 the crc32c of [0, 4092)
// A page that is absent, torn, of another generation or index, reads as "nothing logged":
// every fault makes the recovery copy more, never less.
//
// The rule that makes skipping a chunk safe is Bitmap's (core/bitmap_record.cpp): a chunk's
// logged bit is cleared in this file before any data write to it is issued.
//
// Thread safety: none. Bitmap serialises every write (its rec_mu_).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "utils/fd.hpp"
#include "utils/result.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

inline constexpr std::array<char, 8> kAlRecordMagic = {'F', 'M', 'A', 'L', 'R', 'E', 'C', '\0'};
inline constexpr std::uint16_t kAlRecordVersionMajor = 1;
inline constexpr std::uint16_t kAlRecordVersionMinor = 0;
inline constexpr std::size_t kAlRecordBlock = 4096;

// What a record must match to be believed (besides the boot).
struct AlRecordId {
  utils::Uuid set_uuid{};
  utils::Uuid image_uuid{};
  std::uint64_t chunk_size = 0;
  std::uint64_t events = 0;  // the bitmap header's events of the mount that wrote it
};

struct AlRecordHeader {
  AlRecordId id;
  utils::Uuid boot_id{};
  std::uint64_t generation = 0;  // random, non-zero, new at every mount
};

class AlRecord {
 public:
  static constexpr std::uint64_t kWordsPerPage = 504;
  static constexpr std::uint64_t kChunksPerPage = kWordsPerPage * 64;  // 32256
  using Words = std::array<std::uint64_t, kWordsPerPage>;
  using Page = std::pair<std::uint64_t, Words>;  // page index, its logged words

  explicit AlRecord(utils::UniqueFd fd) : fd_(std::move(fd)) {}

  // The logged chunks of the record in the file, when it is this boot's and matches `id`:
  // the pages below `max_pages` that read valid (none absent or all zero). Otherwise
  // empty, with `why_not` saying why (for the log).
  std::vector<Page> read(const AlRecordId& id, std::uint64_t max_pages, std::string* why_not) const;

  // Starts this mount's record: a new generation, the header for `id` and this boot, the
  // file cut to the header (every earlier page gone). No flush: see the file comment.
  std::error_code begin(const AlRecordId& id);
  // The header again, with the bitmap's events now `events`.
  std::error_code write_header(std::uint64_t events);
  std::error_code write_page(std::uint64_t p, const Words& w);
  // Drops every page at or past `pages` (the image shrank).
  std::error_code cut(std::uint64_t pages);

  const AlRecordHeader& header() const { return header_; }

 private:
  utils::UniqueFd fd_;
  AlRecordHeader header_;
};

// The page holding chunk c.
inline std::uint64_t al_record_page(std::uint64_t c) { return c / AlRecord::kChunksPerPage; }

// This boot's id (/proc/sys/kernel/random/boot_id), nullopt when unreadable (then no record
// is ever believed). Test builds: FM_FAULT=al_record.other_boot returns another id, as
// after a reboot.
std::optional<utils::Uuid> current_boot_id();

// The blocks, encoded and decoded (for the reader and the tests).
std::array<std::byte, kAlRecordBlock> encode_al_header(const AlRecordHeader& h);
// nullopt, with `why`, when the block is not a valid header.
std::optional<AlRecordHeader> decode_al_header(std::span<const std::byte> b, std::string* why);
std::array<std::byte, kAlRecordBlock> encode_al_page(std::uint64_t p, std::uint64_t generation,
                                                     const AlRecord::Words& w);
// The words of page p, when the block is a valid page p of `generation`.
std::optional<AlRecord::Words> decode_al_page(std::span<const std::byte> b, std::uint64_t p,
                                              std::uint64_t generation);

}  // namespace fusemirror::core
