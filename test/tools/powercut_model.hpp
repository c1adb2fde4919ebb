// test/tools/powercut_model.hpp — the crash model of fm_powercut: which states a power cut
// can leave, given a snapshot of the recorder's root taken before recording and the op log
// (test/tools/oplog.hpp) of everything done to it since.
//
// The model (docs/reliability.md §9 argues it) at a crash point p (the first p records
// happened, the rest did not):
//   * data ops (write, truncate, fallocate) of inode X followed, before p, by an fsync or
//     fdatasync of X are there ("covered"); the others may each be there or not, and a write
//     that is there may be torn: any subset of its 4 KiB blocks, or of its 512 B sectors;
//   * namespace ops (create, mkdir, unlink, rmdir, rename, link, symlink) are per directory
//     an ordered prefix: of the ops touching directory D, some prefix survives, and it holds
//     at least every op followed before p by an fsync of D (a rename: of its destination
//     directory). A rename touches two directories and survives in both or in neither. The
//     strict model: an fsync of a file does not make its name durable;
//   * what is not reachable from the root (a file whose create did not survive, a directory
//     whose mkdir did not) is gone, with its data;
//   * chmod is applied (modes do not matter to the checks; the daemon refuses unsafe ones).
// Every state is a pure function of (log, snapshot, state seed): the same seed builds the
// same state again.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "test/tools/oplog.hpp"

namespace fmtest {

using Bytes = std::vector<unsigned char>;

// The whole content of the regular file open on FD (WHAT names it in errors; at most 1 GiB:
// the model holds files in memory). Throws std::runtime_error.
Bytes read_fd(int fd, const std::string& what);

struct Node {
  enum Kind { None, File, Dir, Symlink } kind = None;
  std::uint32_t mode = 0;
  std::shared_ptr<const Bytes> data = std::make_shared<const Bytes>();  // copy on write
  std::map<std::string, std::uint64_t> entries;                        // Dir
  std::string target;                                                  // Symlink
  Bytes& mut();  // the data, copied first if shared
};

// A file system state: nodes by recorder id; node 1 (or the first base) is the root.
struct Tree {
  std::vector<Node> nodes;
  std::uint64_t root = 0;
  // The node at PATH ("primary/disk.img"; "" = root), or 0.
  std::uint64_t lookup(const std::string& path) const;
  const Node* find(const std::string& path) const;
  Node& node(std::uint64_t id);
};

// How a state's optional ops were chosen, for the figures.
struct StateChoice {
  std::uint64_t seed = 0;
  std::size_t crash = 0;          // records [0, crash) happened
  int data_mode = 0;              // 0 none, 1 all, 2 random, 3 per file, 4 prefix per file
  int ns_mode = 0;                // 0 min, 1 max, 2 random
  std::size_t optional_data = 0;  // uncovered data ops before the crash
  std::size_t kept_data = 0, torn = 0;
  std::size_t optional_ns = 0, kept_ns = 0;
  std::string describe() const;
};

class Model {
 public:
  // Reads the log and the base tree (file contents from SNAPSHOT, "" = every base file
  // empty). Throws std::runtime_error.
  Model(const std::string& log_path, const std::string& snapshot);

  const std::vector<Record>& records() const { return recs_; }
  std::size_t size() const { return recs_.size(); }
  // Positions worth cutting at more often: right after each sync, and right before and
  // after each write to a file that also receives fsyncs.
  const std::vector<std::size_t>& hot_points() const { return hot_; }

  // The state for `seed` (crash point and choices drawn from it).
  Tree build(std::uint64_t seed, StateChoice* choice) const;
  // No record applied: the snapshot as the recorder found it.
  const Tree& base() const { return base_; }
  // Every record applied (what the recorder's root holds after the log).
  Tree build_all() const;
  // Applies one record to `t` as it happened (no tearing).
  void apply_record(Tree& t, const Record& r) const { apply(t, r, nullptr, 0); }
  // The index of the first record after the initial BASE records.
  std::size_t first_op() const { return first_op_; }

 private:
  void analyse();
  void apply(Tree& t, const Record& r, std::mt19937_64* tear_rng, int tear) const;
  Tree apply_choice(const std::vector<char>& keep, const std::vector<int>& tear, std::uint64_t tear_seed) const;

  std::vector<Record> recs_;
  std::size_t first_op_ = 0;  // records before it are the initial BASE records
  Tree base_;
  std::uint64_t max_id_ = 0;
  // next_cover_[i]: the first record after i that makes record i durable (SIZE_MAX: none)
  std::vector<std::size_t> next_cover_;
  // per directory: the namespace records touching it, in order
  std::map<std::uint64_t, std::vector<std::size_t>> dir_ops_;
  // per namespace record: its directories and its position in each directory's list
  std::vector<std::vector<std::pair<std::uint64_t, std::size_t>>> ns_pos_;
  std::vector<std::size_t> hot_;
};

// splitmix64: the state seed of state `index` of a run seeded `seed`.
std::uint64_t state_seed(std::uint64_t seed, std::uint64_t index);

}  // namespace fmtest
