// core/layout.hpp — every on-disk name and path of a mirror set, in one place, and the
// set lock that guards them (docs/design.md "Files on disk").
//
//   PRIMARY/.fusemirror/config.json          the set's identity and tunables
//   PRIMARY/.fusemirror/lock                 flock()ed by the daemon and by rescale-bitmap
//   PRIMARY/.fusemirror/fusemirror.log       the daemon's log
//   BITMAPS/<image>.fmbm                     one bitmap per image (BITMAPS: bitmap_root())
//   BITMAPS/<image>.fmck                     its checksums of clean chunks (core/checksums.hpp)
//   BITMAPS/<image>.fmal                     its activity log's record (core/al_record.hpp)
//   SECONDARY/.fusemirror/member.json        the secondary belongs to set UUID
//   SECONDARY/.fusemirror/lock               flock()ed by the daemon
//   SECONDARY/.fusemirror/images/<image>.json  the secondary's record of an image
//
// Relative paths ("dir/disk.img", "" for the root) are those of core/dir.hpp.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

#include "utils/fd.hpp"

namespace fusemirror::core {

inline constexpr const char* kMetaDirName = ".fusemirror";
inline constexpr const char* kConfigName = "config.json";
inline constexpr const char* kMemberName = "member.json";
inline constexpr const char* kLockName = "lock";
inline constexpr const char* kLogName = "fusemirror.log";
inline constexpr const char* kBitmapsDirName = "bitmaps";
inline constexpr const char* kRecordsDirName = "images";
inline constexpr const char* kBitmapSuffix = ".fmbm";
inline constexpr const char* kChecksumSuffix = ".fmck";
inline constexpr const char* kAlRecordSuffix = ".fmal";
inline constexpr const char* kRecordSuffix = ".json";

// The longest name an image may have: its bitmap (NAME.fmbm), its checksums (NAME.fmck), its
// activity log's record (NAME.fmal) and its record (NAME.json) must fit NAME_MAX too. Longer names are refused (ENAMETOOLONG)
// before anything is made.
inline constexpr std::size_t kMaxImageNameBytes = 255 - 5;
static_assert(sizeof(".fmbm") - 1 == 5 && sizeof(".fmck") - 1 == 5 && sizeof(".fmal") - 1 == 5 &&
              sizeof(".json") - 1 == 5);
// ENAMETOOLONG when REL's last component is too long for an image, else {}.
std::error_code check_image_name(std::string_view rel);

// True for the metadata directory and everything beneath it: never an image or a
// directory of the set.
bool reserved_name(std::string_view rel);
// "a/b/c" -> "a/b"; "c" -> "".
std::string parent_rel(std::string_view rel);
// An image's bitmap, relative to the bitmap directory.
std::string bitmap_rel(std::string_view image_rel);
// An image's checksum file, beside its bitmap.
std::string checksum_rel(std::string_view image_rel);
// The record of its activity log's logged chunks, beside its bitmap.
std::string al_record_rel(std::string_view image_rel);
// The secondary's record of image REL (or, with `dir`, the directory of records mirroring
// directory REL), relative to the secondary.
std::string record_rel(std::string_view rel, bool dir = false);
// DIR/.fusemirror (the metadata directory of a backing directory).
std::string meta_dir(const std::string& dir);

// Takes the set lock DIR/.fusemirror/lock (exclusive, non-blocking) and returns it held.
// `what` names the side for messages ("primary", "secondary"). Throws utils::Error naming
// the lock and who holds it.
utils::UniqueFd lock_set_dir(const std::string& dir, const std::string& what);

// Whether DIR's set lock is free now, without taking it for longer than the probe and
// without creating it: kGone when DIR/.fusemirror/lock does not exist (nothing can hold
// it). Throws utils::Error for any other failure, naming the lock and the reason.
enum class SetLock { kFree, kHeld, kGone };
SetLock probe_set_lock(const std::string& dir);

}  // namespace fusemirror::core
