#include "fusemirror/service_notify.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstring>

#include "fusemirror/control_tree.hpp"

namespace fusemirror::fuse {

using Clock = std::chrono::steady_clock;

ServiceNotifier::ServiceNotifier(utils::SdNotify notify, core::MirrorSet& set,
                                 std::string mountpoint)
    : notify_(std::move(notify)), set_(set), mountpoint_(std::move(mountpoint)) {}

void ServiceNotifier::start() {
  if (!active()) return;
  thread_ = std::jthread([this](std::stop_token st) { main(st); });
}

void ServiceNotifier::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  if (probing_)
    thread_.detach();
  else
    thread_.join();
}

void ServiceNotifier::stopping() {
  if (!active()) return;
  stop();  // no STATUS= may follow STOPPING=1
  std::lock_guard lk(send_mu_);
  if (stopping_sent_) return;
  stopping_sent_ = true;
  if (auto ec = notify_.send("STOPPING=1\nSTATUS=unmounting: draining, marking the bitmaps clean"))
    spdlog::warn("sd_notify to {}: {}", notify_.address(), ec.message());
}

void ServiceNotifier::send(const std::string& msg) {
  std::lock_guard lk(send_mu_);
  if (stopping_sent_) return;
  if (auto ec = notify_.send(msg)) {
    if (!send_failed_logged_)
      spdlog::warn("sd_notify to {}: {} (logged once)", notify_.address(), ec.message());
    send_failed_logged_ = true;
  } else {
    send_failed_logged_ = false;
  }
}

void ServiceNotifier::main(std::stop_token st) {
  std::mutex m;
  std::condition_variable_any cv;
  auto sleep = [&](std::chrono::milliseconds d) {
    std::unique_lock lk(m);
    cv.wait_for(lk, st, d, [] { return false; });
  };
  // READY=1 only once a request through the kernel came back: the loop has answered the
  // kernel's INIT and serves (this thread's stat is one more FUSE request, answered by
  // another of the loop's threads).
  const std::string probe = mountpoint_ + kStatusFile;
  probing_ = true;
  for (int attempt = 0; !st.stop_requested(); ++attempt) {
    struct stat sb {};
    if (::stat(probe.c_str(), &sb) == 0) break;
    if (attempt == 50)
      spdlog::warn("{}: the mount does not answer yet ({}); READY=1 waits", mountpoint_,
                   strerror(errno));
    sleep(std::chrono::milliseconds(100));
  }
  probing_ = false;
  if (st.stop_requested()) return;
  std::string summary = core::health_summary(set_.status());
  send("READY=1\nSTATUS=" + summary);
  spdlog::info("sd_notify: READY=1 sent to {} ({})", notify_.address(), summary);

  const auto wd = std::chrono::duration_cast<Clock::duration>(notify_.watchdog_interval() / 2);
  const auto refresh_every = std::chrono::seconds(5);
  auto next_refresh = Clock::now() + refresh_every;
  auto next_ping = Clock::now();
  std::uint64_t seen = set_.events().next_seq();
  while (!st.stop_requested()) {
    // Wake at the next event, the next refresh or ping, or every 250 ms to see a stop.
    const std::uint64_t now_seq =
        set_.events().wait_for_event(seen, std::chrono::milliseconds(250));
    if (st.stop_requested()) return;
    const auto now = Clock::now();
    const bool ping = wd.count() > 0 && now >= next_ping;
    if (now_seq == seen && now < next_refresh && !ping) continue;
    seen = now_seq;
    next_refresh = now + refresh_every;
    std::string s = core::health_summary(set_.status());  // also the watchdog's proof of life
    if (s != summary) {
      summary = std::move(s);
      send("STATUS=" + summary);
    }
    if (ping) {
      send("WATCHDOG=1");
      next_ping = now + wd;
    }
    // At most five status() computations a second, however many events arrive (creating
    // thousands of images posts thousands of NewImage).
    sleep(std::chrono::milliseconds(200));
  }
}

}  // namespace fusemirror::fuse
