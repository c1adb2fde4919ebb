// test/tools/powercut_model.cpp — see powercut_model.hpp.
#include "test/tools/powercut_model.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <set>
#include <stdexcept>

namespace fmtest {

namespace {

constexpr std::uint64_t kMaxFile = 1ull << 30;  // the model holds files in memory

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Bytes read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  try {
    Bytes b = read_fd(fd, path);
    ::close(fd);
    return b;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

void resize_to(Bytes& b, std::uint64_t size) {
  if (size > kMaxFile) throw std::runtime_error("a file grows past the model's 1 GiB limit");
  b.resize(static_cast<std::size_t>(size), 0);
}

}  // namespace

Bytes read_fd(int fd, const std::string& what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw std::runtime_error(what + ": " + std::strerror(errno));
  if (static_cast<std::uint64_t>(st.st_size) > kMaxFile) throw std::runtime_error(what + ": larger than the model's 1 GiB limit");
  Bytes b(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < b.size()) {
    ssize_t n = ::pread(fd, b.data() + got, b.size() - got, static_cast<off_t>(got));
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  b.resize(got);
  return b;
}

Bytes& Node::mut() {
  if (data.use_count() != 1) data = std::make_shared<const Bytes>(*data);
  return const_cast<Bytes&>(*data);
}

Node& Tree::node(std::uint64_t id) {
  if (id >= nodes.size()) nodes.resize(id + 1);
  return nodes[id];
}

std::uint64_t Tree::lookup(const std::string& path) const {
  std::uint64_t cur = root;
  std::size_t pos = 0;
  while (pos < path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    const std::string part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty()) continue;
    if (cur >= nodes.size() || nodes[cur].kind != Node::Dir) return 0;
    auto it = nodes[cur].entries.find(part);
    if (it == nodes[cur].entries.end()) return 0;
    cur = it->second;
  }
  return cur;
}

const Node* Tree::find(const std::string& path) const {
  const std::uint64_t id = lookup(path);
  return id && id < nodes.size() && nodes[id].kind != Node::None ? &nodes[id] : nullptr;
}

std::string StateChoice::describe() const {
  static const char* dm[] = {"none", "all", "random", "per-file", "prefix"};
  static const char* nm[] = {"min", "max", "random"};
  return "crash at record " + std::to_string(crash) + ", unsynced data " + dm[data_mode] + " (" +
         std::to_string(kept_data) + "/" + std::to_string(optional_data) + " kept, " + std::to_string(torn) +
         " torn), unsynced names " + nm[ns_mode] + " (" + std::to_string(kept_ns) + "/" +
         std::to_string(optional_ns) + ")";
}

std::uint64_t state_seed(std::uint64_t seed, std::uint64_t index) { return mix(mix(seed) ^ (index * 0x632be59bd9b4e019ull)); }

Model::Model(const std::string& log_path, const std::string& snapshot) : recs_(read_log(log_path)) {
  // The base tree: every BASE record, contents from the snapshot.
  std::map<std::uint64_t, std::string> path_of;
  for (const Record& r : recs_) {
    if (r.op != Op::base) continue;
    max_id_ = std::max(max_id_, r.id);
    Node& n = base_.node(r.id);
    std::string path;
    if (r.id2 == 0) {
      base_.root = r.id;
    } else {
      path = path_of.count(r.id2) && !path_of[r.id2].empty() ? path_of[r.id2] + "/" + r.name1 : r.name1;
      base_.node(r.id2).entries[r.name1] = r.id;
    }
    if (n.kind != Node::None) continue;  // a second name of a hard link
    path_of[r.id] = path;
    n.mode = static_cast<std::uint32_t>(r.a);
    if (S_ISDIR(r.a)) {
      n.kind = Node::Dir;
    } else if (S_ISLNK(r.a)) {
      n.kind = Node::Symlink;
      char buf[PATH_MAX];
      ssize_t k = snapshot.empty() ? -1 : ::readlink((snapshot + "/" + path).c_str(), buf, sizeof buf);
      if (k > 0) n.target.assign(buf, static_cast<std::size_t>(k));
    } else {
      n.kind = Node::File;
      if (!snapshot.empty() && S_ISREG(r.a)) n.data = std::make_shared<const Bytes>(read_file(snapshot + "/" + path));
      if (n.data->size() != r.b)
        throw std::runtime_error(snapshot + "/" + path + ": " + std::to_string(n.data->size()) +
                                 " bytes in the snapshot, " + std::to_string(r.b) +
                                 " when the recorder started: not the snapshot of this log");
    }
  }
  if (!base_.root) throw std::runtime_error(log_path + ": no root record");
  while (first_op_ < recs_.size() && recs_[first_op_].op == Op::base) ++first_op_;
  for (const Record& r : recs_) max_id_ = std::max({max_id_, r.id, r.id2, r.id3, r.b * (r.op == Op::rename)});
  base_.node(max_id_);
  analyse();
}

void Model::analyse() {
  const std::size_t n = recs_.size();
  next_cover_.assign(n, SIZE_MAX);
  ns_pos_.assign(n, {});
  std::map<std::uint64_t, std::size_t> next_fsync, next_fsyncdir;
  for (std::size_t i = n; i-- > first_op_;) {
    const Record& r = recs_[i];
    if (r.op == Op::fsync) {
      next_fsync[r.id] = i;
    } else if (r.op == Op::fsyncdir) {
      next_fsyncdir[r.id] = i;
    } else if (is_data(r.op)) {
      if (auto it = next_fsync.find(r.id); it != next_fsync.end()) next_cover_[i] = it->second;
    } else if (is_namespace(r.op)) {
      const std::uint64_t dir = r.op == Op::rename ? r.id3 : r.id2;
      if (auto it = next_fsyncdir.find(dir); it != next_fsyncdir.end()) next_cover_[i] = it->second;
    }
  }
  for (std::size_t i = first_op_; i < n; ++i) {
    const Record& r = recs_[i];
    if (!is_namespace(r.op)) continue;
    std::vector<std::uint64_t> dirs{r.id2};
    if (r.op == Op::rename && r.id3 != r.id2) dirs.push_back(r.id3);
    for (std::uint64_t d : dirs) {
      auto& list = dir_ops_[d];
      ns_pos_[i].emplace_back(d, list.size());
      list.push_back(i);
    }
  }
  std::set<std::size_t> synced_files;
  for (std::size_t i = first_op_; i < n; ++i)
    if (recs_[i].op == Op::fsync) synced_files.insert(recs_[i].id);
  std::set<std::size_t> hot;
  for (std::size_t i = first_op_; i < n; ++i) {
    const Record& r = recs_[i];
    if (r.op == Op::fsync || r.op == Op::fsyncdir || r.op == Op::rename ||
        (is_data(r.op) && synced_files.count(r.id))) {
      hot.insert(i);
      hot.insert(i + 1);
    }
  }
  hot_.assign(hot.begin(), hot.end());
}

void Model::apply(Tree& t, const Record& r, std::mt19937_64* tear_rng, int tear) const {
  switch (r.op) {
    case Op::create:
    case Op::mkdir:
    case Op::symlink: {
      Node& n = t.node(r.id);
      n = Node{};
      n.kind = r.op == Op::mkdir ? Node::Dir : r.op == Op::symlink ? Node::Symlink : Node::File;
      n.mode = static_cast<std::uint32_t>(r.a);
      n.target = r.name2;
      t.node(r.id2).entries[r.name1] = r.id;
      break;
    }
    case Op::unlink:
    case Op::rmdir: {
      auto& e = t.node(r.id2).entries;
      if (auto it = e.find(r.name1); it != e.end() && it->second == r.id) e.erase(it);
      break;
    }
    case Op::link: t.node(r.id2).entries[r.name1] = r.id; break;
    case Op::rename: {
      auto& from = t.node(r.id2).entries;
      auto& to = t.node(r.id3).entries;
      if (r.a & RENAME_EXCHANGE) {
        if (r.b) from[r.name1] = r.b;
        to[r.name2] = r.id;
        break;
      }
      if (auto it = from.find(r.name1); it != from.end() && it->second == r.id) from.erase(it);
      to[r.name2] = r.id;
      break;
    }
    case Op::write: {
      Bytes& b = t.node(r.id).mut();
      const std::uint64_t end = r.a + r.data.size();
      if (b.size() < end) resize_to(b, end);
      if (!tear) {
        std::memcpy(b.data() + r.a, r.data.data(), r.data.size());
        break;
      }
      const std::uint64_t s = tear == 1 ? 4096 : 512;
      for (std::uint64_t blk = r.a / s * s; blk < end; blk += s) {
        const std::uint64_t lo = std::max(blk, r.a), hi = std::min(blk + s, end);
        if ((*tear_rng)() & 1) std::memcpy(b.data() + lo, r.data.data() + (lo - r.a), hi - lo);
      }
      break;
    }
    case Op::truncate: resize_to(t.node(r.id).mut(), r.a); break;
    case Op::fallocate: {
      Bytes& b = t.node(r.id).mut();
      const int mode = static_cast<int>(r.a);
      const std::uint64_t off = r.b, len = r.c, size = b.size();
      if (mode & FALLOC_FL_COLLAPSE_RANGE) {
        if (off + len <= size) b.erase(b.begin() + static_cast<std::ptrdiff_t>(off), b.begin() + static_cast<std::ptrdiff_t>(off + len));
      } else if (mode & FALLOC_FL_INSERT_RANGE) {
        if (off <= size) b.insert(b.begin() + static_cast<std::ptrdiff_t>(off), static_cast<std::size_t>(len), 0);
      } else if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        const std::uint64_t end = (mode & FALLOC_FL_KEEP_SIZE) ? std::min(size, off + len) : off + len;
        if (end > size) resize_to(b, end);
        if (end > off) std::memset(b.data() + off, 0, end - off);
      } else if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > size) {
        resize_to(b, off + len);
      }
      break;
    }
    case Op::chmod: {
      Node& n = t.node(r.id);
      n.mode = (n.mode & ~07777u) | static_cast<std::uint32_t>(r.a & 07777);
      break;
    }
    default: break;
  }
}

