#include "core/bitmap_format.hpp"

#include <cstdio>
#include <cstring>

#include <sys/stat.h>

#include "utils/crc32c.hpp"
#include "utils/io.hpp"
#include "utils/le.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {
namespace {

template <typename T>
void put(std::array<std::byte, kHeaderSize>& b, std::size_t off, T v) {
  utils::put_le<T>(b, off, v);
}
template <typename T>
T get(std::span<const std::byte> b, std::size_t off) {
  return utils::get_le<T>(b, off);
}

// Field offsets, fixed by format version 1 (see bitmap_format.hpp and docs/on-disk-format.md).
constexpr std::size_t kOffMagic = 0, kOffMajor = 8, kOffMinor = 10, kOffHeaderSize = 12,
                      kOffSetUuid = 16, kOffImageUuid = 32, kOffEvents = 48,
                      kOffEventsCleared = 56, kOffChunkSize = 64, kOffDaemonSleep = 72,
                      kOffWriteBehind = 76, kOffSyncSize = 80, kOffState = 88;
static_assert(kOffState + 4 <= 96, "fields must end before the reserved area");
static_assert(kCrcOffset + 4 == kHeaderSize, "the CRC is the header's last word");
static_assert(kHeaderSize == 4096, "one 4 KiB block keeps the bits block-aligned");

class HeaderCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "bitmap header"; }
  std::string message(int c) const override {
    switch (static_cast<HeaderError>(c)) {
      case HeaderError::ok: return "ok";
      case HeaderError::truncated: return "file is shorter than the 4096-byte bitmap header";
      case HeaderError::bad_magic: return "not a fusemirror bitmap (bad magic)";
      case HeaderError::bad_checksum: return "header checksum mismatch (torn or corrupted header)";
      case HeaderError::future_version: return "written by a newer fusemirror (unsupported format version)";
      case HeaderError::bad_header_size: return "unsupported header size";
      case HeaderError::bad_chunk_size: return "chunk size is not a power of two between 4 KiB and 1 GiB";
    }
    return "unknown bitmap header error";
  }
};

}  // namespace

const std::error_category& header_category() {
  static HeaderCategory c;
  return c;
}
std::error_code make_error_code(HeaderError e) { return {static_cast<int>(e), header_category()}; }

std::uint64_t bits_bytes(std::uint64_t bits) {
  std::uint64_t bytes = (bits + 7) / 8;
  return (bytes + 4095) / 4096 * 4096;
}

std::array<std::byte, kHeaderSize> encode_header(const BitmapHeader& h) {
  std::array<std::byte, kHeaderSize> b{};
  std::memcpy(b.data() + kOffMagic, kMagic.data(), kMagic.size());
  put<std::uint16_t>(b, kOffMajor, h.version_major);
  put<std::uint16_t>(b, kOffMinor, h.version_minor);
  put<std::uint32_t>(b, kOffHeaderSize, kHeaderSize);
  std::memcpy(b.data() + kOffSetUuid, h.set_uuid.data(), 16);
  std::memcpy(b.data() + kOffImageUuid, h.image_uuid.data(), 16);
  put<std::uint64_t>(b, kOffEvents, h.events);
  put<std::uint64_t>(b, kOffEventsCleared, h.events_cleared);
  put<std::uint64_t>(b, kOffChunkSize, h.chunk_size);
  put<std::uint32_t>(b, kOffDaemonSleep, h.daemon_sleep_ms);
  put<std::uint32_t>(b, kOffWriteBehind, h.write_behind);
  put<std::uint64_t>(b, kOffSyncSize, h.sync_size);
  put<std::uint32_t>(b, kOffState, h.state);
  put<std::uint32_t>(b, kCrcOffset, utils::crc32c(std::span(b.data(), kCrcOffset)));
  return b;
}

