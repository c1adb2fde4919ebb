#include "core/mirror_set.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "utils/error.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

using utils::Error;

namespace {

std::string proc_fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// Where the secondary keeps its record of image REL (or of directory REL).
std::string record_rel(const std::string& rel, bool dir = false) {
  return std::string(kMetaDirName) + "/images/" + rel + (dir ? "" : ".json");
}

std::string parent_rel(const std::string& rel) {
  auto slash = rel.rfind('/');
  return slash == std::string::npos ? std::string{} : rel.substr(0, slash);
}

utils::UniqueFd take_lock(const std::string& dir, const std::string& what) {
  const std::string path = dir + "/" + kMetaDirName + "/" + kLockName;
  utils::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw utils::sys_error(path, "cannot open the " + what + " lock", errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw Error(dir + ": the " + what + " is in use by another running fusemirror (lock " +
                  path + " held)");
    throw utils::sys_error(path, "cannot lock", errno);
  }
  return fd;
}

void raise_fd_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

// ---- opening -----------------------------------------------------------------------------

std::unique_ptr<MirrorSet> MirrorSet::open(const Config& config, const std::string& mountpoint) {
  std::unique_ptr<MirrorSet> s(new MirrorSet());
  s->config_ = config;
  s->mountpoint_ = mountpoint;
  raise_fd_limit();

  auto p = Dir::open(config.primary);
  if (!p) throw utils::sys_error(config.primary, "primary directory unusable", p.error().value());
  s->primary_ = std::move(*p);
  auto sec = Dir::open(config.secondary);
  if (!sec)
    throw utils::sys_error(config.secondary, "secondary directory unusable", sec.error().value());
  s->secondary_ = std::move(*sec);
  struct stat ps {}, ss {};
  ::fstat(s->primary_.fd(), &ps);
  ::fstat(s->secondary_.fd(), &ss);
  if (ps.st_dev == ss.st_dev && ps.st_ino == ss.st_ino)
    throw Error(config.secondary + ": is the same directory as the primary " + config.primary);
  s->secondary_dev_ = ss.st_dev;
  s->secondary_ino_ = ss.st_ino;
  for (const auto* d : {&ps, &ss})
    if (d->st_mode & S_IWOTH)
      throw Error((d == &ps ? config.primary : config.secondary) +
                  ": backing directory is writable by others; refusing (chmod o-w)");

  // The secondary must belong to this set (SPEC §7: never mirror onto a stranger's disk).
  const std::string member_path = config.secondary + "/" + kMetaDirName + "/" + kMemberName;
  if (::access(member_path.c_str(), F_OK) != 0)
    throw Error(config.secondary + ": not a member of mirror set " + utils::to_string(config.uuid) +
                " (no " + kMetaDirName + "/" + kMemberName + "; was it replaced or not created?)");
  Member m = load_member(member_path);
  if (m.set_uuid != config.uuid)
    throw Error(config.secondary + ": belongs to another mirror set (" + utils::to_string(m.set_uuid) +
                ", expected " + utils::to_string(config.uuid) + ")");

  s->primary_lock_ = take_lock(config.primary, "primary");
  s->secondary_lock_ = take_lock(config.secondary, "secondary");

  const std::string broot = config.bitmap_root();
  if (::mkdir(broot.c_str(), 0700) != 0 && errno != EEXIST)
    throw utils::sys_error(broot, "cannot create the bitmap directory", errno);
  auto b = Dir::open(broot);
  if (!b) throw utils::sys_error(broot, "bitmap directory unusable", b.error().value());
  s->bitmaps_ = std::move(*b);

  s->pool_ = std::make_unique<utils::ThreadPool>(32);  // secondary legs of concurrent writes
  s->wb_executor_ = std::make_unique<WriteBehindExecutor>();  // docs/design.md, "Threads"
  {
    std::unique_lock ns(s->ns_mu_);
    s->scan("");
  }
  s->shut_down_ = false;
  return s;
}

MirrorSet::~MirrorSet() { shutdown(); }

bool MirrorSet::reserved_name(const std::string& rel) {
  return rel == kMetaDirName || rel.rfind(std::string(kMetaDirName) + "/", 0) == 0;
}

std::string MirrorSet::bitmap_rel(const std::string& rel) const { return rel + kBitmapSuffix; }

void MirrorSet::scan(const std::string& rel_dir) {
  auto dfd = primary_.open_beneath(rel_dir, O_RDONLY | O_DIRECTORY);
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
      if (auto ec = secondary_.mkdirs(rel, 0755); ec && ec != std::errc::file_exists)
        secondary_ns_error("mkdir", rel, ec);
      scan(rel);
    } else if (auto img = load_image_locked(rel); !img) {
      spdlog::error("{}/{}: not served: {}", config_.primary, rel, img.error().message());
    }
  }
}

