// fm_opfuzz — a random-operation exerciser checked against a model file (issue 7 part 3).
//
//   fm_opfuzz DIR MODEL_DIR --seed S [--ops N] [--max-size BYTES]
//
// Applies the same random sequence of operations to DIR/f.img (a file seen through the
// mount) and MODEL_DIR/f.img (on a plain file system): pwrite of random data at random
// offsets (sometimes unaligned, sometimes past EOF), ftruncate up and down, fallocate
// PUNCH_HOLE|KEEP_SIZE, fallocate ZERO_RANGE|KEEP_SIZE, fallocate (allocate, may extend),
// fsync / fdatasync, and rename to a second name and back (the descriptor stays open).
// Every 64 operations and at the end it compares the two files' sizes and bytes. On a
// difference it prints the seed, the operation number and the first differing offset and
// exits 1. Replay: run it again with the same --seed (and --ops).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {
struct Leg {
  std::string dir;
  int fd = -1;
};

[[noreturn]] void die(const char* what, const std::string& path) {
  std::fprintf(stderr, "fm_opfuzz: %s %s: %s\n", what, path.c_str(), std::strerror(errno));
  std::exit(2);
}

std::uint64_t arg(int argc, char** argv, const char* name, std::uint64_t def) {
  for (int i = 3; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::strtoull(argv[i + 1], nullptr, 0);
  return def;
}

bool compare(const Leg& a, const Leg& b, std::uint64_t seed, std::uint64_t op) {
  struct stat sa {}, sb {};
  ::fstat(a.fd, &sa);
  ::fstat(b.fd, &sb);
  if (sa.st_size != sb.st_size) {
    std::fprintf(stderr, "MISMATCH seed %llu op %llu: size %lld (mount) vs %lld (model)\n",
                 (unsigned long long)seed, (unsigned long long)op, (long long)sa.st_size, (long long)sb.st_size);
    return false;
  }
  std::vector<char> x(1 << 20), y(1 << 20);
  for (off_t off = 0; off < sa.st_size; off += x.size()) {
    ssize_t n = ::pread(a.fd, x.data(), x.size(), off), m = ::pread(b.fd, y.data(), y.size(), off);
    if (n != m) {
      std::fprintf(stderr, "MISMATCH seed %llu op %llu: short read at %lld (%zd vs %zd)\n",
                   (unsigned long long)seed, (unsigned long long)op, (long long)off, n, m);
      return false;
    }
    if (n <= 0) break;
    if (std::memcmp(x.data(), y.data(), n) != 0) {
      ssize_t i = 0;
      while (x[i] == y[i]) ++i;
      std::fprintf(stderr, "MISMATCH seed %llu op %llu: first differing byte at %lld\n",
                   (unsigned long long)seed, (unsigned long long)op, (long long)(off + i));
      return false;
    }
  }
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fm_opfuzz DIR MODEL_DIR --seed S [--ops N] [--max-size BYTES]\n");
    return 2;
  }
  const std::uint64_t seed = arg(argc, argv, "--seed", 1);
  const std::uint64_t ops = arg(argc, argv, "--ops", 2000);
  const std::uint64_t max_size = arg(argc, argv, "--max-size", 32 << 20);
  std::mt19937_64 rng(seed);
  Leg legs[2] = {{argv[1]}, {argv[2]}};
  for (auto& l : legs) {
    const std::string p = l.dir + "/f.img";
    l.fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (l.fd < 0) die("open", p);
  }
  std::vector<char> buf(1 << 20);
  bool renamed = false;
  std::uint64_t counts[9] = {};
  std::uint64_t size = 0;
  for (std::uint64_t op = 1; op <= ops; ++op) {
    const unsigned kind = static_cast<unsigned>(rng() % 100);
    auto rnd_off = [&](std::uint64_t limit) -> std::uint64_t {
      std::uint64_t o = rng() % (limit ? limit : 1);
      if (rng() % 2) o &= ~std::uint64_t{4095};  // half aligned
      return o;
    };
    int k;
    if (kind < 45) k = 0;        // write
    else if (kind < 55) k = 1;   // truncate up
    else if (kind < 63) k = 2;   // truncate down
    else if (kind < 73) k = 3;   // punch hole
    else if (kind < 80) k = 4;   // zero range
    else if (kind < 85) k = 5;   // fallocate (allocate)
    else if (kind < 93) k = 6;   // fsync / fdatasync
    else k = 7;                  // rename
    ++counts[k];
    std::uint64_t off = 0, len = 0;
    switch (k) {
      case 0:
        off = rnd_off(std::min<std::uint64_t>(max_size, size + (1 << 20)));
        len = 1 + rng() % (rng() % 4 ? 65536 : buf.size());
        if (off + len > max_size) len = max_size - off;
        if (len == 0) break;
        for (std::size_t i = 0; i < len; i += 8) {
          const std::uint64_t v = rng();
          std::memcpy(buf.data() + i, &v, std::min<std::size_t>(8, len - i));
        }
        for (auto& l : legs)
          if (::pwrite(l.fd, buf.data(), len, off) != static_cast<ssize_t>(len)) die("pwrite", l.dir);
        size = std::max(size, off + len);
        break;
      case 1:
      case 2:
        off = k == 1 ? std::min<std::uint64_t>(max_size, size + rng() % (4 << 20)) : (size ? rnd_off(size) : 0);
        for (auto& l : legs)
          if (::ftruncate(l.fd, off) != 0) die("ftruncate", l.dir);
        size = off;
        break;
      case 3:
      case 4:
      case 5: {
        if (!size) break;
        off = rnd_off(size);
        len = 1 + rng() % (2 << 20);
        int mode = k == 3 ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                 : k == 4 ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
                          : 0;
        if (k == 5 && off + len > max_size) len = max_size - off;
        if (!len) break;
        for (auto& l : legs)
          if (::fallocate(l.fd, mode, off, len) != 0) die("fallocate", l.dir);
        if (k == 5) size = std::max(size, off + len);
        break;
      }
      case 6:
        for (auto& l : legs)
          if ((rng() % 2 ? ::fsync(l.fd) : ::fdatasync(l.fd)) != 0) die("fsync", l.dir);
        break;
      case 7:
        for (auto& l : legs) {
          const std::string a = l.dir + "/f.img", b = l.dir + "/g.img";
          if (::rename(renamed ? b.c_str() : a.c_str(), renamed ? a.c_str() : b.c_str()) != 0) die("rename", l.dir);
        }
        renamed = !renamed;
        break;
    }
    if (op % 64 == 0 || op == ops)
      if (!compare(legs[0], legs[1], seed, op)) return 1;
  }
  if (renamed)
    for (auto& l : legs) {
      const std::string a = l.dir + "/f.img", b = l.dir + "/g.img";
      if (::rename(b.c_str(), a.c_str()) != 0) die("rename", l.dir);
    }
  for (auto& l : legs)
    if (::fsync(l.fd) != 0 || ::close(l.fd) != 0) die("close", l.dir);
  std::printf("seed %llu ops %llu: write %llu truncate-up %llu truncate-down %llu punch %llu zero %llu "
              "allocate %llu fsync %llu rename %llu; final size %llu; identical to the model\n",
              (unsigned long long)seed, (unsigned long long)ops, (unsigned long long)counts[0],
              (unsigned long long)counts[1], (unsigned long long)counts[2], (unsigned long long)counts[3],
              (unsigned long long)counts[4], (unsigned long long)counts[5], (unsigned long long)counts[6],
              (unsigned long long)counts[7], (unsigned long long)size);
  return 0;
}
