// core/al_record.cpp — the activity log's record of its never-written chunks; see
// al_record.hpp and docs/on-disk-format.md §6.
#include "core/al_record.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "utils/crash_point.hpp"
#include "utils/crc32c.hpp"
#include "utils/io.hpp"
#include "utils/le.hpp"

namespace fusemirror::core {

namespace {

using Block = std::array<std::byte, kAlRecordBlock>;

constexpr std::size_t kOffMagic = 0, kOffMajor = 8, kOffMinor = 10, kOffHeaderSize = 12, kOffSetUuid = 16,
                      kOffImageUuid = 32, kOffEvents = 48, kOffChunkSize = 56, kOffBootId = 64,
                      kOffGeneration = 80, kOffSlotSize = 88, kOffCrc = 4092;

void seal(Block& b) {
  utils::put_le<std::uint32_t>(b, kOffCrc, utils::crc32c(std::span(b.data(), kOffCrc)));
}

bool sealed(std::span<const std::byte> b) {
  return b.size() == kAlRecordBlock &&
         utils::get_le<std::uint32_t>(b, kOffCrc) == utils::crc32c(b.first(kOffCrc));
}

std::uint64_t slot_offset(std::uint64_t w) { return kAlRecordBlock + AlRecord::kSlotSize * w; }

// A slot's CRC binds its bits and generation to its place.
std::uint32_t slot_crc(std::span<const std::byte> first12, std::uint64_t w) {
  std::array<std::byte, 8> where{};
  utils::put_le<std::uint64_t>(where, 0, w);
  return utils::crc32c(where, utils::crc32c(first12));
}

}  // namespace

std::array<std::byte, kAlRecordBlock> encode_al_header(const AlRecordHeader& h) {
  Block b{};
  std::memcpy(b.data() + kOffMagic, kAlRecordMagic.data(), kAlRecordMagic.size());
  utils::put_le<std::uint16_t>(b, kOffMajor, kAlRecordVersionMajor);
  utils::put_le<std::uint16_t>(b, kOffMinor, kAlRecordVersionMinor);
  utils::put_le<std::uint32_t>(b, kOffHeaderSize, kAlRecordBlock);
  std::memcpy(b.data() + kOffSetUuid, h.id.set_uuid.data(), 16);
  std::memcpy(b.data() + kOffImageUuid, h.id.image_uuid.data(), 16);
  utils::put_le<std::uint64_t>(b, kOffEvents, h.id.events);
  utils::put_le<std::uint64_t>(b, kOffChunkSize, h.id.chunk_size);
  std::memcpy(b.data() + kOffBootId, h.boot_id.data(), 16);
  utils::put_le<std::uint32_t>(b, kOffGeneration, h.generation);
  utils::put_le<std::uint64_t>(b, kOffSlotSize, AlRecord::kSlotSize);
  seal(b);
  return b;
}

std::optional<AlRecordHeader> decode_al_header(std::span<const std::byte> b, std::string* why) {
  auto no = [&](const char* w) -> std::optional<AlRecordHeader> {
    if (why) *why = w;
    return std::nullopt;
  };
  if (b.size() < kAlRecordBlock) return no("no header (the file is shorter than 4096 bytes)");
  b = b.first(kAlRecordBlock);
  if (std::memcmp(b.data() + kOffMagic, kAlRecordMagic.data(), kAlRecordMagic.size()) != 0)
    return no("bad magic (not an activity log record)");
  if (!sealed(b)) return no("header checksum mismatch");
  if (utils::get_le<std::uint16_t>(b, kOffMajor) != kAlRecordVersionMajor) return no("unknown major version");
  if (utils::get_le<std::uint32_t>(b, kOffHeaderSize) != kAlRecordBlock) return no("bad header size");
  if (utils::get_le<std::uint64_t>(b, kOffSlotSize) != AlRecord::kSlotSize) return no("bad slot size");
  AlRecordHeader h;
  std::memcpy(h.id.set_uuid.data(), b.data() + kOffSetUuid, 16);
  std::memcpy(h.id.image_uuid.data(), b.data() + kOffImageUuid, 16);
  h.id.events = utils::get_le<std::uint64_t>(b, kOffEvents);
  h.id.chunk_size = utils::get_le<std::uint64_t>(b, kOffChunkSize);
  std::memcpy(h.boot_id.data(), b.data() + kOffBootId, 16);
  h.generation = utils::get_le<std::uint32_t>(b, kOffGeneration);
  if (h.generation == 0) return no("generation 0 (written by no fusemirror)");
  return h;
}

std::array<std::byte, AlRecord::kSlotSize> encode_al_slot(std::uint64_t w, std::uint32_t generation,
                                                        std::uint64_t bits) {
  std::array<std::byte, AlRecord::kSlotSize> b{};
  utils::put_le<std::uint64_t>(b, 0, bits);
  utils::put_le<std::uint32_t>(b, 8, generation);
  utils::put_le<std::uint32_t>(b, 12, slot_crc(std::span(b).first(12), w));
  return b;
}

std::optional<std::uint64_t> decode_al_slot(std::span<const std::byte> b, std::uint64_t w,
                                            std::uint32_t generation) {
  if (b.size() < AlRecord::kSlotSize) return std::nullopt;
  if (utils::get_le<std::uint32_t>(b, 8) != generation ||
      utils::get_le<std::uint32_t>(b, 12) != slot_crc(b.first(12), w))
    return std::nullopt;
  return utils::get_le<std::uint64_t>(b, 0);
}

std::optional<utils::Uuid> current_boot_id() {
  // Read once it could be read: it cannot change while this process lives (and a load out
  // of descriptors must not fail for want of one more).
  static std::mutex mu;
  static std::optional<utils::Uuid> cached;
  std::optional<utils::Uuid> boot;
  {
    std::lock_guard lk(mu);
    if (!cached) {
      utils::UniqueFd fd(::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC));
      char text[64] = {};
      if (fd && ::read(fd.get(), text, sizeof text - 1) >= 36) cached = utils::parse_uuid(std::string_view(text, 36));
    }
    boot = cached;
  }
  auto id = boot;
  // Test builds only: the machine "rebooted" since the record was written.
  if (id && FM_FAULT_POINT("al_record.other_boot")) (*id)[0] ^= 0xFF;
  return id;
}

