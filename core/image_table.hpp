// core/image_table.hpp — the set's images by relative path: the loaded ones, and those
// evicted to keep the descriptor budget (docs/reliability.md §8).
//
// Owns the map and its mutex, nothing else: loading an image (and its trust decision) and
// evicting one are core/image_loader's job, namespace changes are core/namespace's.
//
// An entry is either *loaded* (it holds the Image, three descriptors) or *evicted* (it holds
// only the ImageStatus the image had when it was closed clean: what status and the control
// tree show for it without loading it — "looking never changes state").
//
//        load (ImageLoader)            take_idle + close_clean (ImageLoader::evict_idle)
//   ─────────────────────> loaded ──────────────────────────────> evicted
//                            ^                                       │
//                            └──────── load (open_image) ────────────┘
//
// Thread safety: every member may be called concurrently; mu_ is taken after the namespace
// lock and before any Image internals (take_idle's predicate runs under it).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/image.hpp"
#include "core/status.hpp"

namespace fusemirror::core {

class ImageTable {
 public:
  // The loaded image REL (null when it is not loaded); marks it used (the LRU's clock).
  std::shared_ptr<Image> find(const std::string& rel) const;
  // REL is loaded as `img` (replacing an evicted entry).
  void insert(const std::string& rel, std::shared_ptr<Image> img);
  // REL is no image any more (unlinked, or replaced by a new one).
  void erase(const std::string& rel);
  // After a rename of FROM to TO (a directory when `is_dir`): every image at or beneath FROM
  // moves (and is renamed), and whatever was at or beneath TO is dropped.
  void rename(const std::string& from, const std::string& to, bool is_dir);
  // The loaded images.
  std::vector<std::shared_ptr<Image>> snapshot() const;
  // Every image in name order: loaded ones as their Image (second empty), evicted ones as
  // their summary (first null).
  std::vector<std::pair<std::shared_ptr<Image>, ImageStatus>> listing() const;
  // The evicted image REL's summary; nullopt when REL is loaded or unknown.
  std::optional<ImageStatus> summary(const std::string& rel) const;
  std::size_t size() const;    // loaded and evicted
  std::size_t loaded() const;  // loaded only (each holds three descriptors)

  // Up to `n` names of loaded images, least recently used first.
  std::vector<std::string> least_recently_used(std::size_t n) const;
  // Takes REL's image out of the table when nothing but the table holds it (no FUSE handle,
  // no resync job, no caller between find() and its use: find() copies under mu_, so a
  // use_count of 1 seen under mu_ cannot grow behind our back) and `idle(image)` holds.
  // The entry stays, evicted, showing `idle`'s summary until set_summary(). Null otherwise.
  std::shared_ptr<Image> take_idle(const std::string& rel,
                                   const std::function<bool(const Image&, ImageStatus*)>& idle);
  // REL is known but not loaded (the mount's scan found it closed clean): shown as `s`.
  void insert_unloaded(const std::string& rel, ImageStatus s);
  // The evicted REL's summary, once its image is closed.
  void set_summary(const std::string& rel, ImageStatus s);

 private:
  struct Entry {
    std::shared_ptr<Image> image;  // null: evicted
    ImageStatus summary;           // evicted only
    std::uint64_t used = 0;        // the clock's value at the last find()
  };
  mutable std::mutex mu_;
  mutable std::map<std::string, Entry> images_;  // guarded by mu_ (find() updates `used`)
  mutable std::uint64_t clock_ = 0;              // guarded by mu_
};

}  // namespace fusemirror::core
