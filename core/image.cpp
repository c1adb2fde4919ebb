#include "core/image.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/file_leg.hpp"
#include "utils/crash_point.hpp"
#include "utils/io.hpp"
#include "utils/page_cache.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

namespace {

constexpr std::size_t kInlineWriteMax = 64 * 1024;

// Runs `secondary` on a pool thread and `primary` on this one, concurrently; returns both
// results. With no usable secondary, only the primary runs.
// `inline_both`: run both legs on this thread, primary first — for small buffered writes a
// pwrite costs microseconds, less than waking a pool thread and waiting for it.
template <typename P, typename S>
std::pair<std::error_code, std::error_code> run_both(utils::ThreadPool* pool, bool with_secondary,
                                                     P&& primary, S&& secondary,
                                                     bool inline_both = false) {
  if (!with_secondary) return {primary(), {}};
  if (inline_both) {
    // The primary first; the secondary is not asked when the primary refused.
    std::error_code prim_ec = primary();
    if (prim_ec) return {prim_ec, {}};
    return {prim_ec, secondary()};
  }
  std::error_code sec_ec;
  utils::Completion done;
  const bool queued = pool->submit([&] {
    sec_ec = secondary();
    done.done();
  });
  std::error_code prim_ec = primary();
  // No pool thread could be started (a thread limit): the secondary leg runs here, after
  // the primary, instead of the write failing with one leg done.
  if (queued) done.wait();
  else sec_ec = secondary();
  return {prim_ec, sec_ec};
}

}  // namespace

namespace {
std::unique_ptr<Leg> file_leg(utils::UniqueFd fd, const std::string& name, std::uint64_t write_piece) {
  if (!fd.valid()) return nullptr;
  return std::make_unique<FileLeg>(std::move(fd), "secondary copy of " + name, write_piece);
}
}  // namespace

Image::Image(std::string name, utils::UniqueFd primary, utils::UniqueFd secondary,
             std::unique_ptr<Bitmap> bitmap, utils::ThreadPool* pool, ImageOptions options)
    : Image(name, std::move(primary), file_leg(std::move(secondary), name, options.leg_write_piece),
            std::move(bitmap), pool, options) {}

Image::Image(std::string name, utils::UniqueFd primary, std::unique_ptr<Leg> secondary,
             std::unique_ptr<Bitmap> bitmap, utils::ThreadPool* pool, ImageOptions options)
    : name_(std::move(name)),
      primary_(std::move(primary)),
      secondary_(std::move(secondary)),
      bitmap_(std::move(bitmap)),
      pool_(pool),
      secondary_ok_(secondary_ != nullptr),
      opts_(options),
      fresh_(bitmap_->chunk_size(), FreshHashes::default_bound(bitmap_->chunk_size())) {
  if (opts_.write_behind) {
    WriteBehindExecutor* exec = opts_.wb_executor;
    if (!exec) {
      own_wb_executor_ = std::make_unique<WriteBehindExecutor>(std::min<unsigned>(opts_.write_behind, 32));
      exec = own_wb_executor_.get();
    }
    wb_ = std::make_unique<WriteBehind>(*exec, opts_.write_behind,
                                        WriteBehind::LagBound{opts_.max_lag_bytes, opts_.max_lag_seconds});
  }
  if (!secondary_ok_) (void)bitmap_->set_degraded(true);
  if (utils::local_disk_fs(primary_.get())) primary_piece_ = static_cast<std::size_t>(opts_.leg_write_piece);
  if (secondary_) secondary_piece_.store(secondary_->write_piece(), std::memory_order_relaxed);
  open_direct_writes();
  open_direct_reads();
}

Image::~Image() {
  if (wb_) wb_->stop();
}

void Image::drain_write_behind() {
  if (wb_) (void)wb_->drain(1e9);
}

std::string Image::name() const {
  std::lock_guard lk(name_mu_);
  return name_;
}

void Image::rename(std::string name) {
  std::lock_guard lk(name_mu_);
  name_ = std::move(name);
}

