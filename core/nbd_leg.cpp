#include "core/nbd_leg.hpp"

#include <libnbd.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "utils/error.hpp"

namespace fusemirror::core {

namespace {

// Requests larger than this are split (NBD servers refuse payloads past 32 MiB; libnbd
// past 64 MiB).
constexpr std::uint64_t kMaxRequest = 4 << 20;
// Connections per export at most: as many as write-behind's workers (32 for the whole set,
// docs/design.md §5), each carrying one request. Over a link 50 ms per request away, 1 MiB
// writes need about 26 in flight to reach 500 MiB/s (docs/performance.md "WAN").
constexpr unsigned kMaxConnections = 32;
// An extra connection that has not finished its handshake by then is given up (the server
// is at its client limit): the image goes on with those it has.
constexpr int kExtraConnectMs = 3000;

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

bool libnbd_supports_tls() {
  nbd_handle* h = nbd_create();
  if (!h) return false;
  const bool yes = nbd_supports_tls(h) == 1;
  nbd_close(h);
  return yes;
}

NbdUri parse_nbd_uri(const std::string& s) {
  auto bad = [&](const std::string& why) { return utils::Error("secondary URI '" + s + "': " + why); };
  NbdUri u;
  u.text = s;
  const bool tls = s.starts_with("nbds");
  const bool unix_socket = s.starts_with("nbd+unix://") || s.starts_with("nbds+unix://");
  std::string rest, query;
  if (unix_socket) {
    rest = s.substr(tls ? 12 : 11);
  } else if (s.starts_with("nbd://") || s.starts_with("nbds://")) {
    rest = s.substr(tls ? 7 : 6);
  } else {
    throw bad("unknown scheme (nbd://HOST[:PORT], nbd+unix:///?socket=PATH, or nbds:// and nbds+unix:// for TLS)");
  }
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  // The query: socket=PATH (unix), and with TLS tls-psk-file=PATH, tls-certificates=DIR,
  // tls-username=NAME (libnbd's URI keys, docs/operations.md §9).
  if (!unix_socket && !tls && !query.empty()) throw bad("nbd://HOST[:PORT] takes no query");
  if (unix_socket && !tls && (!query.starts_with("socket=") || query.find('&') != std::string::npos))
    throw bad("a unix socket URI needs exactly one query key, socket=PATH");
  bool have_socket = false;
  for (std::size_t pos = 0; pos < query.size();) {
    const std::size_t amp = std::min(query.find('&', pos), query.size());
    const std::string kv = query.substr(pos, amp - pos);
    pos = amp + 1;
    const auto eq = kv.find('=');
    const std::string key = kv.substr(0, eq), value = eq == std::string::npos ? "" : kv.substr(eq + 1);
    auto absolute = [&](std::string* dst) {
      if (!dst->empty()) throw bad(key + " given twice");
      if (value.empty() || value[0] != '/') throw bad(key + "=PATH must be an absolute path");
      *dst = value;
    };
    if (key == "socket" && unix_socket) {
      absolute(&u.socket);
      have_socket = true;
    } else if (key == "tls-psk-file" && tls) {
      absolute(&u.tls_psk_file);
    } else if (key == "tls-certificates" && tls) {
      absolute(&u.tls_certificates);
    } else if (key == "tls-username" && tls) {
      if (value.empty()) throw bad("tls-username needs a name");
      u.tls_username = value;
    } else {
      throw bad("unknown query key '" + key + "' (" +
                (tls ? std::string(unix_socket ? "socket, " : "") + "tls-psk-file, tls-certificates, tls-username"
                     : std::string("socket")) +
                ")");
    }
  }
  if (!u.tls_psk_file.empty() && !u.tls_certificates.empty())
    throw bad("tls-psk-file and tls-certificates exclude each other (a pre-shared key or X.509 certificates)");
  if (tls) {
    if (!libnbd_supports_tls()) throw bad("this libnbd was built without TLS (nbds:// needs it)");
    u.tls = true;
  }
  if (unix_socket) {
    if (rest != "/" && !rest.empty())
      throw bad("the URI names no host and no export (the export is each image's relative path): "
                "use nbd+unix:///?socket=PATH");
    if (!have_socket) throw bad("a unix socket URI needs the query key socket=PATH");
    return u;
  }
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

nbd_handle* NbdLeg::open_handle(const NbdUri& uri, const std::string& name, int timeout_ms, std::error_code* ec,
                                std::string* why) {
  nbd_handle* h = nbd_create();
  if (!h) {
    *ec = nbd_errno();
    *why = std::string("libnbd: ") + nbd_get_error();
    return nullptr;
  }
  auto give_up = [&](std::error_code e, std::string reason) -> nbd_handle* {
    *ec = e;
    *why = std::move(reason);
    nbd_close(h);
    return nullptr;
  };
  // The export name is sent as given: nbdkit's file plugin with dir= serves each file of
  // its directory under its name.
  if (nbd_set_export_name(h, name.c_str()) == -1 || nbd_set_full_info(h, true) == -1)
    return give_up(nbd_errno(), std::string("libnbd: ") + nbd_get_error());
  // TLS (nbds://): required, never opportunistic — a server that does not offer it is
  // refused in the handshake rather than carrying the image in the clear.
  if (uri.tls &&
      (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) == -1 ||
       (!uri.tls_psk_file.empty() && nbd_set_tls_psk_file(h, uri.tls_psk_file.c_str()) == -1) ||
       (!uri.tls_certificates.empty() && nbd_set_tls_certificates(h, uri.tls_certificates.c_str()) == -1) ||
       (!uri.tls_username.empty() && nbd_set_tls_username(h, uri.tls_username.c_str()) == -1) ||
       // With certificates the server's is checked against the CA and the host name. libnbd
       // (1.14) can only do so with a host name: over a unix socket it is not checked
       // (docs/operations.md §9.2: use a PSK there).
       (uri.tls_psk_file.empty() && nbd_set_tls_verify_peer(h, true) == -1)))
    return give_up(nbd_errno(), "TLS set-up for " + uri.text + ": " + nbd_get_error());
  // The handshake runs asynchronously against the timeout (see the header): a server that
  // accepts the connection but never answers (stopped, or at its client limit like
  // qemu-nbd --shared=N, which leaves a further connection in its listen queue) must not
  // hold the caller, which may hold the namespace lock (re-add) or be the link's
  // reconnect thread.
  int rc = uri.socket.empty() ? nbd_aio_connect_tcp(h, uri.host.c_str(), uri.port.c_str())
                              : nbd_aio_connect_unix(h, uri.socket.c_str());
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  while (rc != -1 && nbd_aio_is_connecting(h) == 1) {
    if (Clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    if (nbd_poll(h, poll_ms(deadline)) == -1) rc = -1;
  }
  if (timed_out) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%g", timeout_ms / 1000.0);
    return give_up(utils::errno_code(ETIMEDOUT), "cannot connect to " + uri.text + " for export " + name +
                                                     ": no answer within " + secs +
                                                     " s (secondary_timeout, at most 3 s for an extra connection)");
  }
  if (rc != -1 && nbd_aio_is_ready(h) != 1) rc = -1;
  if (rc == -1) {
    const std::error_code e = nbd_errno();
    std::string err = nbd_get_error() ? nbd_get_error() : "";
    if (err.empty()) err = "the connection closed during the handshake";
    // The server refused the export name (NBD_REP_ERR_UNKNOWN: libnbd's "server has no
    // export named …"), or the connection itself failed (a socket that is not there is
    // ENOENT too: told apart by the message, which only the handshake's refusal gives).
    if (err.find("no export") != std::string::npos || err.find("unknown export") != std::string::npos)
      return give_up(utils::errno_code(ENOENT), "export " + name + " missing on " + uri.text + " (" + err + ")");
    // A TLS handshake that fails (a key or certificate the server does not accept) shows
    // only as GnuTLS's message: say what it means.
    if (uri.tls && err.find("gnutls") != std::string::npos)
      return give_up(e, "cannot connect to " + uri.text + " for export " + name +
                            ": TLS handshake failed (a key or certificate the server does not accept?): " + err);
    return give_up(e, "cannot connect to " + uri.text + " for export " + name + ": " + err);
  }
  return h;
}

utils::Result<std::unique_ptr<NbdLeg>> NbdLeg::connect(const NbdUri& uri, const std::string& name, std::string* why) {
  std::error_code ec;
  // secondary_timeout for the first connection (in milliseconds, at least 1).
  const int ms = static_cast<int>(std::clamp(uri.timeout_s * 1000.0, 1.0, 3600e3));
  nbd_handle* h = open_handle(uri, name, ms, &ec, why);
  if (!h) return ec;
  auto give_up = [&](std::error_code e, std::string reason) -> utils::Result<std::unique_ptr<NbdLeg>> {
    *why = std::move(reason);
    nbd_close(h);
    return e;
  };
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
    : uri_(std::move(uri)),
      name_(std::move(name)),
      export_size_(export_size),
      capacity_(export_size - kNbdTailBytes),
      can_flush_(nbd_can_flush(h) == 1),
      can_zero_(nbd_can_zero(h) == 1),
      max_conns_(nbd_can_multi_conn(h) == 1 ? kMaxConnections : 1),
      size_(capacity_) {
  all_.reserve(max_conns_);
  free_.reserve(max_conns_);
  all_.push_back(h);
  free_.push_back(h);
}

NbdLeg::~NbdLeg() {
  // The polite disconnect, bounded: nbd_shutdown() would wait for a server that stopped
  // answering. A dead leg (a request timed out) just closes its sockets.
  if (!dead_) {
    const auto deadline = deadline_after(std::min(uri_.timeout_s, 5.0));
    for (nbd_handle* h : all_)
      if (nbd_aio_is_ready(h) == 1 && nbd_aio_disconnect(h, 0) == 0)
        while (nbd_aio_is_closed(h) != 1 && nbd_aio_is_dead(h) != 1 && Clock::now() < deadline)
          if (nbd_poll(h, poll_ms(deadline)) == -1) break;
  }
  for (nbd_handle* h : all_) nbd_close(h);
}

unsigned NbdLeg::connections() const {
  std::lock_guard lk(pool_mu_);
  return static_cast<unsigned>(all_.size());
}

nbd_handle* NbdLeg::acquire() {
  std::unique_lock lk(pool_mu_);
  for (;;) {
    if (!free_.empty()) {
      nbd_handle* h = free_.back();
      free_.pop_back();
      return h;
    }
    if (!grow_failed_ && all_.size() + opening_ < max_conns_) {
      // Opened outside the lock (a handshake is a few round trips; TLS more); the
      // requests meanwhile go on on the others.
      ++opening_;
      lk.unlock();
      std::error_code ec;
      std::string why;
      const int ms = static_cast<int>(std::clamp(uri_.timeout_s * 1000.0, 1.0, double{kExtraConnectMs}));
      nbd_handle* h = open_handle(uri_, name_, ms, &ec, &why);
      lk.lock();
      --opening_;
      if (h) {
        all_.push_back(h);  // reserved: never reallocates
        return h;
      }
      // The server refuses more (a connection limit, say): go on with those open. Logged
      // once (several requests may have been opening one at the same time).
      if (!grow_failed_)
        spdlog::warn("{}: an extra connection was refused ({}); going on with {}", describe(), why, all_.size());
      grow_failed_ = true;
      continue;
    }
    pool_cv_.wait(lk, [&] { return !free_.empty(); });
  }
}

void NbdLeg::release(nbd_handle* h) {
  {
    std::lock_guard lk(pool_mu_);
    free_.push_back(h);
  }
  pool_cv_.notify_one();
}

std::string NbdLeg::describe() const { return "export " + name_ + " on " + uri_.text; }

std::error_code NbdLeg::fail(const char* op) {
  const std::error_code ec = nbd_errno();
  if (!error_logged_.exchange(true))
    spdlog::error("{}: {} failed: {} (further errors of this export are not logged)", describe(), op,
                  nbd_get_error() ? nbd_get_error() : ec.message());
  return ec;
}

template <typename Issue>
std::error_code NbdLeg::request(nbd_handle* h, const char* op, Issue issue) {
  if (dead_) return utils::errno_code(ETIMEDOUT);
  // A connection the server closed: libnbd would refuse the command as "invalid state"
  // (EINVAL); say what happened.
  if (nbd_aio_is_dead(h) == 1 || nbd_aio_is_closed(h) == 1) return utils::errno_code(ENOTCONN);
  const std::int64_t cookie = issue();
  if (cookie == -1) return fail(op);
  const auto deadline = deadline_after(uri_.timeout_s);
  for (;;) {
    const int done = nbd_aio_command_completed(h, static_cast<std::uint64_t>(cookie));
    if (done == 1) return {};
    if (done == -1) return fail(op);
    if (dead_) return utils::errno_code(ETIMEDOUT);  // another connection's request timed out
    if (Clock::now() >= deadline) {
      dead_ = true;
      if (!error_logged_.exchange(true))
        spdlog::error("{}: {} got no answer within {} s (secondary_timeout); connection abandoned "
                      "(further errors of this export are not logged)",
                      describe(), op, uri_.timeout_s);
      return utils::errno_code(ETIMEDOUT);
    }
    if (nbd_poll(h, poll_ms(deadline)) == -1) {
      // The connection died (the server closed it): the command cannot complete now.
      if (nbd_aio_command_completed(h, static_cast<std::uint64_t>(cookie)) == 1) return {};
      return fail(op);
    }
  }
}

std::error_code NbdLeg::do_pread(nbd_handle* h, void* buf, std::size_t len, std::uint64_t off, const char* op) {
  return request(h, op, [&] { return nbd_aio_pread(h, buf, len, off, NBD_NULL_COMPLETION, 0); });
}

std::error_code NbdLeg::do_pwrite(nbd_handle* h, const void* buf, std::size_t len, std::uint64_t off,
                                  std::uint32_t flags, const char* op) {
  return request(h, op, [&] { return nbd_aio_pwrite(h, buf, len, off, NBD_NULL_COMPLETION, flags); });
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
  Lease h(*this);
  for (std::size_t done = 0; done < n;) {
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(n - done, kMaxRequest));
    if (auto ec = do_pread(h.get(), data.data() + done, len, off + done, "read")) return ec;
    done += len;
  }
  return n;
}

std::error_code NbdLeg::pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) {
  if (done) *done = 0;
  const std::uint64_t end = off + data.size();
  if (end > capacity_) return too_small(end);
  Lease h(*this);
  {
    // Past the image's end: the gap is zeroed first, as a file's reads as zeros.
    std::lock_guard lk(size_mu_);
    if (off > size_)
      if (auto ec = zero_range(h.get(), size_, off - size_, false)) return ec;
    size_ = std::max(size_, end);
  }
  for (std::size_t n = 0; n < data.size();) {
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(data.size() - n, kMaxRequest));
    if (auto ec = do_pwrite(h.get(), data.data() + n, len, off + n, 0, "write")) return ec;
    n += len;
    if (done) *done = n;
  }
  return {};
}

