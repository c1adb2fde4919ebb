// test/tools/powercut_check.cpp — see powercut_check.hpp.
#include "test/tools/powercut_check.hpp"

#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <deque>
#include <cerrno>
#include <cstring>
#include <functional>
#include <set>
#include <span>

#include <nlohmann/json.hpp>

#include "core/bitmap_format.hpp"
#include "core/layout.hpp"
#include "core/records.hpp"
#include "test/tools/cksum_audit.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"

namespace fmtest {

namespace core = fusemirror::core;
namespace futils = fusemirror::utils;

namespace {

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : b.empty() ? a : a + "/" + b; }

// PATH relative to the recorder's mount point, or nullopt when it lies outside.
std::optional<std::string> inside(const std::string& path, const std::string& mount) {
  if (path == mount) return std::string();
  if (path.size() > mount.size() && path.compare(0, mount.size(), mount) == 0 && path[mount.size()] == '/')
    return path.substr(mount.size() + 1);
  return std::nullopt;
}

const Bytes& data_of(const Node* n) {
  static const Bytes empty;
  return n ? *n->data : empty;
}

bool is_regular(const Node* n) { return n && n->kind == Node::File && S_ISREG(n->mode); }

// As core::SecondaryRecords::read, from the tree: ENOENT, EBADMSG or the record.
futils::Result<core::LegRecord> read_record(const Node* n) {
  if (!n) return futils::errno_code(ENOENT);
  if (!is_regular(n)) return futils::errno_code(EBADMSG);
  try {
    auto j = nlohmann::json::parse(data_of(n).begin(), data_of(n).end());
    auto su = futils::parse_uuid(j.at("set_uuid").get<std::string>());
    auto iu = futils::parse_uuid(j.at("image_uuid").get<std::string>());
    if (!su || !iu) return futils::errno_code(EBADMSG);
    core::LegRecord r;
    r.set_uuid = *su;
    r.image_uuid = *iu;
    r.events = j.at("events").get<std::uint64_t>();
    r.clean = j.value("clean", false);
    if (j.contains("ino"))
      r.file = core::FileIdentity{j.at("ino").get<std::uint64_t>(), j.value("size", std::uint64_t{0}),
                                  j.value("mtime_ns", std::int64_t{0})};
    return r;
  } catch (const std::exception&) {
    return futils::errno_code(EBADMSG);
  }
}

// Why a mount would not trust this bitmap for an image of `size` bytes ("" = trusted), and
// the decoded header.
std::string bitmap_verdict(const Node* bm, const SetPaths& set, std::uint64_t size, core::BitmapHeader* out) {
  if (!is_regular(bm) || data_of(bm).empty()) return "no bitmap";
  const Bytes& b = data_of(bm);
  auto h = core::decode_header(std::as_bytes(std::span(b.data(), std::min(b.size(), core::kHeaderSize))));
  if (!h) return "header: " + h.error().message();
  if (h->set_uuid != set.config.uuid) return "another set's bitmap";
  if (auto why = core::header_implausible(*h); !why.empty()) return "implausible header";
  if (h->sync_size > std::max(set.config.max_image_size, size)) return "sync_size too large";
  if (set.config.bitmap) {
    if (auto why = core::bits_truncated_problem(*h, b.size()); !why.empty()) return "bits truncated";
  } else if (!(h->state & core::kStateClean)) {
    return "bitmap none, not clean";
  }
  if (h->state & core::kStateStale) return "stale";
  if (h->state & core::kStateNeedsFullSync) return "needs-full-sync";
  *out = *h;
  return {};
}

bool bit(const Bytes& b, std::uint64_t c) {
  const std::uint64_t byte = core::kHeaderSize + c / 8;
  return byte < b.size() && ((b[byte] >> (c % 8)) & 1);
}

// Bytes [off, off + len) of `d`, zeros past its end, compared with the same range of `e`.
bool same_range(const Bytes& d, const Bytes& e, std::uint64_t off, std::uint64_t len) {
  for (std::uint64_t i = off; i < off + len;) {
    const unsigned char x = i < d.size() ? d[i] : 0, y = i < e.size() ? e[i] : 0;
    if (x != y) return false;
    // fast path: both hold the whole rest of the range
    if (i + 1 < off + len && off + len <= d.size() && off + len <= e.size())
      return std::memcmp(d.data() + i, e.data() + i, off + len - i) == 0;
    ++i;
  }
  return true;
}

// The bytes of a state's file as a descriptor (a memfd), for the readers that take one.
futils::UniqueFd memfd_of(const Bytes& b) {
  futils::UniqueFd fd(::memfd_create("powercut", MFD_CLOEXEC));
  if (!fd.valid()) throw futils::Error("memfd_create: " + futils::last_errno().message());
  for (std::size_t done = 0; done < b.size();) {
    const ssize_t n = ::write(fd.get(), b.data() + done, b.size() - done);
    if (n <= 0) throw futils::Error("writing a memfd: " + futils::last_errno().message());
    done += static_cast<std::size_t>(n);
  }
  return fd;
}

// Invariant 9 on one image a mount trusts: its checksum file (if any) accuses no leg.
// Chunks planted different before recording (`known`) are accused rightly: not counted.
void check_checksums(const Tree& t, const SetPaths& set, const std::string& rel, CheckCounts& counts,
                     std::vector<Violation>& out, const KnownDiffs* known) {
  const Node* ck = t.find(join(set.bitmaps, core::checksum_rel(rel)));
  if (!is_regular(ck) || data_of(ck).empty()) return;
  auto p = memfd_of(data_of(t.find(join(set.primary, rel)))), s = memfd_of(data_of(t.find(join(set.secondary, rel))));
  auto m = memfd_of(data_of(t.find(join(set.bitmaps, core::bitmap_rel(rel))))), c = memfd_of(data_of(ck));
  auto a = audit_checksums(p.get(), s.get(), m.get(), c.get());
  if (!a) {
    out.push_back({"checksum-accuses-leg", rel + ": cannot audit the checksums: " + a.error().message()});
    return;
  }
  counts.cksum_entries += a->entries;
  int shown = 0;
  for (const auto& [chunk, matches] : a->accusations) {
    if (known && known->count({rel, chunk})) continue;
    ++counts.cksum_accusing;
    if (++shown <= 3)
      out.push_back({"checksum-accuses-leg", rel + ": chunk " + std::to_string(chunk) +
                                                 ": its bit is clear and its trusted checksum matches " + matches});
  }
}

}  // namespace