void Image::fail_secondary(const char* op, std::error_code ec) {
  bool expected = true;
  if (!secondary_ok_.compare_exchange_strong(expected, false)) return;  // logged once
  // Queued secondary writes are dropped, not retried forever: the bitmap keeps them.
  if (wb_) wb_->drop_all();
  const std::string where = secondary_ ? " (" + secondary_->describe() + ")" : "";
  spdlog::error("{}: secondary failed on {}: {}{}; image degraded, serving from the primary, "
                "changes tracked in the bitmap",
                name(), op, ec.message(), where);
  set_degraded_reason(std::string(op) + " failed" + where + ": " + ec.message());
  if (opts_.events) opts_.events->post(Event::fail, name(), std::string(op) + ": " + ec.message());
  if (auto e = bitmap_->set_degraded(true, held_out()))
    spdlog::error("{}: could not record the degraded state in the bitmap: {}", name(), e.message());
}

std::error_code Image::settle(const char* op, std::error_code primary, std::error_code secondary) {
  if (secondary) fail_secondary(op, secondary);
  if (primary) spdlog::warn("{}: primary {} failed: {}", name(), op, primary.message());
  return primary;
}

utils::Result<std::size_t> Image::read(std::span<std::byte> buf, std::uint64_t off) {
  auto r = read_primary(buf, off);
  if (r && *r && opts_.verify_reads && has_checksums()) {
    if (auto ec = verify_read(buf.first(*r), off)) return ec;
    return r;
  }
  if (r || r.error() != std::errc::io_error || !opts_.secondary_serves_reads || !secondary_ok())
    return r;
  // The primary failed to read (role mirror only): serve from the secondary where every
  // chunk of the range is in sync there — clean, nothing in flight, nothing queued.
  if (!bitmap_->range_clean(off, buf.size())) return r;
  if (!primary_read_failed_.exchange(true))
    spdlog::error("{}: primary read error at {}: serving in-sync chunks from the secondary",
                  name(), off);
  auto s = secondary_->pread(buf, off);
  if (s) secondary_reads_.fetch_add(1, std::memory_order_relaxed);
  return s ? s : r;
}

std::error_code Image::check_size_limit(std::uint64_t off, std::uint64_t len) const {
  if (off > opts_.max_image_size || len > opts_.max_image_size - off) return utils::errno_code(EFBIG);
  return {};
}

