// core/checksums.cpp — an image's checksum sidecar; see checksums.hpp and
// docs/write-path.md §9.
#include "core/checksums.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "utils/crash_point.hpp"
#include "utils/io.hpp"

namespace fusemirror::core {

namespace {

std::uint32_t new_generation() {
  for (;;) {
    const utils::Uuid u = utils::random_uuid();
    std::uint32_t g;
    std::memcpy(&g, u.data(), sizeof g);
    if (g) return g;
  }
}

std::uint64_t chunks_of(std::uint64_t size, std::uint64_t cs) { return size / cs + (size % cs != 0); }

}  // namespace

utils::Result<std::unique_ptr<Checksums>> Checksums::open(utils::UniqueFd fd, const OpenParams& p,
                                                          std::string* why_reset) {
  std::unique_ptr<Checksums> ck(new Checksums(std::move(fd)));
  if (why_reset) why_reset->clear();
  // Not shared yet; the lock only keeps the *_locked contracts.
  std::lock_guard lk(ck->mu_);
  struct stat st {};
  if (::fstat(ck->fd_.get(), &st) != 0) return utils::last_errno();
  if (!S_ISREG(st.st_mode)) return utils::errno_code(EINVAL);  // open_sidecar_file refuses these
  if (st.st_nlink > 1) return utils::errno_code(EMLINK);

  CksumHeader fresh;
  fresh.set_uuid = p.set_uuid;
  fresh.image_uuid = p.image_uuid;
  fresh.chunk_size = p.chunk_size;
  fresh.generation = new_generation();
  if (st.st_size == 0) {
    // New: nothing in it is trusted before a sweep's fdatasync makes the header and the
    // entries durable together, so no sync here (docs/write-path.md §9.4).
    ck->header_ = fresh;
    ck->scrub_.generation = fresh.generation;
    if (auto ec = ck->write_header_locked()) return ec;
    return ck;
  }
  auto found = read_cksum_file(ck->fd_.get());
  if (!found) return found.error();
  const CksumHeader h = found->header.value_or(CksumHeader{});
  std::string why = found->problem;
  if (why.empty() && (h.set_uuid != p.set_uuid || h.image_uuid != p.image_uuid))
    why = "made for another image (image uuid " + utils::to_string(h.image_uuid) + ")";
  if (why.empty() && h.chunk_size != p.chunk_size)
    why = "made for chunk size " + std::to_string(h.chunk_size) + ", the bitmap's is " +
          std::to_string(p.chunk_size);
  if (why.empty() && !p.bitmap_trusted) why = "the bitmap was not trusted";
  if (why.empty() && (h.state & kCksumStateClean) &&
      FileIdentity{h.primary_ino, h.primary_size, h.primary_mtime_ns} != p.primary)
    why = "the primary changed while unmounted (inode, size or mtime differ from the clean close)";
  if (!why.empty()) {
    ck->header_ = fresh;
    if (auto ec = ck->reset_locked()) return ec;
    if (why_reset) *why_reset = why;
    return ck;
  }
  ck->header_ = h;
  // A torn, lost or older scrub block only means the scrub starts over.
  ck->scrub_ = found->scrub.value_or(ScrubRecord{});
  ck->scrub_.generation = h.generation;
  bool sync = false;
  // No entry may describe a chunk past the image's end (a regrown image reads zeros there).
  const std::uint64_t chunks = chunks_of(p.primary.size, p.chunk_size);
  if (static_cast<std::uint64_t>(st.st_size) > cksum_page_offset(chunks / kEntriesPerPage)) {
    auto changed = ck->forget_from_locked(chunks);
    if (!changed) return changed.error();
    sync = *changed;
  }
  if (h.state & kCksumStateClean) {
    // Open again: from here on a crash must not leave an identity the data no longer has.
    ck->header_.state &= ~kCksumStateClean;
    ck->header_.primary_ino = ck->header_.primary_size = 0;
    ck->header_.primary_mtime_ns = 0;
    if (auto ec = ck->write_header_locked()) return ec;
    sync = true;
  }
  if (sync)
    if (auto ec = utils::fdatasync_fd(ck->fd_.get())) return ec;
  return ck;
}

std::error_code Checksums::write_header_locked() {
  const auto raw = encode_cksum_header(header_);
  return utils::pwrite_all(fd_.get(), raw, 0);
}

std::error_code Checksums::reset_locked() {
  // Everything goes, then a new header whose generation no old page carries; one fdatasync
  // makes the cut and the header durable (the cut is metadata fdatasync must flush).
  cache_.reset();
  scrub_ = ScrubRecord{};
  scrub_.generation = header_.generation;
  if (::ftruncate(fd_.get(), 0) != 0) return utils::last_errno();
  if (auto ec = write_header_locked()) return ec;
  return utils::fdatasync_fd(fd_.get());
}

utils::Result<CksumEntries> Checksums::page_locked(std::uint64_t p, bool* bad) const {
  *bad = false;
  if (cache_ && cache_->first == p) return cache_->second;
  CksumEntries e{};
  auto state = read_cksum_page(fd_.get(), header_, p, &e);
  if (!state) return state.error();
  switch (*state) {
    case PageState::valid: break;
    case PageState::empty: e.fill(0); break;
    case PageState::bad:
      *bad = true;
      e.fill(0);
      return e;  // not cached: a later write replaces it
  }
  cache_.emplace(p, e);
  return e;
}

Checksums::Lookup Checksums::lookup(std::uint64_t c) const {
  std::lock_guard lk(mu_);
  Lookup out;
  if (disabled_ || broken_) return out;
  auto page = page_locked(c / kEntriesPerPage, &out.bad_page);
  if (!page) return out;  // unreadable: no checksum (the caller's own reads will fail too)
  if (const std::uint64_t v = (*page)[c % kEntriesPerPage]) out.entry = v;
  return out;
}

std::error_code Checksums::record(std::vector<ChecksumEntry> entries) {
  if (entries.empty()) return {};
  if (auto ec = write(std::move(entries))) return ec;
  return sync();
}

std::error_code Checksums::write(std::vector<ChecksumEntry> entries) {
  if (entries.empty()) return {};
  std::stable_sort(entries.begin(), entries.end(),
                   [](const ChecksumEntry& a, const ChecksumEntry& b) { return a.chunk < b.chunk; });
  std::lock_guard lk(mu_);
  if (broken_) return utils::errno_code(EIO);
  if (disabled_) return {};  // an empty file: nothing stale can be trusted
  std::error_code ec;
  for (std::size_t i = 0; i < entries.size() && !ec;) {
    const std::uint64_t p = entries[i].chunk / kEntriesPerPage;
    bool bad = false;
    auto page = page_locked(p, &bad);
    if (!page) {
      ec = page.error();
      break;
    }
    CksumEntries e = *page;  // a bad page is rebuilt from zeros: its other entries are lost
    for (; i < entries.size() && entries[i].chunk / kEntriesPerPage == p; ++i)
      e[entries[i].chunk % kEntriesPerPage] = entries[i].value;
    ec = write_page_locked(p, e);
  }
  if (ec) {
    disable_locked("writing checksums failed: " + ec.message());
    return broken_ ? ec : std::error_code{};
  }
  return {};
}

std::error_code Checksums::forget_range(std::uint64_t first, std::uint64_t end) {
  std::lock_guard lk(mu_);
  if (broken_) return utils::errno_code(EIO);
  if (disabled_) return {};
  for (std::uint64_t p = first / kEntriesPerPage; p * kEntriesPerPage < end; ++p) {
    bool bad = false;
    auto page = page_locked(p, &bad);
    std::error_code ec = page ? std::error_code{} : page.error();
    if (!ec) {
      CksumEntries e = *page;
      bool changed = bad;
      for (std::uint64_t c = std::max(first, p * kEntriesPerPage); c < std::min(end, (p + 1) * kEntriesPerPage); ++c)
        if (std::uint64_t& v = e[c % kEntriesPerPage]) {
          v = 0;
          changed = true;
        }
      if (changed) ec = write_page_locked(p, e);
    }
    if (ec) {
      disable_locked("dropping checksums failed: " + ec.message());
      return broken_ ? ec : std::error_code{};
    }
  }
  return {};
}

std::error_code Checksums::sync() {
  FM_CRASH_POINT("checksums.before_sync");
  // Outside mu_: lookups go on while the disk syncs. Every page written before this call
  // is durable when it returns.
  if (auto ec = utils::fdatasync_fd(fd_.get())) {
    std::lock_guard lk(mu_);
    if (disabled_ && !broken_) return {};  // emptied (and synced) meanwhile
    disable_locked("syncing checksums failed: " + ec.message());
    return broken_ ? ec : std::error_code{};
  }
  std::lock_guard lk(mu_);
  return broken_ ? utils::errno_code(EIO) : std::error_code{};
}

std::error_code Checksums::write_page_locked(std::uint64_t p, const CksumEntries& e) {
  const auto raw = encode_cksum_page(p, header_.generation, e);
  cache_.reset();
  if (auto ec = utils::pwrite_all(fd_.get(), raw, cksum_page_offset(p))) return ec;
  cache_.emplace(p, e);
  return {};
}

utils::Result<bool> Checksums::forget_from_locked(std::uint64_t c) {
  const std::uint64_t p = c / kEntriesPerPage, slot = c % kEntriesPerPage;
  std::uint64_t cut = cksum_page_offset(p);
  bool changed = false;
  if (slot) {
    bool bad = false;
    auto page = page_locked(p, &bad);
    if (!page) return page.error();
    CksumEntries e = *page;
    if (bad || std::any_of(e.begin() + static_cast<std::ptrdiff_t>(slot), e.end(), [](std::uint64_t v) { return v != 0; })) {
      std::fill(e.begin() + static_cast<std::ptrdiff_t>(slot), e.end(), 0);
      if (auto ec = write_page_locked(p, e)) return ec;
      changed = true;
    }
    cut = cksum_page_offset(p + 1);
  }
  if (cache_ && cache_->first > p) cache_.reset();
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return utils::last_errno();
  if (static_cast<std::uint64_t>(st.st_size) > cut) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(cut)) != 0) return utils::last_errno();
    changed = true;
  }
  return changed;
}