void CheckCounts::add(const CheckCounts& o) {
  states += o.states;
  no_set += o.no_set;
  images += o.images;
  trusted += o.trusted;
  full_bitmap += o.full_bitmap;
  full_record += o.full_record;
  no_copy += o.no_copy;
  empty += o.empty;
  differing_chunks += o.differing_chunks;
  unmarked_chunks += o.unmarked_chunks;
  known_chunks += o.known_chunks;
  acks += o.acks;
  names += o.names;
  acks_no_image += o.acks_no_image;
  cksum_entries += o.cksum_entries;
  cksum_accusing += o.cksum_accusing;
  for (const auto& [k, v] : o.full_reasons) full_reasons[k] += v;
}

SetPaths find_set(const Tree& t, const std::string& mount_path, const std::string& primary_rel) {
  SetPaths s;
  const std::string cfg_path = join(primary_rel, std::string(core::kMetaDirName) + "/" + core::kConfigName);
  const Node* cfg = t.find(cfg_path);
  if (!is_regular(cfg)) {
    s.problem = "no " + cfg_path;
    return s;
  }
  try {
    s.config = core::parse_config(std::string(data_of(cfg).begin(), data_of(cfg).end()), cfg_path);
  } catch (const std::exception& e) {
    s.problem = e.what();
    return s;
  }
  auto p = inside(s.config.primary, mount_path), q = inside(s.config.secondary, mount_path),
       b = inside(s.config.bitmap_root(), mount_path);
  if (!p || !q || !b) {
    s.problem = "the set's directories are not all under " + mount_path;
    return s;
  }
  s.primary = *p;
  s.secondary = *q;
  s.bitmaps = *b;
  s.present = true;
  return s;
}

