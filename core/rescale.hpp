// core/rescale.hpp — changing a bitmap's chunk size offline (md's `mdadm --grow
// --bitmap-chunk`, done on the file).
//
// The rule (docs/on-disk-format.md §2.2): a collapsed chunk is dirty if any of its parts was (bits are ORed);
// an expanded chunk's children all inherit its bit. Either way the new bits are a superset
// of the chunks that may differ, so a rescale can never make a differing chunk look clean.
// The image bytes the bits cover (sync_size) do not change; the bit count follows
// ceil(sync_size / new_chunk_size), so a partial last chunk stays covered.
//
// Thread safety: free functions without shared state. The file rewrite REQUIRES that no
// daemon uses the bitmap (the caller holds the set's lock; see fusemirror rescale-bitmap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/bitmap_format.hpp"

namespace fusemirror::core {

// Bits are packed as on disk: chunk i is bit (i % 8) of byte i / 8 (LSB first).
//
// Returns ceil(new_bits / 8) bytes holding the bits for `new_chunk` of an image of
// `sync_size` bytes whose bits for `old_chunk` are `old_bits` (at least
// ceil(ceil(sync_size / old_chunk) / 8) bytes; padding bits past the last chunk are
// ignored, and the result's padding bits are 0).
// REQUIRES: both chunk sizes powers of two (one divides the other).
// `progress(done, total)`, when given, is called now and then with old chunks processed.
std::vector<std::byte> rescale_bits(std::span<const std::byte> old_bits, std::uint64_t sync_size,
                                    std::uint64_t old_chunk, std::uint64_t new_chunk,
                                    const std::function<void(std::uint64_t, std::uint64_t)>& progress = {});

// Set bits among the first `nbits` bits.
std::uint64_t count_bits(std::span<const std::byte> bits, std::uint64_t nbits);

struct RescaleReport {
  BitmapHeader before, after;
  std::uint64_t dirty_before = 0, dirty_after = 0;
  bool changed = false;  // false: the file already had that chunk size (left untouched)
};

// Rewrites the bitmap file `path` with chunk size `new_chunk`: the header is kept except
// chunk_size and events (+ 1, so the change is visible), its CRC recomputed; the bits are
// rescaled. The file is replaced atomically and durably: a temp file in the same
// directory (same mode and owner) -> fsync -> rename over `path` -> fsync the directory.
// A crash leaves the old bitmap or the new one, never a mix.
// Refuses (utils::Error naming the file and the reason, file untouched): a header that
// does not decode (bad magic, checksum, version...), truncated bits, a bad chunk size.
RescaleReport rescale_bitmap_file(const std::string& path, std::uint64_t new_chunk,
                                  const std::function<void(std::uint64_t, std::uint64_t)>& progress = {});

}  // namespace fusemirror::core
