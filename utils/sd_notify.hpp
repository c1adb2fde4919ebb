// utils/sd_notify.hpp — systemd's service notification protocol, spoken directly (no
// libsystemd): one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET
// (a path, or an abstract socket when it starts with '@'), holding newline-separated
// VARIABLE=value assignments: READY=1, STATUS=..., STOPPING=1, WATCHDOG=1, MAINPID=N.
//
// Without $NOTIFY_SOCKET (not started by systemd as Type=notify) every call is a no-op.
//
// Thread safety: send() may be called concurrently (one sendto per message).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <system_error>

#include "utils/fd.hpp"

namespace fusemirror::utils {

class SdNotify {
 public:
  // Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID and unsets them, so that no
  // child process (fusermount3, a helper) takes systemd's messages for its own. Invalid
  // values leave the notifier inactive (`problem()` says why).
  static SdNotify from_environment();
  // A notifier for an explicit socket address (tests).
  explicit SdNotify(std::string address = {}, std::chrono::microseconds watchdog = {});

  bool active() const { return !address_.empty(); }
  const std::string& address() const { return address_; }
  const std::string& problem() const { return problem_; }
  // WatchdogSec as systemd passed it (0: no watchdog); ping at half of it.
  std::chrono::microseconds watchdog_interval() const { return watchdog_; }

  // Sends `message` (e.g. "READY=1\nSTATUS=2 images, 1 degraded"). Inactive: returns {}.
  // Returns the errno of a failed socket() or sendto().
  std::error_code send(std::string_view message) const;

 private:
  std::string address_;
  std::chrono::microseconds watchdog_{0};
  std::string problem_;
};

}  // namespace fusemirror::utils