std::vector<std::string> list_images(const Tree& t, const SetPaths& set) {
  std::vector<std::string> out;
  std::function<void(std::uint64_t, const std::string&, int)> walk = [&](std::uint64_t id, const std::string& rel,
                                                                          int depth) {
    if (depth > 64 || id >= t.nodes.size()) return;
    for (const auto& [name, child] : t.nodes[id].entries) {
      const std::string r = join(rel, name);
      if (core::reserved_name(r) || child >= t.nodes.size()) continue;
      const Node& n = t.nodes[child];
      if (n.kind == Node::Dir) walk(child, r, depth + 1);
      else if (is_regular(&n)) out.push_back(r);
    }
  };
  if (std::uint64_t root = t.lookup(set.primary)) walk(root, "", 0);
  return out;
}

void check_intent(const Tree& t, const SetPaths& set, CheckCounts& counts, std::vector<Violation>& out,
                  const KnownDiffs* known, KnownDiffs* collect) {
  for (const std::string& rel : list_images(t, set)) {
    ++counts.images;
    const Node* p = t.find(join(set.primary, rel));
    const Node* s = t.find(join(set.secondary, rel));
    const Node* bm = t.find(join(set.bitmaps, core::bitmap_rel(rel)));
    const std::uint64_t size = data_of(p).size();
    if (!is_regular(s)) {
      ++counts.no_copy;
      continue;
    }
    if (size == 0) {
      ++counts.empty;
      continue;
    }
    core::BitmapHeader h;
    if (auto why = bitmap_verdict(bm, set, size, &h); !why.empty()) {
      ++counts.full_bitmap;
      ++counts.full_reasons[why];
      continue;
    }
    // The record's proof, as the mount makes it; the file identity is taken as matching (a
    // rebuilt state has new inode numbers; a mismatch would only cost a full resync).
    auto rec = read_record(t.find(join(set.secondary, core::record_rel(rel))));
    core::CoverageFacts facts{set.config.uuid, h.image_uuid, h.events, h.events_cleared,
                              rec ? rec->file : std::nullopt};
    if (!core::why_not_covered(rec, facts).empty()) {
      ++counts.full_record;
      continue;
    }
    ++counts.trusted;
    const std::uint64_t cs = h.chunk_size;
    const std::uint64_t bits = std::min(h.bit_count(), (size + cs - 1) / cs);
    const std::uint64_t past_cover = size > h.sync_size ? h.sync_size / cs : UINT64_MAX;  // dirty at open
    std::uint64_t unmarked = 0;
    for (std::uint64_t c = 0; c * cs < size; ++c) {
      const std::uint64_t len = std::min(cs, size - c * cs);
      if (same_range(data_of(p), data_of(s), c * cs, len)) continue;
      ++counts.differing_chunks;
      if (c >= past_cover || (c < bits && bit(data_of(bm), c))) continue;
      if (collect) {
        collect->insert({rel, c});
        continue;
      }
      if (known && known->count({rel, c})) {
        ++counts.known_chunks;
        continue;
      }
      ++counts.unmarked_chunks;
      if (++unmarked <= 3)
        out.push_back({"intent-before-data",
                       rel + ": chunk " + std::to_string(c) + " differs between the legs, its bit is clear in a "
                       "trusted bitmap (events " + std::to_string(h.events) + ", state " +
                       core::state_string(h.state) + "; inodes: primary #" + std::to_string(t.lookup(join(set.primary, rel))) +
                       ", secondary #" + std::to_string(t.lookup(join(set.secondary, rel))) + ", bitmap #" +
                       std::to_string(t.lookup(join(set.bitmaps, core::bitmap_rel(rel)))) + ", record #" +
                       std::to_string(t.lookup(join(set.secondary, core::record_rel(rel)))) + ")"});
    }
    if (!collect) check_checksums(t, set, rel, counts, out, known);
  }
}

