#include "core/mirror_set.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/layout.hpp"
#include "utils/error.hpp"

namespace fusemirror::core {

using utils::Error;

namespace {

// Raises the soft descriptor limit to the hard one; returns the limit now in force.
std::uint64_t raise_fd_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) (void)::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : static_cast<std::uint64_t>(rl.rlim_cur);
}

Dir open_dir(const std::string& path, const char* what, bool follow_last = true) {
  auto d = Dir::open(path, follow_last);
  if (!d) throw utils::sys_error(path, std::string(what) + " unusable", d.error().value());
  return std::move(*d);
}

}  // namespace

std::unique_ptr<MirrorSet> MirrorSet::open(const Config& config, const std::string& mountpoint) {
  std::unique_ptr<MirrorSet> s(new MirrorSet());
  s->config_ = config;
  s->mountpoint_ = mountpoint;
  const std::uint64_t nofile = raise_fd_limit();

  check_set_directories(config);  // the rules `create` applied: a config may have been edited
  s->legs_.primary = open_dir(config.primary, "primary directory");
  const bool nbd = config.secondary_is_nbd();
  if (nbd) {
    s->legs_.nbd = parse_nbd_uri(config.secondary);  // each image connects at its load
    s->legs_.nbd->timeout_s = config.secondary_timeout;
  }
  else s->legs_.secondary = open_dir(config.secondary, "secondary directory");
  s->legs_.write_piece = config.leg_write_piece;
  struct stat ps {}, ss {};
  ::fstat(s->legs_.primary.fd(), &ps);
  if (!nbd) {
    ::fstat(s->legs_.secondary.fd(), &ss);
    if (ps.st_dev == ss.st_dev && ps.st_ino == ss.st_ino)
      throw Error(config.secondary + ": is the same directory as the primary " + config.primary);
  }
  for (const auto* d : {&ps, &ss})
    if (d->st_mode & S_IWOTH)
      throw Error((d == &ps ? config.primary : config.secondary) +
                  ": backing directory is writable by others; refusing (chmod o-w)");
  // The secondary must belong to this set (never mirror onto a stranger's disk). An NBD
  // export proves it per image, with its identity record (core/nbd_record.hpp).
  if (!nbd) require_member(config.secondary, config.uuid);

  s->primary_lock_ = lock_set_dir(config.primary, "primary");
  if (!nbd) s->secondary_lock_ = lock_set_dir(config.secondary, "secondary");

  const std::string broot = config.bitmap_root();
  if (::mkdir(broot.c_str(), 0700) != 0 && errno != EEXIST)
    throw utils::sys_error(broot, "cannot create the bitmap directory", errno);
  s->legs_.bitmaps = open_dir(broot, "bitmap directory", /*follow_last=*/false);  // never a symlink

  s->pool_ = std::make_unique<utils::ThreadPool>(32);
  s->wb_executor_ = std::make_unique<WriteBehindExecutor>();  // docs/design.md §5 "Threads"
  const Config& c = s->config_;
  s->records_ = std::make_unique<SecondaryRecords>(s->legs_, c.uuid);
  s->resync_ = std::make_unique<ResyncEngine>(c.resync_min_rate, c.resync_max_rate, &s->events_);
  s->watch_ = std::make_unique<SecondaryWatch>(c.secondary, s->legs_.secondary);
  s->loader_ = std::make_unique<ImageLoader>(c, s->legs_, *s->records_, s->table_, *s->resync_, s->pool_.get(),
                                             s->wb_executor_.get(), s->watch_.get(), &s->events_);
  // Issue 12 §3: three descriptors per loaded image (four with its checksum file); idle
  // images beyond the budget are closed clean (core/image_loader.hpp), so a set of any size
  // fits the descriptor limit.
  // One more with direct_reads (the primary's O_DIRECT reader), two with direct writes
  // (each leg's O_DIRECT writer), one with the activity log (its record, core/al_record.hpp).
  const unsigned per_image = (c.checksums ? 4 : 3) + (c.direct_reads ? 1 : 0) + (c.direct_write_max ? 2 : 0) +
                             (c.bitmap && c.al_extents ? 1 : 0);
  s->loader_->set_budget(ImageLoader::budget_for(nofile, c.max_open_images, per_image));
  spdlog::info("descriptor limit {}: at most {} images kept open", nofile, s->loader_->budget());
  s->ns_ = std::make_unique<Namespace>(s->legs_, s->table_, *s->records_, *s->loader_);
  s->scrub_ = std::make_unique<ScrubScheduler>(c.scrub_interval, c.scrub_repair, s->table_, *s->resync_,
                                               [p = s.get()](const std::string& rel) { return p->ns_->open_image(rel); });
  s->sweeper_ = std::make_unique<Sweeper>(c.daemon_sleep, s->table_, *s->resync_, *s->watch_, [p = s.get()] {
    p->scrub_->tick();  // the scrub schedule's clock (core/scrub.hpp)
    // Images that were busy when a load needed room are closed once idle, down to the budget.
    if (p->table_.loaded() <= p->loader_->budget()) return;
    auto ns = p->ns_->lock_exclusive();
    p->loader_->evict_idle(p->loader_->budget());
  });
  s->control_ = std::make_unique<Control>(Control::Parts{c, s->legs_, s->table_, *s->ns_, *s->records_,
                                                         *s->resync_, s->progress_, *s->watch_});
  s->link_ = std::make_unique<LinkKeeper>(
      c.reconnect_min, c.reconnect_max, s->table_,
      [p = s.get()](const std::shared_ptr<Image>& img, std::string* why) { return p->control_->reconnect(img, why); });
  {
    auto ns = s->ns_->lock_exclusive();
    s->loader_->scan("");
  }
  s->shut_down_ = false;
  return s;
}