std::error_code NbdLeg::flush(bool /*datasync*/) {
  if (!can_flush_) return {};  // the server writes through (it says so by not offering flush)
  // One connection is enough: there is more than one only with multi-conn, whose contract
  // (the NBD protocol, NBD_FLAG_CAN_MULTI_CONN) is that a flush on any connection makes
  // durable every write completed on any of them — and a write that completed before this
  // call did complete.
  Lease h(*this);
  return request(h.get(), "flush", [&] { return nbd_aio_flush(h.get(), NBD_NULL_COMPLETION, 0); });
}

utils::Result<std::uint64_t> NbdLeg::size() {
  std::lock_guard lk(size_mu_);
  return size_;
}

std::error_code NbdLeg::set_size(std::uint64_t size) {
  if (size > capacity_) return too_small(size);
  Lease h(*this);
  std::lock_guard lk(size_mu_);
  // A grow reads as zeros: the export's bytes there are whatever an earlier life left.
  if (size > size_)
    if (auto ec = zero_range(h.get(), size_, size - size_, false)) return ec;
  size_ = size;
  return {};
}

std::error_code NbdLeg::zero_range(nbd_handle* h, std::uint64_t off, std::uint64_t len, bool keep_allocated) {
  if (can_zero_) {
    for (std::uint64_t p = off; p < off + len;) {
      const std::uint64_t n = std::min(off + len - p, std::uint64_t{1} << 30);
      if (auto ec = request(h, "zero", [&] {
            return nbd_aio_zero(h, n, p, NBD_NULL_COMPLETION, keep_allocated ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
          }))
        return ec;
      p += n;
    }
    return {};
  }
  static const std::vector<std::byte> zeros(1 << 20);
  for (std::uint64_t p = off; p < off + len;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(off + len - p, zeros.size()));
    if (auto ec = do_pwrite(h, zeros.data(), n, p, 0, "write")) return ec;
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
    if (zend > off) {
      Lease h(*this);
      if (auto ec = zero_range(h.get(), off, zend - off, (mode & FALLOC_FL_ZERO_RANGE) != 0)) return ec;
    }
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
  if (end <= off) return {};
  Lease h(*this);
  return zero_range(h.get(), off, end - off, false);
}

utils::Result<NbdRecord> NbdLeg::read_record(std::string* why) {
  std::vector<std::byte> block(kNbdRecordBytes);
  Lease h(*this);
  if (auto ec = do_pread(h.get(), block.data(), block.size(), capacity_, "identity record read")) {
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
  bool fua;
  {
    Lease h(*this);
    fua = nbd_can_fua(h.get()) == 1;
    if (auto ec = do_pwrite(h.get(), block.data(), block.size(), capacity_, fua ? LIBNBD_CMD_FLAG_FUA : 0,
                            "identity record write"))
      return ec;
  }
  return fua ? std::error_code{} : flush(true);
}

}  // namespace fusemirror::core
