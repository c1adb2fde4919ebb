#include "utils/uuid.hpp"

#include <sys/random.h>

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace fusemirror::utils {

Uuid random_uuid() noexcept {
  Uuid u{};
  std::size_t got = 0;
  while (got < u.size()) {
    ssize_t n = ::getrandom(u.data() + got, u.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got < u.size()) {
    // getrandom(2) cannot fail on the kernels we run on (only EINTR, retried above); should it,
    // a UUID needs uniqueness, not secrecy: time, pid and a counter give that. Never throws
    // (reachable from a FUSE request that creates an image).
    static std::atomic<std::uint64_t> counter{0};
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    const std::uint64_t a = static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
    const std::uint64_t b = (static_cast<std::uint64_t>(::getpid()) << 32) ^ counter.fetch_add(1);
    std::memcpy(u.data(), &a, 8);
    std::memcpy(u.data() + 8, &b, 8);
  }
  u[6] = (u[6] & 0x0F) | 0x40;  // version 4
  u[8] = (u[8] & 0x3F) | 0x80;  // RFC 4122 variant
  return u;
}

std::string to_string(const Uuid& u) {
  char buf[37];
  std::snprintf(buf, sizeof buf,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                u[15]);
  return buf;
}

std::optional<Uuid> parse_uuid(std::string_view s) {
  if (s.size() != 36) return std::nullopt;
  Uuid u{};
  std::size_t bi = 0;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < s.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    int hi = hex(s[i]), lo = hex(s[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    u[bi++] = static_cast<std::uint8_t>(hi * 16 + lo);
    i += 2;
  }
  return bi == 16 ? std::optional<Uuid>(u) : std::nullopt;
}

}  // namespace fusemirror::utils