utils::Result<std::shared_ptr<Image>> MirrorSet::load_image_locked(const std::string& rel) {
  {
    std::lock_guard lk(table_mu_);
    if (auto it = images_.find(rel); it != images_.end()) return it->second;
  }
  auto pfd = primary_.open_beneath(rel, O_RDWR | O_NOFOLLOW);
  if (!pfd) return pfd.error();
  struct stat st {};
  if (::fstat(pfd->get(), &st) != 0) return utils::last_errno();
  if (!S_ISREG(st.st_mode)) return utils::errno_code(EINVAL);
  if (st.st_nlink > 1) {
    spdlog::error("{}/{}: has {} hard links; refused (a link could redirect writes)",
                  config_.primary, rel, st.st_nlink);
    return utils::errno_code(EPERM);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);

  // The secondary: open it, or make it (then everything must be copied).
  bool sec_new = false;
  auto sfd = secondary_.open_beneath(rel, O_RDWR | O_NOFOLLOW);
  if (!sfd && sfd.error() == std::errc::no_such_file_or_directory) {
    if (auto ec = secondary_.mkdirs(parent_rel(rel), 0755)) secondary_ns_error("mkdir", rel, ec);
    sfd = secondary_.open_beneath(rel, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, st.st_mode & 07777);
    sec_new = sfd.ok();
  }
  utils::UniqueFd secondary_fd;
  if (!sfd) {
    spdlog::error("{}/{}: secondary unusable: {}; image degraded", config_.secondary, rel,
                  sfd.error().message());
  } else {
    struct stat sst {};
    if (::fstat(sfd->get(), &sst) == 0 && sst.st_nlink > 1) {
      spdlog::error("{}/{}: has {} hard links; secondary refused, image degraded", config_.secondary,
                    rel, sst.st_nlink);
    } else {
      secondary_fd = std::move(*sfd);
    }
  }

  // The bitmap.
  const std::string brel = bitmap_rel(rel);
  if (auto ec = bitmaps_.mkdirs(parent_rel(brel), 0700)) return ec;
  auto bfd = bitmaps_.open_beneath(brel, O_RDWR | O_CREAT | O_NOFOLLOW, 0600);
  if (!bfd) {
    spdlog::error("{}/{}: cannot open the bitmap: {}", bitmaps_.path(), brel, bfd.error().message());
    return bfd.error();
  }
  BitmapOpenParams bp;
  bp.set_uuid = config_.uuid;
  bp.chunk_size = config_.chunk_size;
  bp.daemon_sleep_ms = static_cast<std::uint32_t>(config_.daemon_sleep * 1000);
  bp.write_behind = config_.write_behind;
  bp.image_size = size;
  bp.persist_bits = config_.bitmap;
  std::string why;
  auto bm = Bitmap::open(std::move(*bfd), bp, &why);
  if (!bm) {
    spdlog::error("{}/{}: cannot initialise the bitmap: {}", bitmaps_.path(), brel, bm.error().message());
    return bm.error();
  }
  if (!why.empty())
    spdlog::warn("{}/{}: bitmap not trusted: {}; full resync of {}", bitmaps_.path(), brel, why, rel);
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
  ImageOptions io;
  io.write_behind = config_.write_behind;
  io.fsync_waits_for_secondary = config_.fsync_waits_for_secondary;
  io.secondary_serves_reads = config_.role == Role::mirror;
  io.drain_timeout = config_.drain_timeout;
  io.intent_ahead = config_.intent_ahead;
  io.wb_executor = wb_executor_.get();
  auto img = std::make_shared<Image>(rel, std::move(*pfd), std::move(secondary_fd),
                                     std::move(*bm), pool_.get(), io);
  if (img->secondary_ok()) {
    // TESTING invariant 4: the bitmap is only trusted for the secondary copy it describes.
    std::string not_covered;
    // The header's events before this mount's bump are what the bitmap last recorded.
    if (!sec_new && bitmap_trusted && size > 0 &&
        !bitmap_covers(rel, *img, img->bitmap()->stats().events - 1, &not_covered)) {
      spdlog::warn("{}: full resync: {}", rel, not_covered);
      if (auto ec = img->bitmap()->mark_unsynced(0, size)) return ec;
    }
    // From here the secondary is a member at the bitmap's current events.
    if (auto ec = write_record(rel, *img, img->bitmap()->stats().events))
      img->fail_secondary("record write", ec);
  }
  if (auto ec = img->reconcile_size()) return ec;
  {
    std::lock_guard lk(table_mu_);
    images_[rel] = img;
  }
  if (img->bitmap()->stats().unsynced_chunks > 0) queue_resync(img);
  return img;
}

// ---- workers -----------------------------------------------------------------------------

void MirrorSet::start() {
  sweeper_ = std::jthread([this](std::stop_token st) { sweeper_main(st); });
  resyncer_ = std::jthread([this](std::stop_token st) { resync_main(st); });
}

void MirrorSet::queue_resync(const std::shared_ptr<Image>& img) { queue_job(img, SyncAction::resync); }

void MirrorSet::queue_job(const std::shared_ptr<Image>& img, SyncAction action) {
  {
    std::lock_guard lk(work_mu_);
    for (const auto& q : resync_queue_)
      if (q.image == img && q.action == action) return;
    resync_queue_.push_back({img, action});
  }
  work_cv_.notify_all();
}

void MirrorSet::resync_main(std::stop_token st) {
  for (;;) {
    Job job;
    {
      std::unique_lock lk(work_mu_);
      running_.reset();
      resync_busy_ = false;
      idle_cv_.notify_all();
      if (!work_cv_.wait(lk, st, [&] { return !resync_queue_.empty(); })) return;
      job = resync_queue_.front();
      resync_queue_.pop_front();
      resync_busy_ = true;
      running_ = job.image;
      cancel_running_ = false;
      // The job leaves the queue and shows as the image's action in one step (status_json
      // reads the queue under this lock): a reader never sees it in neither place, which
      // `fusemirror wait` would take for "done".
      job.image->set_sync_progress(job.action, 0, 0);
    }
    if (!job.image->secondary_ok()) {
      job.image->set_sync_progress(SyncAction::idle, 0, 0);
      continue;
    }
    switch (job.action) {
      case SyncAction::resync: run_resync(st, job.image); break;
      case SyncAction::check: run_check(st, job.image, false); break;
      case SyncAction::repair: run_check(st, job.image, true); break;
      case SyncAction::idle: break;
    }
    job.image->set_sync_progress(SyncAction::idle, 0, 0);
  }
}

