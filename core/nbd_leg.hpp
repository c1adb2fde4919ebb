// core/nbd_leg.hpp — a secondary leg that is an export on an NBD server, through libnbd
// (core/leg.hpp): the set's secondary URI, one connection per image, the I/O, and the
// image's identity record in the export's tail (core/nbd_record.hpp).
//
// The export's last kNbdTailBytes hold the identity record; the image's bytes are
// [0, capacity) with capacity = export size − kNbdTailBytes. The leg keeps the image's
// size on the export in memory (an export has a fixed size): bytes past it read as short,
// and growing it zeroes the range first, so that what an earlier, longer life of the image
// left there never reads back as data. An image larger than the capacity fails with EFBIG
// and the reason logged once ("export vm.img on nbd+unix:///?socket=/s: 1048576 bytes
// available, the image needs 2097152").
//
// Connections: libnbd's handle carries one request at a time, so a leg that has to keep
// many requests in flight — a write-behind queue toward a server far away — opens more
// connections on demand, up to kMaxConnections (nbd_leg.cpp), when the server advertises
// multi-conn (its connections see one another's writes, and a flush on one covers every
// one); otherwise it keeps the one. Each request takes a free connection for its duration.
//
// Timeouts (config secondary_timeout, docs/config.md): libnbd has no per-request timeout
// of its own, and its synchronous calls wait forever on a server that stopped answering
// (SIGSTOP, a dead link without a reset). Every request is therefore issued with the
// asynchronous API (nbd_aio_*) and waited for with nbd_poll() against a deadline; the
// connection's handshake likewise (nbd_aio_connect_*). A request that misses its deadline
// fails with ETIMEDOUT and the leg is dead from then on: every later call fails at once
// with ETIMEDOUT (the connection's state is unknown: a reply could still arrive for a
// request the caller has given up on), and the handle is closed without the polite
// disconnect, which would wait for the server again. The image degrades on that error
// (core/image.hpp); core/link.hpp reconnects with a new leg. Waiting in our own loop
// rather than with a watchdog thread that closes the socket keeps one thread per request
// and no race between the close and libnbd's use of the descriptor.
//
// Thread safety: a connection is used by one request at a time (Lease); pool_mu_ guards
// the connections' list, size_mu_ the size; dead_ is atomic.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <vector>
#include <mutex>
#include <string>

#include "core/leg.hpp"
#include "core/nbd_record.hpp"
#include "utils/result.hpp"

struct nbd_handle;

namespace fusemirror::core {

// A secondary given as an NBD URI (docs/config.md "secondary"):
//   nbd://HOST[:PORT][/]                 TCP, port 10809 by default
//   nbd+unix:///?socket=PATH             a unix socket (PATH absolute)
//   nbds://HOST[:PORT][/]?TLS            TLS, required (where libnbd has it); TLS keys:
//   nbds+unix:///?socket=PATH&TLS          tls-psk-file=PATH (a pre-shared key, psktool's
//                                          file) or tls-certificates=DIR (X.509), and
//                                          tls-username=NAME (the PSK identity)
// The export name is the image's relative path. Anything else (an export name in the URI,
// other query keys) is refused by parse_nbd_uri with the reason.
struct NbdUri {
  std::string text;    // as given (what config.json stores and messages show)
  std::string socket;  // unix socket path, or empty
  std::string host;    // TCP host, or empty
  std::string port = "10809";
  bool tls = false;               // nbds: TLS required
  std::string tls_psk_file;       // absolute, or empty
  std::string tls_certificates;   // absolute directory, or empty (libnbd's default)
  std::string tls_username;       // PSK identity, or empty (libnbd's default: the login name)
  // Seconds a request or the handshake may take before the leg fails with ETIMEDOUT
  // (config secondary_timeout; not part of the URI).
  double timeout_s = 30;
};
bool is_nbd_uri(const std::string& s);
// Whether this libnbd was built with TLS (nbd_supports_tls).
bool libnbd_supports_tls();
// Throws utils::Error("secondary URI: reason").
NbdUri parse_nbd_uri(const std::string& s);

constexpr std::uint64_t kNbdTailBytes = 4096;

class NbdLeg final : public Leg {
 public:
  // Connects to export `name` on `uri`. Errors: ENOENT (the server has no such export),
  // EFBIG (smaller than kNbdTailBytes), or the connection's errno; `*why` gets the
  // reason for status and the log ("export vm.img missing on nbd+unix:///?socket=/s").
  static utils::Result<std::unique_ptr<NbdLeg>> connect(const NbdUri& uri, const std::string& name,
                                                       std::string* why);
  ~NbdLeg() override;

