// core/link.hpp — the link to the secondary: automatic reconnect with backoff and the
// link's state per image (docs/operations.md "replicating to another host").
//
// An image whose secondary failed (a dropped or hung NBD connection, EIO from the server,
// a secondary directory that vanished) is degraded at once by the write path
// (Image::fail_secondary); user writes go on to the primary and the bitmap keeps what the
// secondary misses. LinkKeeper's thread then tries to put the secondary back by itself:
// the first try reconnect_min seconds after the loss, each failed try doubling the wait
// up to reconnect_max. A try is the operator's re-add exactly (Control::reconnect): a new
// leg, the identity proof (the export's identity record, or the secondary directory's
// membership and per-image record), then a bitmap-only catch-up when the proof holds and
// a full resync, with the reason logged, when it does not.
//
// Never retried: an image the operator failed (Image::held_out(): it stays out until
// `re-add`; the bitmap header's held flag keeps that across remounts), and any image when
// reconnect_min is 0 (config). An image that loads degraded otherwise (lost by the link
// before the remount, or its secondary unreachable now) is retried.
//
// States (core/status.hpp LinkStatus): connected; connecting (since the loss, tries so
// far, the last try's error); down (held, or reconnecting off: the reason).
//
// Thread: one (started by start(), stopped by stop()); a try may take up to the connect
// timeout (secondary_timeout), which holds no lock of the set while it connects to an NBD
// server. Thread safety: every public member may be called concurrently; mu_ is a leaf.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "core/image.hpp"
#include "core/image_table.hpp"
#include "core/status.hpp"

namespace fusemirror::core {

// Seconds to wait before try number `tries + 1` (tries >= 1 failed so far): min · 2^(tries−1),
// at most max.
double reconnect_delay(double min_s, double max_s, std::uint32_t tries);

class LinkKeeper {
 public:
  // One try: puts `img`'s secondary back (Control::reconnect); `*why` gets the reason when
  // it cannot.
  using Reconnect = std::function<std::error_code(const std::shared_ptr<Image>& img, std::string* why)>;

  LinkKeeper(double reconnect_min_s, double reconnect_max_s, ImageTable& table, Reconnect reconnect)
      : min_s_(reconnect_min_s), max_s_(reconnect_max_s), table_(table), reconnect_(std::move(reconnect)) {}
  ~LinkKeeper() { stop(); }

  void start();  // no thread when reconnecting is off (reconnect_min 0)
  void stop();   // idempotent

  // One pass now: every degraded image whose next try is due gets it (the thread runs this
  // every 250 ms; tests call it directly).
  void tick();
  // The link of `img` for status.
  LinkStatus status(const Image& img) const;

 private:
  struct Entry {
    std::weak_ptr<Image> img;
    std::int64_t since = 0;  // unix time the loss was first seen
    std::uint32_t tries = 0;
    std::chrono::steady_clock::time_point next;
    std::string last_error;
  };
  void main(std::stop_token st);

  const double min_s_, max_s_;
  ImageTable& table_;
  Reconnect reconnect_;
  mutable std::mutex mu_;
  std::map<const Image*, Entry> entries_;  // guarded by mu_: the degraded images being retried
  std::mutex tick_mu_;                     // one tick at a time (the thread and tests)
  std::jthread thread_;
};

}  // namespace fusemirror::core
