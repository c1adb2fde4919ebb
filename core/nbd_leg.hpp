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
// Thread safety: io_mu_ serialises the requests (libnbd's synchronous calls serialised
// them too: one request in flight per image); size_mu_ guards the size (taken before
// io_mu_ when both are).
#pragma once

#include <atomic>
#include <memory>
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
// The export name is the image's relative path. Anything else (nbds://, an export name in
// the URI, other query keys) is refused by parse_nbd_uri with the reason.
struct NbdUri {
  std::string text;    // as given (what config.json stores and messages show)
  std::string socket;  // unix socket path, or empty
  std::string host;    // TCP host, or empty
  std::string port = "10809";
  // Seconds a request or the handshake may take before the leg fails with ETIMEDOUT
  // (config secondary_timeout; not part of the URI).
  double timeout_s = 30;
};
bool is_nbd_uri(const std::string& s);
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
  std::error_code fail(const char* op);  // the libnbd error as an errno code, logged once
  // One request (REQUIRES io_mu_): issues it with `issue` (an nbd_aio_* call returning its
  // cookie) and waits for it until the deadline; ETIMEDOUT then (the leg is dead after).
  template <typename Issue>
  std::error_code request(const char* op, Issue issue);
  std::error_code do_pread(void* buf, std::size_t len, std::uint64_t off, const char* op);
  std::error_code do_pwrite(const void* buf, std::size_t len, std::uint64_t off, std::uint32_t flags, const char* op);
  std::error_code zero_range(std::uint64_t off, std::uint64_t len, bool keep_allocated);
  std::error_code too_small(std::uint64_t need);  // EFBIG, logged once
  nbd_handle* h_;
  NbdUri uri_;
  std::string name_;
  std::uint64_t export_size_, capacity_;
  bool can_flush_, can_zero_;
  std::mutex io_mu_;       // one request at a time (see above)
  bool dead_ = false;      // guarded by io_mu_: a request timed out
  std::mutex size_mu_;
  std::uint64_t size_;  // guarded by size_mu_: the image's size on the export
  std::atomic<bool> error_logged_{false};
};

}  // namespace fusemirror::core