  std::string describe() const override;
  utils::Result<std::size_t> pread(std::span<std::byte> data, std::uint64_t off) override;
  std::error_code pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) override;
  std::error_code flush(bool datasync) override;
  utils::Result<std::uint64_t> size() override;
  std::error_code set_size(std::uint64_t size) override;
  std::error_code fallocate(int mode, std::uint64_t off, std::uint64_t len) override;
  std::error_code punch(std::uint64_t off, std::uint64_t len) override;

  // The bytes the image may use on the export.
  std::uint64_t capacity() const { return capacity_; }
  // Connections open now, and the most it may open (1 without multi-conn).
  unsigned connections() const;
  unsigned max_connections() const { return max_conns_; }
  // The identity record in the export's tail: ENOENT when the tail holds none (all
  // zeros), EBADMSG with `*why` when it does not decode.
  bool keeps_record() const override { return true; }
  utils::Result<NbdRecord> read_record(std::string* why) override;
  // Writes the record and flushes the export: durable when it returns (ordering:
  // docs/on-disk-format.md "NBD identity record").
  // The record's name_hash is this export's name's.
  std::error_code write_record(const NbdRecord& r) override;

 private:
  NbdLeg(nbd_handle* h, NbdUri uri, std::string name, std::uint64_t export_size);
  // Opens a connection to export `name` (TLS as the URI asks), waiting at most
  // `timeout_ms` for its handshake; null with *ec and *why.
  static nbd_handle* open_handle(const NbdUri& uri, const std::string& name, int timeout_ms, std::error_code* ec,
                                 std::string* why);
  // A connection for one request: a free one, a new one while under max_conns_, else the
  // first one freed. Lease gives it back.
  class Lease {
   public:
    explicit Lease(NbdLeg& leg) : leg_(leg), h_(leg.acquire()) {}
    ~Lease() { leg_.release(h_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    nbd_handle* get() const { return h_; }

   private:
    NbdLeg& leg_;
    nbd_handle* h_;
  };
  nbd_handle* acquire();
  void release(nbd_handle* h);
  std::error_code fail(const char* op);  // the libnbd error as an errno code, logged once
  // One request on connection `h`: issues it with `issue` (an nbd_aio_* call returning its
  // cookie) and waits for it until the deadline; ETIMEDOUT then (the leg is dead after).
  template <typename Issue>
  std::error_code request(nbd_handle* h, const char* op, Issue issue);
  std::error_code do_pread(nbd_handle* h, void* buf, std::size_t len, std::uint64_t off, const char* op);
  std::error_code do_pwrite(nbd_handle* h, const void* buf, std::size_t len, std::uint64_t off, std::uint32_t flags,
                            const char* op);
  std::error_code zero_range(nbd_handle* h, std::uint64_t off, std::uint64_t len, bool keep_allocated);
  std::error_code too_small(std::uint64_t need);  // EFBIG, logged once
  NbdUri uri_;
  std::string name_;
  std::uint64_t export_size_, capacity_;
  bool can_flush_, can_zero_;
  const unsigned max_conns_;
  mutable std::mutex pool_mu_;
  std::condition_variable pool_cv_;  // a connection was given back
  std::vector<nbd_handle*> all_;     // guarded by pool_mu_: every open connection
  std::vector<nbd_handle*> free_;    // guarded by pool_mu_
  unsigned opening_ = 0;             // guarded by pool_mu_: connections being opened
  bool grow_failed_ = false;         // guarded by pool_mu_: an extra connection was refused
  std::atomic<bool> dead_{false};   // a request timed out: every later call fails at once
  std::mutex size_mu_;
  std::uint64_t size_;  // guarded by size_mu_: the image's size on the export
  std::atomic<bool> error_logged_{false};
};

}  // namespace fusemirror::core
