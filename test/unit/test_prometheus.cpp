// Unit tests for utils/prometheus (the text exposition format of `fusemirror metrics`) and
// utils/sd_notify (the daemon's systemd notifications), each against what its reader
// expects.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "test_helpers.hpp"
#include "utils/prometheus.hpp"
#include "utils/sd_notify.hpp"

using namespace fusemirror;
namespace prom = utils::prometheus;

TEST_SUITE("prometheus") {
  TEST_CASE("label values escape backslash, double quote and newline, and nothing else") {
    CHECK(prom::escape_label_value("disk.img") == "disk.img");
    CHECK(prom::escape_label_value("a\\b") == "a\\\\b");
    CHECK(prom::escape_label_value("say \"hi\"") == "say \\\"hi\\\"");
    CHECK(prom::escape_label_value("two\nlines") == "two\\nlines");
    CHECK(prom::escape_label_value("\\n") ==
          "\\\\n");  // a literal backslash-n stays two characters
    CHECK(prom::escape_label_value("caf\xc3\xa9 {x=1}, y") == "caf\xc3\xa9 {x=1}, y");
  }

  TEST_CASE("HELP text escapes backslash and newline only") {
    CHECK(prom::escape_help("a \"b\"\\c\nd") == "a \"b\"\\\\c\\nd");
  }

  TEST_CASE(
      "label_value: names that are UTF-8 without controls pass; others as `fusemirror status` "
      "shows them") {
    CHECK(prom::label_value("disk one.img") == "disk one.img");
    CHECK(prom::label_value("back\\slash\"q\nnl") ==
          "back\\slash\"q\nnl");  // escape_label_value's job
    CHECK(prom::label_value("\x1b[2J") == "\\x1b[2J");
    CHECK(prom::label_value("bad\xff") == "bad\\xff");
    CHECK(prom::label_value("tab\tx\\") ==
          "tab\\tx\\\\");  // escaped form, backslash doubled as printable() does
  }

  TEST_CASE("values: integers exactly, fractions shortest, and the special values") {
    CHECK(prom::format_value(0) == "0");
    CHECK(prom::format_value(387) == "387");
    CHECK(prom::format_value(4194304) == "4194304");
    CHECK(prom::format_value(18446744073709551615.0) == "1.8446744073709552e+19");
    CHECK(prom::format_value(0.25) == "0.25");
    CHECK(prom::format_value(1.0 / 3) == "0.3333333333333333");
    CHECK(std::strtod(prom::format_value(1.0 / 3).c_str(), nullptr) == 1.0 / 3);
    CHECK(prom::format_value(-2.5) == "-2.5");
    CHECK(prom::format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
    CHECK(prom::format_value(std::numeric_limits<double>::infinity()) == "+Inf");
    CHECK(prom::format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  }

  TEST_CASE("a family's samples are contiguous under one HELP and TYPE, in declaration order") {
    prom::Exposition x;
    x.family("fm_a", "gauge", "A's help\nsecond line");
    x.family("fm_b_total", "counter", "B");
    x.family("fm_unused", "gauge", "never sampled: not written");
    x.add("fm_b_total", {{"mount", "/m"}}, 1);
    x.add("fm_a", {{"mount", "/m"}, {"image", "x\"y"}}, 2);
    x.add("fm_b_total", {{"mount", "/n"}}, 3);
    x.add("fm_a", {}, 4);
    CHECK(x.text() ==
          "# HELP fm_a A's help\\nsecond line\n"
          "# TYPE fm_a gauge\n"
          "fm_a{mount=\"/m\",image=\"x\\\"y\"} 2\n"
          "fm_a 4\n"
          "# HELP fm_b_total B\n"
          "# TYPE fm_b_total counter\n"
          "fm_b_total{mount=\"/m\"} 1\n"
          "fm_b_total{mount=\"/n\"} 3\n");
    CHECK_THROWS(x.add("fm_nope", {}, 1));
  }

}  // TEST_SUITE

TEST_SUITE("sd_notify") {
  namespace {
  // A datagram socket bound at `addr` (a path, or "@name" for the abstract namespace).
  struct Listener {
    utils::UniqueFd fd;
    explicit Listener(const std::string& addr)
        : fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
      REQUIRE(fd.valid());
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::memcpy(sa.sun_path, addr.data(), addr.size());
      if (addr[0] == '@') sa.sun_path[0] = '\0';
      REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + addr.size())) == 0);
      timeval tv{5, 0};
      ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    std::string recv() {
      char buf[4096];
      const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
      REQUIRE(n >= 0);
      return std::string(buf, static_cast<std::size_t>(n));
    }
  };
  }  // namespace

  TEST_CASE("messages reach a path socket and an abstract one, one datagram each") {
    fmtest::TempDir d;
    const std::string path = d / "notify.sock";
    Listener l(path);
    utils::SdNotify n(path);
    CHECK(n.active());
    CHECK_FALSE(n.send("READY=1\nSTATUS=2 images, 1 degraded"));
    CHECK(l.recv() == "READY=1\nSTATUS=2 images, 1 degraded");
    const std::string abstract = "@fm-unit-" + std::to_string(::getpid());
    Listener la(abstract);
    CHECK_FALSE(utils::SdNotify(abstract).send("WATCHDOG=1"));
    CHECK(la.recv() == "WATCHDOG=1");
  }

  TEST_CASE(
      "from_environment: reads and unsets the variables; bad values leave it inactive, saying "
      "why") {
    ::setenv("NOTIFY_SOCKET", "/run/x.sock", 1);
    ::setenv("WATCHDOG_USEC", "3000000", 1);
    ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    auto n = utils::SdNotify::from_environment();
    CHECK(n.active());
    CHECK(n.address() == "/run/x.sock");
    CHECK(n.watchdog_interval() == std::chrono::seconds(3));
    CHECK(std::getenv("NOTIFY_SOCKET") == nullptr);
    CHECK(std::getenv("WATCHDOG_USEC") == nullptr);
    // Another process's watchdog is not ours.
    ::setenv("NOTIFY_SOCKET", "@abc", 1);
    ::setenv("WATCHDOG_USEC", "3000000", 1);
    ::setenv("WATCHDOG_PID", "1", 1);
    n = utils::SdNotify::from_environment();
    CHECK(n.active());
    CHECK(n.watchdog_interval().count() == 0);
    ::setenv("NOTIFY_SOCKET", "relative/path", 1);
    n = utils::SdNotify::from_environment();
    CHECK_FALSE(n.active());
    CHECK(n.problem().find("NOTIFY_SOCKET") != std::string::npos);
    // Unset: a no-op that reports success.
    n = utils::SdNotify::from_environment();
    CHECK_FALSE(n.active());
    CHECK_FALSE(n.send("READY=1"));
    // Nobody listening: the error is returned, never thrown.
    fmtest::TempDir d;
    CHECK(utils::SdNotify(d / "nobody.sock").send("READY=1"));
  }

}  // TEST_SUITE