AckChecker::AckChecker(const Model& m, const std::string& primary_rel) : m_(m) {
  const auto& recs = m.records();
  Tree names = m.base();  // the namespace as it really was at each mark
  for (std::size_t i = m.first_op(); i < recs.size(); ++i) {
    const Record& r = recs[i];
    if (r.op == Op::write && !r.data.empty()) {
      for (std::uint64_t b = r.a / 4096; b * 4096 < r.a + r.data.size(); ++b) writes_[{r.id, b}].push_back(i);
    } else if (r.op == Op::truncate || (r.op == Op::fallocate && (r.a & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE |
                                                                          FALLOC_FL_COLLAPSE_RANGE)))) {
      cuts_[r.id].push_back(i);
    } else if (is_namespace(r.op)) {
      m.apply_record(names, r);
    } else if (r.op == Op::mark) {
      std::size_t pos = 0;
      while (pos < r.name1.size()) {
        std::size_t nl = r.name1.find('\n', pos);
        if (nl == std::string::npos) nl = r.name1.size();
        const std::string line = r.name1.substr(pos, nl - pos);
        pos = nl + 1;
        char what[4096];
        unsigned long long blk = 0, gen = 0;
        if (line.size() >= sizeof what) continue;
        if (std::sscanf(line.c_str(), "ack %4095s %llu %llu", what, &blk, &gen) == 3) {
          if (std::uint64_t id = names.lookup(join(primary_rel, what)))
            acks_.push_back({i, id, blk, gen, what});
        } else if (std::sscanf(line.c_str(), "exists %4095s", what) == 1) {
          exists_.emplace_back(i, what);
        }
      }
    }
  }
}

namespace {

// Every reachable node's path (the first found).
std::map<std::uint64_t, std::string> paths_of(const Tree& t) {
  std::map<std::uint64_t, std::string> out;
  std::function<void(std::uint64_t, const std::string&, int)> walk = [&](std::uint64_t id, const std::string& p, int depth) {
    if (depth > 64 || id >= t.nodes.size() || !out.emplace(id, p).second) return;
    for (const auto& [name, child] : t.nodes[id].entries) walk(child, join(p, name), depth + 1);
  };
  walk(t.root, "", 0);
  return out;
}

// A truncate, punch, zero-range or collapse of `r` that leaves block `blk` reading zeros.
bool zeroes_block(const Record& r, std::uint64_t blk) {
  if (r.op == Op::truncate) return r.a < (blk + 1) * 4096;
  if (r.a & FALLOC_FL_COLLAPSE_RANGE) return r.b < (blk + 1) * 4096;
  return r.b <= blk * 4096 && r.b + r.c >= (blk + 1) * 4096;
}

}  // namespace

