// core/image_size.cpp — the Image's size changes (declared in image.hpp): truncate and
// fallocate on both legs, with the bitmap's cover and marks ordered around them as
// docs/write-path.md §2a argues; what a refused one takes back.
#include <fcntl.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "core/image.hpp"
#include "core/leg_copy.hpp"
#include "utils/crash_point.hpp"
#include "utils/extents.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

std::error_code Image::truncate(std::uint64_t size) {
  // Refused before either leg or the bitmap changes (docs/reliability.md §8).
  if (auto ec = check_size_limit(0, size)) return ec;
  auto guard = locks_.lock(0, RangeLock::kEnd);
  // From the new end's chunk on, the primary's bytes may change (core/fresh_hashes.hpp).
  fresh_.forget(size, RangeLock::kEnd - size);
  // A failed bitmap could not follow the new size: nothing changes (no size without intent).
  if (auto ec = bitmap_->error()) {
    spdlog::error("{}: bitmap write failed ({}); refusing truncate", name(), ec.message());
    return utils::errno_code(EIO);
  }
  drain_write_behind();  // size changes are ordered after every queued write
  struct stat st {};
  if (::fstat(primary_.get(), &st) != 0) return utils::last_errno();
  const auto old = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t lo = std::min(old, size), span = std::max(old, size) - lo;
  // While degraded the secondary misses this, and the range must be resynced when it
  // returns. A shrink is marked first: a crash after the primary's cut would leave no mark,
  // and the next open shrinks the cover to the image while the secondary keeps its old end
  // (docs/write-path.md §7). The range lies inside the cover: nothing grows.
  const bool mark_first = !secondary_ok() && size < old;
  if (mark_first)
    if (auto ec = bitmap_->mark_unsynced(lo, span)) return utils::errno_code(EIO);
  // A shrink changes the new last chunk's tail (and removes the chunks past it) without a
  // bit: their checksums go first, durably (docs/write-path.md §9.1).
  // Test builds only: FM_FAULT=checksums.keep_on_shrink keeps them, breaking invariant 9 on
  // purpose, so that the power-cut suite shows it notices (docs/reliability.md §9).
  if (size < old && checksums_ && !FM_FAULT_POINT("checksums.keep_on_shrink"))
    if (auto ec = checksums_->forget_from(size / bitmap_->chunk_size())) {
      spdlog::error("{}: checksum file cannot be written ({}); refusing truncate", name(), ec.message());
      return utils::errno_code(EIO);
    }
  // Otherwise the primary first: a size it refuses (EFBIG past its file system's limit) is
  // refused with nothing changed — neither leg, nor the bitmap. A grow needs no intent
  // before the primary's: it adds zeros, and a crash before the bitmap follows leaves an
  // image larger than its cover, which the next open marks dirty past the cover (a cover
  // already larger holds the marks of the shrink that made it so). Healthy, a crash between
  // the legs leaves sizes that reconcile_size() makes the primary's at the next open.
  if (::ftruncate(primary_.get(), static_cast<off_t>(size)) != 0) {
    const std::error_code p = utils::last_errno();
    spdlog::warn("{}: truncate to {} refused by the primary: {}; nothing changed", name(), size,
                 p.message());
    return p;
  }
  // A shrink cuts data no bit covers, so its order is what keeps the legs equal across a
  // power cut (docs/write-path.md §2a): the primary's cut is made durable before the
  // secondary's is issued (a power cut cannot leave the secondary cut and the primary not:
  // reconcile_size() only ever cuts the secondary to the primary's size), and the
  // secondary's before the bitmap forgets the chunks past the end (else a later grow would
  // find them clean over old data that one leg still holds past its end). A grow needs no
  // order: both legs read zeros past their end.
  const bool shrink = size < old;
  if (shrink && secondary_ok())
    if (auto ec = utils::fdatasync_fd(primary_.get())) {
      // The primary is cut but maybe not durably: the secondary stays as it is and the range
      // waits for resync (the bits are durable before this returns).
      (void)bitmap_->mark_unsynced(lo, span);
      return settle("truncate", ec, {});
    }
  std::error_code s;
  if (secondary_ok()) s = secondary_->set_size(size);
  if (!s && shrink && secondary_ok()) s = secondary_->flush();
  if (!secondary_ok() || s) {
    // The secondary misses this change: its range is resynced when it returns (while
    // degraded the cover never shrinks, so these bits stay).
    if (span && !mark_first)
      if (auto ec = bitmap_->mark_unsynced(lo, span))
        spdlog::error("{}: bitmap write failed ({}) after a truncate", name(), ec.message());
  } else if (auto ec = bitmap_->resize(size)) {
    spdlog::error("{}: bitmap resize failed: {}", name(), ec.message());
  }
  if (s) fail_secondary("truncate", s);
  return {};
}