void MirrorSet::throttle(const std::shared_ptr<Image>& img, std::uint64_t done,
                         std::chrono::steady_clock::time_point t0, const std::stop_token& st) {
  // The rates can be changed live (control files): read them once per step.
  const std::uint64_t max_rate = resync_max_rate(), min_rate = resync_min_rate();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
    if (max_rate && rate > static_cast<double>(max_rate)) {
      // md's sync_speed_max: sleep until the average rate is back under the limit, in short
      // slices so that a stop, an idle request or a new limit is seen promptly.
      const double ahead = static_cast<double>(done) / static_cast<double>(max_rate) - elapsed;
      if (ahead <= 0 || st.stop_requested() || cancel_running_ || resync_max_rate() != max_rate) return;
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(ahead, 0.1)));
      continue;
    }
    // md's sync_speed_min: above it, resync yields to user writes of the last 100 ms.
    const auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(img->last_user_write_ns()));
    if (min_rate && rate > static_cast<double>(min_rate) && now - last < std::chrono::milliseconds(100))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return;
  }
}

void MirrorSet::run_resync(std::stop_token& st, const std::shared_ptr<Image>& img) {
  std::vector<std::byte> buf(1 << 20);
  const auto stats0 = img->bitmap()->stats();
  const std::uint64_t total = stats0.unsynced_chunks * stats0.chunk_size;
  if (stats0.unsynced_chunks == 0) {
    (void)img->reconcile_size();
    return;
  }
  spdlog::info("{}: resync started: {} dirty chunks ({})", img->name(), stats0.unsynced_chunks,
               utils::format_size(total));
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t next = 0, done = 0, copied_total = 0, ahead = 0;
  img->set_sync_progress(SyncAction::resync, 0, total);
  // Reads of the primary are requested up to kReadAhead ahead of the copy: a scattered
  // resync then waits for the disk's queue, not for one seek per chunk, and a full one
  // overlaps reading the next runs with writing this one.
  constexpr std::uint64_t kReadAhead = 16 << 20, kReadAheadRefill = 8 << 20;
  while (!st.stop_requested() && !cancel_running_) {
    const std::uint64_t cs = stats0.chunk_size;
    if (ahead <= next || (ahead - next) * cs < kReadAheadRefill)
      ahead = img->read_ahead_unsynced(std::max(ahead, next), kReadAhead);
    std::uint64_t copied = 0;
    auto r = img->resync_step(next, 4 << 20, buf, &copied);
    if (!r) {
      spdlog::error("{}: resync stopped: {}", img->name(), r.error().message());
      return;
    }
    copied_total += copied;
    const std::uint64_t total_chunks = img->bitmap()->stats().total_chunks;
    if (*r >= total_chunks && img->bitmap()->next_unsynced(0) >= total_chunks) break;
    const std::uint64_t left = img->bitmap()->stats().unsynced_chunks * stats0.chunk_size;
    done = left >= total ? 0 : total - left;
    next = *r >= total_chunks ? 0 : *r;
    if (next == 0) ahead = 0;  // a new pass over chunks dirtied meanwhile
    img->set_sync_progress(SyncAction::resync, done, total);
    throttle(img, done, t0, st);
  }
  if (st.stop_requested() || cancel_running_) {
    spdlog::info("{}: resync interrupted; it resumes from the bitmap", img->name());
    return;
  }
  (void)img->reconcile_size();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("{}: resync done: {} chunks ({}) checked, {} of data copied in {:.2f}s",
               img->name(), stats0.unsynced_chunks, utils::format_size(total),
               utils::format_size(copied_total), secs);
}

void MirrorSet::run_check(std::stop_token& st, const std::shared_ptr<Image>& img, bool repair) {
  std::vector<std::byte> a(1 << 20), b(1 << 20);
  const SyncAction action = repair ? SyncAction::repair : SyncAction::check;
  const std::uint64_t cs = img->bitmap()->chunk_size();
  const std::uint64_t total_chunks = img->total_chunks();
  const std::uint64_t step = std::max<std::uint64_t>(1, (4u << 20) / cs);
  spdlog::info("{}: {} started over {} chunks", img->name(), to_string(action), total_chunks);
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t mismatches = 0, next = 0;
  img->set_mismatch_cnt(0);
  img->set_sync_progress(action, 0, total_chunks * cs);
  while (next < total_chunks && !st.stop_requested() && !cancel_running_) {
    auto r = img->check_step(next, step, repair, a, b, &mismatches);
    if (!r) {
      spdlog::error("{}: {} stopped: {}", img->name(), to_string(action), r.error().message());
      return;
    }
    next = *r;
    img->set_mismatch_cnt(mismatches);
    img->set_sync_progress(action, next * cs, total_chunks * cs);
    throttle(img, next * cs, t0, st);
  }
  spdlog::info("{}: {} {}: mismatch_cnt {} ({} chunks of {})", img->name(), to_string(action),
               next >= total_chunks ? "done" : "interrupted", mismatches, next, total_chunks);
}

void MirrorSet::check_secondary_identity() {
  // TESTING trap: a lazily unmounted secondary keeps accepting writes through open
  // descriptors. The path must still lead to the directory we opened.
  struct stat st {};
  const bool same = ::stat(config_.secondary.c_str(), &st) == 0 && st.st_dev == secondary_dev_ &&
                    st.st_ino == secondary_ino_;
  if (same || secondary_vanished_) return;
  secondary_vanished_ = true;
  spdlog::error("{}: the secondary directory vanished or was replaced (unmounted?); all images "
                "degraded",
                config_.secondary);
  for (auto& img : images_snapshot())
    img->fail_secondary("identity check", utils::errno_code(ENODEV));
}

