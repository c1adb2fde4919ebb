#include "core/image_loader.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "core/bitmap_file.hpp"
#include "core/layout.hpp"
#include "utils/thread_pool.hpp"
#include "core/scrub.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

namespace {

// What a load made, removed again unless the load succeeds (dismiss()): a failed load —
// EMFILE while opening the bitmap, say — leaves no secondary copy, bitmap or record that
// the next load would mistake for a previous life of the image. What existed before the
// load is never removed. Runs after the load's own descriptors are closed (it is declared
// before them), so that it has descriptors to work with.
class LoadUndo {
 public:
  LoadUndo(const Legs& legs, SecondaryRecords& records, const std::string& rel)
      : legs_(legs), records_(records), rel_(rel) {}
  ~LoadUndo() {
    if (dismissed_) return;
    if (secondary) unlink_in(legs_.secondary, rel_);
    if (bitmap) {
      unlink_in(legs_.bitmaps, bitmap_rel(rel_));
      unlink_in(legs_.bitmaps, al_record_rel(rel_));
      (void)records_.remove(rel_);
    }
    if (checksums) unlink_in(legs_.bitmaps, checksum_rel(rel_));
  }
  LoadUndo(const LoadUndo&) = delete;
  LoadUndo& operator=(const LoadUndo&) = delete;
  void dismiss() { dismissed_ = true; }
  bool secondary = false;  // the secondary copy was made by this load
  bool bitmap = false;     // the bitmap was made by this load
  bool checksums = false;  // the checksum file was made by this load

 private:
  static void unlink_in(const Dir& dir, const std::string& rel) {
    if (auto ec = dir.unlink(rel); ec && ec != std::errc::no_such_file_or_directory)
      spdlog::error("{}/{}: could not remove it after a failed load: {}", dir.path(), rel, ec.message());
  }
  const Legs& legs_;
  SecondaryRecords& records_;
  const std::string& rel_;
  bool dismissed_ = false;
};

bool fd_exhausted(std::error_code ec) { return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system; }

}  // namespace

std::size_t ImageLoader::budget_for(std::uint64_t nofile, std::uint64_t max_open_images, unsigned per_image) {
  const std::uint64_t reserve = std::min<std::uint64_t>(512, nofile / 2);
  const std::uint64_t fit = std::max<std::uint64_t>(1, (nofile - reserve) / std::max(per_image, 1u));
  return static_cast<std::size_t>(max_open_images == 0 ? fit : std::min(fit, max_open_images));
}

bool ImageLoader::evict(const std::string& rel) {
  auto img = table_.take_idle(rel, [this](const Image& i, ImageStatus* s) {
    *s = i.status();
    // Only an image whose whole state is in its clean bitmap header and the secondary's
    // record may go: no write-behind in flight, no pass, nothing unsynced, not degraded, no
    // bitmap error (a degraded image's state must stay visible and its re-add possible).
    return s->state != "bitmap-failed" && s->secondary_ok && s->action == SyncAction::idle &&
           s->bitmap.unsynced_chunks == 0 && s->wb_outstanding == 0 && !(watch_ && watch_->vanished());
  });
  if (!img) return false;
  // As MirrorSet::shutdown, for one image: the record first, at the events the clean header
  // will carry (a crash between the two leaves a record newer than the header, which still
  // proves coverage); then close_clean syncs both legs and marks the header clean. The
  // next load trusts both: no resync.
  const auto uuid = img->bitmap()->image_uuid();
  const auto events = img->bitmap()->stats().events;
  std::error_code ec = records_.write(rel, uuid, events + 1, true, img->secondary_leg());
  if (!ec) ec = img->close_clean();
  if (ec) {
    // Keep it loaded, its record back to "member at the current events" as the load wrote
    // it: the image goes on exactly as before (a bitmap error shows as bitmap-failed).
    spdlog::error("{}: could not be closed clean to free its descriptors: {}; kept open", rel, ec.message());
    if (auto rec = records_.write(rel, uuid, img->bitmap()->stats().events, false, img->secondary_leg()))
      img->fail_secondary("record write", rec);
    table_.insert(rel, std::move(img));
    return false;
  }
  ImageStatus s = img->status();
  img.reset();  // closes the three descriptors
  s.wb_peak = 0;
  s.bitmap.memory_bytes = 0;  // freed with the image
  table_.set_summary(rel, std::move(s));
  return true;
}

