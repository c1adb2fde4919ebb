// core/checksum_format.cpp — encoding and decoding the checksum sidecar's blocks; see
// checksum_format.hpp and docs/on-disk-format.md §4.
#include "core/checksum_format.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "core/bitmap_format.hpp"
#include "utils/crc32c.hpp"
#include "utils/io.hpp"
#include "utils/le.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {
namespace {

using Block = std::array<std::byte, kCksumBlock>;

// Header fields (format 1; see checksum_format.hpp).
constexpr std::size_t kOffMagic = 0, kOffMajor = 8, kOffMinor = 10, kOffHeaderSize = 12,
                      kOffSetUuid = 16, kOffImageUuid = 32, kOffChunkSize = 48, kOffAlgorithm = 56,
                      kOffGeneration = 60, kOffState = 64, kOffPrimaryIno = 72, kOffPrimarySize = 80,
                      kOffPrimaryMtime = 88;
static_assert(kOffPrimaryMtime + 8 == 96, "fields end where the reserved area starts");
// Scrub block fields.
constexpr std::size_t kOffScrubGeneration = 8, kOffScrubFlags = 12, kOffCursor = 16, kOffPassStarted = 24,
                      kOffLastRun = 32, kOffCounts = 40;
constexpr std::size_t kCounts = 7;
static_assert(kOffCounts + 8 * kCounts == 96);
// Page trailer.
constexpr std::size_t kOffPageIndex = kEntriesPerPage * 8, kOffPageGeneration = kOffPageIndex + 8;
static_assert(kOffPageGeneration + 4 == kCksumBlock - 4, "the trailer ends at the CRC");
constexpr std::size_t kOffCrc = kCksumBlock - 4;

void seal(Block& b) {
  utils::put_le<std::uint32_t>(b, kOffCrc, utils::crc32c(std::span(b.data(), kOffCrc)));
}
bool crc_ok(std::span<const std::byte> b) {
  return utils::get_le<std::uint32_t>(b, kOffCrc) == utils::crc32c(b.first(kOffCrc));
}

}  // namespace

Block encode_cksum_header(const CksumHeader& h) {
  Block b{};
  std::memcpy(b.data() + kOffMagic, kCksumMagic.data(), kCksumMagic.size());
  utils::put_le<std::uint16_t>(b, kOffMajor, h.version_major);
  utils::put_le<std::uint16_t>(b, kOffMinor, h.version_minor);
  utils::put_le<std::uint32_t>(b, kOffHeaderSize, kCksumBlock);
  std::memcpy(b.data() + kOffSetUuid, h.set_uuid.data(), 16);
  std::memcpy(b.data() + kOffImageUuid, h.image_uuid.data(), 16);
  utils::put_le<std::uint64_t>(b, kOffChunkSize, h.chunk_size);
  utils::put_le<std::uint32_t>(b, kOffAlgorithm, h.algorithm);
  utils::put_le<std::uint32_t>(b, kOffGeneration, h.generation);
  utils::put_le<std::uint32_t>(b, kOffState, h.state);
  utils::put_le<std::uint64_t>(b, kOffPrimaryIno, h.primary_ino);
  utils::put_le<std::uint64_t>(b, kOffPrimarySize, h.primary_size);
  utils::put_le<std::int64_t>(b, kOffPrimaryMtime, h.primary_mtime_ns);
  seal(b);
  return b;
}

std::string decode_cksum_header(std::span<const std::byte> b, CksumHeader* out) {
  if (b.size() < kCksumBlock) return "truncated: shorter than the 4096-byte header";
  if (std::memcmp(b.data() + kOffMagic, kCksumMagic.data(), kCksumMagic.size()) != 0)
    return "not a fusemirror checksum file (bad magic)";
  // The CRC before any field: a torn header is never interpreted.
  if (!crc_ok(b)) return "header checksum mismatch (torn or corrupted header)";
  CksumHeader h;
  h.version_major = utils::get_le<std::uint16_t>(b, kOffMajor);
  h.version_minor = utils::get_le<std::uint16_t>(b, kOffMinor);
  if (h.version_major == 0 || h.version_major > kCksumVersionMajor)
    return "written by a newer fusemirror (format version " + std::to_string(h.version_major) + ")";
  if (utils::get_le<std::uint32_t>(b, kOffHeaderSize) != kCksumBlock) return "unsupported header size";
  std::memcpy(h.set_uuid.data(), b.data() + kOffSetUuid, 16);
  std::memcpy(h.image_uuid.data(), b.data() + kOffImageUuid, 16);
  h.chunk_size = utils::get_le<std::uint64_t>(b, kOffChunkSize);
  h.algorithm = utils::get_le<std::uint32_t>(b, kOffAlgorithm);
  h.generation = utils::get_le<std::uint32_t>(b, kOffGeneration);
  h.state = utils::get_le<std::uint32_t>(b, kOffState);
  h.primary_ino = utils::get_le<std::uint64_t>(b, kOffPrimaryIno);
  h.primary_size = utils::get_le<std::uint64_t>(b, kOffPrimarySize);
  h.primary_mtime_ns = utils::get_le<std::int64_t>(b, kOffPrimaryMtime);
  if (h.algorithm != kAlgoXxh3) return "unknown checksum algorithm " + std::to_string(h.algorithm);
  if (h.generation == 0) return "generation 0 (never written by fusemirror)";
  if (!utils::is_power_of_two(h.chunk_size) || h.chunk_size < kMinChunkSize || h.chunk_size > kMaxChunkSize)
    return "chunk size " + std::to_string(h.chunk_size) + " is not a power of two between 4 KiB and 1 GiB";
  if (h.state & ~kCksumStateClean) return "unknown state flags";
  *out = h;
  return {};
}