void MirrorSet::sweeper_main(std::stop_token st) {
  std::mutex m;
  std::condition_variable_any cv;
  const auto period = std::chrono::duration<double>(config_.daemon_sleep);
  auto next_sweep = std::chrono::steady_clock::now() + period;
  while (!st.stop_requested()) {
    // The identity check runs often (time to detect a lost secondary), sweeps every period.
    {
      std::unique_lock lk(m);
      cv.wait_for(lk, st, std::chrono::milliseconds(500), [] { return false; });
    }
    if (st.stop_requested()) return;
    check_secondary_identity();
    // Chunks a failed leg write left unsynced (while the secondary stays in service) are
    // resynced without waiting for an operator.
    for (auto& img : images_snapshot()) {
      if (!img->secondary_ok() || img->bitmap()->stats().unsynced_chunks == 0) continue;
      bool busy = false;
      {
        std::lock_guard lk(work_mu_);
        busy = running_ == img;
      }
      if (!busy) queue_resync(img);
    }
    if (std::chrono::steady_clock::now() < next_sweep) continue;
    next_sweep = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(period);
    sweep_all();
  }
}

void MirrorSet::sweep_all() {
  for (auto& img : images_snapshot())
    if (auto ec = img->sweep()) spdlog::error("{}: bitmap sweep failed: {}", img->name(), ec.message());
}

void MirrorSet::wait_resync_idle() {
  std::unique_lock lk(work_mu_);
  idle_cv_.wait(lk, [&] { return resync_queue_.empty() && !resync_busy_; });
}

std::vector<std::shared_ptr<Image>> MirrorSet::images_snapshot() const {
  std::lock_guard lk(table_mu_);
  std::vector<std::shared_ptr<Image>> v;
  v.reserve(images_.size());
  for (auto& [_, img] : images_) v.push_back(img);
  return v;
}

void MirrorSet::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  sweeper_ = {};  // request stop + join
  resyncer_ = {};
  std::unique_lock ns(ns_mu_);
  for (auto& img : images_snapshot()) {
    // The record first, at the events the clean header will carry: a crash between the two
    // leaves a record newer than the header, which still proves coverage.
    // Drain first: the record describes the secondary file as the queue left it; after a
    // drain timeout no clean record is written (the bits keep what did not arrive).
    if (!img->drain_for_shutdown()) continue;
    if (img->secondary_ok())
      if (auto ec = write_record(img->name(), *img, img->bitmap()->stats().events + 1, true))
        img->fail_secondary("record write", ec);
    if (auto ec = img->close_clean())
      spdlog::error("{}: could not mark the bitmap clean: {}", img->name(), ec.message());
  }
  spdlog::info("mirror set {} stopped cleanly", utils::to_string(config_.uuid));
}

// ---- namespace operations ----------------------------------------------------------------

void MirrorSet::secondary_ns_error(const char* op, const std::string& rel, std::error_code ec) {
  spdlog::error("{}/{}: secondary {} failed: {}", config_.secondary, rel, op, ec.message());
}

utils::Result<struct stat> MirrorSet::getattr(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto st = primary_.lstat(rel);
  if (!st) return st;
  if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode)) return utils::errno_code(ENOENT);
  return st;
}

utils::Result<std::vector<DirEntry>> MirrorSet::readdir(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto dfd = primary_.open_beneath(rel, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.error();
  DIR* d = ::fdopendir(dfd->release());
  if (!d) return utils::last_errno();
  std::vector<DirEntry> out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (rel.empty() && name == kMetaDirName) continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
    }
    if (type == DT_DIR || type == DT_REG) out.push_back({name, type == DT_DIR});
  }
  ::closedir(d);
  return out;
}

