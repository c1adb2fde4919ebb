#include "utils/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace fusemirror::utils {

SdNotify::SdNotify(std::string address, std::chrono::microseconds watchdog)
    : address_(std::move(address)), watchdog_(watchdog) {}

SdNotify SdNotify::from_environment() {
  const char* sock = std::getenv("NOTIFY_SOCKET");
  const char* wusec = std::getenv("WATCHDOG_USEC");
  const char* wpid = std::getenv("WATCHDOG_PID");
  SdNotify n(sock ? sock : "");
  // The watchdog is ours when WATCHDOG_PID is unset or names this process (systemd sets it
  // to the main pid it started).
  if (wusec && (!wpid || std::strtoll(wpid, nullptr, 10) == ::getpid())) {
    char* end = nullptr;
    const long long us = std::strtoll(wusec, &end, 10);
    if (end && *end == '\0' && us > 0)
      n.watchdog_ = std::chrono::microseconds(us);
    else
      n.problem_ =
          std::string("WATCHDOG_USEC='") + wusec + "' is not a positive number; no watchdog pings";
  }
  if (!n.address_.empty() && n.address_[0] != '/' && n.address_[0] != '@') {
    n.problem_ = "NOTIFY_SOCKET='" + n.address_ +
                 "' is neither a path nor an abstract socket (@name); not notifying";
    n.address_.clear();
  } else if (n.address_.size() >= sizeof(sockaddr_un{}.sun_path)) {
    n.problem_ = "NOTIFY_SOCKET is longer than a socket address can be; not notifying";
    n.address_.clear();
  }
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  return n;
}

std::error_code SdNotify::send(std::string_view message) const {
  if (address_.empty()) return {};
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (address_.size() >= sizeof sa.sun_path)
    return std::error_code(ENAMETOOLONG, std::generic_category());
  std::memcpy(sa.sun_path, address_.data(), address_.size());
  if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';  // abstract namespace
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return std::error_code(errno, std::generic_category());
  if (::sendto(fd.get(), message.data(), message.size(), MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&sa), len) < 0)
    return std::error_code(errno, std::generic_category());
  return {};
}

}  // namespace fusemirror::utils
