#include "core/nbd_leg.hpp"

#include <libnbd.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "utils/error.hpp"

namespace fusemirror::core {

namespace {

// Requests larger than this are split (NBD servers refuse payloads past 32 MiB; libnbd
// past 64 MiB).
constexpr std::uint64_t kMaxRequest = 4 << 20;

std::error_code nbd_errno() {
  const int e = nbd_get_errno();
  return utils::errno_code(e ? e : EIO);
}

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Milliseconds left before `deadline` (0 when past), for nbd_poll; at most one second per
// call, so that a clock step never makes one poll wait long past the deadline.
int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 1000));
}

}  // namespace

bool is_nbd_uri(const std::string& s) {
  return s.starts_with("nbd:") || s.starts_with("nbd+") || s.starts_with("nbds:") || s.starts_with("nbds+");
}

NbdUri parse_nbd_uri(const std::string& s) {
  auto bad = [&](const std::string& why) { return utils::Error("secondary URI '" + s + "': " + why); };
  NbdUri u;
  u.text = s;
  if (s.starts_with("nbds")) throw bad("TLS (nbds://) is not supported yet; use nbd:// over a trusted link");
  std::string rest, query;
  if (s.starts_with("nbd+unix://")) {
    rest = s.substr(11);
    if (auto q = rest.find('?'); q != std::string::npos) {
      query = rest.substr(q + 1);
      rest = rest.substr(0, q);
    }
    if (rest != "/" && !rest.empty())
      throw bad("the URI names no host and no export (the export is each image's relative path): "
                "use nbd+unix:///?socket=PATH");
    if (!query.starts_with("socket=") || query.find('&') != std::string::npos)
      throw bad("a unix socket URI needs exactly one query key, socket=PATH");
    u.socket = query.substr(7);
    if (u.socket.empty() || u.socket[0] != '/') throw bad("socket=PATH must be an absolute path");
    return u;
  }
  if (s.starts_with("nbd://")) {
    rest = s.substr(6);
    if (rest.find('?') != std::string::npos) throw bad("nbd://HOST[:PORT] takes no query");
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.find('/') != std::string::npos)
      throw bad("the URI must not name an export (the export is each image's relative path)");
    if (rest.starts_with('[')) {  // [IPv6]:port
      const auto close = rest.find(']');
      if (close == std::string::npos) throw bad("unterminated [IPv6 address]");
      u.host = rest.substr(1, close - 1);
      rest = rest.substr(close + 1);
      if (!rest.empty()) {
        if (rest[0] != ':') throw bad("junk after the [IPv6 address]");
        u.port = rest.substr(1);
      }
    } else if (auto c = rest.rfind(':'); c != std::string::npos) {
      u.host = rest.substr(0, c);
      u.port = rest.substr(c + 1);
    } else {
      u.host = rest;
    }
    if (u.host.empty()) throw bad("no host");
    if (u.port.empty() || !std::all_of(u.port.begin(), u.port.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
        u.port.size() > 5 || std::stoul(u.port) == 0 || std::stoul(u.port) > 65535)
      throw bad("port '" + u.port + "' is not a number from 1 to 65535");
    return u;
  }
  throw bad("unknown scheme (nbd://HOST[:PORT] or nbd+unix:///?socket=PATH)");
}

