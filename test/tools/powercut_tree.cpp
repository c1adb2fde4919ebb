// test/tools/powercut_tree.cpp — see powercut_tree.hpp.
#include "test/tools/powercut_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>

namespace fmtest {

namespace {

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : b.empty() ? a : a + "/" + b; }

}  // namespace

namespace {

void remove_children(int dfd) {
  DIR* d = ::fdopendir(::dup(dfd));
  if (!d) throw std::runtime_error(std::string("opendir: ") + std::strerror(errno));
  std::vector<std::pair<std::string, bool>> names;
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    struct stat st {};
    if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) names.emplace_back(e->d_name, S_ISDIR(st.st_mode));
  }
  ::closedir(d);
  for (auto& [name, dir] : names) {
    if (dir) {
      int sub = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) throw std::runtime_error(name + ": " + std::strerror(errno));
      remove_children(sub);
      ::close(sub);
    }
    if (::unlinkat(dfd, name.c_str(), dir ? AT_REMOVEDIR : 0) != 0)
      throw std::runtime_error("cannot remove " + name + ": " + std::strerror(errno));
  }
}

// Writes node `id` as NAME in the directory `dfd`, which is `rel` beneath `top`.
void write_node(const Tree& t, std::uint64_t id, int top, int dfd, const std::string& rel, const std::string& name,
                std::map<std::uint64_t, std::string>& seen, int depth) {
  const Node& n = t.nodes[id];
  if (depth > 64) return;
  if (n.kind == Node::File) {
    if (auto it = seen.find(id); it != seen.end()) {  // a second name of the same inode
      ::linkat(top, it->second.c_str(), dfd, name.c_str(), 0);
      return;
    }
    int fd = ::openat(dfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error(name + ": " + std::strerror(errno));
    const Bytes& b = *n.data;
    static const unsigned char zero[4096] = {};
    for (std::size_t off = 0; off < b.size(); off += 4096) {  // sparse: zero blocks stay holes
      const std::size_t len = std::min<std::size_t>(4096, b.size() - off);
      if (len == 4096 && !std::memcmp(b.data() + off, zero, 4096)) continue;
      if (::pwrite(fd, b.data() + off, len, static_cast<off_t>(off)) != static_cast<ssize_t>(len))
        throw std::runtime_error(name + ": write: " + std::strerror(errno));
    }
    if (::ftruncate(fd, static_cast<off_t>(b.size())) != 0) throw std::runtime_error(name + ": truncate");
    ::fchmod(fd, n.mode & 07777);
    ::close(fd);
    seen[id] = join(rel, name);
  } else if (n.kind == Node::Symlink) {
    ::symlinkat(n.target.c_str(), dfd, name.c_str());
  } else if (n.kind == Node::Dir) {
    if (::mkdirat(dfd, name.c_str(), 0700) != 0) throw std::runtime_error(name + ": mkdir: " + std::strerror(errno));
    int sub = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) throw std::runtime_error(name + ": open: " + std::strerror(errno));
    for (const auto& [child, cid] : n.entries)
      if (cid < t.nodes.size()) write_node(t, cid, top, sub, join(rel, name), child, seen, depth + 1);
    ::fchmod(sub, n.mode & 07777);
    ::close(sub);
  }
}

