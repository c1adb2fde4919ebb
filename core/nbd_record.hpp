// core/nbd_record.hpp — the identity record an NBD secondary keeps in its export's tail
// block (a directory secondary keeps member.json and a file per image instead;
// core/records.hpp). Byte by byte in docs/on-disk-format.md "NBD identity record".
//
// The record says: this export holds the copy of image `image_uuid` of set `set_uuid`,
// complete up to bitmap events `events` (the bitmap covers whatever it may lack since).
// The coverage proof is the directory secondary's (why_not_covered), fed from here.
//
// Pure encoding and decoding: no I/O (unit-tested in test/unit/test_nbd_record.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "utils/result.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

inline constexpr std::size_t kNbdRecordBytes = 4096;  // the block written
inline constexpr std::size_t kNbdRecordUsed = 96;     // bytes that carry fields and checksum
inline constexpr std::uint32_t kNbdRecordVersion = 1;

struct NbdRecord {
  utils::Uuid set_uuid{}, image_uuid{};
  std::uint64_t events = 0;
  std::uint64_t image_size = 0;  // the image's size when written (informative)
  bool clean = false;            // written at a clean shutdown
  std::uint64_t name_hash = 0;   // nbd_name_hash() of the export name it was written under
  friend bool operator==(const NbdRecord&, const NbdRecord&) = default;
};

// XXH3-64 of the export name (the image's relative path).
std::uint64_t nbd_name_hash(const std::string& name);

// Fills `block` (kNbdRecordBytes) with the record; the bytes past kNbdRecordUsed are zero.
void encode_nbd_record(const NbdRecord& r, std::span<std::byte> block);
// ENOENT: the block is all zeros (no record: a new export). EBADMSG with `*why`: a wrong
// magic, an unknown version, a bad checksum (a torn write), a block of the wrong size.
utils::Result<NbdRecord> decode_nbd_record(std::span<const std::byte> block, std::string* why);

}  // namespace fusemirror::core