utils::Result<std::unique_ptr<NbdLeg>> NbdLeg::connect(const NbdUri& uri, const std::string& name, std::string* why) {
  nbd_handle* h = nbd_create();
  if (!h) {
    *why = std::string("libnbd: ") + nbd_get_error();
    return nbd_errno();
  }
  auto give_up = [&](std::error_code ec, std::string reason) -> utils::Result<std::unique_ptr<NbdLeg>> {
    *why = std::move(reason);
    nbd_close(h);
    return ec;
  };
  // The export name is sent as given: nbdkit's file plugin with dir= serves each file of
  // its directory under its name.
  if (nbd_set_export_name(h, name.c_str()) == -1 || nbd_set_full_info(h, true) == -1)
    return give_up(nbd_errno(), std::string("libnbd: ") + nbd_get_error());
  // The handshake runs asynchronously against the timeout (see the header): a server that
  // accepts the connection but never answers (stopped) must not hold the caller, which
  // may hold the namespace lock (re-add) or be the link's reconnect thread.
  int rc = uri.socket.empty() ? nbd_aio_connect_tcp(h, uri.host.c_str(), uri.port.c_str())
                              : nbd_aio_connect_unix(h, uri.socket.c_str());
  const auto deadline = deadline_after(uri.timeout_s);
  bool timed_out = false;
  while (rc != -1 && nbd_aio_is_connecting(h) == 1) {
    if (Clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    if (nbd_poll(h, poll_ms(deadline)) == -1) rc = -1;
  }
  if (timed_out)
    return give_up(utils::errno_code(ETIMEDOUT), "cannot connect to " + uri.text + " for export " + name +
                                                     ": no answer within " + std::to_string(uri.timeout_s) +
                                                     " s (secondary_timeout)");
  if (rc != -1 && nbd_aio_is_ready(h) != 1) rc = -1;
  if (rc == -1) {
    const std::error_code ec = nbd_errno();
    std::string err = nbd_get_error() ? nbd_get_error() : "";
    if (err.empty()) err = "the connection closed during the handshake";
    // The server refused the export name (NBD_REP_ERR_UNKNOWN: libnbd's "server has no
    // export named …"), or the connection itself failed (a socket that is not there is
    // ENOENT too: told apart by the message, which only the handshake's refusal gives).
    if (err.find("no export") != std::string::npos || err.find("unknown export") != std::string::npos)
      return give_up(utils::errno_code(ENOENT), "export " + name + " missing on " + uri.text + " (" + err + ")");
    return give_up(ec, "cannot connect to " + uri.text + " for export " + name + ": " + err);
  }
  const std::int64_t size = nbd_get_size(h);
  if (size < 0) return give_up(nbd_errno(), "export " + name + " on " + uri.text + ": no size: " + nbd_get_error());
  if (nbd_is_read_only(h) == 1)
    return give_up(utils::errno_code(EROFS), "export " + name + " on " + uri.text + " is read-only");
  if (static_cast<std::uint64_t>(size) < kNbdTailBytes)
    return give_up(utils::errno_code(EFBIG), "export " + name + " on " + uri.text + " is " + std::to_string(size) +
                                                 " bytes, smaller than its identity block (4096)");
  return std::unique_ptr<NbdLeg>(new NbdLeg(h, uri, name, static_cast<std::uint64_t>(size)));
}

NbdLeg::NbdLeg(nbd_handle* h, NbdUri uri, std::string name, std::uint64_t export_size)
    : h_(h),
      uri_(std::move(uri)),
      name_(std::move(name)),
      export_size_(export_size),
      capacity_(export_size - kNbdTailBytes),
      can_flush_(nbd_can_flush(h) == 1),
      can_zero_(nbd_can_zero(h) == 1),
      size_(capacity_) {}

NbdLeg::~NbdLeg() {
  // The polite disconnect, bounded: nbd_shutdown() would wait for a server that stopped
  // answering. A dead leg (a request timed out) just closes its socket.
  if (!dead_ && nbd_aio_is_ready(h_) == 1 && nbd_aio_disconnect(h_, 0) == 0) {
    const auto deadline = deadline_after(std::min(uri_.timeout_s, 5.0));
    while (nbd_aio_is_closed(h_) != 1 && nbd_aio_is_dead(h_) != 1 && Clock::now() < deadline)
      if (nbd_poll(h_, poll_ms(deadline)) == -1) break;
  }
  nbd_close(h_);
}

template <typename Issue>
std::error_code NbdLeg::request(const char* op, Issue issue) {
  if (dead_) return utils::errno_code(ETIMEDOUT);
  // A connection the server closed: libnbd would refuse the command as "invalid state"
  // (EINVAL); say what happened.
  if (nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1) return utils::errno_code(ENOTCONN);
  const std::int64_t cookie = issue();
  if (cookie == -1) return fail(op);
  const auto deadline = deadline_after(uri_.timeout_s);
  for (;;) {
    const int done = nbd_aio_command_completed(h_, static_cast<std::uint64_t>(cookie));
    if (done == 1) return {};
    if (done == -1) return fail(op);
    if (Clock::now() >= deadline) {
      dead_ = true;
      if (!error_logged_.exchange(true))
        spdlog::error("{}: {} got no answer within {} s (secondary_timeout); connection abandoned "
                      "(further errors of this export are not logged)",
                      describe(), op, uri_.timeout_s);
      return utils::errno_code(ETIMEDOUT);
    }
    if (nbd_poll(h_, poll_ms(deadline)) == -1) {
      // The connection died (the server closed it): the command cannot complete now.
      if (nbd_aio_command_completed(h_, static_cast<std::uint64_t>(cookie)) == 1) return {};
      return fail(op);
    }
  }
}

std::error_code NbdLeg::do_pread(void* buf, std::size_t len, std::uint64_t off, const char* op) {
  std::lock_guard lk(io_mu_);
  return request(op, [&] { return nbd_aio_pread(h_, buf, len, off, NBD_NULL_COMPLETION, 0); });
}

std::error_code NbdLeg::do_pwrite(const void* buf, std::size_t len, std::uint64_t off, std::uint32_t flags,
                                  const char* op) {
  std::lock_guard lk(io_mu_);
  return request(op, [&] { return nbd_aio_pwrite(h_, buf, len, off, NBD_NULL_COMPLETION, flags); });
}

std::string NbdLeg::describe() const { return "export " + name_ + " on " + uri_.text; }

std::error_code NbdLeg::fail(const char* op) {
  const std::error_code ec = nbd_errno();
  if (!error_logged_.exchange(true))
    spdlog::error("{}: {} failed: {} (further errors of this export are not logged)", describe(), op,
                  nbd_get_error() ? nbd_get_error() : ec.message());
  return ec;
}

std::error_code NbdLeg::too_small(std::uint64_t need) {
  if (!error_logged_.exchange(true))
    spdlog::error("{}: {} bytes available, the image needs {}: grow the export (keeping its last 4096 bytes, "
                  "the identity block, past the image)",
                  describe(), capacity_, need);
  return utils::errno_code(EFBIG);
}

utils::Result<std::size_t> NbdLeg::pread(std::span<std::byte> data, std::uint64_t off) {
  std::uint64_t end;
  {
    std::lock_guard lk(size_mu_);
    end = size_;
  }
  if (off >= end) return std::size_t{0};
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(data.size(), end - off));
  for (std::size_t done = 0; done < n;) {
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(n - done, kMaxRequest));
    if (auto ec = do_pread(data.data() + done, len, off + done, "read")) return ec;
    done += len;
  }
  return n;
}

