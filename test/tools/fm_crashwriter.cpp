// fm_crashwriter — a verifying writer for crash tests, and the offline bitmap check.
//
//   fm_crashwriter write FILE ACKLOG --blocks N [--seed S] [--sync-every K] [--max-writes M]
//       Writes 4 KiB blocks at random block numbers. Each block carries a stamp (block,
//       generation, seed) and a CRC over the block. After every K writes it fsyncs FILE
//       and then appends "block gen" for each write that fsync covered to ACKLOG (which
//       lives outside the mount and is fdatasync'ed): those writes are *acknowledged*.
//       Runs until killed, until a write fails (the daemon died), or M writes.
//       --mark CTL --image NAME: after each fsync returned, also writes "ack NAME block gen"
//       lines (one write(2)) to CTL, the control file of fm_recordfs under the legs, so that
//       the recorder's log says what had been promised at that point (fm_powercut).
//       --sequential: blocks in order from a random start (a stream) instead of at random.
//       --run R: every other write is R blocks in one pwrite, at a multiple of R blocks (a
//       whole chunk when R blocks make one: direct writes that cover chunks whole), the
//       others single blocks; each block of a run is stamped and acknowledged on its own.
//       --lanes J --lane K: this writer owns the blocks b with b % J == K only, so that J
//       writers (processes) can load one file at once without writing each other's blocks
//       (a generation is only ever compared with the same writer's). Not with --run.
//   fm_crashwriter verify FILE ACKLOG
//       Every acknowledged block must hold a valid stamp of that block with a generation
//       >= the acknowledged one (a later, unacknowledged write may have replaced it, never
//       an older one). Prints "checked N lost L torn T" and exits 1 if L > 0.
//   fm_crashwriter syncdir DIR [--mark CTL --name PATH]
//       fsync of the directory DIR (through the mount: its names become durable); then, with
//       --mark, "exists PATH" is written to CTL (PATH relative to the recorder's root).
//   fm_crashwriter bitmapcheck PRIMARY SECONDARY BITMAP
//       The md invariant after a crash: every chunk where the two legs differ has its bit
//       set in the bitmap file (or the header is untrusted, which means a full resync) and
//       is not spared by the activity log's record beside it (BITMAP with .fmal for .fmbm,
//       read as the next mount would: this boot's, this bitmap's events — docs/write-path.md
//       §3d). Prints "differing D unmarked U dirty B chunk_size C spared S" (B: the bits
//       set and not spared, what the resync will copy) and exits 1 if U > 0.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/al_record.hpp"
#include "core/bitmap_format.hpp"
#include "utils/crc32c.hpp"

