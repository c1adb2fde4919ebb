#include "core/nbd_record.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "utils/le.hpp"

namespace fusemirror::core {

namespace {
constexpr char kMagic[8] = {'F', 'M', 'N', 'B', 'D', 'R', 'E', 'C'};
// Offsets (docs/on-disk-format.md "NBD identity record").
constexpr std::size_t kOffVersion = 8, kOffUsed = 12, kOffSet = 16, kOffImage = 32, kOffEvents = 48,
                      kOffSize = 56, kOffFlags = 64, kOffNameHash = 72, kOffChecksum = 88;
constexpr std::uint32_t kFlagClean = 1;

std::uint64_t checksum(std::span<const std::byte> block) { return XXH3_64bits(block.data(), kOffChecksum); }
}  // namespace

std::uint64_t nbd_name_hash(const std::string& name) { return XXH3_64bits(name.data(), name.size()); }

void encode_nbd_record(const NbdRecord& r, std::span<std::byte> block) {
  std::fill(block.begin(), block.end(), std::byte{0});
  std::memcpy(block.data(), kMagic, sizeof kMagic);
  utils::put_le<std::uint32_t>(block, kOffVersion, kNbdRecordVersion);
  utils::put_le<std::uint32_t>(block, kOffUsed, static_cast<std::uint32_t>(kNbdRecordUsed));
  std::memcpy(block.data() + kOffSet, r.set_uuid.data(), 16);
  std::memcpy(block.data() + kOffImage, r.image_uuid.data(), 16);
  utils::put_le<std::uint64_t>(block, kOffEvents, r.events);
  utils::put_le<std::uint64_t>(block, kOffSize, r.image_size);
  utils::put_le<std::uint32_t>(block, kOffFlags, r.clean ? kFlagClean : 0);
  utils::put_le<std::uint64_t>(block, kOffNameHash, r.name_hash);
  utils::put_le<std::uint64_t>(block, kOffChecksum, checksum(block));
}

utils::Result<NbdRecord> decode_nbd_record(std::span<const std::byte> block, std::string* why) {
  auto bad = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return utils::errno_code(EBADMSG);
  };
  if (block.size() != kNbdRecordBytes) return bad("the block is " + std::to_string(block.size()) + " bytes, not 4096");
  if (std::all_of(block.begin(), block.end(), [](std::byte b) { return b == std::byte{0}; }))
    return utils::errno_code(ENOENT);
  if (std::memcmp(block.data(), kMagic, sizeof kMagic) != 0) return bad("no fusemirror identity record (wrong magic)");
  const auto version = utils::get_le<std::uint32_t>(block, kOffVersion);
  if (version != kNbdRecordVersion) return bad("identity record version " + std::to_string(version) + " unknown");
  if (utils::get_le<std::uint32_t>(block, kOffUsed) != kNbdRecordUsed) return bad("identity record length wrong");
  if (utils::get_le<std::uint64_t>(block, kOffChecksum) != checksum(block))
    return bad("identity record checksum mismatch (torn or corrupted)");
  const auto flags = utils::get_le<std::uint32_t>(block, kOffFlags);
  if (flags & ~kFlagClean) return bad("identity record has unknown flags");
  NbdRecord r;
  std::memcpy(r.set_uuid.data(), block.data() + kOffSet, 16);
  std::memcpy(r.image_uuid.data(), block.data() + kOffImage, 16);
  r.events = utils::get_le<std::uint64_t>(block, kOffEvents);
  r.image_size = utils::get_le<std::uint64_t>(block, kOffSize);
  r.clean = flags & kFlagClean;
  r.name_hash = utils::get_le<std::uint64_t>(block, kOffNameHash);
  return r;
}

}  // namespace fusemirror::core