Tree Model::apply_choice(const std::vector<char>& keep, const std::vector<int>& tear, std::uint64_t tear_seed) const {
  Tree t = base_;
  for (std::size_t i = first_op_; i < keep.size(); ++i) {
    if (!keep[i]) continue;
    std::mt19937_64 rng(mix(tear_seed ^ i));
    apply(t, recs_[i], &rng, tear[i]);
  }
  return t;
}

Tree Model::build_all() const {
  std::vector<char> keep(recs_.size(), 1);
  std::vector<int> tear(recs_.size(), 0);
  return apply_choice(keep, tear, 0);
}

Tree Model::build(std::uint64_t seed, StateChoice* choice) const {
  std::mt19937_64 rng(seed);
  StateChoice c;
  c.seed = seed;
  const std::size_t span = recs_.size() - first_op_;
  if (!hot_.empty() && (rng() & 1)) c.crash = std::min(recs_.size(), hot_[rng() % hot_.size()]);
  else c.crash = first_op_ + static_cast<std::size_t>(rng() % (span + 1));
  c.data_mode = static_cast<int>(rng() % 5);
  c.ns_mode = static_cast<int>(rng() % 3);
  const std::uint64_t tear_seed = rng();
  std::vector<char> keep(c.crash, 0);
  std::vector<int> tear(c.crash, 0);

  // Data: covered ops stay; the others by the data mode.
  auto file_pick = [&](std::uint64_t id, std::uint64_t salt) { return mix(seed ^ mix(id * 31 + salt)); };
  auto coin = [&](std::uint64_t x, unsigned pct) { return x % 100 < pct; };
  for (std::size_t i = first_op_; i < c.crash; ++i) {
    const Record& r = recs_[i];
    if (r.op == Op::chmod) keep[i] = 1;
    if (!is_data(r.op)) continue;
    if (next_cover_[i] < c.crash) {
      keep[i] = 1;
      continue;
    }
    ++c.optional_data;
    int mode = c.data_mode;
    if (mode == 3) mode = static_cast<int>(file_pick(r.id, 1) % 3);  // none, all, random
    bool k = false;
    if (mode == 1) k = true;
    else if (mode == 2) k = rng() & 1;
    else if (mode == 4) k = (i - first_op_) * 100 < (file_pick(r.id, 2) % 101) * (c.crash - first_op_);
    if (k && r.op == Op::write && (mode == 2 || mode == 4) && coin(rng(), 30)) {
      tear[i] = (rng() & 1) ? 1 : 2;
      ++c.torn;
    }
    keep[i] = k;
    c.kept_data += k;
  }

  // Names: a prefix per directory, at least its covered ops; renames in both or neither.
  std::map<std::uint64_t, std::size_t> avail, lo, cut;
  for (const auto& [d, list] : dir_ops_) {
    const std::size_t m = static_cast<std::size_t>(std::lower_bound(list.begin(), list.end(), c.crash) - list.begin());
    if (m == 0) continue;
    avail[d] = m;
    std::size_t need = 0;
    for (std::size_t k = 0; k < m; ++k)
      if (next_cover_[list[k]] < c.crash) need = k + 1;
    lo[d] = need;
  }
  std::deque<std::uint64_t> work;
  for (auto& [d, m] : lo) work.push_back(d);
  while (!work.empty()) {  // raise: an op inside one directory's minimum is in all of them
    const std::uint64_t d = work.front();
    work.pop_front();
    const auto& list = dir_ops_.at(d);
    for (std::size_t k = 0; k < lo[d]; ++k)
      for (const auto& [e, pos] : ns_pos_[list[k]])
        if (e != d && lo[e] <= pos) {
          lo[e] = pos + 1;
          work.push_back(e);
        }
  }
  for (auto& [d, m] : avail) {
    const std::size_t a = lo[d];
    cut[d] = c.ns_mode == 0 ? a : c.ns_mode == 1 ? m : a + static_cast<std::size_t>(rng() % (m - a + 1));
    work.push_back(d);
  }
  while (!work.empty()) {  // lower: an op cut from one directory is cut from all of them
    const std::uint64_t d = work.front();
    work.pop_front();
    const auto& list = dir_ops_.at(d);
    for (std::size_t k = 0; k < cut[d]; ++k) {
      bool out = false;
      for (const auto& [e, pos] : ns_pos_[list[k]])
        if (e != d && pos >= cut[e]) out = true;
      if (out) {
        cut[d] = k;
        for (std::size_t j = k; j < avail[d]; ++j)
          for (const auto& [e, pos] : ns_pos_[list[j]])
            if (e != d) work.push_back(e);
        break;
      }
    }
  }
  for (std::size_t i = first_op_; i < c.crash; ++i) {
    if (!is_namespace(recs_[i].op)) continue;
    bool in = true;
    for (const auto& [d, pos] : ns_pos_[i])
      if (pos >= cut[d]) in = false;
    keep[i] = in;
    bool covered = false;
    for (const auto& [d, pos] : ns_pos_[i])
      if (pos < lo[d]) covered = true;
    if (!covered) {
      ++c.optional_ns;
      c.kept_ns += in;
    }
  }
  if (choice) *choice = c;
  return apply_choice(keep, tear, tear_seed);
}

}  // namespace fmtest
