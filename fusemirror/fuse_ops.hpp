// fusemirror/fuse_ops.hpp — the FUSE operations table over a core::MirrorSet.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse.h>

#include "core/mirror_set.hpp"

namespace fusemirror::fuse {

// The control directory at the mount's root (virtual; never listed by readdir).
inline constexpr const char* kControlDir = "/.fusemirror";
inline constexpr const char* kStatusFile = "/.fusemirror/status.json";
// Write one line: "fail IMAGE", "re-add IMAGE", "sync-action IMAGE ACTION". Owner only.
inline constexpr const char* kControlFile = "/.fusemirror/control";
// md-sysfs-style files per image: /.fusemirror/images/<image path>/{sync_action, ...}.
inline constexpr const char* kImagesDir = "/.fusemirror/images";

// Images are opened with FOPEN_DIRECT_IO (every read and write reaches the mirror; no
// second copy in the FUSE page cache — VM images run cache=none anyway) unless the mount
// asked for the kernel's page cache (`fusemirror mount --page-cache`).
void set_page_cache(bool on);
bool page_cache();

// Operations that call into `set` (passed as fuse_new's private data).
const fuse_operations& operations();

}  // namespace fusemirror::fuse