std::error_code NbdLeg::pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) {
  if (done) *done = 0;
  const std::uint64_t end = off + data.size();
  if (end > capacity_) return too_small(end);
  {
    // Past the image's end: the gap is zeroed first, as a file's reads as zeros.
    std::lock_guard lk(size_mu_);
    if (off > size_)
      if (auto ec = zero_range(size_, off - size_, false)) return ec;
    size_ = std::max(size_, end);
  }
  for (std::size_t n = 0; n < data.size();) {
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(data.size() - n, kMaxRequest));
    if (auto ec = do_pwrite(data.data() + n, len, off + n, 0, "write")) return ec;
    n += len;
    if (done) *done = n;
  }
  return {};
}

std::error_code NbdLeg::flush(bool /*datasync*/) {
  if (!can_flush_) return {};  // the server writes through (it says so by not offering flush)
  std::lock_guard lk(io_mu_);
  return request("flush", [&] { return nbd_aio_flush(h_, NBD_NULL_COMPLETION, 0); });
}

utils::Result<std::uint64_t> NbdLeg::size() {
  std::lock_guard lk(size_mu_);
  return size_;
}

std::error_code NbdLeg::set_size(std::uint64_t size) {
  if (size > capacity_) return too_small(size);
  std::lock_guard lk(size_mu_);
  // A grow reads as zeros: the export's bytes there are whatever an earlier life left.
  if (size > size_)
    if (auto ec = zero_range(size_, size - size_, false)) return ec;
  size_ = size;
  return {};
}

