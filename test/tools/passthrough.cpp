// test/tools/passthrough.cpp — see passthrough.hpp.
#include "test/tools/passthrough.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace fmtest::pt {

Root root;

bool open_root(const char* prog, const char* path) {
  char* real = ::realpath(path, nullptr);
  if (!real) {
    std::fprintf(stderr, "%s: %s: %s\n", prog, path, std::strerror(errno));
    return false;
  }
  root.path = real;
  std::free(real);
  root.fd = ::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root.fd < 0) {
    std::fprintf(stderr, "%s: %s: %s\n", prog, root.path.c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

const char* rel(const char* path) {
  if (!path || !path[0] || (path[0] == '/' && !path[1])) return ".";
  return path[0] == '/' ? path + 1 : path;
}

std::string abs(const char* path) { return root.path + (path && path[0] == '/' && path[1] ? path : "/"); }

int readlink(const char* path, char* buf, size_t size) {
  if (size == 0) return -EINVAL;
  ssize_t n = ::readlinkat(root.fd, rel(path), buf, size - 1);
  if (n < 0) return neg_errno();
  buf[n] = '\0';
  return 0;
}

int statfs(struct statvfs* st) { return ::fstatvfs(root.fd, st) == 0 ? 0 : neg_errno(); }

int setxattr(const char* path, const char* name, const char* value, size_t size, int flags) {
  if (!path) return -ESTALE;
  return ::lsetxattr(abs(path).c_str(), name, value, size, flags) == 0 ? 0 : neg_errno();
}

int getxattr(const char* path, const char* name, char* value, size_t size) {
  if (!path) return -ESTALE;
  ssize_t n = ::lgetxattr(abs(path).c_str(), name, value, size);
  return n < 0 ? neg_errno() : static_cast<int>(n);
}

int listxattr(const char* path, char* list, size_t size) {
  if (!path) return -ESTALE;
  ssize_t n = ::llistxattr(abs(path).c_str(), list, size);
  return n < 0 ? neg_errno() : static_cast<int>(n);
}

int removexattr(const char* path, const char* name) {
  if (!path) return -ESTALE;
  return ::lremovexattr(abs(path).c_str(), name) == 0 ? 0 : neg_errno();
}

int readdir(DIR* d, bool at_root, const char* hide, void* buf, fuse_fill_dir_t filler) {
  ::rewinddir(d);
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    if (at_root && std::strcmp(e->d_name, hide) == 0) continue;
    struct stat st {};
    st.st_ino = e->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(e->d_type));
    if (filler(buf, e->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0))) break;
    errno = 0;
  }
  return errno ? neg_errno() : 0;
}

namespace {
const char* g_control = "";
bool is_control(const char* path) { return path && std::strcmp(path, g_control) == 0; }
}  // namespace

void set_path_ops(fuse_operations& ops, const char* control) {
  g_control = control;
  ops.readlink = readlink;
  ops.statfs = [](const char*, struct statvfs* st) { return statfs(st); };
  ops.setxattr = [](const char* path, const char* name, const char* value, size_t size, int flags) {
    return is_control(path) ? -ENOTSUP : setxattr(path, name, value, size, flags);
  };
  ops.getxattr = [](const char* path, const char* name, char* value, size_t size) {
    return is_control(path) ? -ENODATA : getxattr(path, name, value, size);
  };
  ops.listxattr = [](const char* path, char* list, size_t size) { return is_control(path) ? 0 : listxattr(path, list, size); };
  ops.removexattr = [](const char* path, const char* name) { return is_control(path) ? -ENODATA : removexattr(path, name); };
}

Args parse_args(int argc, char* argv[], const std::vector<std::string>& valued) {
  Args a;
  a.fuse.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string_view s = argv[i];
    bool tool_option = false;
    for (const auto& v : valued)
      if (s == v && i + 1 < argc) {
        a.values[v] = argv[++i];
        tool_option = true;
      }
    if (tool_option) continue;
    if (s == "-o" && i + 1 < argc) {
      a.fuse.push_back(argv[i]);
      a.fuse.push_back(argv[++i]);
    } else if (!a.backing && !s.empty() && s[0] != '-') {
      a.backing = argv[i];
    } else {
      if (s == "-h" || s == "--help") a.help = true;
      a.fuse.push_back(argv[i]);
    }
  }
  return a;
}

int serve(Args& a, const fuse_operations& ops, const Session& s) {
  std::vector<std::string> extra = s.extra_args;
  for (auto& e : extra) a.fuse.push_back(e.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(a.fuse.size()), a.fuse.data());
  fuse_cmdline_opts opts{};
  if (fuse_parse_cmdline(&args, &opts) != 0) return 2;
  int res = 0;
  fuse_loop_config* lc = nullptr;
  struct fuse* f = nullptr;
  if (opts.show_version) {
    std::printf("%s, FUSE library version %s\n", s.name.c_str(), fuse_pkgversion());
    fuse_lowlevel_version();
    goto out1;
  }
  if (opts.show_help) {
    if (s.usage) s.usage();
    fuse_cmdline_help();
    fuse_lib_help(&args);
    goto out1;
  }
  if (!opts.mountpoint) {
    if (s.usage) s.usage();
    res = 2;
    goto out1;
  }
  f = fuse_new(&args, &ops, sizeof ops, nullptr);
  if (!f) {
    res = 3;
    goto out1;
  }
  if (s.handle) *s.handle = f;
  if (fuse_mount(f, opts.mountpoint) != 0) {
    res = 4;
    goto out2;
  }
  if (s.mounted) s.mounted(f);
  if (fuse_daemonize(opts.foreground) != 0) {
    res = 5;
    goto out3;
  }
  if (fuse_set_signal_handlers(fuse_get_session(f)) != 0) {
    res = 6;
    goto out3;
  }
  if (opts.singlethread) {
    res = fuse_loop(f);
  } else {
    lc = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(lc, opts.clone_fd);
    if (opts.max_idle_threads != UINT_MAX)  // UINT_MAX: not given (libfuse's default)
      fuse_loop_cfg_set_idle_threads(lc, opts.max_idle_threads);
    fuse_loop_cfg_set_max_threads(lc, opts.max_threads == 10 ? s.default_threads : opts.max_threads);
    res = fuse_loop_mt(f, lc);
  }
  if (res) res = 7;
  fuse_remove_signal_handlers(fuse_get_session(f));
out3:
  fuse_unmount(f);
out2:
  fuse_destroy(f);
  if (s.handle) *s.handle = nullptr;
out1:
  if (lc) fuse_loop_cfg_destroy(lc);
  std::free(opts.mountpoint);
  fuse_opt_free_args(&args);
  return res;
}

}  // namespace fmtest::pt