std::error_code MirrorSet::mkdir(const std::string& rel, mode_t mode, uid_t uid, gid_t gid) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(ns_mu_);
  auto parent = primary_.parent_of(rel);
  if (!parent) return parent.error();
  if (::mkdirat(parent->first.get(), parent->second.c_str(), mode) != 0) return utils::last_errno();
  if (uid != static_cast<uid_t>(-1))
    (void)::fchownat(parent->first.get(), parent->second.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
  auto sp = secondary_.parent_of(rel);
  if (!sp) {
    secondary_ns_error("mkdir", rel, sp.error());
  } else if (::mkdirat(sp->first.get(), sp->second.c_str(), mode) != 0 && errno != EEXIST) {
    secondary_ns_error("mkdir", rel, utils::last_errno());
  } else if (uid != static_cast<uid_t>(-1)) {
    (void)::fchownat(sp->first.get(), sp->second.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
  }
  return {};
}

std::error_code MirrorSet::rmdir(const std::string& rel) {
  if (reserved_name(rel) || rel.empty()) return utils::errno_code(EPERM);
  std::unique_lock ns(ns_mu_);
  auto parent = primary_.parent_of(rel);
  if (!parent) return parent.error();
  if (::unlinkat(parent->first.get(), parent->second.c_str(), AT_REMOVEDIR) != 0)
    return utils::last_errno();
  if (auto sp = secondary_.parent_of(rel); sp) {
    if (::unlinkat(sp->first.get(), sp->second.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
      secondary_ns_error("rmdir", rel, utils::last_errno());
  }
  if (auto bp = bitmaps_.parent_of(rel); bp)
    ::unlinkat(bp->first.get(), bp->second.c_str(), AT_REMOVEDIR);  // may not exist
  return {};
}

std::error_code MirrorSet::unlink(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::unique_lock ns(ns_mu_);
  auto parent = primary_.parent_of(rel);
  if (!parent) return parent.error();
  // Primary first: once it is gone the image is gone for the user; a crash before the
  // secondary's unlink leaves an orphan copy there, which is harmless and logged at mount.
  if (::unlinkat(parent->first.get(), parent->second.c_str(), 0) != 0) return utils::last_errno();
  {
    std::lock_guard lk(table_mu_);
    images_.erase(rel);
  }
  if (auto bp = bitmaps_.parent_of(bitmap_rel(rel)); bp)
    ::unlinkat(bp->first.get(), bp->second.c_str(), 0);
  if (auto sp = secondary_.parent_of(rel); sp) {
    if (::unlinkat(sp->first.get(), sp->second.c_str(), 0) != 0 && errno != ENOENT)
      secondary_ns_error("unlink", rel, utils::last_errno());
  }
  if (auto rp = secondary_.parent_of(record_rel(rel)); rp) ::unlinkat(rp->first.get(), rp->second.c_str(), 0);
  return {};
}

std::error_code MirrorSet::rename(const std::string& from, const std::string& to, unsigned flags) {
  if (reserved_name(from) || reserved_name(to)) return utils::errno_code(EPERM);
  if (flags & RENAME_EXCHANGE) return utils::errno_code(EINVAL);
  std::unique_lock ns(ns_mu_);
  auto pf = primary_.parent_of(from);
  auto pt = primary_.parent_of(to);
  if (!pf) return pf.error();
  if (!pt) return pt.error();
  struct stat st {};
  if (::fstatat(pf->first.get(), pf->second.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return utils::last_errno();
  if (::renameat2(pf->first.get(), pf->second.c_str(), pt->first.get(), pt->second.c_str(), flags) != 0)
    return utils::last_errno();
  const bool is_dir = S_ISDIR(st.st_mode);
  // The bitmap follows the primary: a crash between the two leaves an image without its
  // bitmap, which the next mount treats as all dirty (full resync), never as clean.
  const std::string bfrom = is_dir ? from : bitmap_rel(from);
  const std::string bto = is_dir ? to : bitmap_rel(to);
  if (auto ec = bitmaps_.mkdirs(parent_rel(bto), 0700); !ec) {
    auto bf = bitmaps_.parent_of(bfrom), bt = bitmaps_.parent_of(bto);
    if (bf && bt) ::renameat(bf->first.get(), bf->second.c_str(), bt->first.get(), bt->second.c_str());
  }
  {
    std::lock_guard lk(table_mu_);
    std::map<std::string, std::shared_ptr<Image>> moved;
    images_.erase(to);
    for (auto it = images_.begin(); it != images_.end();) {
      const std::string& k = it->first;
      if (k == from || (is_dir && k.rfind(from + "/", 0) == 0)) {
        std::string nk = to + k.substr(from.size());
        it->second->rename(nk);
        moved[nk] = it->second;
        it = images_.erase(it);
      } else {
        ++it;
      }
    }
    if (is_dir)
      for (auto it = images_.begin(); it != images_.end();)
        it = it->first.rfind(to + "/", 0) == 0 ? images_.erase(it) : std::next(it);
    images_.merge(moved);
  }
  {
    const std::string rfrom = is_dir ? record_rel(from, true) : record_rel(from);
    const std::string rto = is_dir ? record_rel(to, true) : record_rel(to);
    if (!secondary_.mkdirs(parent_rel(rto), 0700)) {
      auto rf = secondary_.parent_of(rfrom), rt = secondary_.parent_of(rto);
      if (rf && rt) ::renameat(rf->first.get(), rf->second.c_str(), rt->first.get(), rt->second.c_str());
    }
  }
  auto sf = secondary_.parent_of(from);
  auto stt = secondary_.parent_of(to);
  if (!stt) {
    if (secondary_.mkdirs(parent_rel(to), 0755)) {}
    stt = secondary_.parent_of(to);
  }
  if (sf && stt) {
    if (::renameat2(sf->first.get(), sf->second.c_str(), stt->first.get(), stt->second.c_str(),
                    flags & ~RENAME_NOREPLACE) != 0)
      secondary_ns_error("rename", from, utils::last_errno());
  }
  return {};
}

namespace {
// Applies `fn(path)` to `rel` in `dir`, through an O_PATH descriptor opened beneath it
// (never following a symlink) and its /proc/self/fd path.
template <typename F>
std::error_code via_path(const Dir& dir, const std::string& rel, F&& fn) {
  auto fd = dir.open_beneath(rel, O_PATH | O_NOFOLLOW);
  if (!fd) return fd.error();
  if (fn(proc_fd_path(fd->get()).c_str()) != 0) return utils::last_errno();
  return {};
}
}  // namespace

std::error_code MirrorSet::chmod(const std::string& rel, mode_t mode) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(ns_mu_);
  auto f = [mode](const char* p) { return ::chmod(p, mode); };
  if (auto ec = via_path(primary_, rel, f)) return ec;
  if (auto ec = via_path(secondary_, rel, f)) secondary_ns_error("chmod", rel, ec);
  return {};
}

std::error_code MirrorSet::chown(const std::string& rel, uid_t uid, gid_t gid) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(ns_mu_);
  auto f = [uid, gid](const char* p) { return ::chown(p, uid, gid); };
  if (auto ec = via_path(primary_, rel, f)) return ec;
  if (auto ec = via_path(secondary_, rel, f)) secondary_ns_error("chown", rel, ec);
  return {};
}

std::error_code MirrorSet::utimens(const std::string& rel, const struct timespec ts[2]) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(ns_mu_);
  auto f = [ts](const char* p) { return ::utimensat(AT_FDCWD, p, ts, 0); };
  if (auto ec = via_path(primary_, rel, f)) return ec;
  if (auto ec = via_path(secondary_, rel, f)) secondary_ns_error("utimens", rel, ec);
  return {};
}

std::error_code MirrorSet::truncate(const std::string& rel, std::uint64_t size) {
  auto img = open_image(rel);
  if (!img) return img.error();
  return (*img)->truncate(size);
}

utils::Result<struct statvfs> MirrorSet::statfs() {
  struct statvfs sv {};
  if (::fstatvfs(primary_.fd(), &sv) != 0) return utils::last_errno();
  return sv;
}

std::error_code MirrorSet::setxattr(const std::string& rel, const std::string& name,
                                    const char* value, std::size_t size, int flags) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(ns_mu_);
  auto f = [&](const char* p) { return ::setxattr(p, name.c_str(), value, size, flags); };
  if (auto ec = via_path(primary_, rel, f)) return ec;
  if (auto ec = via_path(secondary_, rel, f)) secondary_ns_error("setxattr", rel, ec);
  return {};
}

utils::Result<std::size_t> MirrorSet::getxattr(const std::string& rel, const std::string& name,
                                               char* value, std::size_t size) {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto fd = primary_.open_beneath(rel, O_PATH | O_NOFOLLOW);
  if (!fd) return fd.error();
  ssize_t n = ::getxattr(proc_fd_path(fd->get()).c_str(), name.c_str(), value, size);
  if (n < 0) return utils::last_errno();
  return static_cast<std::size_t>(n);
}

utils::Result<std::size_t> MirrorSet::listxattr(const std::string& rel, char* list, std::size_t size) {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  auto fd = primary_.open_beneath(rel, O_PATH | O_NOFOLLOW);
  if (!fd) return fd.error();
  ssize_t n = ::listxattr(proc_fd_path(fd->get()).c_str(), list, size);
  if (n < 0) return utils::last_errno();
  return static_cast<std::size_t>(n);
}

std::error_code MirrorSet::removexattr(const std::string& rel, const std::string& name) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::shared_lock ns(ns_mu_);
  auto f = [&](const char* p) { return ::removexattr(p, name.c_str()); };
  if (auto ec = via_path(primary_, rel, f)) return ec;
  if (auto ec = via_path(secondary_, rel, f)) secondary_ns_error("removexattr", rel, ec);
  return {};
}