std::error_code NbdLeg::zero_range(std::uint64_t off, std::uint64_t len, bool keep_allocated) {
  if (can_zero_) {
    for (std::uint64_t p = off; p < off + len;) {
      const std::uint64_t n = std::min(off + len - p, std::uint64_t{1} << 30);
      std::lock_guard lk(io_mu_);
      if (auto ec = request("zero", [&] {
            return nbd_aio_zero(h_, n, p, NBD_NULL_COMPLETION, keep_allocated ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
          }))
        return ec;
      p += n;
    }
    return {};
  }
  static const std::vector<std::byte> zeros(1 << 20);
  for (std::uint64_t p = off; p < off + len;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(off + len - p, zeros.size()));
    if (auto ec = do_pwrite(zeros.data(), n, p, 0, "write")) return ec;
    p += n;
  }
  return {};
}

std::error_code NbdLeg::fallocate(int mode, std::uint64_t off, std::uint64_t len) {
  const bool keep_size = mode & FALLOC_FL_KEEP_SIZE;
  std::uint64_t size;
  {
    std::lock_guard lk(size_mu_);
    size = size_;
  }
  const std::uint64_t end = off + len;
  if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
    // The bytes inside the image become zeros; past it only a size change means anything.
    const std::uint64_t zend = std::min(end, size);
    if (zend > off)
      if (auto ec = zero_range(off, zend - off, (mode & FALLOC_FL_ZERO_RANGE) != 0)) return ec;
  }
  // A preallocation changes no byte: an export is allocated by its server.
  if (!keep_size && end > size) return set_size(end);
  return {};
}

std::error_code NbdLeg::punch(std::uint64_t off, std::uint64_t len) {
  std::uint64_t size;
  {
    std::lock_guard lk(size_mu_);
    size = size_;
  }
  const std::uint64_t end = std::min(off + len, size);
  return end > off ? zero_range(off, end - off, false) : std::error_code{};
}

utils::Result<NbdRecord> NbdLeg::read_record(std::string* why) {
  std::vector<std::byte> block(kNbdRecordBytes);
  if (auto ec = do_pread(block.data(), block.size(), capacity_, "identity record read")) {
    *why = "reading the identity block: " + ec.message();
    return ec;
  }
  auto r = decode_nbd_record(block, why);
  if (r && r->name_hash != nbd_name_hash(name_)) {
    *why = "the identity record was written for another export name (a renamed or copied export)";
    return utils::errno_code(EBADMSG);
  }
  return r;
}

std::error_code NbdLeg::write_record(const NbdRecord& r) {
  std::vector<std::byte> block(kNbdRecordBytes);
  NbdRecord named = r;
  named.name_hash = nbd_name_hash(name_);
  encode_nbd_record(named, block);
  // With FUA where the server offers it, else a flush after: the record is durable before
  // the caller goes on (docs/on-disk-format.md "NBD identity record": the data it vouches
  // for was flushed before it was written).
  const bool fua = nbd_can_fua(h_) == 1;
  if (auto ec = do_pwrite(block.data(), block.size(), capacity_, fua ? LIBNBD_CMD_FLAG_FUA : 0,
                          "identity record write"))
    return ec;
  return fua ? std::error_code{} : flush(true);
}

}  // namespace fusemirror::core
