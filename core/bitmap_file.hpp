// core/bitmap_file.hpp — opening an image's bitmap sidecar file, trusting nothing about it.
//
// Issue 12 §4: a bitmap path may hold something that is not a bitmap file at all — a FIFO
// (whose read would hang the mount), a directory, a symlink, a device, or a hard link to a
// file elsewhere (whose writes would land outside the bitmap directory). The file is opened
// O_NONBLOCK beneath the bitmap directory without following symlinks, and must be a regular
// file with exactly one link. Anything else is *refused*: moved aside under a name that is
// never taken for a bitmap (".NAME.refused-SECONDS"), and a fresh bitmap is created in its
// place with O_EXCL, which Bitmap::open rebuilds all dirty (a full resync: nothing the
// refused object said is believed, nothing is written through it).
#pragma once

#include <memory>
#include <string>

#include "core/bitmap.hpp"
#include "core/dir.hpp"
#include "utils/result.hpp"

namespace fusemirror::core {

// Why the object at `rel` beneath `dir` may not serve as a bitmap ("" when it may, or when
// nothing is there). Never blocks, never follows a symlink.
std::string bitmap_path_problem(const Dir& dir, const std::string& rel);

// Opens (creating when missing) the sidecar file at `rel` beneath `dir` — a bitmap or a
// checksum file (`what` names it in the log) — O_RDWR, blocking once open. An object that
// may not serve (a FIFO, directory, symlink, device, hard link) is moved aside to
// ".NAME.refused-SECONDS" and a new empty file made in its place with O_EXCL; `refused`
// then says why ("" otherwise).
utils::Result<utils::UniqueFd> open_sidecar_file(const Dir& dir, const std::string& rel, const char* what,
                                                 std::string* refused);

// Opens (creating when missing) the bitmap at `rel` beneath `dir` and loads it. A refused
// object is moved aside and replaced as described above; `why_untrusted` then names the
// refusal. Logs, naming the file, every refusal and a bitmap the file system has no room
// for (with the bytes to free): the image is then served with writes refused
// (bitmap-failed) until the sweeper's recover() succeeds.
utils::Result<std::unique_ptr<Bitmap>> open_bitmap_file(const Dir& dir, const std::string& rel,
                                                        const BitmapOpenParams& params,
                                                        std::string* why_untrusted);

}  // namespace fusemirror::core