utils::Result<std::shared_ptr<Image>> MirrorSet::open_image(const std::string& rel) {
  if (reserved_name(rel)) return utils::errno_code(ENOENT);
  {
    std::lock_guard lk(table_mu_);
    if (auto it = images_.find(rel); it != images_.end()) return it->second;
  }
  // Not loaded: a file that appeared in the primary behind our back, or a retry.
  std::unique_lock ns(ns_mu_);
  return load_image_locked(rel);
}

utils::Result<std::shared_ptr<Image>> MirrorSet::create_image(const std::string& rel, mode_t mode,
                                                              uid_t uid, gid_t gid) {
  if (reserved_name(rel)) return utils::errno_code(EPERM);
  std::unique_lock ns(ns_mu_);
  auto parent = primary_.parent_of(rel);
  if (!parent) return parent.error();
  int fd = ::openat(parent->first.get(), parent->second.c_str(),
                    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 07777);
  if (fd < 0 && errno != EEXIST) return utils::last_errno();
  if (fd >= 0) {
    if (uid != static_cast<uid_t>(-1)) (void)::fchown(fd, uid, gid);
    ::close(fd);
    // A new image: the secondary copy is (re)made empty and the bitmap starts clean.
    if (auto ec = secondary_.mkdirs(parent_rel(rel), 0755)) secondary_ns_error("mkdir", rel, ec);
    // Remove whatever the secondary has there (never truncate through it: it could be a
    // hard link to a file outside the secondary), then make a new empty copy.
    if (auto sp = secondary_.parent_of(rel); sp) ::unlinkat(sp->first.get(), sp->second.c_str(), 0);
    if (auto s = secondary_.open_beneath(rel, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode & 07777); !s) {
      secondary_ns_error("create", rel, s.error());
    } else if (uid != static_cast<uid_t>(-1)) {
      (void)::fchown(s->get(), uid, gid);
    }
    if (auto ec = bitmaps_.mkdirs(parent_rel(bitmap_rel(rel)), 0700); !ec) {
      if (auto b = bitmaps_.open_beneath(bitmap_rel(rel), O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600); b)
        (void)::ftruncate(b->get(), 0);
    }
    std::lock_guard lk(table_mu_);
    images_.erase(rel);
  }
  return load_image_locked(rel);
}

// ---- the secondary's records and the operator's controls ---------------------------------

MirrorSet::LegRecord MirrorSet::read_record(const std::string& rel) const {
  LegRecord r;
  auto fd = secondary_.open_beneath(record_rel(rel), O_RDONLY | O_NOFOLLOW);
  if (!fd) return r;
  std::string text(4096, '\0');
  ssize_t n = ::pread(fd->get(), text.data(), text.size(), 0);
  if (n <= 0) return r;
  text.resize(static_cast<std::size_t>(n));
  try {
    auto j = nlohmann::json::parse(text);
    auto su = utils::parse_uuid(j.at("set_uuid").get<std::string>());
    auto iu = utils::parse_uuid(j.at("image_uuid").get<std::string>());
    if (!su || !iu) return r;
    r.set_uuid = *su;
    r.image_uuid = *iu;
    r.events = j.at("events").get<std::uint64_t>();
    r.clean = j.value("clean", false);
    r.ino = j.value("ino", std::uint64_t{0});
    r.size = j.value("size", std::uint64_t{0});
    r.mtime_ns = j.value("mtime_ns", std::int64_t{0});
    r.present = true;
  } catch (const std::exception&) {
  }
  return r;
}

