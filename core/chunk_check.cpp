// core/chunk_check.cpp — hashing and judging chunks; see chunk_check.hpp.
#include "core/chunk_check.hpp"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "core/checksum_format.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

struct ChunkHasher::State {
  XXH3_state_t* st = XXH3_createState();
  ~State() { XXH3_freeState(st); }
};

ChunkHasher::ChunkHasher() : s_(std::make_unique<State>()) {
  if (!s_->st) throw std::bad_alloc();
  reset();
}
ChunkHasher::~ChunkHasher() = default;

void ChunkHasher::reset() { XXH3_64bits_reset(s_->st); }

void ChunkHasher::update(std::span<const std::byte> data) { XXH3_64bits_update(s_->st, data.data(), data.size()); }

void ChunkHasher::zeros(std::uint64_t n) {
  static const std::array<std::byte, 65536> kZeros{};
  while (n) {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, kZeros.size()));
    update(std::span(kZeros.data(), k));
    n -= k;
  }
}

std::uint64_t ChunkHasher::entry() const { return cksum_entry(XXH3_64bits_digest(s_->st)); }

ReadAt fd_reader(int fd) {
  return [fd](std::span<std::byte> data, std::uint64_t off) { return utils::pread_all(fd, data, off); };
}

utils::Result<std::uint64_t> hash_chunk(const ReadAt& read, std::uint64_t c, std::uint64_t cs, std::span<std::byte> buf) {
  ChunkHasher h;
  const std::uint64_t start = c * cs, end = start + cs;
  for (std::uint64_t off = start; off < end;) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(end - off, buf.size()));
    auto got = read(buf.first(want), off);
    if (!got) return got.error();
    h.update(buf.first(*got));
    off += *got;
    if (*got < want) {  // end of file: the rest of the chunk reads as zeros
      h.zeros(end - off);
      break;
    }
  }
  return h.entry();
}

utils::Result<ChunkReading> read_both(const ReadAt& read_p, const ReadAt& read_s, std::uint64_t c, std::uint64_t cs, std::span<std::byte> a,
                                      std::span<std::byte> b) {
  ChunkReading r;
  ChunkHasher hp, hs;
  const std::uint64_t start = c * cs, end = start + cs;
  bool p_eof = false, s_eof = false;
  for (std::uint64_t off = start; off < end;) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(end - off, a.size()));
    std::size_t np = 0, ns = 0;
    if (!p_eof && !r.primary_error) {
      auto got = read_p(a.first(want), off);
      if (got) np = *got;
      else r.primary_error = got.error();
    }
    if (!s_eof) {
      auto got = read_s(b.first(want), off);
      if (!got) return got.error();
      ns = *got;
    }
    // Past a leg's end of file its bytes read as zeros (the hash's definition); a leg whose
    // file is shorter still "differs" — the sizes are reconciled separately.
    std::fill(a.begin() + static_cast<std::ptrdiff_t>(np), a.begin() + static_cast<std::ptrdiff_t>(want), std::byte{0});
    std::fill(b.begin() + static_cast<std::ptrdiff_t>(ns), b.begin() + static_cast<std::ptrdiff_t>(want), std::byte{0});
    if (!r.primary_error) hp.update(a.first(want));
    hs.update(b.first(want));
    if (!r.primary_error && (np != ns || std::memcmp(a.data(), b.data(), want) != 0)) {
      std::size_t i = 0, j = want;
      while (i < want && a[i] == b[i]) ++i;
      while (j > i && a[j - 1] == b[j - 1]) --j;
      if (i == want) i = j = std::min(np, ns);  // equal bytes, different lengths
      if (!r.differ) r.first_diff = off + i;
      r.last_diff = off + (j ? j - 1 : 0);
      r.differ = true;
    }
    p_eof = p_eof || np < want;
    s_eof = s_eof || ns < want;
    off += want;
    if (p_eof && s_eof) {
      // Both ended: the rest of the chunk is zeros on both; hash it without reading.
      if (off < end) {
        if (!r.primary_error) hp.zeros(end - off);
        hs.zeros(end - off);
      }
      break;
    }
  }
  if (r.primary_error) r.differ = true;  // unknown: treated as differing
  r.primary_entry = r.primary_error ? 0 : hp.entry();
  r.secondary_entry = hs.entry();
  return r;
}

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::ok: return "ok";
    case Verdict::bad_primary: return "bad primary";
    case Verdict::bad_secondary: return "bad secondary";
    case Verdict::unrecoverable: return "unrecoverable";
    case Verdict::unverified_same: return "unverified";
    case Verdict::unverified_differ: return "unverified, legs differ";
  }
  return "?";
}

Verdict judge(const std::optional<std::uint64_t>& entry, const ChunkReading& r) {
  if (!entry) return r.differ ? Verdict::unverified_differ : Verdict::unverified_same;
  const bool p = !r.primary_error && r.primary_entry == *entry;
  const bool s = r.secondary_entry == *entry;
  if (p && s) return Verdict::ok;
  if (s) return Verdict::bad_primary;
  if (p) return Verdict::bad_secondary;
  return Verdict::unrecoverable;
}

}  // namespace fusemirror::core