void AckChecker::check(const Tree& content, const Tree& state, std::size_t crash, CheckCounts& counts,
                       std::vector<Violation>& out) const {
  for (const auto& [at, path] : exists_) {
    if (at >= crash) break;
    ++counts.names;
    if (!content.find(path)) out.push_back({"durable-name", path + " was made durable (a directory fsync returned) and is gone"});
  }
  // The highest acknowledged generation of each (inode, block).
  std::map<std::pair<std::uint64_t, std::uint64_t>, const Ack*> acked;
  for (const Ack& a : acks_) {
    if (a.at >= crash) break;
    const Ack*& cur = acked[{a.id, a.block}];
    if (!cur || a.gen > cur->gen) cur = &a;
  }
  const auto paths = paths_of(state);
  std::size_t lost = 0;
  for (const auto& [key, ack] : acked) {
    const auto& [id, blk] = key;
    auto where = paths.find(id);
    if (where == paths.end()) {  // its name did not survive, or it was removed
      ++counts.acks_no_image;
      continue;
    }
    ++counts.acks;
    // Candidates: every logged write of the whole block with a stamp of generation >= gen.
    std::vector<const unsigned char*> cands;
    std::size_t acked_write = SIZE_MAX;
    if (auto it = writes_.find(key); it != writes_.end()) {
      for (std::size_t i : it->second) {
        if (i >= crash) break;
        const Record& w = m_.records()[i];
        if (w.a > blk * 4096 || w.a + w.data.size() < (blk + 1) * 4096) continue;
        const unsigned char* d = w.data.data() + (blk * 4096 - w.a);
        std::uint64_t sb = 0, sg = 0;
        std::memcpy(&sb, d + 8, 8);
        std::memcpy(&sg, d + 16, 8);
        if (sb != blk || sg < ack->gen) continue;
        cands.push_back(d);
        if (sg == ack->gen) acked_write = std::min(acked_write, i);
      }
    }
    static const unsigned char zeros[4096] = {};
    std::deque<std::array<unsigned char, 4096>> cut_tails;  // a truncate inside the block: data, then zeros
    if (auto it = cuts_.find(id); it != cuts_.end() && acked_write != SIZE_MAX)
      for (std::size_t i : it->second) {
        if (i <= acked_write || i >= crash) continue;
        const Record& r = m_.records()[i];
        if (!zeroes_block(r, blk)) continue;
        cands.push_back(zeros);
        // A size inside the block, not on a 512-byte boundary, leaves a sector that is
        // part written data and part zeros: one candidate per write candidate so far.
        if (r.op == Op::truncate && r.a > blk * 4096) {
          const std::size_t keep = r.a - blk * 4096, n = cands.size();
          for (std::size_t k = 0; k < n; ++k) {
            if (cands[k] == zeros) continue;
            auto& t = cut_tails.emplace_back();
            std::memcpy(t.data(), cands[k], keep);
            std::memset(t.data() + keep, 0, t.size() - keep);
            cands.push_back(t.data());
          }
        }
      }
    const Node* n = content.find(where->second);
    const Bytes* b = n && n->kind == Node::File ? n->data.get() : nullptr;
    bool ok = b && acked_write != SIZE_MAX;
    for (std::uint64_t s = 0; ok && s < 8; ++s) {
      unsigned char have[512] = {};
      const std::uint64_t off = blk * 4096 + s * 512;
      if (off < b->size()) std::memcpy(have, b->data() + off, std::min<std::size_t>(512, b->size() - off));
      ok = std::any_of(cands.begin(), cands.end(), [&](const unsigned char* c) { return !std::memcmp(have, c + s * 512, 512); });
    }
    if (!ok && ++lost <= 3)
      out.push_back({"acknowledged-write", where->second + " (" + ack->rel + " when acknowledged): block " +
                                               std::to_string(blk) + " acknowledged at generation " +
                                               std::to_string(ack->gen) + " does not read back" +
                                               (acked_write == SIZE_MAX ? " (no logged write of that generation)" : "")});
  }
}

void check_legs_identical(const Tree& t, const SetPaths& set, std::vector<Violation>& out) {
  for (const std::string& rel : list_images(t, set)) {
    const Node* p = t.find(join(set.primary, rel));
    const Node* s = t.find(join(set.secondary, rel));
    if (!is_regular(s)) {
      out.push_back({"legs-identical", rel + ": no secondary copy after recovery"});
      continue;
    }
    if (data_of(p) != data_of(s)) {
      std::uint64_t first = 0;
      while (first < std::min(data_of(p).size(), data_of(s).size()) && data_of(p)[first] == data_of(s)[first]) ++first;
      out.push_back({"legs-identical", rel + ": the legs differ after recovery (sizes " +
                                           std::to_string(data_of(p).size()) + " and " +
                                           std::to_string(data_of(s).size()) + ", first difference at byte " +
                                           std::to_string(first) + ")"});
    }
  }
}

}  // namespace fmtest
