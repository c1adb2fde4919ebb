// core/image_loader.hpp — loading an image: its two legs, its bitmap, and the trust
// decision that says how much of it must be copied again.
//
// The decision (docs/on-disk-format.md "Trust rules", docs/reliability.md invariant 4):
//   * no copy on the secondary                      -> full resync
//   * bitmap untrusted (header, uuid, size, bits)   -> full resync (Bitmap::open says why)
//   * the secondary's record does not prove the bitmap covers what the copy may lack
//                                                   -> full resync (why_not_covered says why)
//   * the bitmap says the secondary was failed      -> degraded until `re-add`
//   * otherwise                                     -> resync of the dirty chunks only
// Then the secondary is recorded a member at the bitmap's new events.
//
// Thread safety: REQUIRES the namespace lock exclusively (core/namespace.hpp) for load()
// and scan(): two loads of one image never race.
#pragma once

#include <memory>
#include <string>

#include "core/config.hpp"
#include "core/image.hpp"
#include "core/image_table.hpp"
#include "core/legs.hpp"
#include "core/records.hpp"
#include "core/resync.hpp"
#include "utils/result.hpp"
#include "utils/thread_pool.hpp"

namespace fusemirror::core {

class ImageLoader {
 public:
  ImageLoader(const Config& config, const Legs& legs, SecondaryRecords& records, ImageTable& table,
              ResyncEngine& resync, utils::ThreadPool* pool, WriteBehindExecutor* wb_executor)
      : config_(config), legs_(legs), records_(records), table_(table), resync_(resync), pool_(pool),
        wb_executor_(wb_executor) {}

  // Returns the loaded image REL, loading it first when it is not (and queueing its resync
  // when it has unsynced chunks).
  utils::Result<std::shared_ptr<Image>> load(const std::string& rel);
  // Loads every image beneath REL_DIR (and makes the secondary's directories); an image
  // that cannot be loaded is logged and skipped.
  void scan(const std::string& rel_dir);

 private:
  ImageOptions image_options() const;

  const Config& config_;
  const Legs& legs_;
  SecondaryRecords& records_;
  ImageTable& table_;
  ResyncEngine& resync_;
  utils::ThreadPool* pool_;
  WriteBehindExecutor* wb_executor_;
};

}  // namespace fusemirror::core