void read_dir(Tree& t, std::uint64_t id, int dfd, std::map<std::pair<dev_t, ino_t>, std::uint64_t>& inos) {
  DIR* d = ::fdopendir(::dup(dfd));
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
  ::closedir(d);
  for (const std::string& name : names) {
    struct stat st {};
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    auto [it, fresh] = inos.emplace(std::make_pair(st.st_dev, st.st_ino), t.nodes.size());
    const std::uint64_t cid = it->second;
    t.node(id).entries[name] = cid;
    if (!fresh) continue;
    Node& n = t.node(cid);
    n.mode = st.st_mode;
    if (S_ISDIR(st.st_mode)) {
      n.kind = Node::Dir;
      int sub = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) {
        read_dir(t, cid, sub, inos);
        ::close(sub);
      }
    } else if (S_ISLNK(st.st_mode)) {
      t.node(cid).kind = Node::Symlink;
      char buf[PATH_MAX];
      ssize_t k = ::readlinkat(dfd, name.c_str(), buf, sizeof buf);
      if (k > 0) t.node(cid).target.assign(buf, static_cast<std::size_t>(k));
    } else {
      t.node(cid).kind = Node::File;
      if (!S_ISREG(st.st_mode)) continue;
      int fd = ::openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) continue;
      try {
        t.node(cid).data = std::make_shared<const Bytes>(read_fd(fd, name));
      } catch (...) {
        ::close(fd);
        throw;
      }
      ::close(fd);
    }
  }
}

}  // namespace

void materialize(const Tree& t, const std::string& dir) {
  struct stat st {}, up {};
  if (::stat(dir.c_str(), &st) != 0 || ::stat((dir + "/..").c_str(), &up) != 0)
    throw std::runtime_error(dir + ": " + std::strerror(errno));
  if (st.st_dev != up.st_dev) throw std::runtime_error(dir + ": is a mount point (is the recorder still mounted?)");
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) throw std::runtime_error(dir + ": " + std::strerror(errno));
  remove_children(dfd);
  std::map<std::uint64_t, std::string> seen;
  const Node& root = t.nodes[t.root];
  for (const auto& [name, id] : root.entries)
    if (id < t.nodes.size()) write_node(t, id, dfd, dfd, "", name, seen, 0);
  ::fchmod(dfd, root.mode & 07777);
  ::close(dfd);
}

Tree load_tree(const std::string& dir) {
  Tree t;
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) throw std::runtime_error(dir + ": " + std::strerror(errno));
  struct stat st {};
  ::fstat(dfd, &st);
  t.root = 1;
  t.node(1).kind = Node::Dir;
  t.node(1).mode = st.st_mode;
  std::map<std::pair<dev_t, ino_t>, std::uint64_t> inos{{{st.st_dev, st.st_ino}, 1}};
  read_dir(t, 1, dfd, inos);
  ::close(dfd);
  return t;
}

std::vector<std::string> diff_trees(const Tree& a, const Tree& b, std::size_t max) {
  std::vector<std::string> out;
  std::function<void(std::uint64_t, std::uint64_t, const std::string&)> cmp = [&](std::uint64_t x, std::uint64_t y,
                                                                                   const std::string& path) {
    if (out.size() >= max) return;
    const Node& n = a.nodes[x];
    const Node& m = b.nodes[y];
    if (n.kind != m.kind) return out.push_back(path + ": kind differs");
    if ((n.mode & 07777) != (m.mode & 07777) && n.kind != Node::Symlink)
      out.push_back(path + ": mode " + std::to_string(n.mode & 07777) + " vs " + std::to_string(m.mode & 07777));
    if (n.kind == Node::File && *n.data != *m.data)
      out.push_back(path + ": contents differ (" + std::to_string(n.data->size()) + " vs " +
                    std::to_string(m.data->size()) + " bytes)");
    if (n.kind == Node::Symlink && n.target != m.target) out.push_back(path + ": symlink target differs");
    if (n.kind != Node::Dir) return;
    for (const auto& [name, id] : n.entries)
      if (!m.entries.count(name)) out.push_back(join(path, name) + ": only in the first");
    for (const auto& [name, id] : m.entries)
      if (!n.entries.count(name)) out.push_back(join(path, name) + ": only in the second");
    for (const auto& [name, id] : n.entries)
      if (auto it = m.entries.find(name); it != m.entries.end()) cmp(id, it->second, join(path, name));
  };
  cmp(a.root, b.root, "");
  if (out.size() > max) out.resize(max);
  return out;
}

}  // namespace fmtest