std::vector<AlRecord::Slot> AlRecord::read(const AlRecordId& id, std::uint64_t max_words,
                                           std::string* why_not) const {
  auto no = [&](std::string w) {
    if (why_not) *why_not = std::move(w);
    return std::vector<Slot>{};
  };
  Block b{};
  auto got = utils::pread_all(fd_.get(), b, 0);
  if (!got) return no("unreadable: " + got.error().message());
  if (*got == 0) return no("none was written");
  std::string why;
  auto h = decode_al_header(std::span(b.data(), *got), &why);
  if (!h) return no(why);
  const auto boot = current_boot_id();
  if (!boot) return no("this boot's id is unreadable");
  if (h->boot_id != *boot) return no("written before the machine last started");
  if (h->id.set_uuid != id.set_uuid || h->id.image_uuid != id.image_uuid) return no("written for another image");
  if (h->id.chunk_size != id.chunk_size) return no("written for another chunk size");
  if (h->id.events != id.events)
    return no("written at bitmap events " + std::to_string(h->id.events) + ", the bitmap is at " +
              std::to_string(id.events));
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return no("unreadable: " + std::string(std::strerror(errno)));
  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t n = std::min(max_words, size > kAlRecordBlock ? (size - kAlRecordBlock) / kSlotSize : 0);
  std::vector<Slot> slots;
  // 256 slots a read: a shrunk or crafted file never makes this allocate more.
  std::vector<std::byte> buf(256 * kSlotSize);
  for (std::uint64_t w0 = 0; w0 < n; w0 += 256) {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(256, n - w0));
    auto r = utils::pread_all(fd_.get(), std::span(buf).first(k * kSlotSize), slot_offset(w0));
    if (!r) return no("unreadable: " + r.error().message());
    for (std::size_t i = 0; i < k && (i + 1) * kSlotSize <= *r; ++i) {
      auto bits = decode_al_slot(std::span(buf).subspan(i * kSlotSize, kSlotSize), w0 + i, h->generation);
      if (bits && *bits) slots.emplace_back(w0 + i, *bits);  // else absent, torn or an earlier mount's
    }
  }
  if (why_not) why_not->clear();
  return slots;
}

