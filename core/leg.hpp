// core/leg.hpp — the interface of an image's secondary leg: where the second copy of an
// image's bytes lives (docs/design.md §2).
//
// Two implementations: a file under the secondary directory (core/file_leg.hpp) and an
// export on an NBD server (core/nbd_leg.hpp). The Image drives a leg exactly as it drove
// the secondary's descriptor before: the write path, resync, check/repair, write-behind and
// degraded mode do not know which kind they have. The primary stays a file.
//
// Semantics every implementation keeps (the file's, which the rest of the code assumes):
//  - the leg has a size; pread past it returns a short count (zeros are implied, as past a
//    file's end); pwrite past it extends it, the bytes between reading as zeros;
//  - set_size() cuts or extends (the extension reads as zeros);
//  - flush() makes every write that completed before it durable (fdatasync);
//  - fallocate() takes the modes Image::fallocate passes (KEEP_SIZE, PUNCH_HOLE,
//    ZERO_RANGE) with fallocate(2)'s meaning for the bytes; a leg that cannot keep the
//    layout (a hole, a preallocation) keeps the bytes.
// Errors are errno codes; a leg never throws on I/O. Thread safety: every member may be
// called concurrently (the image orders overlapping writes with its range lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>

#include "core/nbd_record.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

class Leg {
 public:
  virtual ~Leg() = default;
  // For messages: "export vm.img on nbd+unix:///?socket=/run/s" or a file's path.
  virtual std::string describe() const = 0;

  // Reads up to data.size() bytes at `off`; short only at the leg's end.
  virtual utils::Result<std::size_t> pread(std::span<std::byte> data, std::uint64_t off) = 0;
  // Writes all of `data` at `off`; `*done` (when given) gets the bytes written before an error.
  virtual std::error_code pwrite(std::span<const std::byte> data, std::uint64_t off,
                                 std::size_t* done = nullptr) = 0;
  // fdatasync (`datasync`) or fsync of the leg.
  virtual std::error_code flush(bool datasync = true) = 0;
  virtual utils::Result<std::uint64_t> size() = 0;
  virtual std::error_code set_size(std::uint64_t size) = 0;
  // fallocate(2) modes as above; an unsupported layout request falls back to writing the
  // bytes it means (core/leg_copy.cpp fallocate_secondary for a file).
  virtual std::error_code fallocate(int mode, std::uint64_t off, std::uint64_t len) = 0;
  // Zeros [off, off + len) as a hole where the leg can (the size stays).
  virtual std::error_code punch(std::uint64_t off, std::uint64_t len) = 0;

  // Identity: a leg that keeps its own record (an NBD export, in its tail block;
  // docs/on-disk-format.md "NBD identity record"). A file's record lives in the secondary
  // directory instead (core/records.hpp): keeps_record() false, the others ENOTSUP.
  virtual bool keeps_record() const { return false; }
  // ENOENT: none; EBADMSG with `*why`: one that does not decode or was written for another name.
  virtual utils::Result<NbdRecord> read_record(std::string* /*why*/) { return utils::errno_code(ENOTSUP); }
  // Durable when it returns.
  virtual std::error_code write_record(const NbdRecord& /*r*/) { return utils::errno_code(ENOTSUP); }

  // The largest pwrite a data write to this leg is cut into (core/file_leg.hpp: config
  // leg_write_piece, on a local disk file system); 0: each write whole.
  virtual std::uint64_t write_piece() const { return 0; }
  // The file's descriptor, or -1 when the leg is not a local file. Optimizations only
  // (copy_file_range, sync_file_range) and the file identity the records keep.
  virtual int fd() const { return -1; }
  // Config direct_write_max (docs/write-path.md §1b): opens a second, read-write descriptor
  // of the same file with O_DIRECT, which the image then writes small aligned writes
  // through; false where the leg is not a local file or its file system refused O_DIRECT.
  // REQUIRES: the leg not shared yet (the image's constructor, or re-add before the swap).
  virtual bool open_direct() { return false; }
  // That descriptor, or -1 (none opened, or refused).
  virtual int direct_fd() const { return -1; }
  // Starts writing back [off, off + len) without waiting (resync's pacing); not a
  // durability step.
  virtual void start_writeback(std::uint64_t /*off*/, std::uint64_t /*len*/) {}
  // Waits for the writeback of [off, off + len) and drops its clean pages from the cache
  // (resync's drop-behind: a copy must not leave the leg's page cache full); pages written
  // again meanwhile stay. Not a durability step; a hint where the leg has no page cache.
  virtual void drop_cache(std::uint64_t /*off*/, std::uint64_t /*len*/) {}
  // Starts reading [off, off + len) into the cache without waiting (check's pass over
  // the leg, which otherwise gets no read-ahead on a file leg); a hint only.
  virtual void read_ahead(std::uint64_t /*off*/, std::uint64_t /*len*/) {}
};

}  // namespace fusemirror::core