bool ImageLoader::register_if_closed_clean(const std::string& rel) {
  // Exactly the cases in which load()'s trust decision finds nothing to copy and nothing to
  // report: both files regular with one link, the bitmap's header trusted, clean, of this
  // set, of the image's size, with no bit set, and the secondary's record proving that the
  // bitmap covers the copy found now (same file, same size and mtime as at the clean close,
  // at the header's events). Anything else — or any doubt — goes through load(). Nothing is
  // written: the image's files stay as the clean close left them until it is first opened,
  // and its load then makes the very same decision.
  if (watch_ && watch_->vanished()) return false;
  auto pst = legs_.primary.lstat(rel);
  auto sst = legs_.secondary.lstat(rel);
  if (!pst || !sst || !S_ISREG(pst->st_mode) || !S_ISREG(sst->st_mode) || pst->st_nlink != 1 || sst->st_nlink != 1)
    return false;
  const std::string brel = bitmap_rel(rel);
  auto bfd = legs_.bitmaps.open_beneath(brel, O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
  if (!bfd) return false;
  struct stat bst {};
  if (::fstat(bfd->get(), &bst) != 0 || !S_ISREG(bst.st_mode) || bst.st_nlink != 1) return false;
  auto bf = read_bitmap_file(bfd->get(), /*with_bits=*/true);
  if (!bf || !bf->header || !bf->problem.empty() || bf->implausible || bf->bits_truncated) return false;
  const BitmapHeader& h = *bf->header;
  const auto size = static_cast<std::uint64_t>(pst->st_size);
  if (h.state != kStateClean || h.set_uuid != config_.uuid || h.sync_size != size ||
      h.chunk_size != config_.chunk_size || !header_implausible(h).empty() || size > config_.max_image_size)
    return false;
  if (std::any_of(bf->bits.begin(), bf->bits.end(), [](std::byte b) { return b != std::byte{0}; })) return false;
  CoverageFacts facts{config_.uuid, h.image_uuid, h.events, h.events_cleared, FileIdentity::of(*sst)};
  if (!why_not_covered(records_.read(rel), facts).empty()) return false;
  ImageStatus s;
  s.name = rel;
  s.size = size;
  s.state = "clean";
  s.bitmap.chunk_size = h.chunk_size;
  s.bitmap.total_chunks = h.bit_count();
  s.bitmap.events = h.events;
  s.bitmap.events_cleared = h.events_cleared;
  s.bitmap.state = h.state;
  if (config_.checksums)
    if (auto r = read_scrub_record(legs_.bitmaps, checksum_rel(rel))) {
      s.scrub.checksums = true;
      s.scrub.record = *r;
    }
  table_.insert_unloaded(rel, std::move(s));
  return true;
}

std::size_t ImageLoader::evict_idle(std::size_t target) {
  const std::size_t loaded = table_.loaded();
  if (loaded <= target) return 0;
  std::size_t evicted = 0;
  // Candidates in LRU order; busy ones are skipped (they stay loaded).
  for (const auto& rel : table_.least_recently_used(loaded)) {
    if (loaded - evicted <= target) break;
    if (evict(rel)) ++evicted;
  }
  if (evicted) spdlog::debug("evicted {} idle images ({} loaded, budget {})", evicted, loaded - evicted, budget());
  return evicted;
}

utils::Result<std::shared_ptr<Image>> ImageLoader::load_within_budget(const std::string& rel) {
  if (auto img = table_.find(rel)) return img;
  // At the budget: evict down to 15/16 of it, so that the evictions (each syncs the legs
  // and writes the bitmap header and the record) are done in batches, not one per load.
  const std::size_t b = budget();
  if (table_.loaded() >= b) evict_idle(b - b / 16 - 1);
  auto img = load(rel);
  if (!img && fd_exhausted(img.error()) && evict_idle(table_.loaded() > 16 ? table_.loaded() - 16 : 0) > 0) {
    spdlog::warn("{}: {} while loading; retried after evicting idle images", rel, img.error().message());
    img = load(rel);
  }
  return img;
}

std::error_code ImageLoader::attach_al_record(const std::string& rel, Bitmap& bm) {
  if (!config_.bitmap || config_.al_extents == 0) {
    (void)legs_.bitmaps.unlink(al_record_rel(rel));  // an old one would only mislead a reader
    return {};
  }
  const std::string arel = al_record_rel(rel);
  std::string refused;  // a refused object is moved aside and logged by open_sidecar_file
  auto fd = open_sidecar_file(legs_.bitmaps, arel, "activity log record", &refused);
  if (!fd) {
    if (fd_exhausted(fd.error())) return fd.error();
    spdlog::warn("{}/{}: cannot open the activity log record: {}; a crash will resync whole active extents",
                 legs_.bitmaps.path(), arel, fd.error().message());
    return {};
  }
  const bool recovering = bm.stats().unsynced_chunks > 0;
  std::string why_not;
  const std::uint64_t spared = bm.attach_record(std::move(*fd), &why_not);
  if (spared)
    spdlog::info("{}: the activity log record spares {} chunks ({}) of the resync: set by the log, never written",
                 rel, spared, utils::format_size(spared * bm.chunk_size()));
  else if (recovering && !why_not.empty())
    spdlog::info("{}/{}: activity log record not used ({}); the resync copies whole active extents",
                 legs_.bitmaps.path(), arel, why_not);
  return {};
}

utils::Result<std::unique_ptr<Checksums>> ImageLoader::open_checksums(const std::string& rel, const Bitmap& bm,
                                                                     bool bitmap_trusted, const struct stat& primary,
                                                                     bool* made) {
  const std::string crel = checksum_rel(rel);
  const std::string shown = legs_.bitmaps.path() + "/" + crel;
  auto cst = legs_.bitmaps.lstat(crel);
  if (!cst && cst.error() != std::errc::no_such_file_or_directory) return cst.error();
  if (!config_.checksums) {
    // Bits cleared from now on would leave its entries stale for a later mount with
    // checksums on: it goes, durably, before the image is served (docs/write-path.md §9.1).
    if (!cst) return std::unique_ptr<Checksums>{};
    if (auto ec = legs_.bitmaps.unlink(crel); ec && ec != std::errc::no_such_file_or_directory) {
      spdlog::error("{}: checksums are off but the checksum file cannot be removed: {}", shown, ec.message());
      return ec;
    }
    auto dfd = legs_.bitmaps.open_beneath(parent_rel(crel), O_RDONLY | O_DIRECTORY);
    if (!dfd) return dfd.error();
    if (::fsync(dfd->get()) != 0) return utils::last_errno();
    spdlog::info("{}: removed (checksums are off in the config)", shown);
    return std::unique_ptr<Checksums>{};
  }
  *made = !cst;
  std::string refused;
  auto fd = open_sidecar_file(legs_.bitmaps, crel, "checksum file", &refused);
  if (!fd) return fd.error();
  Checksums::OpenParams cp;
  cp.set_uuid = config_.uuid;
  cp.image_uuid = bm.image_uuid();
  cp.chunk_size = bm.chunk_size();
  cp.bitmap_trusted = bitmap_trusted;
  cp.primary = FileIdentity::of(primary);
  std::string why;
  auto ck = Checksums::open(std::move(*fd), cp, &why);
  if (!ck) {
    spdlog::error("{}: cannot initialise the checksum file: {}", shown, ck.error().message());
    return ck.error();
  }
  if (!why.empty()) spdlog::warn("{}: checksums reset: {}; clean chunks are unverified until checked", shown, why);
  return ck;
}

ImageOptions ImageLoader::image_options() const {
  ImageOptions io;
  io.write_behind = config_.write_behind;
  io.fsync_waits_for_secondary = config_.fsync_waits_for_secondary;
  io.secondary_serves_reads = config_.role == Role::mirror;
  io.drain_timeout = config_.drain_timeout;
  io.max_lag_bytes = config_.max_lag_bytes;
  io.max_lag_seconds = config_.max_lag_seconds;
  io.intent_ahead = config_.intent_ahead;
  io.leg_write_piece = config_.leg_write_piece;
  io.max_image_size = config_.max_image_size;
  io.verify_reads = config_.verify_reads && config_.checksums;
  io.direct_reads = config_.direct_reads;
  io.direct_write_max = config_.direct_write_max;
  io.direct_write_inflight = config_.direct_write_inflight;
  io.wb_executor = wb_executor_;
  io.events = events_;
  return io;
}

void ImageLoader::scan(const std::string& rel_dir) {
  auto dfd = legs_.primary.open_beneath(rel_dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) {
    spdlog::error("{}/{}: cannot scan: {}", config_.primary, rel_dir, dfd.error().message());
    return;
  }
  DIR* d = ::fdopendir(dfd->release());
  if (!d) return;
  std::vector<std::pair<std::string, bool>> entries;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string rel = rel_dir.empty() ? name : rel_dir + "/" + name;
    if (reserved_name(rel)) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) entries.emplace_back(rel, true);
    else if (S_ISREG(st.st_mode)) entries.emplace_back(rel, false);
  }
  ::closedir(d);
  for (auto& [rel, is_dir] : entries) {
    if (is_dir) {
      if (auto ec = mkdirs_like(legs_.secondary, legs_.primary, rel))
        spdlog::error("{}/{}: secondary mkdir failed: {}", config_.secondary, rel, ec.message());
      scan(rel);
    } else if (register_if_closed_clean(rel)) {
      continue;
    } else if (auto img = load_within_budget(rel); !img) {
      spdlog::error("{}/{}: not served: {}", config_.primary, rel, img.error().message());
    }
  }
}

