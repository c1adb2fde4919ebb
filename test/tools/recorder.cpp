// test/tools/recorder.cpp — see recorder.hpp.
#include "test/tools/recorder.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace fmtest {

std::pair<std::string, std::string> split_path(const std::string& rel) {
  auto slash = rel.rfind('/');
  if (slash == std::string::npos) return {".", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

Recorder::Recorder(int backing_fd, const std::string& log_path) : bfd_(backing_fd), log_(log_path) {
  std::lock_guard lk(mu);
  struct stat st {};
  ::fstat(bfd_, &st);
  const std::uint64_t root = new_id(st.st_ino);
  log(Op::base, root, 0, {}, st.st_mode, 0);
  scan(".", root);
  log_.flush();
}

void Recorder::log(Op op, std::uint64_t id, std::uint64_t id2, std::string name1, std::uint64_t a, std::uint64_t b,
                   std::uint64_t c, std::uint64_t id3, std::string name2) {
  Record r;
  r.op = op;
  r.id = id;
  r.id2 = id2;
  r.id3 = id3;
  r.a = a;
  r.b = b;
  r.c = c;
  r.name1 = std::move(name1);
  r.name2 = std::move(name2);
  log_.append(std::move(r));
}

std::uint64_t Recorder::id_of(const struct stat& st, const std::string& rel) {
  if (auto it = ids_.find(st.st_ino); it != ids_.end()) return it->second;
  std::fprintf(stderr, "fm_recordfs: %s was not seen before; recorded as found\n", rel.c_str());
  const std::uint64_t id = new_id(st.st_ino);
  std::uint64_t parent_id = 0;
  std::string name;
  if (rel != ".") {
    auto [parent, n] = split_path(rel);
    parent_id = id_of_path(parent);
    name = n;
  }
  log(Op::base, id, parent_id, name, st.st_mode, static_cast<std::uint64_t>(st.st_size));
  return id;
}

std::uint64_t Recorder::id_of_path(const std::string& rel) {
  struct stat st {};
  if (::fstatat(bfd_, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  return id_of(st, rel);
}

std::uint64_t Recorder::id_of_fd(int fd, const std::string& rel) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  return id_of(st, rel);
}

// BASE records for everything beneath REL, depth first.
void Recorder::scan(const std::string& rel, std::uint64_t dir_id) {
  int fd = ::openat(bfd_, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return;
  }
  std::vector<std::pair<std::string, struct stat>> entries;
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) entries.emplace_back(e->d_name, st);
  }
  ::closedir(d);
  for (auto& [name, st] : entries) {
    auto it = ids_.find(st.st_ino);
    const std::uint64_t id = it != ids_.end() ? it->second : new_id(st.st_ino);  // hard links: one id
    log(Op::base, id, dir_id, name, st.st_mode, static_cast<std::uint64_t>(st.st_size));
    if (S_ISDIR(st.st_mode)) scan(rel == "." ? name : rel + "/" + name, id);
  }
}

}  // namespace fmtest