namespace {

// Errors the kernel or the file system returns for a fallocate before changing anything:
// an unsupported mode, a range past the file system's limit, a file it will not touch.
bool refused_before_change(std::error_code ec) {
  switch (ec.value()) {
    case EOPNOTSUPP: case EINVAL: case EFBIG: case EPERM: case ENODEV: case ETXTBSY: case EBADF:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::error_code Image::fallocate(int mode, std::uint64_t off, std::uint64_t len) {
  constexpr int kSupported = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if (mode & ~kSupported) return utils::errno_code(EOPNOTSUPP);
  if (len == 0) return utils::errno_code(EINVAL);
  const bool keep_size = mode & FALLOC_FL_KEEP_SIZE;
  if (!keep_size)
    if (auto ec = check_size_limit(off, len)) return ec;  // would extend past the limit
  if (off > RangeLock::kEnd - len) return utils::errno_code(EFBIG);
  auto guard = locks_.lock(lock_floor(off), keep_size ? lock_ceil(off + len) : RangeLock::kEnd);
  fresh_.forget(off, len);  // the primary's bytes may change (core/fresh_hashes.hpp)
  // A failed bitmap could follow neither the bits nor a new size: nothing changes.
  if (auto ec = bitmap_->error()) {
    spdlog::error("{}: bitmap write failed ({}); refusing fallocate", name(), ec.message());
    return utils::errno_code(EIO);
  }
  drain_write_behind();  // fallocate runs synchronously, after every queued write
  struct stat st {};
  if (::fstat(primary_.get(), &st) != 0) return utils::last_errno();
  const auto old = static_cast<std::uint64_t>(st.st_size);
  // The intent covers the part inside the image, [off, min(off + len, old)): the bytes a
  // punch or a zero range changes (an allocation changes none, but its bits keep the
  // secondary's layout in step after a crash). Past the end the operation only adds zeros
  // or preallocates: no intent, and the cover follows the new size after both legs, as for
  // truncate (docs/write-path.md §7). So a huge range never grows the cover up front.
  const std::uint64_t blen = off >= old ? 0 : std::min(len, old - off);
  // Whether the primary holds blocks past its end already (unknown counts as yes): when it
  // does not, whatever a failed allocation left there is its own and is freed again.
  bool blocks_past_end = true;
  if (off + len > old) {
    auto ex = utils::fiemap_extents(primary_.get(), old, off + len);
    if (ex) blocks_past_end = !ex->empty();
  }
  Bitmap::Intent intent;
  if (blen)
    if (auto ec = bitmap_->start_write(off, blen, 0, &intent)) {
      spdlog::error("{}: bitmap write failed ({}); refusing fallocate", name(), ec.message());
      return utils::errno_code(EIO);
    }
  // The primary first: what it refuses is refused to the user, the secondary not asked.
  if (auto p = do_fallocate(primary_.get(), mode, off, len))
    return refuse_fallocate(mode, off, len, old, blocks_past_end, p, intent);
  std::error_code s;
  const bool with_sec = secondary_ok();
  if (with_sec) s = secondary_->fallocate(mode, off, len);
  if (blen) bitmap_->end_write(off, blen, with_sec && !s);
  const bool sized = ::fstat(primary_.get(), &st) == 0;
  const std::uint64_t now = sized ? static_cast<std::uint64_t>(st.st_size) : old;
  if (!keep_size && now > old) {
    // The cover follows the grown size; a secondary that missed it gets the range resynced.
    const std::error_code ec =
        with_sec && !s ? bitmap_->resize(now) : bitmap_->mark_unsynced(old, now - old);
    if (ec) spdlog::error("{}: bitmap write failed ({}) after fallocate", name(), ec.message());
  }
  if (s) fail_secondary("fallocate", s);
  return {};
}

std::error_code Image::refuse_fallocate(int mode, std::uint64_t off, std::uint64_t len,
                                        std::uint64_t old, bool blocks_past_end, std::error_code p,
                                        const Bitmap::Intent& intent) {
  // What the primary got before giving up is given back where it can be told apart: ext4
  // extends the file as it allocates and keeps what it got when space runs out, and keeps
  // a KEEP_SIZE preallocation past the end. Setting the old size again cuts the first and
  // frees the second (past the old end lie only zeros nobody asked for, which the
  // secondary never saw). Blocks it allocated inside the image stay: no byte changed.
  struct stat st {};
  const bool grew =
      ::fstat(primary_.get(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) != old;
  if (off + len > old && (grew || !blocks_past_end) &&
      ::ftruncate(primary_.get(), static_cast<off_t>(old)) != 0)
    spdlog::error("{}: could not set the size back to {} after a failed fallocate: {}; the "
                  "secondary's size follows at the next open",
                  name(), old, utils::last_errno().message());
  const std::uint64_t blen = off >= old ? 0 : std::min(len, old - off);
  // An allocation changes no byte; a punch or a zero range the primary gave up part-way
  // (ENOSPC, EIO) may have changed part of its range there alone: those chunks are resynced.
  const bool changed =
      (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) && !refused_before_change(p);
  if (blen) {
    if (changed) bitmap_->end_write(off, blen, false);
    else bitmap_->cancel_write(off, blen, intent);
  }
  spdlog::warn("{}: fallocate (mode {:#x}) at {} refused by the primary: {}; {}", name(), mode, off,
               p.message(), changed ? "the range is resynced from the primary" : "nothing changed");
  return p;
}

}  // namespace fusemirror::core