utils::Result<BitmapHeader> decode_header(std::span<const std::byte> b) {
  if (b.size() < kHeaderSize) return make_error_code(HeaderError::truncated);
  if (std::memcmp(b.data() + kOffMagic, kMagic.data(), kMagic.size()) != 0)
    return make_error_code(HeaderError::bad_magic);
  // Checksum before any other field: a torn header must never be interpreted.
  if (get<std::uint32_t>(b, kCrcOffset) != utils::crc32c(b.first(kCrcOffset)))
    return make_error_code(HeaderError::bad_checksum);
  BitmapHeader h;
  h.version_major = get<std::uint16_t>(b, kOffMajor);
  h.version_minor = get<std::uint16_t>(b, kOffMinor);
  if (h.version_major > kVersionMajor || h.version_major == 0)
    return make_error_code(HeaderError::future_version);
  if (get<std::uint32_t>(b, kOffHeaderSize) != kHeaderSize)
    return make_error_code(HeaderError::bad_header_size);
  std::memcpy(h.set_uuid.data(), b.data() + kOffSetUuid, 16);
  std::memcpy(h.image_uuid.data(), b.data() + kOffImageUuid, 16);
  h.events = get<std::uint64_t>(b, kOffEvents);
  h.events_cleared = get<std::uint64_t>(b, kOffEventsCleared);
  h.chunk_size = get<std::uint64_t>(b, kOffChunkSize);
  h.daemon_sleep_ms = get<std::uint32_t>(b, kOffDaemonSleep);
  h.write_behind = get<std::uint32_t>(b, kOffWriteBehind);
  h.sync_size = get<std::uint64_t>(b, kOffSyncSize);
  h.state = get<std::uint32_t>(b, kOffState);
  if (!utils::is_power_of_two(h.chunk_size) || h.chunk_size < kMinChunkSize ||
      h.chunk_size > kMaxChunkSize)
    return make_error_code(HeaderError::bad_chunk_size);
  return h;
}

std::string state_string(std::uint32_t state) {
  std::string s;
  auto add = [&](const char* w) {
    if (!s.empty()) s += ", ";
    s += w;
  };
  add(state & kStateClean ? "clean" : "active");
  if (state & kStateStale) add("stale");
  if (state & kStateNeedsFullSync) add("needs-full-sync");
  if (state & kStateDegraded) add("degraded");
  if (state & kStateHeld) add("held");
  if (state & kStateNoBits) add("no-bits");
  return s;
}

std::string header_implausible(const BitmapHeader& h) {
  if (h.state & ~kStateKnown)
    return "unknown state flags 0x" + [&] {
      char b[16];
      std::snprintf(b, sizeof b, "%x", h.state & ~kStateKnown);
      return std::string(b);
    }() + " (written by no fusemirror)";
  if (h.events_cleared > h.events)
    return "events_cleared " + std::to_string(h.events_cleared) + " is greater than events " +
           std::to_string(h.events);
  if (h.daemon_sleep_ms == 0 || h.daemon_sleep_ms > kMaxDaemonSleepMs)
    return "daemon sleep " + std::to_string(h.daemon_sleep_ms) + " ms is outside 1 ms .. 1 h";
  if (h.write_behind > kMaxWriteBehind)
    return "write-behind limit " + std::to_string(h.write_behind) + " is above 16383";
  if (h.sync_size > kMaxSyncSize)
    return "sync_size " + std::to_string(h.sync_size) + " is larger than any file can be";
  return {};
}

std::string bits_truncated_problem(const BitmapHeader& h, std::uint64_t file_size) {
  const std::uint64_t need = (h.bit_count() + 7) / 8;
  const std::uint64_t have = file_size - std::min<std::uint64_t>(file_size, kHeaderSize);
  if (have >= need) return {};
  return "bits truncated (the header covers " + std::to_string(h.bit_count()) +
         " chunks = " + std::to_string(need) + " bytes of bits, the file holds " +
         std::to_string(have) + ")";
}

utils::Result<BitmapFile> read_bitmap_file(int fd, bool with_bits) {
  BitmapFile f;
  std::array<std::byte, kHeaderSize> raw{};
  auto got = utils::pread_all(fd, raw, 0);
  if (!got) return got.error();
  auto h = decode_header(std::span(raw.data(), *got));
  if (!h) {
    f.problem = h.error().message();
    return f;
  }
  f.header = *h;
  if (auto why = header_implausible(*h); !why.empty()) {
    f.implausible = true;
    f.problem = why;
    return f;
  }
  f.no_bits = (h->state & kStateNoBits) != 0;
  if (!with_bits || f.no_bits) return f;
  const std::uint64_t need = (h->bit_count() + 7) / 8;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return utils::last_errno();
  const auto have = static_cast<std::uint64_t>(st.st_size) - std::min<std::uint64_t>(st.st_size, kHeaderSize);
  // Never allocate what the file cannot hold (a corrupt sync_size may claim exabytes).
  f.bits.resize(static_cast<std::size_t>(std::min(need, have)));
  auto r = utils::pread_all(fd, f.bits, kHeaderSize);
  if (!r) return r.error();
  f.bits.resize(*r);
  if (*r < need) {
    f.bits_truncated = true;
    f.problem = "bits truncated (the header covers " + std::to_string(h->bit_count()) +
                " chunks = " + std::to_string(need) + " bytes of bits, the file holds " +
                std::to_string(*r) + ")";
  }
  return f;
}

}  // namespace fusemirror::core