std::error_code Checksums::forget_from(std::uint64_t c) {
  {
    std::lock_guard lk(mu_);
    if (broken_) return utils::errno_code(EIO);
    if (disabled_) return {};
    auto changed = forget_from_locked(c);
    if (!changed) {
      disable_locked("dropping checksums failed: " + changed.error().message());
      return broken_ ? changed.error() : std::error_code{};
    }
    if (!*changed) return {};
  }
  if (auto ec = utils::fdatasync_fd(fd_.get())) {
    std::lock_guard lk(mu_);
    disable_locked("syncing checksums failed: " + ec.message());
    return broken_ ? ec : std::error_code{};
  }
  return {};
}

std::error_code Checksums::close_clean(const FileIdentity& primary) {
  std::lock_guard lk(mu_);
  if (disabled_ || broken_) return {};
  header_.state |= kCksumStateClean;
  header_.primary_ino = primary.ino;
  header_.primary_size = primary.size;
  header_.primary_mtime_ns = primary.mtime_ns;
  if (auto ec = write_header_locked()) return ec;
  const auto raw = encode_scrub_block(scrub_);
  if (auto ec = utils::pwrite_all(fd_.get(), raw, kScrubBlockOffset)) return ec;
  return utils::fdatasync_fd(fd_.get());
}

