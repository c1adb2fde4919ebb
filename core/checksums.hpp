// core/checksums.hpp — an image's checksum sidecar (BITMAPS/<image>.fmck): the hash of every
// clean chunk, so that check, scrub and verified reads can tell which leg is wrong.
//
// Owns: the sidecar file (its descriptor, header, generation), the scrub record kept in
// it, and one cached entry page. It decides nothing about bits: a caller trusts an entry
// only while the chunk's bit is clear in the bitmap (docs/write-path.md §9.1). The format
// is core/checksum_format.hpp.
//
// The ordering rule this class serves (write-path.md §9, invariant C): every path that
// clears a bit first calls record() for that chunk (a hash, or 0), and returns to clear
// only once record() returned success — then the entries are durable. record() never
// leaves a stale entry behind on failure: it cuts the file to zero length (no entry at
// all) and syncs that; only when even that fails does it return an error, and then no bit
// may be cleared.
//
// Memory: nothing is held per chunk. Entries are read page by page from the file (the
// kernel's page cache keeps what is hot) and one validated page is cached for runs of
// lookups; 1 TiB of images costs no more RAM than 1 GiB.
//
// Thread safety: every member may be called concurrently; mu_ is a leaf lock (taken under
// an image's range lock or with no lock held; never held across the fdatasync).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "core/checksum_format.hpp"
#include "core/records.hpp"
#include "utils/fd.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

struct ChecksumEntry {
  std::uint64_t chunk = 0;
  std::uint64_t value = 0;  // cksum_entry(hash), or 0: "no checksum"
};

class Checksums {
 public:
  struct OpenParams {
    utils::Uuid set_uuid{};
    utils::Uuid image_uuid{};  // the bitmap's
    std::uint64_t chunk_size = 0;
    bool bitmap_trusted = true;  // false: Bitmap::open did not trust the bitmap
    FileIdentity primary;        // the primary file as found now (its size bounds the entries)
  };

  // Loads the sidecar open on `fd` (O_RDWR, a regular file with one link), or initialises
  // an empty one. Resets it (cut to the header, new generation, synced) when its header does
  // not decode, names another set, image or chunk size, when the bitmap was not trusted, or
  // when it was closed clean with a primary that differs from `primary` now; `why_reset`
  // then says why ("" when its entries are kept, or it was new). Entries past the image's
  // last chunk are dropped. Only I/O errors are errors.
  static utils::Result<std::unique_ptr<Checksums>> open(utils::UniqueFd fd, const OpenParams& p,
                                                        std::string* why_reset);

  struct Lookup {
    std::optional<std::uint64_t> entry;  // the stored entry (never 0)
    bool bad_page = false;               // the page holding it fails its checks
  };
  // Chunk c's entry as the file holds it. The caller trusts it only while c's bit is clear.
  Lookup lookup(std::uint64_t c) const;

  // Writes `entries` (any order; later ones win) and fdatasyncs. See the contract above.
  std::error_code record(std::vector<ChecksumEntry> entries);
  // The two halves of record(), for callers that write in batches: nothing written is
  // durable (nor may any bit be cleared for it) before sync() returned success.
  std::error_code write(std::vector<ChecksumEntry> entries);
  // Zeroes the entries of chunks [first, end) (pages that hold none are not rewritten).
  std::error_code forget_range(std::uint64_t first, std::uint64_t end);
  std::error_code sync();
  // Drops the entries of chunk c and every later one, durably (truncate to a smaller size:
  // chunk c's tail changes without a bit). Error: nothing may be truncated.
  std::error_code forget_from(std::uint64_t c);
  // Clean close: records the primary's identity with the clean flag, synced.
  std::error_code close_clean(const FileIdentity& primary);

  ScrubRecord scrub() const;
  // Writes the scrub block (not synced: the next sync makes it durable; see write-path.md §9.5).
  void save_scrub(const ScrubRecord& r);

  // The sidecar could not be written and was emptied: no entry exists, none is recorded
  // until the image is loaded again. `failure()` says why.
  bool disabled() const;
  std::string failure() const;
  std::uint32_t generation() const;
  int fd() const { return fd_.get(); }

 private:
  explicit Checksums(utils::UniqueFd fd) : fd_(std::move(fd)) {}
  // REQUIRE mu_.
  std::error_code reset_locked();  // header_ holds the new identity and generation
  std::error_code write_header_locked();
  std::error_code write_page_locked(std::uint64_t p, const CksumEntries& e);
  // Zeroes the entries of chunks >= c and cuts the file after them; true when the file
  // changed (not synced).
  utils::Result<bool> forget_from_locked(std::uint64_t c);
  // Page p's entries (zeros when absent or bad; *bad says which).
  utils::Result<CksumEntries> page_locked(std::uint64_t p, bool* bad) const;
  void disable_locked(const std::string& why);  // cut to zero + sync; sets broken_ on failure

  utils::UniqueFd fd_;
  mutable std::mutex mu_;
  CksumHeader header_;              // guarded by mu_
  ScrubRecord scrub_;               // guarded by mu_
  bool disabled_ = false;           // guarded by mu_
  bool broken_ = false;             // guarded by mu_: emptying failed too; record() fails
  std::string failure_;             // guarded by mu_
  mutable std::optional<std::pair<std::uint64_t, CksumEntries>> cache_;  // guarded by mu_
};

}  // namespace fusemirror::core
