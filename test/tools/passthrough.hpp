// test/tools/passthrough.hpp — what the test pass-through file systems (fm_faultfs,
// fm_recordfs) share: the backing directory they serve, the operations that only forward a
// path to it, the command line and the FUSE session.
#pragma once

#define FUSE_USE_VERSION 312
#include <dirent.h>
#include <fuse.h>
#include <sys/statvfs.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace fmtest::pt {

// The backing directory (one per process), set by open_root().
struct Root {
  int fd = -1;
  std::string path;  // absolute
};
extern Root root;

// Opens PATH as the backing directory (its real path); false after printing why.
bool open_root(const char* prog, const char* path);
// A FUSE path relative to the backing directory: "/" -> ".", "/a/b" -> "a/b".
const char* rel(const char* path);
// The backing directory's path of a FUSE path (for the *xattr calls, which have no *at form).
std::string abs(const char* path);
inline int neg_errno() { return -errno; }

int readlink(const char* path, char* buf, size_t size);
int statfs(struct statvfs* st);
int setxattr(const char* path, const char* name, const char* value, size_t size, int flags);
int getxattr(const char* path, const char* name, char* value, size_t size);
int listxattr(const char* path, char* list, size_t size);
int removexattr(const char* path, const char* name);
// Every entry of D at once (offset-less readdir); HIDE (a control file) is left out at the root.
int readdir(DIR* d, bool at_root, const char* hide, void* buf, fuse_fill_dir_t filler);

// Sets the operations that only forward a path (readlink, statfs, the *xattr calls) in OPS;
// CONTROL ("/.faultfs") is the tool's control file, which has no link and no xattrs.
void set_path_ops(fuse_operations& ops, const char* control);

// "PROG [tool options] BACKING MOUNTPOINT [FUSE options]": BACKING is the first argument
// that is neither an option nor the value of -o or of a tool option in `valued` (whose
// values go to `values`). The rest (argv[0] first) is for serve().
struct Args {
  const char* backing = nullptr;
  std::map<std::string, const char*> values;
  std::vector<char*> fuse;
  bool help = false;
};
Args parse_args(int argc, char* argv[], const std::vector<std::string>& valued);

struct Session {
  std::string name;                             // for messages ("fm_faultfs")
  std::vector<std::string> extra_args;          // e.g. "-osubtype=..."
  unsigned default_threads = 10;                // instead of libfuse's 10 when -o max_threads is not given
  std::function<void(struct fuse*)> mounted;    // once mounted, before daemonizing
  std::function<void()> usage;
  struct fuse** handle = nullptr;               // set while the session runs
};
// Mounts, serves until unmounted or signalled, unmounts. The exit code of main().
int serve(Args& args, const fuse_operations& ops, const Session& s);

}  // namespace fmtest::pt