utils::Result<std::shared_ptr<Image>> ImageLoader::load(const std::string& rel) {
  if (auto img = table_.find(rel)) return img;
  if (auto ec = check_image_name(rel)) {
    spdlog::error("{}/{}: name longer than {} bytes: its bitmap and record names would not fit; "
                  "not served (rename it)", config_.primary, rel, kMaxImageNameBytes);
    return ec;
  }
  auto pfd = legs_.primary.open_beneath(rel, O_RDWR | O_NOFOLLOW);
  if (!pfd) return pfd.error();
  struct stat st {};
  if (::fstat(pfd->get(), &st) != 0) return utils::last_errno();
  if (!S_ISREG(st.st_mode)) return utils::errno_code(EINVAL);
  if (check_single_link(pfd->get())) {
    spdlog::error("{}/{}: has {} hard links; refused (a link could redirect writes)",
                  config_.primary, rel, st.st_nlink);
    return utils::errno_code(EPERM);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  LoadUndo undo(legs_, records_, rel);  // a failed load leaves nothing behind (docs/reliability.md §8)

  // The secondary: open it, or make it (then everything must be copied).
  bool sec_new = false;
  std::unique_ptr<Leg> secondary;
  std::string degraded_why;  // DegradedArray's detail, when the image loads degraded
  if (watch_ && watch_->vanished()) {
    spdlog::warn("{}: the secondary directory is gone; image degraded until re-add", rel);
    degraded_why = "the secondary directory is gone";
  } else if (auto leg = open_secondary_leg(legs_, rel, st, &sec_new, &degraded_why); !leg) {
    // Out of descriptors is the daemon's condition, not the secondary's: no degrading.
    if (fd_exhausted(leg.error())) return leg.error();
    if (legs_.remote()) spdlog::error("{}: {}; image degraded", rel, degraded_why);
    else spdlog::error("{}/{}: {}; image degraded", config_.secondary, rel, degraded_why);
  } else {
    secondary = std::move(*leg);
    undo.secondary = sec_new;
  }

  // The bitmap.
  const std::string brel = bitmap_rel(rel);
  if (auto ec = legs_.bitmaps.mkdirs(parent_rel(brel), 0700)) return ec;
  BitmapOpenParams bp;
  bp.set_uuid = config_.uuid;
  bp.chunk_size = config_.chunk_size;
  bp.daemon_sleep_ms = static_cast<std::uint32_t>(config_.daemon_sleep * 1000);
  bp.write_behind = config_.write_behind;
  bp.image_size = size;
  bp.persist_bits = config_.bitmap;
  bp.max_image_size = config_.max_image_size;
  bp.al_extents = config_.al_extents;
  bp.al_extent_size = config_.al_extent_size;
  std::string why;
  if (auto bst = legs_.bitmaps.lstat(brel); !bst) {
    if (bst.error() != std::errc::no_such_file_or_directory) return bst.error();
    undo.bitmap = true;
  }
  auto bm = open_bitmap_file(legs_.bitmaps, brel, bp, &why);  // O_NONBLOCK, regular, one link
  if (!bm) {
    spdlog::error("{}/{}: cannot initialise the bitmap: {}", legs_.bitmaps.path(), brel, bm.error().message());
    return bm.error();
  }
  if (!why.empty())
    spdlog::warn("{}/{}: bitmap not trusted: {}; full resync of {}", legs_.bitmaps.path(), brel, why, rel);
  if (auto ec = attach_al_record(rel, **bm)) return ec;
  // Failed before this mount: the image loads degraded. Failed by the operator (held), it
  // stays out until re-add; otherwise the link's reconnect puts it back through re-add's
  // steps, the identity proof included (core/link.hpp).
  const bool held = (*bm)->held();
  if ((*bm)->degraded() && secondary) {
    const bool retried = !held && config_.reconnect_min > 0;
    spdlog::warn("{}: the secondary was failed earlier{} (events {}); {}", rel, held ? " by the operator" : "",
                 (*bm)->stats().events,
                 retried ? "reconnecting by itself" : "it stays out until 'fusemirror re-add'");
    degraded_why = std::string("the secondary was failed earlier") + (held ? " by the operator" : "") + " (events " +
                   std::to_string((*bm)->stats().events) + ")";
    secondary.reset();
    sec_new = false;
  }
  if (sec_new && size > 0) {
    spdlog::info("{}: no copy on the secondary; full resync", rel);
    if (auto ec = (*bm)->mark_unsynced(0, size)) return ec;
  }
  const bool bitmap_trusted = why.empty();
  auto checksums = open_checksums(rel, **bm, bitmap_trusted, st, &undo.checksums);
  if (!checksums) return checksums.error();
  auto img = std::make_shared<Image>(rel, std::move(*pfd), std::move(secondary), std::move(*bm),
                                     pool_, image_options());
  img->attach_checksums(std::move(*checksums));
  if (held) (void)img->hold_out();
  if (img->secondary_ok()) {
    // docs/reliability.md invariant 4: the bitmap is only trusted for the secondary copy it
    // describes. The header's events before this mount's bump are what it last recorded.
    if (!sec_new && bitmap_trusted && size > 0) {
      const BitmapStats bs = img->bitmap()->stats();
      CoverageFacts facts{config_.uuid, img->bitmap()->image_uuid(), bs.events - 1, bs.events_cleared, {}};
      if (struct stat sst {}; img->secondary_fd() >= 0 && ::fstat(img->secondary_fd(), &sst) == 0)
        facts.secondary_file = FileIdentity::of(sst);
      if (auto gap = why_not_covered(records_.read(rel, img->secondary_leg()), facts); !gap.empty()) {
        spdlog::warn("{}: full resync: {}", rel, gap);
        if (auto ec = img->bitmap()->mark_unsynced(0, size)) return ec;
      }
    }
    // The record vouches for the primary, the secondary copy and the bitmap under these
    // names. When this load made the copy or the bitmap (a new image), their names are made
    // durable first: a power cut can then never leave this record next to a copy or a
    // bitmap of another life of the name (docs/write-path.md §2b).
    if (sec_new || undo.bitmap) {
      // The three fsyncs run concurrently (on one file system they share a journal commit).
      std::error_code pe, be, se;
      utils::Completion pd, bd;
      if (!pool_ || !pool_->submit([&] { pe = legs_.primary.sync_parent(rel); pd.done(); })) {
        pe = legs_.primary.sync_parent(rel);
        pd.done();
      }
      if (!pool_ || !pool_->submit([&] { be = legs_.bitmaps.sync_parent(brel); bd.done(); })) {
        be = legs_.bitmaps.sync_parent(brel);
        bd.done();
      }
      if (!legs_.remote()) se = legs_.secondary.sync_parent(rel);
      pd.wait();
      bd.wait();
      for (const auto& [dir, name, ec] : {std::tuple{&legs_.primary, rel, pe}, std::tuple{&legs_.bitmaps, brel, be}})
        if (ec) {
          spdlog::error("{}/{}: cannot make the name durable: {}", dir->path(), name, ec.message());
          return ec;
        }
      if (se) img->fail_secondary("directory fsync", se);
    }
    // From here the secondary is a member at the bitmap's current events.
    if (!img->secondary_ok()) {
      // the directory fsync failed: the image is degraded, no record vouches for it
    } else if (auto ec = records_.write(rel, img->bitmap()->image_uuid(), img->bitmap()->stats().events, false,
                                        img->secondary_leg())) {
      // Out of descriptors: the load fails instead (the image is not served). Its header
      // already says active at the new events, which the old record does not reach: the
      // next load's proof fails and it copies everything — never less than needed.
      if (fd_exhausted(ec)) return ec;
      img->fail_secondary("record write", ec);
    }
  }
  if (auto ec = img->reconcile_size()) return ec;
  undo.dismiss();
  table_.insert(rel, img);
  if (!img->secondary_ok() && !degraded_why.empty()) img->set_degraded_reason(degraded_why);
  if (!img->secondary_ok() && events_)
    events_->post(Event::degraded_array, rel, degraded_why.empty() ? "the secondary failed while loading" : degraded_why);
  if (img->bitmap()->stats().unsynced_chunks > 0) resync_.queue(img, SyncAction::resync);
  return img;
}

}  // namespace fusemirror::core