utils::Result<std::size_t> Image::write(std::span<const std::byte> data, std::uint64_t off) {
  if (data.empty()) return std::size_t{0};
  // Issue 12 §3: past max_image_size nothing changes — no bit, no leg.
  if (auto ec = check_size_limit(off, data.size())) return ec;
  const std::int64_t now_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  last_write_ns_.store(now_ns, std::memory_order_relaxed);
  // A direct write locks its own range; every other write to the legs, while direct writes
  // are on, locks whole 2 MiB blocks around its range (lock_floor/lock_ceil): a direct
  // write then never runs beside a buffered one in a page-cache folio they share, which
  // could leave that folio dirty with the direct write's old bytes (write-path.md §1b).
  const InFlight in_flight{writes_in_flight_};
  // Under every lock it takes, the write first forgets its range's fresh hashes: the
  // primary's bytes there are about to change (core/fresh_hashes.hpp). Only a direct write
  // that the primary took whole puts new ones (write_direct).
  bool direct = direct_write_fits(off, data.size(), in_flight.now, now_ns);
  std::optional<RangeLock::Guard> guard;
  auto lock = [&](std::uint64_t lo, std::uint64_t hi) {
    guard.reset();
    guard.emplace(locks_.lock(lo, hi));
    fresh_.forget(off, data.size());
  };
  auto lock_buffered = [&] { lock(lock_floor(off), lock_ceil(off + data.size())); };
  if (direct) lock(off, off + data.size());
  else lock_buffered();
  if (direct && !direct_legs_ready()) {  // a secondary that takes no direct writes, or refused meanwhile
    direct = false;
    lock_buffered();
  }
  // Test builds only: FM_FAULT=bitmap.late breaks invariant 1 on purpose — both legs are
  // written before the bits are flushed — so that the power-cut suite can show it notices
  // (docs/reliability.md §9). Never compiled into a release build.
  if (FM_FAULT_POINT("bitmap.late") && !wb_ && secondary_ok()) {
    auto p = write_primary(data, off, nullptr);
    auto s = secondary_->pwrite(data, off);
    if (auto ec = bitmap_->start_write(off, data.size())) return utils::errno_code(EIO);
    bitmap_->end_write(off, data.size(), !p && !s);
    if (auto ec = settle("write", p, s)) return ec;
    return data.size();
  }
  // 1. Durable intent before any leg sees the data (docs/reliability.md invariant 1).
  Bitmap::Intent intent;
  const std::uint64_t ahead = intent_ahead_for(off, data.size());
  if (auto ec = bitmap_->start_write(off, data.size(), ahead, &intent)) {
    spdlog::error("{}: bitmap write failed ({}); refusing the data write", name(), ec.message());
    return utils::errno_code(EIO);
  }
  if (wb_ && secondary_ok()) return write_behind(data, off, intent);
  if (direct) {
    if (auto r = write_direct(data, off, intent)) return *r;
    lock_buffered();  // refused (EINVAL): the same bytes buffered, under the wider lock
  }
  // 2. Both legs concurrently (small writes: the primary first, then the secondary).
  const bool with_sec = secondary_ok();
  std::size_t p_done = 0, s_done = 0;
  auto [p, s] = run_both(
      pool_, with_sec,
      [&] {
        auto ec = write_primary(data, off, &p_done);
        FM_CRASH_POINT("image.after_primary");
        return ec;
      },
      [&] {
        FM_CRASH_POINT("image.before_secondary");
        return secondary_->pwrite(data, off, &s_done);
      },
      data.size() <= kInlineWriteMax);
  FM_CRASH_POINT("image.after_legs");
  return finish_write(off, data.size(), with_sec, p, s, p_done + s_done > 0, intent);
}

utils::Result<std::size_t> Image::finish_write(std::uint64_t off, std::uint64_t len, bool with_sec,
                                               std::error_code p, std::error_code s, bool changed,
                                               const Bitmap::Intent& intent) {
  if (p) return refuse_write(off, len, p, s, changed, intent);
  // 3. The chunk's bit stays until both legs are durable and idle (sweep).
  bitmap_->end_write(off, len, with_sec && !s);
  if (s) fail_secondary("write", s);
  return static_cast<std::size_t>(len);
}

std::error_code Image::write_primary(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) {
  // In pieces of at most leg_write_piece (on a local disk file system: primary_piece_), in
  // order, each whole before the next (a file secondary does the same, core/file_leg.cpp):
  // the same bytes in the same order under the same range lock, all before end_write. A
  // write torn between two pieces by a crash or an error is the same as a short write,
  // which pwrite_all already continues, and `*done` counts the bytes of every piece
  // written, as for one pwrite (docs/write-path.md §1, "Leg writes in pieces").
  return utils::pwrite_pieces(primary_.get(), data, off, primary_piece_, done);
}

std::error_code Image::refuse_write(std::uint64_t off, std::uint64_t len, std::error_code primary,
                                    std::error_code secondary, bool changed,
                                    const Bitmap::Intent& intent) {
  // An error the secondary shares with the primary (ENOSPC or EFBIG on both file systems)
  // belongs to the request, not to the secondary: only an error of its own degrades it.
  if (secondary && secondary != primary) fail_secondary("write", secondary);
  // No byte changed on either leg: the write never happened, its intent is taken back.
  // Otherwise the legs may differ in the range (a leg wrote part of it, or the secondary
  // took what the primary refused): its chunks are left for resync, from the primary.
  if (!changed) bitmap_->cancel_write(off, len, intent);
  else bitmap_->end_write(off, len, false);
  spdlog::warn("{}: primary write at {} (+{}) failed: {}{}", name(), off, len, primary.message(),
               changed ? "; the range is resynced from the primary" : "; nothing changed");
  return primary;
}

