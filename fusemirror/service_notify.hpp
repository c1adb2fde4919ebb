// fusemirror/service_notify.hpp — what the daemon tells systemd (Type=notify), through
// utils::SdNotify:
//
//   READY=1          once the mount serves: the notifier's own stat() of
//                    MOUNT/.fusemirror/status.json went through the kernel and back
//   STATUS=...       core::health_summary ("2 images, 1 degraded"), sent at READY and again
//                    whenever it changes (checked at every event the set posts, and every
//                    5 s)
//   WATCHDOG=1       every WatchdogSec/2 when systemd asked for it, after a status() of the
//                    set returned: a daemon whose image table is stuck stops pinging and
//                    systemd restarts it
//   STOPPING=1       when unmounting starts
//
// One thread, started after the daemon forked (threads do not survive fork()) and only
// when $NOTIFY_SOCKET is set (docs/design.md §5).
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <thread>

#include "core/mirror_set.hpp"
#include "utils/sd_notify.hpp"

namespace fusemirror::fuse {

class ServiceNotifier {
 public:
  ServiceNotifier(utils::SdNotify notify, core::MirrorSet& set, std::string mountpoint);
  ~ServiceNotifier() { stop(); }
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  bool active() const { return notify_.active(); }
  // Starts the thread (no-op when inactive): it sends READY=1 once the mount answers.
  void start();
  // STOPPING=1, then stops the thread. Idempotent.
  void stopping();

 private:
  void main(std::stop_token st);
  // Stops the thread; one still waiting for the mount's first answer is left to end by
  // itself (the unmount that follows aborts its request): joining it could wait forever.
  void stop();
  void send(const std::string& msg);

  utils::SdNotify notify_;
  core::MirrorSet& set_;
  const std::string mountpoint_;
  std::mutex send_mu_;
  bool send_failed_logged_ = false;   // guarded by send_mu_
  bool stopping_sent_ = false;        // guarded by send_mu_
  std::atomic<bool> probing_{false};  // the thread waits for the mount's first answer
  std::jthread thread_;
};

}  // namespace fusemirror::fuse
