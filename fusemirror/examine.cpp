// fusemirror/examine.cpp — `fusemirror examine FILE.fmbm`: a bitmap and the files beside
// it (its checksums, its activity log's record), read offline the way a mount would read
// them, as `mdadm --examine-bitmap` shows md's bitmap.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

#include "core/al_record.hpp"
#include "core/bitmap_format.hpp"
#include "core/checksum_format.hpp"
#include "core/layout.hpp"
#include "fusemirror/cli.hpp"
#include "fusemirror/cli_text.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"
#include "utils/printable.hpp"
#include "utils/size.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::cli {

using utils::Error;

namespace {

// A file beside the bitmap, opened as a mount would accept it (never through a symlink,
// a FIFO or a hard link); otherwise "LABEL : none (ABSENT)" or "LABEL : PATH is not a
// regular file with one link (a mount moves it aside)" is printed and the result is empty.
utils::UniqueFd open_sidecar(const std::string& path, const char* label, const char* absent,
                             struct stat* st_out = nullptr) {
  utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    std::printf("%s : none (%s)\n", label, errno == ENOENT ? absent : std::strerror(errno));
    return fd;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
    std::printf("%s : %s is not a regular file with one link (a mount moves it aside)\n", label,
                utils::printable(path).c_str());
    return {};
  }
  if (st_out) *st_out = st;
  return fd;
}

// The checksum file beside a bitmap, as `mdadm -X` would show it: its identity, how many
// clean chunks have a checksum (bits from `bits`, one per chunk of `nchunks`), the scrub.
void examine_checksums(const std::string& path, const core::BitmapHeader& bh, std::span<const std::byte> bits) {
  struct stat st {};
  utils::UniqueFd fd = open_sidecar(path, "       Checksums", "no checksum file", &st);
  if (!fd) return;
  auto f = core::read_cksum_file(fd.get());
  if (!f) throw utils::sys_error(path, "cannot read", f.error().value());
  std::printf("       Checksums : %s\n", utils::printable(path).c_str());
  if (!f->header) {
    std::printf("                   not usable: %s (a mount starts it over)\n", f->problem.c_str());
    return;
  }
  const core::CksumHeader& h = *f->header;
  std::printf("       Algorithm : xxh3-64, generation %08x\n", h.generation);
  if (h.image_uuid != bh.image_uuid || h.set_uuid != bh.set_uuid || h.chunk_size != bh.chunk_size)
    std::printf("                   made for another image or chunk size (a mount starts it over)\n");
  if (h.state & core::kCksumStateClean)
    std::printf("  Checksum State : clean (primary inode %llu, size %llu, mtime %lld ns)\n",
                static_cast<unsigned long long>(h.primary_ino), static_cast<unsigned long long>(h.primary_size),
                static_cast<long long>(h.primary_mtime_ns));
  else
    std::printf("  Checksum State : open (in use, or not closed clean)\n");
  const std::uint64_t n = bh.bit_count();
  std::uint64_t clean = 0, with = 0, bad_pages = 0;
  core::CksumEntries e{};
  for (std::uint64_t p = 0; p * core::kEntriesPerPage < n; ++p) {
    const bool past_end = core::cksum_page_offset(p) >= static_cast<std::uint64_t>(st.st_size);
    auto ps = past_end ? utils::Result<core::PageState>(core::PageState::empty) : core::read_cksum_page(fd.get(), h, p, &e);
    if (!ps) throw utils::sys_error(path, "cannot read", ps.error().value());
    if (*ps == core::PageState::bad) ++bad_pages;
    if (*ps != core::PageState::valid) e.fill(0);
    for (std::uint64_t c = p * core::kEntriesPerPage; c < std::min(n, (p + 1) * core::kEntriesPerPage); ++c) {
      const bool dirty = c / 8 < bits.size() && ((static_cast<unsigned>(bits[c / 8]) >> (c % 8)) & 1);
      if (dirty) continue;
      ++clean;
      if (e[c % core::kEntriesPerPage]) ++with;
    }
  }
  std::printf("Checksum Entries : %llu of %llu clean chunks have a checksum (%.1f%%)%s\n",
              static_cast<unsigned long long>(with), static_cast<unsigned long long>(clean),
              clean ? 100.0 * static_cast<double>(with) / static_cast<double>(clean) : 0.0,
              bad_pages ? (", " + std::to_string(bad_pages) + " pages fail their checks").c_str() : "");
  const core::ScrubRecord r = f->scrub.value_or(core::ScrubRecord{});
  const std::string when = time_text(r.last_run);
  std::printf("      Last Scrub : %s%s\n", when.c_str(),
              r.in_progress ? (", a pass in progress at chunk " + std::to_string(r.cursor)).c_str() : "");
}