std::uint64_t Image::intent_ahead_for(std::uint64_t off, std::uint64_t len) {
  constexpr std::uint64_t kMinStream = 1 << 20;
  if (opts_.intent_ahead == 0) return 0;
  std::lock_guard lk(stream_mu_);
  for (Stream& st : streams_) {
    if (off == 0 || st.end != off) continue;
    const std::uint64_t before = st.length;
    st.end = off + len;
    st.length += len;
    return before >= kMinStream ? std::min(before, opts_.intent_ahead) : 0;
  }
  streams_[stream_victim_++ % streams_.size()] = Stream{off + len, len};
  return 0;
}

utils::Result<std::size_t> Image::write_behind(std::span<const std::byte> data, std::uint64_t off,
                                               const Bitmap::Intent& intent) {
  // REQUIRES: the range lock and a started bitmap write (Image::write).
  std::size_t p_done = 0;
  if (auto ec = write_primary(data, off, &p_done))  // the secondary not asked
    return refuse_write(off, data.size(), ec, {}, p_done > 0, intent);
  // From here the primary holds the data: whatever happens, the user is told the write
  // succeeded, and the bitmap write ends exactly once — when the secondary has the data
  // (legs ok), or with legs_ok=false (the chunk becomes unsynced and resync copies it).
  const std::uint64_t len = data.size();
  WriteBehind::Op op;
  try {
    // Test builds: FM_FAULT=writebehind.enqueue stands for a failure to build the queued copy.
    if (FM_FAULT_POINT("writebehind.enqueue")) throw std::bad_alloc();
    op.off = off;
    op.data.assign(data.begin(), data.end());  // the caller's buffer is reused after we return
    op.run = [this](const WriteBehind::Op& o) -> std::error_code {
      if (!secondary_ok()) return utils::errno_code(EIO);
      FM_CRASH_POINT("writebehind.before_secondary");
      auto ec = secondary_->pwrite(o.data, o.off);
      if (ec) fail_secondary("write-behind write", ec);
      return ec;
    };
    op.done = [this, off, len](bool ok) { bitmap_->end_write(off, len, ok); };
    op.merge = true;  // every op of this queue writes the secondary at its offset
  } catch (const std::exception& e) {
    bitmap_->end_write(off, len, false);
    if (!wb_copy_failed_.exchange(true))  // once per image: a user can repeat it at will
      spdlog::warn("{}: write-behind copy at {} (+{}) not queued ({}); its chunks are left for "
                   "resync (logged once)",
                   name(), off, len, e.what());
    return data.size();
  }
  // Submitted under the range lock, so overlapping writes enter the queue in the primary's
  // order; the queue keeps that order. The bitmap write ends when the secondary has it.
  if (wb_->submit(std::move(op))) return data.size();
  // Not queued (no worker thread could be started, or no memory; `op` is intact): write the
  // secondary here, still under the range lock, once the older queued writes to this range
  // reached it — the same order as through the queue.
  wb_->wait_range_idle(off, off + len);
  const std::error_code ec = op.run(op);
  bitmap_->end_write(off, len, !ec);
  return data.size();
}

std::error_code Image::fsync(bool datasync) {
  // The bitmap needs nothing here: every started write's bits were durable before its
  // data was issued. Primary and secondary are synced concurrently.
  auto sync = [datasync](int fd) -> std::error_code {
    if (datasync) return utils::fdatasync_fd(fd);
    return ::fsync(fd) ? utils::last_errno() : std::error_code{};
  };
  // Write-behind: the bitmap covers the secondary's lag, so fsync waits for the primary
  // only — unless the config asks for the secondary too (then the queue drains first).
  const bool with_sec = secondary_ok() && (!wb_ || opts_.fsync_waits_for_secondary);
  if (wb_ && with_sec) drain_write_behind();
  auto [p, s] = run_both(
      pool_, with_sec, [&] { return sync(primary_.get()); },
      [&] { return secondary_->flush(datasync); });
  return settle("fsync", p, s);
}

