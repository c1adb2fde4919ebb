// test/tools/powercut_check.hpp — the checks fm_powercut runs on a crash state, and the
// state's trip to and from a real directory.
//
//   intent before data (offline, every state): for every image of the set, every chunk
//     where primary and secondary differ has its bit set in the bitmap the state holds — or
//     that bitmap is one a mount refuses (missing, torn header, another set's, stale,
//     implausible, short bits: a full resync), or the secondary's record does not prove
//     coverage (a full resync too; core::why_not_covered), or there is no secondary copy
//     (a full copy). A trusted bitmap that misses a difference is a violation;
//   checksums (every state, images whose bitmap and record a mount trusts): no checksum a
//     mount would trust accuses a leg (invariant 9, test/tools/cksum_audit.hpp);
//   acknowledged writes (every state; after recovery again): each block the load marked
//     "ack IMAGE BLOCK GEN" before the crash point holds, in every 512-byte sector, the
//     bytes of that acknowledged write or of a later write of the same block (a later
//     unacknowledged write may be torn over it), read from the primary;
//   after recovery (a sample of states, see fm_powercut): the legs of every image are
//     byte-identical, and the acknowledged writes read back.
// Writing a state to a directory and reading it back: powercut_tree.hpp.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "test/tools/powercut_model.hpp"

namespace fmtest {

struct Violation {
  std::string invariant;  // "intent-before-data", "acknowledged-write", "legs-identical", ...
  std::string detail;
};

struct CheckCounts {
  std::uint64_t states = 0, no_set = 0, images = 0, trusted = 0, full_bitmap = 0, full_record = 0,
                no_copy = 0, empty = 0, differing_chunks = 0, unmarked_chunks = 0, known_chunks = 0, names = 0, acks = 0,
                acks_no_image = 0, cksum_entries = 0, cksum_accusing = 0;
  std::map<std::string, std::uint64_t> full_reasons;  // why the bitmap was refused
  void add(const CheckCounts& o);
};

// Where the set lives inside a tree (the recorder's root, mounted at `mount_path`).
struct SetPaths {
  bool present = false;  // false: no (readable) config.json in this state
  std::string problem;
  fusemirror::core::Config config;
  std::string primary, secondary, bitmaps;  // tree paths ("primary", ...)
};
SetPaths find_set(const Tree& t, const std::string& mount_path, const std::string& primary_rel);

// The images of the set: regular files under the primary, metadata excluded.
std::vector<std::string> list_images(const Tree& t, const SetPaths& set);

// (image, chunk) pairs that already differed without their bit before recording started
// (planted by a workload for check/repair): not the crash's doing, not counted again.
using KnownDiffs = std::set<std::pair<std::string, std::uint64_t>>;
// `collect`: where to put every unmarked difference instead of reporting it.
void check_intent(const Tree& t, const SetPaths& set, CheckCounts& counts, std::vector<Violation>& out,
                  const KnownDiffs* known = nullptr, KnownDiffs* collect = nullptr);

// Acknowledged writes and durable names, from the marks of the log before the crash point:
//   "ack IMAGE BLOCK GEN"  (fm_crashwriter, after its fsync returned): the block of the
//       primary inode IMAGE named when the mark was written;
//   "exists PATH"          (after a directory fsync returned): PATH, relative to the root,
//       must exist.
// An acknowledged block must hold, in each 512-byte sector, that write's bytes or those of
// a later write of the block with a higher generation (which may be torn over it), or zeros
// if a later truncate, punch or zero-range of the same inode covered it. An inode no longer
// reachable in the state (its name was never made durable, or it was removed) is skipped.
class AckChecker {
 public:
  AckChecker(const Model& m, const std::string& primary_rel);
  // `content`: the tree read (the state itself, or the directory after recovery); `state`:
  // the state's tree, whose node ids are the log's inodes (paths are looked up in it).
  void check(const Tree& content, const Tree& state, std::size_t crash, CheckCounts& counts,
             std::vector<Violation>& out) const;

 private:
  struct Ack {
    std::size_t at;  // the mark's record
    std::uint64_t id, block, gen;
    std::string rel;
  };
  const Model& m_;
  std::vector<Ack> acks_;
  std::vector<std::pair<std::size_t, std::string>> exists_;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<std::size_t>> writes_;  // (id, block) -> records
  std::map<std::uint64_t, std::vector<std::size_t>> cuts_;  // id -> truncates, punches, zero-ranges
};

// After recovery: both legs of every image are byte-identical.
void check_legs_identical(const Tree& t, const SetPaths& set, std::vector<Violation>& out);

}  // namespace fmtest