std::error_code MirrorSet::write_record(const std::string& rel, const Image& img,
                                        std::uint64_t events, bool clean) {
  nlohmann::json j;
  j["set_uuid"] = utils::to_string(config_.uuid);
  j["image_uuid"] = utils::to_string(const_cast<Image&>(img).bitmap()->image_uuid());
  j["events"] = events;
  j["clean"] = clean;
  if (clean) {
    struct stat st {};
    if (::fstat(img.secondary_fd(), &st) == 0) {
      j["ino"] = static_cast<std::uint64_t>(st.st_ino);
      j["size"] = static_cast<std::uint64_t>(st.st_size);
      j["mtime_ns"] = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    }
  }
  const std::string rrel = record_rel(rel);
  if (auto ec = secondary_.mkdirs(parent_rel(rrel), 0700)) return ec;
  try {
    write_file_atomic(secondary_.path() + "/" + parent_rel(rrel),
                      rrel.substr(rrel.rfind('/') + 1), j.dump() + "\n");
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return utils::errno_code(EIO);
  }
  return {};
}

bool MirrorSet::bitmap_covers(const std::string& rel, const Image& img, std::uint64_t bitmap_events,
                              std::string* why) const {
  const LegRecord r = read_record(rel);
  auto& bm = *const_cast<Image&>(img).bitmap();
  const BitmapStats st = bm.stats();
  if (r.present && r.set_uuid == config_.uuid && r.events > bitmap_events) {
    // md: "bitmap file is out of date ... forcing full recovery". The secondary saw a later
    // state of this set than the bitmap describes: an old bitmap was put back.
    *why = "the bitmap is older than the secondary's record (bitmap events " +
           std::to_string(bitmap_events) + " < record events " + std::to_string(r.events) + ")";
    return false;
  }
  if (!r.present) {
    *why = "the secondary has no record of this image (new, foreign or restored copy)";
    return false;
  }
  if (r.set_uuid != config_.uuid) {
    *why = "the secondary's record belongs to another mirror set (" + utils::to_string(r.set_uuid) + ")";
    return false;
  }
  if (r.image_uuid != bm.image_uuid()) {
    *why = "the secondary's copy belongs to another image (uuid " + utils::to_string(r.image_uuid) + ")";
    return false;
  }
  if (r.events < st.events_cleared) {
    *why = "the secondary's copy is older than the bitmap (its events " + std::to_string(r.events) +
           " < events_cleared " + std::to_string(st.events_cleared) + ")";
    return false;
  }
  if (r.clean && r.ino) {
    struct stat sst {};
    if (::fstat(img.secondary_fd(), &sst) == 0) {
      const std::int64_t mt = static_cast<std::int64_t>(sst.st_mtim.tv_sec) * 1000000000 + sst.st_mtim.tv_nsec;
      if (static_cast<std::uint64_t>(sst.st_ino) != r.ino || static_cast<std::uint64_t>(sst.st_size) != r.size ||
          mt != r.mtime_ns) {
        *why = "the secondary's file is not the one this set left there at its last clean "
               "shutdown (inode, size or mtime changed: an old or foreign copy?)";
        return false;
      }
    }
  }
  return true;
}

std::error_code MirrorSet::fail(const std::string& rel) {
  auto img = open_image(rel);
  if (!img) return img.error();
  if (!(*img)->secondary_ok()) return utils::errno_code(EALREADY);
  spdlog::warn("{}: secondary failed by the operator", rel);
  (*img)->fail_secondary("operator request", utils::errno_code(ECANCELED));
  return {};
}

