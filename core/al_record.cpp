// core/al_record.cpp — the activity log's record of its never-written chunks; see
// al_record.hpp and docs/on-disk-format.md §6.
#include "core/al_record.hpp"

#include <fcntl.h>
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
                      kOffGeneration = 80, kOffPerPage = 88, kOffCrc = 4092;
constexpr std::size_t kOffPageIndex = 4032, kOffPageGeneration = 4040;

void seal(Block& b) {
  utils::put_le<std::uint32_t>(b, kOffCrc, utils::crc32c(std::span(b.data(), kOffCrc)));
}

bool sealed(std::span<const std::byte> b) {
  return b.size() == kAlRecordBlock &&
         utils::get_le<std::uint32_t>(b, kOffCrc) == utils::crc32c(b.first(kOffCrc));
}

std::uint64_t page_offset(std::uint64_t p) { return kAlRecordBlock * (p + 1); }

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
  utils::put_le<std::uint64_t>(b, kOffGeneration, h.generation);
  utils::put_le<std::uint64_t>(b, kOffPerPage, AlRecord::kChunksPerPage);
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
  if (utils::get_le<std::uint64_t>(b, kOffPerPage) != AlRecord::kChunksPerPage) return no("bad chunks per page");
  AlRecordHeader h;
  std::memcpy(h.id.set_uuid.data(), b.data() + kOffSetUuid, 16);
  std::memcpy(h.id.image_uuid.data(), b.data() + kOffImageUuid, 16);
  h.id.events = utils::get_le<std::uint64_t>(b, kOffEvents);
  h.id.chunk_size = utils::get_le<std::uint64_t>(b, kOffChunkSize);
  std::memcpy(h.boot_id.data(), b.data() + kOffBootId, 16);
  h.generation = utils::get_le<std::uint64_t>(b, kOffGeneration);
  if (h.generation == 0) return no("generation 0 (written by no fusemirror)");
  return h;
}

std::array<std::byte, kAlRecordBlock> encode_al_page(std::uint64_t p, std::uint64_t generation,
                                                     const AlRecord::Words& w) {
  Block b{};
  for (std::size_t i = 0; i < w.size(); ++i) utils::put_le<std::uint64_t>(b, 8 * i, w[i]);
  utils::put_le<std::uint64_t>(b, kOffPageIndex, p);
  utils::put_le<std::uint64_t>(b, kOffPageGeneration, generation);
  seal(b);
  return b;
}

std::optional<AlRecord::Words> decode_al_page(std::span<const std::byte> b, std::uint64_t p,
                                              std::uint64_t generation) {
  if (b.size() < kAlRecordBlock) return std::nullopt;
  b = b.first(kAlRecordBlock);
  if (!sealed(b) || utils::get_le<std::uint64_t>(b, kOffPageIndex) != p ||
      utils::get_le<std::uint64_t>(b, kOffPageGeneration) != generation)
    return std::nullopt;
  for (std::size_t o = kOffPageGeneration + 8; o < kOffCrc; ++o)
    if (b[o] != std::byte{0}) return std::nullopt;  // reserved: written by no fusemirror
  AlRecord::Words w{};
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = utils::get_le<std::uint64_t>(b, 8 * i);
  return w;
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

std::vector<AlRecord::Page> AlRecord::read(const AlRecordId& id, std::uint64_t max_pages,
                                           std::string* why_not) const {
  auto no = [&](std::string w) {
    if (why_not) *why_not = std::move(w);
    return std::vector<Page>{};
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
  const std::uint64_t in_file = static_cast<std::uint64_t>(st.st_size) / kAlRecordBlock;
  const std::uint64_t n = std::min(max_pages, in_file == 0 ? 0 : in_file - 1);
  std::vector<Page> pages;
  for (std::uint64_t p = 0; p < n; ++p) {
    auto r = utils::pread_all(fd_.get(), b, page_offset(p));
    if (!r) return no("unreadable: " + r.error().message());
    auto w = decode_al_page(std::span(b.data(), *r), p, h->generation);
    if (!w) continue;  // absent, torn or an earlier mount's: nothing logged there
    bool any = false;
    for (std::uint64_t x : *w) any |= x != 0;
    if (any) pages.emplace_back(p, *w);
  }
  if (why_not) why_not->clear();
  return pages;
}

std::error_code AlRecord::begin(const AlRecordId& id) {
  const auto boot = current_boot_id();
  if (!boot) return utils::errno_code(ENOENT);  // /proc/sys/kernel/random/boot_id unreadable
  header_.id = id;
  header_.boot_id = *boot;
  do {
    const utils::Uuid r = utils::random_uuid();
    std::memcpy(&header_.generation, r.data(), sizeof header_.generation);
  } while (header_.generation == 0);
  // The cut first: once the new header is there, no page of the old record may remain to
  // be read with it (their generation would not match anyway; the cut frees the space).
  if (::ftruncate(fd_.get(), static_cast<off_t>(kAlRecordBlock)) != 0) return utils::last_errno();
  return utils::pwrite_all(fd_.get(), encode_al_header(header_), 0);
}

std::error_code AlRecord::write_header(std::uint64_t events) {
  header_.id.events = events;
  return utils::pwrite_all(fd_.get(), encode_al_header(header_), 0);
}

std::error_code AlRecord::write_page(std::uint64_t p, const Words& w) {
  return utils::pwrite_all(fd_.get(), encode_al_page(p, header_.generation, w), page_offset(p));
}

std::error_code AlRecord::cut(std::uint64_t pages) {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return utils::last_errno();
  if (static_cast<std::uint64_t>(st.st_size) <= page_offset(pages)) return {};
  if (::ftruncate(fd_.get(), static_cast<off_t>(page_offset(pages))) != 0) return utils::last_errno();
  return {};
}

}  // namespace fusemirror::core
