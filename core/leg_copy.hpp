// core/leg_copy.hpp — byte-range operations on the legs' files that keep them identical in
// content *and* layout: fallocate modes with emulation where a file system lacks one, and
// the copy of a range from the primary to the secondary that resync and repair use.
//
// Free functions on descriptors, no state: the caller (core/image) holds the range lock
// and decides what a leg's error means.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <vector>

namespace fusemirror::core {

std::error_code do_fallocate(int fd, int mode, std::uint64_t off, std::uint64_t len);
// Makes [off, off+len) of `fd` read as zeros, as a hole where the file system can.
std::error_code punch(int fd, std::uint64_t off, std::uint64_t len);
// The secondary gets the same fallocate; where its file system lacks the mode, the same
// contents by other means (an emulated zero range or punch keeps the legs identical).
std::error_code fallocate_secondary(int fd, int mode, std::uint64_t off, std::uint64_t len);

// The result of a copy: which leg failed, if any.
struct LegCopy {
  std::error_code primary;    // reading the primary (its layout or its data)
  std::error_code secondary;  // writing the secondary
};
// Copies [off, stop) of `pfd` to `sfd` with its layout: data where the primary has data,
// an unwritten extent where it has one, a hole where it has a hole. `buf` is scratch space;
// `*copied` gets the data bytes written. `copy_file_range_ok` is cleared (for good) once
// the legs' file systems refuse copy_file_range. REQUIRES the range lock of [off, stop).
class Leg;
// Copies [off, stop) of the primary `pfd` to the secondary leg `s`, keeping the layout
// (holes, preallocation) where the leg can; copy_file_range when the leg is a file.
LegCopy copy_layout(int pfd, Leg& s, std::uint64_t off, std::uint64_t stop, std::vector<std::byte>& buf,
                    std::uint64_t* copied, std::atomic<bool>& copy_file_range_ok);

}  // namespace fusemirror::core
