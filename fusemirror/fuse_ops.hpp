// fusemirror/fuse_ops.hpp — the FUSE operations table over a core::MirrorSet.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse.h>

#include "core/mirror_set.hpp"
#include "fusemirror/control_tree.hpp"

namespace fusemirror::fuse {

// Images are opened with FOPEN_DIRECT_IO (every read and write reaches the mirror; no
// second copy in the FUSE page cache — VM images run cache=none anyway) unless the mount
// asked for the kernel's page cache (`fusemirror mount --page-cache`).
void set_page_cache(bool on);
bool page_cache();

// Operations that call into `set` (passed as fuse_new's private data).
const fuse_operations& operations();

}  // namespace fusemirror::fuse