// The activity log's record beside a bitmap (core/al_record.hpp): whether the next mount
// would believe it, and how many of the bitmap's set chunks it would spare from the resync.
void examine_record(const std::string& path, const core::BitmapHeader& bh, std::span<const std::byte> bits) {
  utils::UniqueFd fd = open_sidecar(path, "   Active Record", "no record file");
  if (!fd) return;
  std::printf("   Active Record : %s\n", utils::printable(path).c_str());
  if (bh.state & core::kStateClean) {
    std::printf("    Record State : not read: the bitmap was closed clean (nothing to recover)\n");
    return;
  }
  const core::AlRecord rec(std::move(fd));
  const std::uint64_t n = bh.bit_count();
  std::string why;
  const auto slots = rec.read({bh.set_uuid, bh.image_uuid, bh.chunk_size, bh.events}, (n + 63) / 64, &why);
  if (!why.empty()) {
    std::printf("    Record State : not believed: %s (a recovery copies every set chunk)\n",
                utils::printable(why).c_str());
    return;
  }
  std::uint64_t logged = 0, spared = 0;
  for (const auto& [w, lbits] : slots) {
    logged += static_cast<std::uint64_t>(std::popcount(lbits));
    for (std::uint64_t b = lbits; b != 0; b &= b - 1) {
      const std::uint64_t c = w * 64 + static_cast<std::uint64_t>(std::countr_zero(b));
      if (c < n && c / 8 < bits.size() && ((static_cast<unsigned>(bits[c / 8]) >> (c % 8)) & 1)) ++spared;
    }
  }
  std::printf("    Record State : this boot's, matches the bitmap: %llu chunks logged, never written; "
              "a recovery now spares %llu set chunks\n",
              static_cast<unsigned long long>(logged), static_cast<unsigned long long>(spared));
}

}  // namespace

int examine_bitmap(const std::string& file) {
  utils::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw utils::sys_error(file, "cannot open", errno);
  auto bf = core::read_bitmap_file(fd.get());
  if (!bf) throw utils::sys_error(file, "cannot read", bf.error().value());
  if (!bf->header) throw Error(file + ": " + bf->problem);
  const core::BitmapHeader* h = &*bf->header;
  const std::uint64_t bits = h->bit_count();
  const bool truncated = bf->bits_truncated;
  std::uint64_t dirty = 0;
  for (std::uint64_t c = 0; c < bits && c / 8 < bf->bits.size(); ++c)
    if ((static_cast<unsigned>(bf->bits[c / 8]) >> (c % 8)) & 1) ++dirty;
  std::printf("        Filename : %s\n", utils::printable(file).c_str());
  std::printf("           Magic : FMBITMAP\n");
  std::printf("         Version : %u.%u\n", h->version_major, h->version_minor);
  std::printf("            UUID : %s\n", utils::to_string(h->set_uuid).c_str());
  std::printf("      Image UUID : %s\n", utils::to_string(h->image_uuid).c_str());
  std::printf("          Events : %llu\n", static_cast<unsigned long long>(h->events));
  std::printf("  Events Cleared : %llu\n", static_cast<unsigned long long>(h->events_cleared));
  std::printf("           State : %s\n", core::state_string(h->state).c_str());
  std::printf("       Chunksize : %s\n", utils::format_size(h->chunk_size).c_str());
  std::printf("    Daemon sleep : %gs\n", h->daemon_sleep_ms / 1000.0);
  if (h->write_behind)
    std::printf("      Write Mode : Allow write behind, max %u\n", h->write_behind);
  else
    std::printf("      Write Mode : Normal\n");
  std::printf("       Sync Size : %llu (%s)\n", static_cast<unsigned long long>(h->sync_size),
              utils::format_size(h->sync_size).c_str());
  if (bf->implausible)
    throw Error(file + ": not trusted: " + bf->problem + "; a mount treats this bitmap as all dirty");
  if (bf->no_bits) {
    // Bitmap "none" (core/bitmap_format.hpp, kStateNoBits): the clean flag is all there is.
    const bool clean = (h->state & core::kStateClean) && !(h->state & core::kStateDegraded);
    std::printf("          Bitmap : none kept (bitmap \"none\"): %s\n",
                clean ? "closed clean, every chunk in sync"
                      : "not closed clean; a mount treats every chunk as dirty");
    if (const std::string ck = sidecar_of(file, core::kChecksumSuffix); !ck.empty() && clean)
      examine_checksums(ck, *h, bf->bits);
    return 0;
  }
  std::printf("          Bitmap : %llu bits (chunks), %llu dirty (%.1f%%)%s\n",
              static_cast<unsigned long long>(bits), static_cast<unsigned long long>(dirty),
              bits ? 100.0 * static_cast<double>(dirty) / static_cast<double>(bits) : 0.0,
              truncated ? " [bits truncated]" : "");
  if (truncated) throw Error(file + ": " + bf->problem + "; a mount treats this bitmap as all dirty");
  if (const std::string ck = sidecar_of(file, core::kChecksumSuffix); !ck.empty()) examine_checksums(ck, *h, bf->bits);
  if (const std::string al = sidecar_of(file, core::kAlRecordSuffix); !al.empty()) examine_record(al, *h, bf->bits);
  return 0;
}

}  // namespace fusemirror::cli