ScrubRecord Checksums::scrub() const {
  std::lock_guard lk(mu_);
  return scrub_;
}

void Checksums::save_scrub(const ScrubRecord& r) {
  std::lock_guard lk(mu_);
  scrub_ = r;
  scrub_.generation = header_.generation;
  if (disabled_ || broken_) return;
  const auto raw = encode_scrub_block(scrub_);
  (void)utils::pwrite_all(fd_.get(), raw, kScrubBlockOffset);  // best effort (§7.5)
}

void Checksums::disable_locked(const std::string& why) {
  // No entry may survive that the caller cannot keep up to date: the file is emptied and
  // that made durable. A later load finds an empty file and starts a new one.
  disabled_ = true;
  failure_ = why;
  cache_.reset();
  std::error_code ec = ::ftruncate(fd_.get(), 0) != 0 ? utils::last_errno() : utils::fdatasync_fd(fd_.get());
  if (ec) {
    broken_ = true;
    failure_ += "; emptying the checksum file failed too: " + ec.message();
  }
}

bool Checksums::disabled() const {
  std::lock_guard lk(mu_);
  return disabled_;
}

std::string Checksums::failure() const {
  std::lock_guard lk(mu_);
  return failure_;
}

std::uint32_t Checksums::generation() const {
  std::lock_guard lk(mu_);
  return header_.generation;
}

}  // namespace fusemirror::core