std::error_code Image::sync_legs() {
  auto [p, s] = run_both(
      pool_, secondary_ok(), [&] { return utils::fdatasync_fd(primary_.get()); },
      [&] { return secondary_->flush(); });
  if (s) fail_secondary("fdatasync", s);
  return p ? p : s;
}

utils::Result<struct stat> Image::stat() const {
  struct stat st {};
  if (::fstat(primary_.get(), &st) != 0) return utils::last_errno();
  return st;
}

std::error_code Image::readd(utils::UniqueFd secondary, bool full) {
  return readd(file_leg(std::move(secondary), name(), opts_.leg_write_piece), full);
}

void Image::note_write_behind_lag() {
  if (!wb_) return;
  const std::uint64_t waits = wb_->full_waits();
  const WriteBehind::LagStats lag = wb_->lag_stats();
  const bool full = waits != wb_full_waits_seen_, held = lag.holds != wb_lag_holds_seen_;
  const bool was_full = full || held;
  wb_full_waits_seen_ = waits;
  wb_lag_holds_seen_ = lag.holds;
  if (was_full && !lag_reported_) {
    lag_reported_ = true;
    char detail[200];
    std::snprintf(detail, sizeof detail,
                  "write-behind %s (%u of %u writes outstanding, %llu bytes, the oldest %.1fs old): writers wait "
                  "for the secondary",
                  full ? "queue full" : "lag bound reached", wb_->outstanding(), wb_->limit(),
                  static_cast<unsigned long long>(lag.bytes), lag.seconds);
    spdlog::warn("{}: {}", name(), detail);
    if (opts_.events) opts_.events->post(Event::lag_exceeded, name(), detail);
  } else if (!was_full && lag_reported_ && wb_->outstanding() == 0) {
    lag_reported_ = false;
  }
}

void Image::set_degraded_reason(std::string why) {
  std::lock_guard lk(progress_mu_);
  degraded_reason_ = std::move(why);
}

void Image::set_sync_progress(SyncAction a, std::uint64_t done, std::uint64_t total) {
  std::lock_guard lk(progress_mu_);
  action_ = a;
  sync_done_ = done;
  sync_total_ = total;
}

std::error_code Image::sweep() {
  if (bitmap_->failed()) {
    // Issue 12 §5: no space for the bitmap passes by itself; then writes resume.
    if (auto ec = bitmap_->recover()) {
      if (!bitmap_error_logged_.exchange(true))
        spdlog::error("{}: bitmap still cannot be written ({}; {} more needed); writes stay "
                      "refused, retried every daemon_sleep", name(), ec.message(),
                      utils::format_size(bitmap_->bytes_short()));
      return {};
    }
    bitmap_error_logged_ = false;
    spdlog::warn("{}: bitmap written again in full; writes resume", name());
  }
  RecordChecksums record;
  if (checksums_) record = [this](std::vector<ChunkRange>& runs) { return record_checksums(runs, false); };
  auto r = bitmap_->sweep([this] { return sync_legs(); }, record);
  if (checksums_ && checksums_->disabled() && !checksums_failure_logged_.exchange(true))
    spdlog::error("{}: checksums given up: {}; its chunks are unverified until it is loaded again",
                  name(), checksums_->failure());
  if (!r) return r.error();
  if (*r) spdlog::debug("{}: cleared {} idle chunk bits", name(), *r);
  return {};
}

bool Image::drain_for_shutdown() {
  if (!wb_ || wb_->drain(opts_.drain_timeout)) return true;
  spdlog::error("{}: write-behind queue not drained after {}s ({} writes outstanding); their "
                "chunks stay dirty and the next mount resyncs them",
                name(), opts_.drain_timeout, wb_->outstanding());
  wb_->abandon();
  (void)bitmap_->flush();
  return false;
}

