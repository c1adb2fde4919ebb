// test/tools/cksum_audit.cpp — see cksum_audit.hpp.
#include "test/tools/cksum_audit.hpp"

#include <sys/stat.h>

#include <vector>

#include "core/bitmap_format.hpp"
#include "core/checksum_format.hpp"
#include "core/chunk_check.hpp"
#include "utils/error.hpp"

namespace fmtest {

namespace core = fusemirror::core;
namespace futils = fusemirror::utils;

futils::Result<CksumAudit> audit_checksums(int p, int s, int m, int c) {
  CksumAudit a;
  auto bf = m < 0 ? futils::Result<core::BitmapFile>(core::BitmapFile{}) : core::read_bitmap_file(m);
  if (!bf) return bf.error();
  constexpr std::uint32_t kUntrusting = core::kStateStale | core::kStateNeedsFullSync;
  if (!bf->header || !bf->problem.empty() || (bf->header->state & kUntrusting)) {
    a.not_trusted = "bitmap untrusted (" + (bf->problem.empty() ? std::string("stale or full sync pending") : bf->problem) +
                    "): the checksums are reset at load";
    return a;
  }
  const core::BitmapHeader& bh = *bf->header;
  if (c < 0) {
    a.not_trusted = "no checksum file: nothing to trust";
    return a;
  }
  auto cf = core::read_cksum_file(c);
  if (!cf) return cf.error();
  if (!cf->header) {
    a.not_trusted = "checksum file not trusted (" + cf->problem + "): reset at load";
    return a;
  }
  const core::CksumHeader& ch = *cf->header;
  if (ch.set_uuid != bh.set_uuid || ch.image_uuid != bh.image_uuid || ch.chunk_size != bh.chunk_size) {
    a.not_trusted = "checksum file of another image or chunk size: reset at load";
    return a;
  }
  struct stat ps {};
  if (::fstat(p, &ps) != 0) return futils::last_errno();
  const std::uint64_t cs = bh.chunk_size, bits = bh.bit_count();
  const std::uint64_t size = static_cast<std::uint64_t>(ps.st_size);
  std::vector<std::byte> buf(1 << 20);
  core::CksumEntries e{};
  std::uint64_t page = UINT64_MAX;
  for (std::uint64_t k = 0; k < bits && k * cs < size; ++k) {
    const bool dirty = k / 8 < bf->bits.size() && ((static_cast<unsigned>(bf->bits[k / 8]) >> (k % 8)) & 1);
    if (dirty) continue;
    ++a.clean;
    if (k / core::kEntriesPerPage != page) {
      page = k / core::kEntriesPerPage;
      auto st = core::read_cksum_page(c, ch, page, &e);
      if (!st) return st.error();
      if (*st != core::PageState::valid) e.fill(0);
    }
    const std::uint64_t v = e[k % core::kEntriesPerPage];
    if (!v) continue;
    ++a.entries;
    auto hp = core::hash_chunk(p, k, cs, buf);
    if (!hp) return hp.error();
    auto hs = core::hash_chunk(s, k, cs, buf);
    if (!hs) return hs.error();
    if (*hp != v || *hs != v) {
      ++a.accusing;
      a.accusations.emplace_back(k, *hp == v ? "the primary only" : *hs == v ? "the secondary only" : "neither leg");
    }
  }
  return a;
}

}  // namespace fmtest
