#include "core/image_loader.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <vector>

#include "core/bitmap_file.hpp"
#include "core/layout.hpp"

namespace fusemirror::core {

ImageOptions ImageLoader::image_options() const {
  ImageOptions io;
  io.write_behind = config_.write_behind;
  io.fsync_waits_for_secondary = config_.fsync_waits_for_secondary;
  io.secondary_serves_reads = config_.role == Role::mirror;
  io.drain_timeout = config_.drain_timeout;
  io.intent_ahead = config_.intent_ahead;
  io.max_image_size = config_.max_image_size;
  io.wb_executor = wb_executor_;
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
    } else if (auto img = load(rel); !img) {
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

  // The secondary: open it, or make it (then everything must be copied).
  bool sec_new = false;
  utils::UniqueFd secondary_fd;
  if (auto sfd = open_secondary_copy(legs_, rel, st, &sec_new); !sfd) {
    spdlog::error("{}/{}: secondary unusable: {}; image degraded", config_.secondary, rel,
                  sfd.error() == std::errc::operation_not_permitted
                      ? std::string("not a regular file with a single link (a hard link could redirect writes)")
                      : sfd.error().message());
  } else {
    secondary_fd = std::move(*sfd);
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
  std::string why;
  auto bm = open_bitmap_file(legs_.bitmaps, brel, bp, &why);  // O_NONBLOCK, regular, one link
  if (!bm) {
    spdlog::error("{}/{}: cannot initialise the bitmap: {}", legs_.bitmaps.path(), brel, bm.error().message());
    return bm.error();
  }
  if (!why.empty())
    spdlog::warn("{}/{}: bitmap not trusted: {}; full resync of {}", legs_.bitmaps.path(), brel, why, rel);
  if ((*bm)->degraded() && secondary_fd.valid()) {
    spdlog::warn("{}: the secondary was failed earlier (events {}); it stays out until "
                 "'fusemirror re-add'", rel, (*bm)->stats().events);
    secondary_fd.reset();
    sec_new = false;
  }
  if (sec_new && size > 0) {
    spdlog::info("{}: no copy on the secondary; full resync", rel);
    if (auto ec = (*bm)->mark_unsynced(0, size)) return ec;
  }
  const bool bitmap_trusted = why.empty();
  auto img = std::make_shared<Image>(rel, std::move(*pfd), std::move(secondary_fd), std::move(*bm),
                                     pool_, image_options());
  if (img->secondary_ok()) {
    // docs/reliability.md invariant 4: the bitmap is only trusted for the secondary copy it
    // describes. The header's events before this mount's bump are what it last recorded.
    if (!sec_new && bitmap_trusted && size > 0) {
      const BitmapStats bs = img->bitmap()->stats();
      CoverageFacts facts{config_.uuid, img->bitmap()->image_uuid(), bs.events - 1, bs.events_cleared, {}};
      if (struct stat sst {}; ::fstat(img->secondary_fd(), &sst) == 0) facts.secondary_file = FileIdentity::of(sst);
      if (auto gap = why_not_covered(records_.read(rel), facts); !gap.empty()) {
        spdlog::warn("{}: full resync: {}", rel, gap);
        if (auto ec = img->bitmap()->mark_unsynced(0, size)) return ec;
      }
    }
    // From here the secondary is a member at the bitmap's current events.
    if (auto ec = records_.write(rel, img->bitmap()->image_uuid(), img->bitmap()->stats().events))
      img->fail_secondary("record write", ec);
  }
  if (auto ec = img->reconcile_size()) return ec;
  table_.insert(rel, img);
  if (img->bitmap()->stats().unsynced_chunks > 0) resync_.queue(img, SyncAction::resync);
  return img;
}

}  // namespace fusemirror::core