namespace {

constexpr std::size_t kBlock = 4096;
constexpr std::uint64_t kStampMagic = 0x4b43484352574d46ull;  // "FMWRCHCK"

struct Stamp {
  std::uint64_t magic, block, gen, seed;
};

void fill_block(std::vector<unsigned char>& b, std::uint64_t block, std::uint64_t gen, std::uint64_t seed) {
  Stamp s{kStampMagic, block, gen, seed};
  std::memcpy(b.data(), &s, sizeof s);
  std::mt19937_64 rng(block * 1000003 + gen * 7919 + seed);
  for (std::size_t i = sizeof s; i + 8 <= kBlock - 4; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(b.data() + i, &v, 8);
  }
  std::uint32_t crc = fusemirror::utils::crc32c(
      std::as_bytes(std::span(b.data(), kBlock - 4)));
  std::memcpy(b.data() + kBlock - 4, &crc, 4);
}

// 0: zero block, 1: valid stamp, -1: torn / garbage.
int parse_block(const std::vector<unsigned char>& b, Stamp* out) {
  bool zero = true;
  for (auto c : b)
    if (c) {
      zero = false;
      break;
    }
  if (zero) return 0;
  std::uint32_t crc;
  std::memcpy(&crc, b.data() + kBlock - 4, 4);
  if (crc != fusemirror::utils::crc32c(std::as_bytes(std::span(b.data(), kBlock - 4)))) return -1;
  std::memcpy(out, b.data(), sizeof *out);
  return out->magic == kStampMagic ? 1 : -1;
}

const char* arg_str(int argc, char** argv, const char* name) {
  for (int i = 0; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return nullptr;
}

bool has_flag(int argc, char** argv, const char* name) {
  for (int i = 0; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

std::uint64_t arg_u64(int argc, char** argv, const char* name, std::uint64_t def) {
  for (int i = 0; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::strtoull(argv[i + 1], nullptr, 0);
  return def;
}

int cmd_write(int argc, char** argv) {
  const std::uint64_t blocks = arg_u64(argc, argv, "--blocks", 4096);
  const std::uint64_t seed = arg_u64(argc, argv, "--seed", 1);
  const std::uint64_t every = arg_u64(argc, argv, "--sync-every", 8);
  const std::uint64_t max_writes = arg_u64(argc, argv, "--max-writes", ~0ull);
  int fd = ::open(argv[2], O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::perror(argv[2]), 2;
  int log = ::open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log < 0) return std::perror(argv[3]), 2;
  const char* mark_path = arg_str(argc, argv, "--mark");
  const char* image = arg_str(argc, argv, "--image");
  if (mark_path && !image) return std::fprintf(stderr, "--mark needs --image\n"), 2;
  int mark = mark_path ? ::open(mark_path, O_WRONLY | O_CLOEXEC) : -1;
  if (mark_path && mark < 0) return std::perror(mark_path), 2;
  const bool sequential = has_flag(argc, argv, "--sequential");
  const std::uint64_t run = arg_u64(argc, argv, "--run", 1);
  if (run == 0 || run > blocks || blocks % run != 0)
    return std::fprintf(stderr, "--run must divide --blocks (%llu)\n", static_cast<unsigned long long>(blocks)), 2;
  const std::uint64_t lanes = arg_u64(argc, argv, "--lanes", 1), lane = arg_u64(argc, argv, "--lane", 0);
  if (lanes == 0 || lane >= lanes || lanes > blocks || (lanes > 1 && run > 1))
    return std::fprintf(stderr, "--lane must be below --lanes, --lanes at most --blocks, and not with --run\n"), 2;
  // The writer's own blocks: b in [0, mine) stands for block b * lanes + lane.
  const std::uint64_t mine = (blocks - lane + lanes - 1) / lanes;
  // Generations must grow across runs (a later run's write of a block must carry a larger
  // generation than any earlier acknowledged one): start above every acknowledged
  // generation in the log and above the wall clock in nanoseconds.
  std::uint64_t gen = 0;
  if (FILE* f = std::fopen(argv[3], "r")) {
    unsigned long long b, g;
    while (std::fscanf(f, "%llu %llu", &b, &g) == 2) gen = std::max<std::uint64_t>(gen, g);
    std::fclose(f);
  }
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  gen = std::max<std::uint64_t>(gen, static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
                                         static_cast<std::uint64_t>(ts.tv_nsec));
  std::mt19937_64 rng(seed ^ gen);
  std::vector<unsigned char> buf(kBlock), runbuf;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pending;
  std::uint64_t next = rng() % mine;
  for (std::uint64_t n = 0; n < max_writes; ++n) {
    if (run > 1 && n % 2 == 1) {
      // A run: R blocks at a multiple of R, one pwrite.
      const std::uint64_t first = (rng() % (blocks / run)) * run;
      runbuf.resize(run * kBlock);
      const std::uint64_t g0 = gen + 1;
      for (std::uint64_t i = 0; i < run; ++i) {
        fill_block(buf, first + i, ++gen, seed);
        std::memcpy(runbuf.data() + i * kBlock, buf.data(), kBlock);
      }
      if (::pwrite(fd, runbuf.data(), runbuf.size(), static_cast<off_t>(first * kBlock)) !=
          static_cast<ssize_t>(runbuf.size()))
        return 0;  // the daemon died
      for (std::uint64_t i = 0; i < run; ++i) pending.emplace_back(first + i, g0 + i);
    } else {
      const std::uint64_t b = (sequential ? next++ % mine : rng() % mine) * lanes + lane;
      fill_block(buf, b, ++gen, seed);
      if (::pwrite(fd, buf.data(), kBlock, static_cast<off_t>(b * kBlock)) != static_cast<ssize_t>(kBlock))
        return 0;  // the daemon died: expected in a crash test
      pending.emplace_back(b, gen);
    }
    if (pending.size() >= every) {
      if (::fsync(fd) != 0) return 0;
      std::string lines;
      for (auto [blk, g] : pending) lines += std::to_string(blk) + " " + std::to_string(g) + "\n";
      if (::write(log, lines.data(), lines.size()) != static_cast<ssize_t>(lines.size()) ||
          ::fdatasync(log) != 0)
        return std::perror("ack log"), 2;
      if (mark >= 0) {
        std::string marks;
        for (auto [blk, g] : pending)
          marks += "ack " + std::string(image) + " " + std::to_string(blk) + " " + std::to_string(g) + "\n";
        if (::write(mark, marks.data(), marks.size()) != static_cast<ssize_t>(marks.size()))
          return std::perror("mark"), 2;
      }
      pending.clear();
    }
  }
  return 0;
}

int cmd_verify(char** argv) {
  std::map<std::uint64_t, std::uint64_t> acked;
  if (FILE* f = std::fopen(argv[3], "r")) {
    unsigned long long b, g;
    while (std::fscanf(f, "%llu %llu", &b, &g) == 2)
      if (g > acked[b]) acked[b] = g;
    std::fclose(f);
  }
  int fd = ::open(argv[2], O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::perror(argv[2]), 2;
  std::vector<unsigned char> buf(kBlock);
  std::uint64_t lost = 0, torn = 0;
  for (auto [b, g] : acked) {
    std::fill(buf.begin(), buf.end(), 0);
    (void)::pread(fd, buf.data(), kBlock, static_cast<off_t>(b * kBlock));
    Stamp s{};
    const int k = parse_block(buf, &s);
    if (k != 1 || s.block != b || s.gen < g) {
      ++lost;
      if (k == -1) ++torn;
      if (lost <= 5)
        std::fprintf(stderr, "LOST block %llu: acknowledged gen %llu, found %s gen %llu\n",
                     static_cast<unsigned long long>(b), static_cast<unsigned long long>(g),
                     k == 0 ? "zeros" : k < 0 ? "garbage" : "stamp", static_cast<unsigned long long>(s.gen));
    }
  }
  std::printf("checked %zu lost %llu torn %llu\n", acked.size(), static_cast<unsigned long long>(lost),
              static_cast<unsigned long long>(torn));
  return lost ? 1 : 0;
}

int cmd_syncdir(int argc, char** argv) {
  int fd = ::open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return std::perror(argv[2]), 2;
  if (::fsync(fd) != 0) return std::perror("fsync"), 1;
  ::close(fd);
  const char* mark_path = arg_str(argc, argv, "--mark");
  const char* name = arg_str(argc, argv, "--name");
  if (mark_path && name) {
    int mark = ::open(mark_path, O_WRONLY | O_CLOEXEC);
    if (mark < 0) return std::perror(mark_path), 2;
    const std::string line = "exists " + std::string(name) + "\n";
    if (::write(mark, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return std::perror("mark"), 2;
    ::close(mark);
  }
  return 0;
}

int cmd_bitmapcheck(char** argv) {
  int p = ::open(argv[2], O_RDONLY | O_CLOEXEC), s = ::open(argv[3], O_RDONLY | O_CLOEXEC),
      m = ::open(argv[4], O_RDONLY | O_CLOEXEC);
  if (p < 0 || s < 0) return std::perror("legs"), 2;
  std::vector<std::byte> hdr(fusemirror::core::kHeaderSize);
  if (m < 0 || ::pread(m, hdr.data(), hdr.size(), 0) != static_cast<ssize_t>(hdr.size())) {
    std::printf("bitmap missing or truncated: untrusted, full resync\n");
    return 0;
  }
  auto h = fusemirror::core::decode_header(hdr);
  if (!h) {
    std::printf("bitmap header untrusted (%s): full resync\n", h.error().message().c_str());
    return 0;
  }
  const std::uint64_t cs = h->chunk_size, bits = h->bit_count();
  std::vector<unsigned char> map((bits + 7) / 8);
  (void)::pread(m, map.data(), map.size(), fusemirror::core::kHeaderSize);
  struct stat ps {}, ss {};
  ::fstat(p, &ps);
  ::fstat(s, &ss);
  const std::uint64_t size = static_cast<std::uint64_t>(std::max(ps.st_size, ss.st_size));
  std::vector<unsigned char> a(cs), b(cs);
  std::uint64_t differing = 0, unmarked = 0, dirty = 0;
  // The record's logged chunks, as the next mount reads them (only after an unclean stop).
  std::uint64_t spared = 0;
  const std::string bm_path = argv[4];
  if (!(h->state & fusemirror::core::kStateClean) && bm_path.size() > 5 &&
      bm_path.compare(bm_path.size() - 5, 5, ".fmbm") == 0) {
    fusemirror::utils::UniqueFd rfd(::open((bm_path.substr(0, bm_path.size() - 5) + ".fmal").c_str(),
                                           O_RDONLY | O_CLOEXEC));
    if (rfd) {
      fusemirror::core::AlRecord rec(std::move(rfd));
      const fusemirror::core::AlRecordId id{h->set_uuid, h->image_uuid, cs, h->events};
      for (const auto& [word, logged] : rec.read(id, (bits + 63) / 64, nullptr))
        for (std::uint64_t w = logged; w; w &= w - 1) {
          const std::uint64_t c = word * 64 + static_cast<std::uint64_t>(__builtin_ctzll(w));
          if (c < bits && ((map[c / 8] >> (c % 8)) & 1)) {
            map[c / 8] &= static_cast<unsigned char>(~(1u << (c % 8)));  // not copied: as if clear
            ++spared;
          }
        }
    }
  }
  for (std::uint64_t c = 0; c < bits; ++c) dirty += (map[c / 8] >> (c % 8)) & 1;
  for (std::uint64_t c = 0; c * cs < size; ++c) {
    std::fill(a.begin(), a.end(), 0);
    std::fill(b.begin(), b.end(), 0);
    ssize_t na = ::pread(p, a.data(), cs, static_cast<off_t>(c * cs));
    ssize_t nb = ::pread(s, b.data(), cs, static_cast<off_t>(c * cs));
    if (na == nb && std::memcmp(a.data(), b.data(), cs) == 0) continue;
    ++differing;
    const bool marked = c < bits && ((map[c / 8] >> (c % 8)) & 1);
    if (!marked && c * cs < static_cast<std::uint64_t>(ps.st_size)) {
      ++unmarked;
      if (unmarked <= 5) std::fprintf(stderr, "UNMARKED chunk %llu differs but its bit is clear or spared\n",
                                      static_cast<unsigned long long>(c));
    }
  }
  std::printf("differing %llu unmarked %llu dirty %llu chunk_size %llu spared %llu\n",
              static_cast<unsigned long long>(differing), static_cast<unsigned long long>(unmarked),
              static_cast<unsigned long long>(dirty), static_cast<unsigned long long>(cs),
              static_cast<unsigned long long>(spared));
  return unmarked ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::strcmp(argv[1], "write") == 0) return cmd_write(argc, argv);
  if (argc == 4 && std::strcmp(argv[1], "verify") == 0) return cmd_verify(argv);
  if (argc >= 3 && std::strcmp(argv[1], "syncdir") == 0) return cmd_syncdir(argc, argv);
  if (argc == 5 && std::strcmp(argv[1], "bitmapcheck") == 0) return cmd_bitmapcheck(argv);
  std::fprintf(stderr,
               "usage: fm_crashwriter write FILE ACKLOG [--blocks N] [--seed S] [--sync-every K] [--max-writes M]\n"
               "                             [--mark CTL --image NAME] [--sequential] [--run R]\n"
               "       fm_crashwriter verify FILE ACKLOG\n"
               "       fm_crashwriter syncdir DIR [--mark CTL --name PATH]\n"
               "       fm_crashwriter bitmapcheck PRIMARY SECONDARY BITMAP\n");
  return 2;
}
