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

// Operations that call into `set` (passed as fuse_new's private data).
const fuse_operations& operations();

}  // namespace fusemirror::fuse
