// core/bitmap_open.cpp — loading a write-intent bitmap (Bitmap::open) and writing a new
// all-dirty one (for `create`); see bitmap.hpp. Split from core/bitmap.cpp, which keeps the
// md rules of the running bitmap.
#include "core/bitmap.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "utils/io.hpp"

namespace fusemirror::core {

// ---- loading -----------------------------------------------------------------------------

utils::Result<std::unique_ptr<Bitmap>> Bitmap::open(utils::UniqueFd fd,
                                                    const BitmapOpenParams& params,
                                                    std::string* why_untrusted) {
  std::unique_ptr<Bitmap> bm(new Bitmap(std::move(fd)));
  bm->persist_bits_ = params.persist_bits;
  struct stat st {};
  if (::fstat(bm->commit_.fd(), &st) != 0) return utils::last_errno();
  // The caller (open_bitmap_file) refuses anything else with its reason; never write into
  // a FIFO, a device or a file shared by another name.
  if (!S_ISREG(st.st_mode)) return utils::errno_code(EINVAL);
  if (st.st_nlink > 1) return utils::errno_code(EMLINK);
  const auto file_size = static_cast<std::uint64_t>(st.st_size);

  std::string why;
  bool all_dirty = false;
  bool load_bits = false;
  BitmapHeader h;
  if (file_size == 0) {
    // A new image: nothing to copy unless it already holds data (then we cannot know).
    h.set_uuid = params.set_uuid;
    h.image_uuid = utils::random_uuid();
    h.chunk_size = params.chunk_size;
    h.sync_size = params.image_size;
    if (params.image_size > 0) {
      all_dirty = true;
      why = "no bitmap existed for an image holding data";
    }
  } else {
    // The header only: the bits are loaded page by page below, never as one buffer.
    auto file = read_bitmap_file(bm->commit_.fd(), /*with_bits=*/false);
    if (!file) return file.error();
    const std::optional<BitmapHeader>& dec = file->header;
    if (!dec) {
      why = file->problem;
    } else if (dec->set_uuid != params.set_uuid) {
      why = "belongs to another mirror set (uuid " + utils::to_string(dec->set_uuid) + ")";
    } else if (!file->problem.empty()) {
      why = file->problem;  // header_implausible
    } else if (dec->sync_size > std::max(params.max_image_size, params.image_size)) {
      // Checked against the image before anything is allocated: no image we serve is this
      // big (a legitimate sync_size is at most the image's size or max_image_size).
      why = "sync_size " + std::to_string(dec->sync_size) + " is larger than the image (" +
            std::to_string(params.image_size) + " bytes) and than max_image_size (" +
            std::to_string(params.max_image_size) + ")";
    } else {
      h = *dec;
      if (params.persist_bits && (h.state & kStateNoBits)) {
        // Bitmap "none" wrote it: no bits to load or distrust. Closed clean and not degraded,
        // the legs were identical at that close and nothing has written since (any mount
        // clears the clean flag durably before its first write): every bit starts clear.
        // Otherwise nothing says which chunks differ: all dirty, as "none" itself decides.
        if (!(h.state & kStateClean) || (h.state & kStateDegraded)) {
          all_dirty = true;
          why = (h.state & kStateClean) ? "the bitmap was disabled while the secondary was out"
                                        : "the bitmap was disabled and the set was not shut down cleanly";
        }
      } else if (params.persist_bits) {
        why = bits_truncated_problem(h, file_size);
        load_bits = why.empty();
      }
      if (why.empty() && !params.persist_bits && !(h.state & kStateClean)) {
        // bitmap "none" keeps only the header: its clean flag is all there is to trust.
        all_dirty = true;
        why = "the bitmap is disabled and the set was not shut down cleanly";
      }
      if (why.empty() && (h.state & kStateStale)) {
        all_dirty = true;
        load_bits = false;
        why = "the bitmap is marked stale";
      }
      if (why.empty() && (h.state & kStateNeedsFullSync)) {
        all_dirty = true;
        load_bits = false;
        why = "a full resync was still pending";
      }
    }
    if (!why.empty() && !all_dirty) {
      // Untrusted: start over with a fresh header; everything is dirty.
      all_dirty = true;
      load_bits = false;
      const bool ours = dec && dec->set_uuid == params.set_uuid && file->problem.empty();
      BitmapHeader fresh;
      fresh.set_uuid = params.set_uuid;
      fresh.image_uuid = dec ? dec->image_uuid : utils::random_uuid();
      fresh.events = dec ? dec->events : 0;
      fresh.chunk_size = ours ? dec->chunk_size : params.chunk_size;
      fresh.sync_size = params.image_size;
      h = fresh;
    }
  }
  if (why_untrusted) *why_untrusted = why;

  // The header records the config's values (clamped: a 0 ms sleep would make the next
  // open refuse the header as implausible).
  h.daemon_sleep_ms = std::clamp<std::uint32_t>(params.daemon_sleep_ms, 1, kMaxDaemonSleepMs);
  h.write_behind = std::min<std::uint32_t>(params.write_behind, kMaxWriteBehind);
  std::unique_lock lk(bm->mu_);
  bm->header_ = h;
  bm->total_chunks_ = h.bit_count();
  // The activity log's extents, in this bitmap's chunks (a rescaled bitmap may have chunks
  // larger than an extent: then an extent is one chunk). Off without persisted bits.
  bm->al_.configure(params.al_extent_size / h.chunk_size, params.persist_bits ? params.al_extents : 0);
  bm->commit_.set_file_size(file_size);
  // Bits past the primary's end describe data that no longer exists: never read them —
  // unless the image is degraded. Then they name what the absent secondary still holds
  // past the primary's end (a shrink marks them, and the cover never shrinks while
  // degraded): a later grow of the primary must find them set (docs/write-path.md §7).
  const std::uint64_t image_chunks = (params.image_size + h.chunk_size - 1) / h.chunk_size;
  const bool keep_past_end = load_bits && (h.state & kStateDegraded);
  if (load_bits) {
    const std::uint64_t n =
        keep_past_end ? bm->total_chunks_ : std::min(bm->total_chunks_, image_chunks);
    if (auto ec = bm->load_bits_locked(n)) return ec;
  }
  if (params.image_size > h.sync_size) {
    // The image grew while no fusemirror watched it (the cover follows every truncate and
    // write we serve): what lies past the old cover was never mirrored.
    const std::uint64_t old_size = h.sync_size;
    bm->grow_locked(params.image_size);
    if (!all_dirty && file_size != 0)
      bm->set_dirty_locked({old_size / h.chunk_size, bm->total_chunks_});
  }
  if (params.image_size < h.sync_size && !all_dirty && !keep_past_end) {
    bm->drop_past_locked(image_chunks);
    // The file's last page may hold old bits past the new end: it is rewritten.
    if (image_chunks % kBitsPerPage) bm->commit_.touch_page(image_chunks / kBitsPerPage);
    bm->total_chunks_ = image_chunks;
    bm->header_.sync_size = params.image_size;
  }
  if (all_dirty) {
    bm->set_dirty_locked({0, bm->total_chunks_});
    bm->header_.state |= kStateNeedsFullSync;
    // Rewrite every page: the file's bits are not to be trusted.
    for (std::uint64_t p = 0; p < pages_for(bm->total_chunks_); ++p) bm->commit_.touch_page(p);
  }
  // A file longer than the cover (an old daemon's, or a crafted one) is cut at the flush.
  bm->commit_.cut_file_to(kHeaderSize + (params.persist_bits ? bits_bytes(bm->total_chunks_) : 0));
  // From an unclean shutdown: the activity log's record may spare the chunks it had logged
  // (attach_record), when it carries the events this header had.
  bm->recovering_ = load_bits && !all_dirty && !(h.state & kStateClean);
  bm->recovered_events_ = h.events;
  // Every dirty chunk found at open must be copied before it may be cleared.
  bm->pages_.copy(kDirty, kUnsynced);
  if (bm->pages_.count(kUnsynced) == 0) bm->header_.state &= ~kStateNeedsFullSync;
  // Active from here: the clean flag is cleared durably before any data write can be
  // issued, so a crash can never leave a header that claims a clean shutdown.
  // The degraded flag stays: a secondary that left stays out until an operator re-adds it
  // (md keeps a faulty member out across restarts); its bits have kept accumulating.
  bm->header_.state &= ~(kStateClean | kStateStale);
  // Which kind of file this is from now on, in the same durable header write; switching
  // either way is safe at any crash: the flag and the file's length change in one
  // flush (one fdatasync), and an old flag with a new length, or the reverse, is read as a
  // header-only file that is not clean (all dirty) or as bits truncated (all dirty).
  if (params.persist_bits) bm->header_.state &= ~kStateNoBits;
  else bm->header_.state |= kStateNoBits;
  bm->header_.events += 1;
  bm->commit_.touch_header();
  if (auto ec = bm->wait_durable_locked(lk, bm->commit_.requested_gen())) {
    // No space for the bitmap (typically an all-dirty rebuild of a sparse file): the image
    // is still served, read-only in effect (bitmap-failed, sticky), and recover() retries.
    // The header on disk is unchanged or active, never newly clean.
    if (ec != std::errc::no_space_on_device && ec.value() != EDQUOT) return ec;
  }
  return bm;
}

std::error_code Bitmap::load_bits_locked(std::uint64_t chunks) {
  // 256 pages per read; a page of zeros allocates nothing.
  std::vector<std::byte> buf(256 * 4096);
  const std::uint64_t bytes = (chunks + 7) / 8;
  for (std::uint64_t off = 0; off < bytes; off += buf.size()) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), bytes - off));
    auto got = utils::pread_all(commit_.fd(), std::span(buf.data(), want), kHeaderSize + off);
    if (!got) return got.error();
    if (*got < want) return utils::errno_code(EIO);  // checked against the size already
    for (std::size_t po = 0; po < want; po += 4096) {
      const std::uint64_t p = (off + po) / 4096;
      const std::size_t n = std::min<std::size_t>(4096, want - po);
      BitmapPages::Words w{};
      std::memcpy(w.data(), buf.data() + po, n);
      // Bits past the last chunk are padding: never let them count.
      const std::uint64_t first = p * kBitsPerPage;
      if (chunks < first + kBitsPerPage) {
        const std::uint64_t keep = chunks - first;
        if (keep % 64) w[keep / 64] &= (1ull << (keep % 64)) - 1;
        for (std::size_t i = (keep + 63) / 64; i < w.size(); ++i) w[i] = 0;
      }
      pages_.load(kDirty, p, w);
    }
  }
  return {};
}

