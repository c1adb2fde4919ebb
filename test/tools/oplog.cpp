// test/tools/oplog.cpp — see oplog.hpp.
#include "test/tools/oplog.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <span>
#include <stdexcept>

#include "utils/crc32c.hpp"

namespace fmtest {

namespace {

constexpr char kLogMagic[8] = {'F', 'M', 'O', 'P', 'L', 'O', 'G', '1'};

std::uint32_t crc(const unsigned char* p, std::size_t n) {
  return fusemirror::utils::crc32c(std::as_bytes(std::span(p, n)));
}

template <typename T>
void put(std::vector<unsigned char>& b, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) b.push_back(static_cast<unsigned char>(static_cast<std::uint64_t>(v) >> (8 * i)));
}

template <typename T>
T get(const unsigned char* p) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

void write_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw std::runtime_error(std::string("op log write: ") + std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::base: return "base";
    case Op::create: return "create";
    case Op::mkdir: return "mkdir";
    case Op::unlink: return "unlink";
    case Op::rmdir: return "rmdir";
    case Op::rename: return "rename";
    case Op::link: return "link";
    case Op::symlink: return "symlink";
    case Op::write: return "write";
    case Op::truncate: return "truncate";
    case Op::fallocate: return "fallocate";
    case Op::fsync: return "fsync";
    case Op::fsyncdir: return "fsyncdir";
    case Op::chmod: return "chmod";
    case Op::mark: return "mark";
    case Op::end: return "end";
  }
  return "?";
}

bool is_namespace(Op op) {
  return op == Op::create || op == Op::mkdir || op == Op::unlink || op == Op::rmdir || op == Op::rename ||
         op == Op::link || op == Op::symlink;
}

bool is_data(Op op) { return op == Op::write || op == Op::truncate || op == Op::fallocate; }

LogWriter::LogWriter(const std::string& path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_ < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  std::vector<unsigned char> h(kLogMagic, kLogMagic + 8);
  put<std::uint16_t>(h, 1);
  put<std::uint16_t>(h, 0);
  put<std::uint32_t>(h, kFileHeaderSize);
  put<std::uint64_t>(h, static_cast<std::uint64_t>(
                            std::chrono::system_clock::now().time_since_epoch() / std::chrono::nanoseconds(1)));
  put<std::uint32_t>(h, 0);
  put<std::uint32_t>(h, crc(h.data(), h.size()));
  write_all(fd_, h.data(), h.size());
  bytes_ = h.size();
}

LogWriter::~LogWriter() {
  try {
    flush();
  } catch (...) {
  }
  if (fd_ >= 0) ::close(fd_);
}

std::uint64_t LogWriter::append(Record r, const void* data, std::size_t len) {
  if (!data) {
    data = r.data.data();
    len = r.data.size();
  }
  r.seq = ++seq_;
  const std::size_t total = kRecordHeaderSize + r.name1.size() + r.name2.size() + len + 4;
  const std::size_t start = buf_.size();
  buf_.reserve(start + total);
  put<std::uint32_t>(buf_, total);
  put<std::uint16_t>(buf_, static_cast<std::uint16_t>(r.op));
  put<std::uint16_t>(buf_, 0);
  for (std::uint64_t v : {r.seq, r.id, r.id2, r.id3, r.a, r.b, r.c}) put<std::uint64_t>(buf_, v);
  put<std::uint32_t>(buf_, r.name1.size());
  put<std::uint32_t>(buf_, r.name2.size());
  put<std::uint32_t>(buf_, len);
  put<std::uint32_t>(buf_, 0);
  buf_.insert(buf_.end(), r.name1.begin(), r.name1.end());
  buf_.insert(buf_.end(), r.name2.begin(), r.name2.end());
  const auto* d = static_cast<const unsigned char*>(data);
  buf_.insert(buf_.end(), d, d + len);
  put<std::uint32_t>(buf_, crc(buf_.data() + start, total - 4));
  bytes_ += total;
  if (buf_.size() >= (8u << 20)) flush();
  return r.seq;
}

void LogWriter::flush() {
  if (buf_.empty() || fd_ < 0) return;
  write_all(fd_, buf_.data(), buf_.size());
  buf_.clear();
}

std::vector<Record> read_log(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  std::vector<unsigned char> all;
  unsigned char chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw std::runtime_error(path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    all.insert(all.end(), chunk, chunk + n);
  }
  ::close(fd);
  auto bad = [&](std::size_t off, const std::string& why) {
    return std::runtime_error(path + ": at byte " + std::to_string(off) + ": " + why);
  };
  if (all.size() < kFileHeaderSize || std::memcmp(all.data(), kLogMagic, 8) != 0)
    throw bad(0, "not an fm_recordfs op log (bad magic)");
  if (get<std::uint32_t>(all.data() + 28) != crc(all.data(), 28)) throw bad(0, "header checksum mismatch");
  if (get<std::uint16_t>(all.data() + 8) != 1) throw bad(8, "unsupported version");
  std::vector<Record> out;
  std::size_t off = get<std::uint32_t>(all.data() + 12);
  while (off < all.size()) {
    if (all.size() - off < kRecordHeaderSize + 4) throw bad(off, "truncated record");
    const unsigned char* p = all.data() + off;
    const std::uint32_t total = get<std::uint32_t>(p);
    if (total < kRecordHeaderSize + 4 || total > all.size() - off) throw bad(off, "truncated record");
    if (get<std::uint32_t>(p + total - 4) != crc(p, total - 4)) throw bad(off, "record checksum mismatch");
    Record r;
    r.op = static_cast<Op>(get<std::uint16_t>(p + 4));
    r.seq = get<std::uint64_t>(p + 8);
    r.id = get<std::uint64_t>(p + 16);
    r.id2 = get<std::uint64_t>(p + 24);
    r.id3 = get<std::uint64_t>(p + 32);
    r.a = get<std::uint64_t>(p + 40);
    r.b = get<std::uint64_t>(p + 48);
    r.c = get<std::uint64_t>(p + 56);
    const std::uint32_t n1 = get<std::uint32_t>(p + 64), n2 = get<std::uint32_t>(p + 68),
                        dl = get<std::uint32_t>(p + 72);
    if (static_cast<std::uint64_t>(kRecordHeaderSize) + n1 + n2 + dl + 4 != total)
      throw bad(off, "record lengths do not add up");
    const unsigned char* q = p + kRecordHeaderSize;
    r.name1.assign(reinterpret_cast<const char*>(q), n1);
    r.name2.assign(reinterpret_cast<const char*>(q + n1), n2);
    r.data.assign(q + n1 + n2, q + n1 + n2 + dl);
    if (r.seq != out.size() + 1) throw bad(off, "seq " + std::to_string(r.seq) + " out of order");
    out.push_back(std::move(r));
    off += total;
  }
  return out;
}

}  // namespace fmtest