std::error_code MirrorSet::readd(const std::string& rel) {
  auto img = open_image(rel);
  if (!img) return img.error();
  if ((*img)->secondary_ok()) return utils::errno_code(EBUSY);
  std::unique_lock ns(ns_mu_);
  if (secondary_vanished_) {
    // The secondary directory came back (remounted): it must be the same set's.
    auto d = Dir::open(config_.secondary);
    if (!d) {
      spdlog::error("{}: re-add refused: secondary directory unusable: {}", config_.secondary,
                    d.error().message());
      return d.error();
    }
    const std::string member_path = config_.secondary + "/" + kMetaDirName + "/" + kMemberName;
    try {
      if (load_member(member_path).set_uuid != config_.uuid) {
        spdlog::error("{}: re-add refused: the secondary belongs to another mirror set", config_.secondary);
        return utils::errno_code(EINVAL);
      }
    } catch (const Error& e) {
      spdlog::error("re-add refused: {}", e.what());
      return utils::errno_code(EINVAL);
    }
    struct stat st {};
    ::fstat(d->fd(), &st);
    secondary_ = std::move(*d);
    secondary_dev_ = st.st_dev;
    secondary_ino_ = st.st_ino;
    secondary_vanished_ = false;
  }
  bool sec_new = false;
  auto sfd = secondary_.open_beneath(rel, O_RDWR | O_NOFOLLOW);
  if (!sfd && sfd.error() == std::errc::no_such_file_or_directory) {
    (void)secondary_.mkdirs(parent_rel(rel), 0755);
    sfd = secondary_.open_beneath(rel, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    sec_new = sfd.ok();
  }
  if (!sfd) {
    spdlog::error("{}/{}: re-add refused: {}", config_.secondary, rel, sfd.error().message());
    return sfd.error();
  }
  if (struct stat sst {}; ::fstat(sfd->get(), &sst) != 0 || !S_ISREG(sst.st_mode) || sst.st_nlink > 1) {
    spdlog::error("{}/{}: re-add refused: not a regular file with a single link (a hard link "
                  "could redirect writes outside the secondary)", config_.secondary, rel);
    return utils::errno_code(EPERM);
  }
  std::string why;
  bool full = sec_new;
  if (sec_new) why = "the secondary has no copy of the image";
  else if (!bitmap_covers(rel, **img, (*img)->bitmap()->stats().events, &why)) full = true;
  if (full) spdlog::warn("{}: re-add: full resync: {}", rel, why);
  if (auto ec = (*img)->readd(std::move(*sfd), full)) return ec;
  if (auto ec = write_record(rel, **img, (*img)->bitmap()->stats().events)) {
    (*img)->fail_secondary("record write", ec);
    return ec;
  }
  queue_resync(*img);
  return {};
}

std::error_code MirrorSet::sync_action(const std::string& rel, SyncAction action) {
  auto img = open_image(rel);
  if (!img) return img.error();
  if (action == SyncAction::idle) {
    std::lock_guard lk(work_mu_);
    std::erase_if(resync_queue_, [&](const Job& j) { return j.image == *img; });
    if (running_ == *img) cancel_running_ = true;
    return {};
  }
  if (!(*img)->secondary_ok()) return utils::errno_code(EIO);  // degraded: re-add first
  if (action == SyncAction::resync) (*img)->bitmap()->mark_all_dirty_unsynced();
  queue_job(*img, action);
  return {};
}

std::error_code MirrorSet::control(const std::string& line, std::string* why) {
  std::istringstream in(line);
  std::string cmd, image, arg;
  in >> cmd >> image >> arg;
  if (image.empty()) {
    *why = "usage: fail IMAGE | re-add IMAGE | sync-action IMAGE idle|resync|check|repair";
    return utils::errno_code(EINVAL);
  }
  std::error_code ec;
  if (cmd == "fail") {
    ec = fail(image);
  } else if (cmd == "re-add") {
    ec = readd(image);
  } else if (cmd == "sync-action") {
    SyncAction a;
    if (arg == "idle") a = SyncAction::idle;
    else if (arg == "resync") a = SyncAction::resync;
    else if (arg == "check") a = SyncAction::check;
    else if (arg == "repair") a = SyncAction::repair;
    else {
      *why = "unknown sync action '" + arg + "' (idle, resync, check, repair)";
      return utils::errno_code(EINVAL);
    }
    ec = sync_action(image, a);
  } else {
    *why = "unknown control '" + cmd + "'";
    return utils::errno_code(EINVAL);
  }
  if (ec) *why = cmd + " " + image + ": " + ec.message();
  return ec;
}

// ---- status ------------------------------------------------------------------------------

std::string MirrorSet::status_json() const {
  nlohmann::json j;
  j["uuid"] = utils::to_string(config_.uuid);
  j["primary"] = config_.primary;
  j["secondary"] = config_.secondary;
  j["mountpoint"] = mountpoint_;
  j["pid"] = ::getpid();
  j["chunk_size"] = config_.chunk_size;
  j["daemon_sleep"] = config_.daemon_sleep;
  j["intent_ahead"] = config_.intent_ahead;
  j["bitmap"] = config_.bitmap;
  j["write_behind"] = config_.write_behind;
  j["role"] = config_.role == Role::mirror ? "mirror" : "backup";
  j["images"] = nlohmann::json::array();
  // Queued actions, so that a script (fusemirror wait) never mistakes "queued behind another
  // image" or "requested a moment ago" for "done".
  std::map<const Image*, nlohmann::json> pending;
  {
    std::lock_guard lk(work_mu_);
    for (const auto& q : resync_queue_) pending[q.image.get()].push_back(to_string(q.action));
  }
  for (const auto& img : images_snapshot()) {
    const ImageStatus s = img->status();
    nlohmann::json i;
    i["name"] = s.name;
    i["size"] = s.size;
    i["state"] = s.state;
    i["secondary_ok"] = s.secondary_ok;
    i["chunk_size"] = s.bitmap.chunk_size;
    i["dirty_chunks"] = s.bitmap.dirty_chunks;
    i["unsynced_chunks"] = s.bitmap.unsynced_chunks;
    i["total_chunks"] = s.bitmap.total_chunks;
    i["bitmap_file"] = bitmaps_.path() + "/" + s.name + kBitmapSuffix;
    i["events"] = s.bitmap.events;
    i["events_cleared"] = s.bitmap.events_cleared;
    i["bitmap_flushes"] = s.bitmap.flushes;
    i["write_behind"] = {{"outstanding", s.wb_outstanding}, {"limit", s.wb_limit}, {"peak", s.wb_peak}};
    i["secondary_reads"] = s.secondary_reads;
    i["mismatch_cnt"] = s.mismatch_cnt;
    i["sync"] = {{"action", to_string(s.action)},
                 {"mismatch_cnt", s.mismatch_cnt},
                 {"done_bytes", s.sync_done_bytes},
                 {"total_bytes", s.sync_total_bytes},
                 {"copied_bytes", s.resync_copied_bytes},
                 {"pending", pending.contains(img.get()) ? pending[img.get()] : nlohmann::json::array()}};
    j["images"].push_back(std::move(i));
  }
  return j.dump(2) + "\n";
}

// ---- live tunables -----------------------------------------------------------------------

// throttle() reads the same words plainly; aligned 64-bit loads and stores do not tear on
// the platforms we build for, and a rate is advisory: a step using the old value is fine.
std::uint64_t MirrorSet::resync_min_rate() const {
  return std::atomic_ref(const_cast<std::uint64_t&>(config_.resync_min_rate)).load(std::memory_order_relaxed);
}
std::uint64_t MirrorSet::resync_max_rate() const {
  return std::atomic_ref(const_cast<std::uint64_t&>(config_.resync_max_rate)).load(std::memory_order_relaxed);
}
void MirrorSet::set_resync_min_rate(std::uint64_t v) {
  std::atomic_ref(config_.resync_min_rate).store(v, std::memory_order_relaxed);
  spdlog::info("sync_speed_min set to {} bytes/s", v);
}
void MirrorSet::set_resync_max_rate(std::uint64_t v) {
  std::atomic_ref(config_.resync_max_rate).store(v, std::memory_order_relaxed);
  spdlog::info("sync_speed_max set to {} bytes/s{}", v, v ? "" : " (unlimited)");
}

}  // namespace fusemirror::core