AlRecord::AlRecord(utils::UniqueFd fd)
    : fd_(std::move(fd)), page_(static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE))) {}

AlRecord::~AlRecord() { unmap(); }

void AlRecord::unmap() {
  if (map_) ::munmap(map_, map_len_);
  map_ = nullptr;
  map_len_ = 0;
}

std::error_code AlRecord::map(std::uint64_t words) {
  // The file first holds the slots (sparse: ftruncate allocates nothing), then the mapping
  // covers it, so that no store can reach past the end of the file.
  unmap();
  const std::uint64_t len = slot_offset(words);
  if (::ftruncate(fd_.get(), static_cast<off_t>(len)) != 0) return utils::last_errno();
  const std::uint64_t mlen = (len + page_ - 1) / page_ * page_;
  void* m = ::mmap(nullptr, static_cast<std::size_t>(mlen), PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (m == MAP_FAILED) return utils::last_errno();
  map_ = static_cast<std::byte*>(m);
  map_len_ = static_cast<std::size_t>(mlen);
  words_ = words;
  allocated_.resize(static_cast<std::size_t>(mlen / page_), false);
  return {};
}

std::error_code AlRecord::begin(const AlRecordId& id, std::uint64_t words) {
  const auto boot = current_boot_id();
  if (!boot) return utils::errno_code(ENOENT);  // /proc/sys/kernel/random/boot_id unreadable
  header_.id = id;
  header_.boot_id = *boot;
  do {
    const utils::Uuid r = utils::random_uuid();
    std::memcpy(&header_.generation, r.data(), sizeof header_.generation);
  } while (header_.generation == 0);
  // The cut first: once the new header is there, no slot of the old record may remain to
  // be read with it (their generation would not match anyway; the cut frees the space).
  unmap();
  if (::ftruncate(fd_.get(), static_cast<off_t>(kAlRecordBlock)) != 0) return utils::last_errno();
  allocated_.clear();
  if (auto ec = utils::pwrite_all(fd_.get(), encode_al_header(header_), 0)) return ec;
  return map(words);
}

std::error_code AlRecord::write_header(std::uint64_t events) {
  header_.id.events = events;
  return utils::pwrite_all(fd_.get(), encode_al_header(header_), 0);
}

std::error_code AlRecord::set_slot(std::uint64_t w, std::uint64_t bits) {
  if (!map_ || w >= words_) return utils::errno_code(EINVAL);
  const std::uint64_t off = slot_offset(w);
  const std::size_t p = static_cast<std::size_t>(off / page_);
  if (!allocated_[p]) {
    // Blocks under the page before its first store: a store into a hole of a full file
    // system would raise SIGBUS in the daemon; this call fails instead. KEEP_SIZE: the
    // page may reach past the end of the file, whose size stays the slots' own.
    if (::fallocate(fd_.get(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(p * page_), static_cast<off_t>(page_)) != 0)
      return utils::last_errno();
    allocated_[p] = true;
  }
  const auto slot = encode_al_slot(w, header_.generation, bits);
  std::memcpy(map_ + off, slot.data(), kSlotSize);
  ++stores_;
  return {};
}

std::error_code AlRecord::resize(std::uint64_t words) {
  if (!map_) return utils::errno_code(EINVAL);  // before begin()
  if (words > words_) return map((words + kGrowWords - 1) / kGrowWords * kGrowWords);
  if (words == words_) return {};
  // The pages past the new end lose their blocks: allocated again when slots come back.
  allocated_.resize(static_cast<std::size_t>(slot_offset(words) / page_), false);
  return map(words);
}

}  // namespace fusemirror::core
