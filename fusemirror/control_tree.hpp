// fusemirror/control_tree.hpp — the virtual MOUNT/.fusemirror directory (never listed by
// readdir of the root):
//
//   status.json                      read: the live status (JSON), of the images the caller
//                                    could reach through the mount
//   events                           read: the event log (core/events.hpp's format), the
//                                    events of images the caller could reach
//   control                          write one line (core/control.hpp); owner and root only
//   images/<dir>/<image>/<attribute> md-sysfs files (core/control.hpp's table)
//
// The tree shows a caller only what the mount itself would: a directory the caller cannot
// search hides what is beneath it (EACCES, as the mount would answer), and reading never
// loads an image. Everything that changes state is the mount owner's and root's only.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse.h>

#include <memory>
#include <string>
#include <system_error>

#include "core/mirror_set.hpp"

namespace fusemirror::fuse {

inline constexpr const char* kControlDir = "/.fusemirror";
inline constexpr const char* kStatusFile = "/.fusemirror/status.json";
inline constexpr const char* kControlFile = "/.fusemirror/control";
inline constexpr const char* kEventsFile = "/.fusemirror/events";
inline constexpr const char* kImagesDir = "/.fusemirror/images";

// An open file of the mount: an image, or a control-tree file.
struct Handle {
  std::shared_ptr<core::Image> image;     // null for a control-tree file
  std::string content;                    // a readable control file's snapshot
  bool control = false;                   // the write-only control file
  std::string attr_image;                 // an attribute file: its image ...
  const core::Attribute* attr = nullptr;  // ... and which attribute
};

bool is_control(const char* path);

// A core error as FUSE wants it: a negative errno (EIO for anything that is not an errno).
inline int neg(std::error_code ec) {
  if (!ec) return 0;
  if (ec.category() == std::generic_category() || ec.category() == std::system_category()) return -ec.value();
  return -EIO;
}

// The operations on paths under kControlDir; each returns 0 or a negative errno.
int control_getattr(core::MirrorSet& set, const char* path, struct stat* st);
int control_readdir(core::MirrorSet& set, const char* path, void* buf, fuse_fill_dir_t filler);
int control_open(core::MirrorSet& set, const char* path, fuse_file_info* fi);
int control_write(core::MirrorSet& set, Handle& h, const char* buf, size_t size);
int control_truncate(core::MirrorSet& set, const char* path, const Handle* h);

}  // namespace fusemirror::fuse
