// core/al_record.hpp — the activity log's record of its never-written chunks, for one boot.
//
// Why (docs/write-path.md §3d): the activity log sets the bits of a whole extent when the
// extent becomes active, so a crash leaves every chunk of every active extent set and the
// recovery copies them all — up to al_extents x al_extent_size for a few chunks written.
// Most of those chunks are the log's own ("logged": clean when their extent was activated,
// not written since), equal on both legs. This file names them, so that after a crash of
// the *daemon* the recovery copies the chunks that were written and no more, as md would.
//
// It is never flushed: what it promises lasts as long as the page cache, i.e. until the
// machine stops. So a reader trusts it only within the boot that wrote it (the header holds
// /proc/sys/kernel/random/boot_id) and only for the mount whose bitmap it matches (set and
// image uuid, chunk size, the bitmap header's events). After a power cut or a reboot it is
// ignored and the recovery copies whole extents, as without it. Each mount starts it anew
// with a random generation that every slot carries, so no slot of an earlier mount's
// record is ever taken for this one's.
//
// Layout (little-endian; byte by byte in docs/on-disk-format.md §6):
//   [0, 4096)            header: magic "FMALREC\0", version, uuids, events, chunk size,
//                        boot id, generation, slot size; crc32c of [0, 4092) at 4092
//   [4096 + 16 w, +16)   slot w: the logged bits of chunks [64 w, 64 w + 64) (u64, chunk
//                        64 w + b is bit b), the generation (u32), and the crc32c (u32) of
//                        those 12 bytes followed by w (u64)
// The header is written with pwrite(); the slots through a shared mapping of the file: a
// slot's new value is a 16-byte store into the file's page-cache page — no system call,
// and never held up by the kernel's dirty-page throttling, which stalled a 16-byte pwrite
// for hundreds of µs while the legs' writeback ran (docs/performance.md, "The record's
// slots, mapped"). A kill -9 keeps that page exactly as it keeps a pwrite's. Each page of
// slots is allocated on disk (fallocate) before its first store, so a full file system
// fails that call — the record is dropped — instead of faulting the daemon (SIGBUS). A
// store interrupted by a kill leaves a slot whose CRC fails; a slot that is absent, torn,
// of another generation or another place reads as "nothing logged": every fault makes the
// recovery copy more.
// The rule that makes skipping a chunk safe is Bitmap's (core/bitmap_record.cpp): a chunk's
// logged bit is cleared in this file before any data write to it is issued.
//
// Thread safety: none; Bitmap calls it under its mutex.
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
  std::uint32_t generation = 0;  // random, non-zero, new at every mount; every slot carries it
};

class AlRecord {
 public:
  static constexpr std::uint64_t kSlotSize = 16;
  static constexpr std::uint64_t kGrowWords = 4096;  // 64 KiB of slots: 16 GiB at 64 KiB chunks
  using Slot = std::pair<std::uint64_t, std::uint64_t>;  // word index, its logged bits

  explicit AlRecord(utils::UniqueFd fd);
  ~AlRecord();
  AlRecord(const AlRecord&) = delete;
  AlRecord& operator=(const AlRecord&) = delete;

  // The logged chunks of the record in the file, when it is this boot's and matches `id`:
  // the valid, non-zero slots below `max_words`. Otherwise empty, with `why_not` saying why
  // (for the log).
  std::vector<Slot> read(const AlRecordId& id, std::uint64_t max_words, std::string* why_not) const;

  // Starts this mount's record for an image of `words` slots: a new generation, the file
  // cut to the header (every earlier slot gone) then extended, sparse, to hold the slots,
  // the header for `id` and this boot, the slots mapped. No flush: see the file comment.
  std::error_code begin(const AlRecordId& id, std::uint64_t words);
  // The header again, with the bitmap's events now `events`.
  std::error_code write_header(std::uint64_t events);
  // Slot w holds `bits` from now on (a store into the mapping; the first store into a
  // page of slots allocates that page first, and fails when it cannot). REQUIRES: w below
  // the words of begin() or the last resize().
  std::error_code set_slot(std::uint64_t w, std::uint64_t bits);
  // The image now has `words` slots: the file and the mapping follow it (a shrink drops
  // every slot at or past `words`; a growth maps kGrowWords slots at a time, so that an
  // image written by appending is not remapped every 64 chunks).
  std::error_code resize(std::uint64_t words);
  // Slot stores so far (for the status).
  std::uint64_t stores() const { return stores_; }

 private:
  std::error_code map(std::uint64_t words);
  void unmap();

  utils::UniqueFd fd_;
  AlRecordHeader header_;
  std::byte* map_ = nullptr;        // [0, map_len_) of the file, shared
  std::size_t map_len_ = 0;
  std::uint64_t words_ = 0;         // slots the file and the mapping hold
  std::vector<bool> allocated_;     // per page of the mapping: fallocated since begin()
  std::uint64_t page_;              // the system's page size
  std::uint64_t stores_ = 0;
};

// The slot (64-chunk word) holding chunk c.
inline std::uint64_t al_record_word(std::uint64_t c) { return c / 64; }

// This boot's id (/proc/sys/kernel/random/boot_id), nullopt when unreadable (then no record
// is ever believed). Test builds: FM_FAULT=al_record.other_boot returns another id, as
// after a reboot.
std::optional<utils::Uuid> current_boot_id();

// The blocks, encoded and decoded (for the reader and the tests).
std::array<std::byte, kAlRecordBlock> encode_al_header(const AlRecordHeader& h);
// nullopt, with `why`, when the block is not a valid header.
std::optional<AlRecordHeader> decode_al_header(std::span<const std::byte> b, std::string* why);
std::array<std::byte, AlRecord::kSlotSize> encode_al_slot(std::uint64_t w, std::uint32_t generation,
                                                        std::uint64_t bits);
// The bits of slot w, when the 16 bytes are a valid slot w of `generation`.
std::optional<std::uint64_t> decode_al_slot(std::span<const std::byte> b, std::uint64_t w,
                                            std::uint32_t generation);

}  // namespace fusemirror::core