std::error_code Image::close_clean() {
  if (!drain_for_shutdown()) return utils::errno_code(ETIMEDOUT);
  (void)bitmap_->recover();  // clean only after a full rewrite succeeded
  RecordChecksums record;
  if (checksums_) record = [this](std::vector<ChunkRange>& runs) { return record_checksums(runs, true); };
  if (auto ec = bitmap_->close_clean([this] { return sync_legs(); }, record)) return ec;
  // After the clean bitmap header: the primary as the next load must find it (§7.4).
  if (checksums_) {
    struct stat st {};
    std::error_code ec = ::fstat(primary_.get(), &st) ? utils::last_errno() : std::error_code{};
    if (!ec) ec = checksums_->close_clean(FileIdentity::of(st));
    if (ec) spdlog::warn("{}: checksum file not closed clean ({}); it stays trusted as after a crash", name(),
                         ec.message());
  }
  return {};
}

ImageStatus Image::status() const {
  ImageStatus s;
  s.name = name();
  struct stat st {};
  if (::fstat(primary_.get(), &st) == 0) s.size = static_cast<std::uint64_t>(st.st_size);
  s.bitmap = bitmap_->stats();
  s.secondary_ok = secondary_ok();
  {
    std::lock_guard lk(progress_mu_);
    s.action = action_;
    s.sync_done_bytes = sync_done_;
    s.sync_total_bytes = sync_total_;
    if (!s.secondary_ok) s.degraded_reason = degraded_reason_;
  }
  s.resync_copied_bytes = resync_copied_.load(std::memory_order_relaxed);
  s.mismatch_cnt = mismatch_cnt_.load(std::memory_order_relaxed);
  s.direct_reads = direct_reads();
  s.cached_reads = cached_reads();
  s.direct_writes = direct_writes();
  s.hashes_from_writes = hashes_from_writes();
  s.primary_write_piece = primary_piece_;
  s.secondary_write_piece = secondary_piece_.load(std::memory_order_relaxed);
  if (wb_) {
    s.wb_outstanding = wb_->outstanding();
    s.wb_limit = wb_->limit();
    s.wb_peak = wb_->peak();
    s.wb_full_waits = wb_->full_waits();
    s.wb_merged = wb_->merged();
    const WriteBehind::LagStats lag = wb_->lag_stats();
    s.wb_lag_seconds = lag.seconds;
    s.wb_lag_bytes = lag.bytes;
    s.wb_held_writers = lag.held_now;
    s.wb_lag_holds = lag.holds;
    s.wb_lag_held_seconds = lag.held_seconds;
    s.wb_max_lag_bytes = wb_->lag_bound().max_bytes;
    s.wb_max_lag_seconds = wb_->lag_bound().max_seconds;
  }
  s.secondary_reads = secondary_reads_.load(std::memory_order_relaxed);
  s.scrub.checksums = has_checksums();
  if (checksums_ && checksums_->disabled()) s.scrub.checksums_error = checksums_->failure();
  s.scrub.record = scrub_record();
  s.scrub.read_verified = read_verified_.load(std::memory_order_relaxed);
  s.scrub.read_repaired = read_repaired_.load(std::memory_order_relaxed);
  s.scrub.read_failed = read_failed_.load(std::memory_order_relaxed);
  if (!s.bitmap.error.empty()) s.state = "bitmap-failed";  // writes refused: say so first
  else if (!s.secondary_ok) s.state = "degraded";
  else if (s.action == SyncAction::check || s.action == SyncAction::repair) s.state = "checking";
  else if (s.action == SyncAction::resync || s.bitmap.unsynced_chunks) s.state = "resyncing";
  else if (s.bitmap.dirty_chunks) s.state = "active";
  else s.state = "clean";
  return s;
}

}  // namespace fusemirror::core