std::error_code Bitmap::write_all_dirty(int fd, const BitmapOpenParams& params) {
  BitmapHeader h;
  h.set_uuid = params.set_uuid;
  h.image_uuid = utils::random_uuid();
  h.chunk_size = params.chunk_size;
  h.daemon_sleep_ms = std::clamp<std::uint32_t>(params.daemon_sleep_ms, 1, kMaxDaemonSleepMs);
  h.write_behind = std::min<std::uint32_t>(params.write_behind, kMaxWriteBehind);
  h.sync_size = params.image_size;
  h.state = kStateNeedsFullSync | kStateClean;
  const std::uint64_t n = h.bit_count();
  // A page at a time: the file is as big as the image needs, memory is not.
  std::vector<std::byte> page(4096, std::byte{0xFF});
  for (std::uint64_t p = 0; p * kBitsPerPage < n; ++p) {
    const std::uint64_t bits = std::min(kBitsPerPage, n - p * kBitsPerPage);
    if (bits < kBitsPerPage) {
      std::fill(page.begin(), page.end(), std::byte{0});
      for (std::uint64_t c = 0; c < bits; ++c) page[c / 8] |= std::byte(1u << (c % 8));
    }
    if (auto ec = utils::pwrite_all(fd, page, kHeaderSize + p * 4096)) return ec;
  }
  auto raw = encode_header(h);
  if (auto ec = utils::pwrite_all(fd, raw, 0)) return ec;
  if (::ftruncate(fd, static_cast<off_t>(kHeaderSize + bits_bytes(n))) != 0) return utils::last_errno();
  return utils::fdatasync_fd(fd);
}

}  // namespace fusemirror::core
