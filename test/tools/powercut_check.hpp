// test/tools/powercut_check.hpp — the checks fm_powercut runs on a crash state, and the
// state's trip to and from a real directory.
//
//   intent before data (offline, every state): for every image of the set, every chunk
//     where primary and secondary differ has its bit set in the bitmap the state holds — or
//     that bitmap is one a mount refuses (missing, torn header, another set's, stale,
//     implausible, short bits: a full resync), or the secondary's record does not prove
//     coverage (a full resync too; core::why_not_covered), or there is no secondary copy
//     (a full copy). A trusted bitmap that misses a difference is a violation;
//   acknowledged writes (every state; after recovery again): each block the load marked
//     "ack IMAGE BLOCK GEN" before the crash point holds, in every 512-byte sector, the
//     bytes of that acknowledged write or of a later write of the same block (a later
//     unacknowledged write may be torn over it), read from the primary;
//   after recovery (a sample of states, see fm_powercut): the legs of every image are
//     byte-identical, and the acknowledged writes read back.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
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
                no_copy = 0, empty = 0, differing_chunks = 0, unmarked_chunks = 0, acks = 0,
                acks_no_image = 0;
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

void check_intent(const Tree& t, const SetPaths& set, CheckCounts& counts, std::vector<Violation>& out);

// Acknowledged writes, from the marks of the model's log before `crash`. `content` is the
// tree read (the state, or the recovered directory); `ids` is the state's tree, whose node
// ids name the log's writes.
class AckChecker {
 public:
  explicit AckChecker(const Model& m);
  void check(const Tree& content, const Tree& ids, const SetPaths& set, std::size_t crash, CheckCounts& counts,
             std::vector<Violation>& out) const;

 private:
  const Model& m_;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<std::size_t>> writes_;  // (id, block) -> records
};

// After recovery: both legs of every image are byte-identical.
void check_legs_identical(const Tree& t, const SetPaths& set, std::vector<Violation>& out);

// Writes `t` into DIR (which must not be a mount point), removing what DIR held first.
void materialize(const Tree& t, const std::string& dir);
// Reads DIR into a tree (fresh ids).
Tree load_tree(const std::string& dir);
// Differences between two trees (names, kinds, contents, modes), at most `max` lines.
std::vector<std::string> diff_trees(const Tree& a, const Tree& b, std::size_t max = 20);

}  // namespace fmtest