Block encode_scrub_block(const ScrubRecord& r) {
  Block b{};
  std::memcpy(b.data(), kScrubMagic.data(), kScrubMagic.size());
  utils::put_le<std::uint32_t>(b, kOffScrubGeneration, r.generation);
  utils::put_le<std::uint32_t>(b, kOffScrubFlags, r.in_progress ? 1u : 0u);
  utils::put_le<std::uint64_t>(b, kOffCursor, r.cursor);
  utils::put_le<std::int64_t>(b, kOffPassStarted, r.pass_started);
  utils::put_le<std::int64_t>(b, kOffLastRun, r.last_run);
  const std::uint64_t counts[kCounts] = {r.counts.checked,       r.counts.unverified, r.counts.bad_primary,
                                         r.counts.bad_secondary, r.counts.unrecoverable, r.counts.repaired,
                                         r.counts.mismatches};
  for (std::size_t i = 0; i < kCounts; ++i) utils::put_le<std::uint64_t>(b, kOffCounts + 8 * i, counts[i]);
  seal(b);
  return b;
}

std::string decode_scrub_block(std::span<const std::byte> b, ScrubRecord* out) {
  if (b.size() < kCksumBlock) return "truncated";
  if (std::memcmp(b.data(), kScrubMagic.data(), kScrubMagic.size()) != 0) return "bad magic";
  if (!crc_ok(b)) return "checksum mismatch";
  ScrubRecord r;
  r.generation = utils::get_le<std::uint32_t>(b, kOffScrubGeneration);
  const auto flags = utils::get_le<std::uint32_t>(b, kOffScrubFlags);
  if (flags & ~1u) return "unknown flags";
  r.in_progress = flags & 1u;
  r.cursor = utils::get_le<std::uint64_t>(b, kOffCursor);
  r.pass_started = utils::get_le<std::int64_t>(b, kOffPassStarted);
  r.last_run = utils::get_le<std::int64_t>(b, kOffLastRun);
  std::uint64_t* counts[kCounts] = {&r.counts.checked,       &r.counts.unverified,    &r.counts.bad_primary,
                                    &r.counts.bad_secondary, &r.counts.unrecoverable, &r.counts.repaired,
                                    &r.counts.mismatches};
  for (std::size_t i = 0; i < kCounts; ++i) *counts[i] = utils::get_le<std::uint64_t>(b, kOffCounts + 8 * i);
  *out = r;
  return {};
}

Block encode_cksum_page(std::uint64_t index, std::uint32_t generation, const CksumEntries& e) {
  Block b{};
  for (std::size_t i = 0; i < kEntriesPerPage; ++i) utils::put_le<std::uint64_t>(b, 8 * i, e[i]);
  utils::put_le<std::uint64_t>(b, kOffPageIndex, index);
  utils::put_le<std::uint32_t>(b, kOffPageGeneration, generation);
  seal(b);
  return b;
}

PageState decode_cksum_page(std::span<const std::byte> b, std::uint64_t index, std::uint32_t generation,
                            CksumEntries* out) {
  if (b.size() < kCksumBlock) return PageState::empty;  // past the end of the file
  if (std::all_of(b.begin(), b.begin() + kCksumBlock, [](std::byte x) { return x == std::byte{0}; }))
    return PageState::empty;
  if (!crc_ok(b) || utils::get_le<std::uint64_t>(b, kOffPageIndex) != index ||
      utils::get_le<std::uint32_t>(b, kOffPageGeneration) != generation)
    return PageState::bad;
  for (std::size_t i = 0; i < kEntriesPerPage; ++i) (*out)[i] = utils::get_le<std::uint64_t>(b, 8 * i);
  return PageState::valid;
}

utils::Result<CksumFile> read_cksum_file(int fd) {
  CksumFile f;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return utils::last_errno();
  f.file_size = static_cast<std::uint64_t>(st.st_size);
  Block raw{};
  auto got = utils::pread_all(fd, raw, 0);
  if (!got) return got.error();
  CksumHeader h;
  f.problem = decode_cksum_header(std::span(raw.data(), *got), &h);
  if (!f.problem.empty()) return f;
  f.header = h;
  auto sgot = utils::pread_all(fd, raw, kScrubBlockOffset);
  if (!sgot) return sgot.error();
  ScrubRecord r;
  if (decode_scrub_block(std::span(raw.data(), *sgot), &r).empty() && r.generation == h.generation) f.scrub = r;
  return f;
}

utils::Result<PageState> read_cksum_page(int fd, const CksumHeader& h, std::uint64_t p, CksumEntries* out) {
  Block raw{};
  auto got = utils::pread_all(fd, raw, cksum_page_offset(p));
  if (!got) return got.error();
  out->fill(0);
  return decode_cksum_page(std::span(raw.data(), *got), p, h.generation, out);
}

}  // namespace fusemirror::core