MirrorSet::~MirrorSet() { shutdown(); }

void MirrorSet::start() {
  sweeper_->start();
  resync_->start();
  progress_.start([this] { (void)status(); });
  link_->start();
}

void MirrorSet::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  progress_.stop();
  link_->stop();  // first: no try races the shutdown's records
  sweeper_->stop();
  resync_->stop();
  auto ns = ns_->lock_exclusive();
  for (auto& img : table_.snapshot()) {
    // The record first, at the events the clean header will carry: a crash between the two
    // leaves a record newer than the header, which still proves coverage.
    // Drain first: the record describes the secondary file as the queue left it; after a
    // drain timeout no clean record is written (the bits keep what did not arrive).
    if (!img->drain_for_shutdown()) continue;
    if (img->secondary_ok())
      if (auto ec = records_->write(img->name(), img->bitmap()->image_uuid(), img->bitmap()->stats().events + 1,
                                    true, img->secondary_leg()))
        img->fail_secondary("record write", ec);
    if (auto ec = img->close_clean())
      spdlog::error("{}: could not mark the bitmap clean: {}", img->name(), ec.message());
  }
  spdlog::info("mirror set {} stopped cleanly", utils::to_string(config_.uuid));
}

SetStatus MirrorSet::status() {
  SetStatus s;
  s.uuid = config_.uuid;
  s.primary = config_.primary;
  s.secondary = config_.secondary;
  s.mountpoint = mountpoint_;
  s.pid = ::getpid();
  s.chunk_size = config_.chunk_size;
  s.daemon_sleep = config_.daemon_sleep;
  s.intent_ahead = config_.intent_ahead;
  s.bitmap = config_.bitmap;
  s.write_behind = config_.write_behind;
  s.role = config_.role;
  // Queued actions first, so that a script (fusemirror wait) never mistakes "queued behind
  // another image" or "requested a moment ago" for "done" (core/resync.hpp).
  auto pending = resync_->pending();
  const bool vanished = watch_->vanished();
  for (auto& [img, summary] : table_.listing()) {
    // An evicted image shows the state it was closed in (clean), or the state the next load
    // would give it: degraded while the secondary directory is gone.
    ImageStatus i = img ? img->status() : unloaded_status(std::move(summary), vanished);
    if (img) i.link = link_->status(*img);
    else if (!i.secondary_ok) i.link = {LinkStatus::State::down, 0, 0, "the secondary directory is gone", -1};
    i.bitmap_file = legs_.bitmaps.path() + "/" + bitmap_rel(i.name);
    if (img)
      if (auto it = pending.find(img.get()); it != pending.end()) i.pending = std::move(it->second);
    s.images.push_back(std::move(i));
  }
  progress_.sample(s.images);
  return s;
}

}  // namespace fusemirror::core
