// Unit tests for core/nbd_leg against a real nbdkit (file plugin, dir=) on a unix socket
// in a temp dir: the file semantics the Image relies on (core/leg.hpp), the capacity, the
// identity block. Skipped with a message when nbdkit is not installed.
#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "core/link.hpp"
#include "core/nbd_leg.hpp"
#include "test_helpers.hpp"

using namespace fusemirror;
using namespace fmtest;

namespace {

// kill(SIGSTOP) returns before every thread of the target has stopped: a request sent at
// once can still be answered by a thread not yet stopped. Waits until every thread of
// `pid` is in state T (at most 5 s).
bool wait_stopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (int i = 0; i < 500; ++i) {
    bool any = false, all = true;
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
      std::ifstream in(t.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const auto close = stat.rfind(") ");
      if (close == std::string::npos || close + 2 >= stat.size()) continue;
      any = true;
      if (stat[close + 2] != 'T' && stat[close + 2] != 't') all = false;
    }
    if (any && all) return true;
    ::usleep(10000);
  }
  return false;
}

// nbdkit -f -U SOCK file dir=DIR, killed (only this pid) on destruction.
class Server {
 public:
  // `filters` go before the plugin (--filter=NAME), `params` after it (the filters' keys).
  Server(const std::string& sock, const std::string& dir, std::vector<std::string> filters = {},
         std::vector<std::string> params = {})
      : Server(sock, nbdkit_args(sock, dir, filters, params)) {}
  // Any server program: `args` (args[0] found on PATH) creates `sock`.
  Server(const std::string& sock, std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);  // nbdkit's "no export" lines
    if (::posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; pid_ > 0 && i < 200 && ::access(sock.c_str(), F_OK) != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ~Server() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
  bool up(const std::string& sock) const { return pid_ > 0 && ::access(sock.c_str(), F_OK) == 0; }
  pid_t pid() const { return pid_; }
  static std::vector<std::string> nbdkit_args(const std::string& sock, const std::string& dir,
                                              const std::vector<std::string>& filters,
                                              const std::vector<std::string>& params) {
    std::vector<std::string> args = {"nbdkit", "-f", "-U", sock};
    for (auto& f : filters) args.push_back("--filter=" + f);
    args.push_back("file");
    args.push_back("dir=" + dir);
    for (auto& p : params) args.push_back(p);
    return args;
  }

 private:
  pid_t pid_ = -1;
};

bool have_nbdkit() { return std::system("command -v nbdkit >/dev/null 2>&1") == 0; }

// A temp dir with the served directory (srv/) and the socket's path (s).
struct ServedDir {
  TempDir t;
  std::string dir = t / "srv", sock = t / "s";
  ServedDir() { stdfs::create_directory(dir); }
};

std::vector<std::byte> filled(std::size_t n, unsigned char v) { return std::vector<std::byte>(n, std::byte{v}); }

}  // namespace

TEST_CASE("NbdLeg: missing export, capacity, the file semantics, the identity block") {
  if (!have_nbdkit()) {
    MESSAGE("nbdkit not installed: skipped");
    return;
  }
  ServedDir sd;
  TempDir& t = sd.t;
  const std::string &dir = sd.dir, &sock = sd.sock;
  const std::size_t kExport = 64 * 1024 + core::kNbdTailBytes;
  write_bytes(dir + "/a.img", filled(kExport, 0xFF));  // old data everywhere
  Server srv(sock, dir);
  REQUIRE(srv.up(sock));
  const core::NbdUri uri = core::parse_nbd_uri("nbd+unix:///?socket=" + sock);

  std::string why;
  auto missing = core::NbdLeg::connect(uri, "nope.img", &why);
  REQUIRE(!missing);
  CHECK(missing.error() == std::errc::no_such_file_or_directory);
  CHECK(why.find("export nope.img missing on nbd+unix:///?socket=") == 0);

  // No server at all is not a missing export.
  auto nobody = core::NbdLeg::connect(core::parse_nbd_uri("nbd+unix:///?socket=" + t / "none"), "a.img", &why);
  REQUIRE(!nobody);
  CHECK(why.find("cannot connect to nbd+unix:///?socket=") == 0);

  auto leg = core::NbdLeg::connect(uri, "a.img", &why);
  REQUIRE_MESSAGE(leg, why);
  core::NbdLeg& l = **leg;
  CHECK(l.capacity() == 64 * 1024);
  CHECK(l.describe() == "export a.img on " + uri.text);

  // The image's size on the export: shrink keeps the bytes, reads stop there.
  REQUIRE(!l.set_size(0));
  std::vector<std::byte> buf(4096);
  CHECK(l.pread(buf, 0).value() == 0);
  // A write past the end zeroes the gap first (a file's gap reads as zeros).
  REQUIRE(!l.pwrite(filled(100, 0xAB), 8192, nullptr));
  CHECK(l.size().value() == 8292);
  auto on_server = read_bytes(dir + "/a.img");
  CHECK(on_server[0] == std::byte{0});
  CHECK(on_server[8191] == std::byte{0});
  CHECK(on_server[8192] == std::byte{0xAB});
  CHECK(on_server[8292] == std::byte{0xFF});  // past the image: untouched
  CHECK(l.pread(buf, 8192).value() == 100);
  // A grow zeroes what it adds; a punch and a zero range zero their bytes.
  REQUIRE(!l.set_size(20000));
  on_server = read_bytes(dir + "/a.img");
  CHECK(on_server[8292] == std::byte{0});
  CHECK(on_server[19999] == std::byte{0});
  CHECK(on_server[20000] == std::byte{0xFF});
  REQUIRE(!l.pwrite(filled(4096, 0x11), 4096, nullptr));
  REQUIRE(!l.punch(4096, 1024));
  REQUIRE(!l.fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 6144, 1024));
  on_server = read_bytes(dir + "/a.img");
  CHECK(on_server[4096] == std::byte{0});
  CHECK(on_server[5120] == std::byte{0x11});
  CHECK(on_server[6144] == std::byte{0});
  CHECK(on_server[7168] == std::byte{0x11});
  CHECK(!l.flush(true));
  // Never into the identity block: EFBIG.
  CHECK(l.set_size(l.capacity() + 1) == std::errc::file_too_large);
  CHECK(l.pwrite(filled(2, 1), l.capacity() - 1, nullptr) == std::errc::file_too_large);

  // The identity block: none (old data is not a record), then ours, durable in the tail.
  auto none = l.read_record(&why);
  REQUIRE(!none);
  CHECK(none.error() == std::errc::bad_message);
  CHECK(why.find("magic") != std::string::npos);
  core::NbdRecord r;
  r.set_uuid[0] = 1;
  r.image_uuid[0] = 2;
  r.events = 42;
  REQUIRE(!l.write_record(r));
  auto back = l.read_record(&why);
  REQUIRE_MESSAGE(back, why);
  CHECK(back->events == 42);
  CHECK(back->name_hash == core::nbd_name_hash("a.img"));
  on_server = read_bytes(dir + "/a.img");
  CHECK(std::string(reinterpret_cast<const char*>(on_server.data() + l.capacity()), 8) == "FMNBDREC");

  // The same file served under another name: the record is not this export's.
  stdfs::copy_file(dir + "/a.img", dir + "/b.img");
  auto other = core::NbdLeg::connect(uri, "b.img", &why);
  REQUIRE(other);
  auto foreign = (*other)->read_record(&why);
  REQUIRE(!foreign);
  CHECK(why.find("another export name") != std::string::npos);
}

TEST_CASE("NbdLeg: concurrent requests go on several connections with multi-conn, on one without") {
  if (!have_nbdkit()) {
    MESSAGE("nbdkit not installed: skipped");
    return;
  }
  // 8 writers of 64 KiB at once, every write 100 ms away (nbdkit's delay filter).
  constexpr unsigned kWriters = 8;
  for (const bool multi : {true, false}) {
    CAPTURE(multi);
    TempDir t;
    const std::string dir = t / "srv", sock = t / "s";
    stdfs::create_directory(dir);
    write_bytes(dir + "/a.img", filled(kWriters * 65536 + core::kNbdTailBytes, 0));
    std::vector<std::string> filters = {"delay"}, params = {"delay-write=100ms"};
    if (!multi) {
      filters.push_back("multi-conn");
      params.push_back("multi-conn-mode=disable");
    }
    Server srv(sock, dir, filters, params);
    REQUIRE(srv.up(sock));
    std::string why;
    auto leg = core::NbdLeg::connect(core::parse_nbd_uri("nbd+unix:///?socket=" + sock), "a.img", &why);
    REQUIRE_MESSAGE(leg, why);
    core::NbdLeg& l = **leg;
    CHECK(l.max_connections() == (multi ? 32u : 1u));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> writers;
    std::atomic<unsigned> failed{0};
    for (unsigned w = 0; w < kWriters; ++w)
      writers.emplace_back([&, w] {
        const auto data = filled(65536, static_cast<unsigned char>(w + 1));
        if (l.pwrite(data, w * 65536ull, nullptr)) ++failed;
      });
    for (auto& th : writers) th.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(failed == 0);
    if (multi) {
      CHECK(l.connections() > 1);
      CHECK(secs < 0.6);  // about 100 ms with 8 in flight; 800 ms one at a time
    } else {
      CHECK(l.connections() == 1);
      CHECK(secs >= 0.75);
    }
    REQUIRE(!l.flush(true));  // every connection
    std::vector<std::byte> buf(65536);
    for (unsigned w = 0; w < kWriters; ++w) {
      REQUIRE(l.pread(buf, w * 65536ull).value() == 65536);
      CHECK(buf == filled(65536, static_cast<unsigned char>(w + 1)));
    }
  }
}

TEST_CASE("NbdLeg: a server at its client limit (qemu-nbd --shared=2): extra connections time out, writes go on") {
  if (std::system("command -v qemu-nbd >/dev/null 2>&1") != 0) {
    MESSAGE("qemu-nbd not installed: skipped");
    return;
  }
  constexpr unsigned kWriters = 8;
  TempDir t;
  const std::string file = t / "q.export", sock = t / "q.sock";
  write_bytes(file, filled(kWriters * 65536 + core::kNbdTailBytes, 0));
  // -e 2: two clients at once; a third waits in the listen queue, never answered.
  Server srv(sock, {"qemu-nbd", "-k", sock, "-x", "q.img", "-f", "raw", "-t", "-e", "2", file});
  REQUIRE(srv.up(sock));
  std::string why;
  auto leg = core::NbdLeg::connect(core::parse_nbd_uri("nbd+unix:///?socket=" + sock), "q.img", &why);
  REQUIRE_MESSAGE(leg, why);
  core::NbdLeg& l = **leg;
  if (l.max_connections() == 1) {
    MESSAGE("this qemu-nbd does not advertise multi-conn: one connection, nothing to test");
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::atomic<unsigned> failed{0};
  std::vector<std::thread> writers;
  for (unsigned round = 0; round < 2; ++round) {  // the second round finds the limit known
    for (unsigned w = 0; w < kWriters; ++w)
      writers.emplace_back([&, w] {
        if (l.pwrite(filled(65536, static_cast<unsigned char>(w + 1)), w * 65536ull, nullptr)) ++failed;
      });
    for (auto& th : writers) th.join();
    writers.clear();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(failed == 0);
  CHECK(l.connections() <= 2);
  CHECK(secs < 10);  // one 3 s handshake timeout, not a hang
  std::vector<std::byte> buf(65536);
  for (unsigned w = 0; w < kWriters; ++w) {
    REQUIRE(l.pread(buf, w * 65536ull).value() == 65536);
    CHECK(buf == filled(65536, static_cast<unsigned char>(w + 1)));
  }
}

TEST_CASE("NbdLeg: a server that stops answering fails requests and the handshake with ETIMEDOUT") {
  if (!have_nbdkit()) {
    MESSAGE("nbdkit not installed: skipped");
    return;
  }
  ServedDir sd;
  const std::string &dir = sd.dir, &sock = sd.sock;
  write_bytes(dir + "/a.img", filled(1 << 20, 0));
  Server srv(sock, dir);
  REQUIRE(srv.up(sock));
  core::NbdUri uri = core::parse_nbd_uri("nbd+unix:///?socket=" + sock);
  uri.timeout_s = 1;
  std::string why;
  auto leg = core::NbdLeg::connect(uri, "a.img", &why);
  REQUIRE_MESSAGE(leg, why);
  auto data = filled(65536, 0xAB);
  REQUIRE(!(*leg)->pwrite(data, 0, nullptr));

  // Stopped (SIGSTOP): the kernel still accepts on its socket, nothing answers.
  REQUIRE(::kill(srv.pid(), SIGSTOP) == 0);
  REQUIRE(wait_stopped(srv.pid()));
  struct Cont {
    pid_t p;
    ~Cont() { ::kill(p, SIGCONT); }
  } cont{srv.pid()};
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  CHECK((*leg)->pwrite(data, 65536, nullptr) == std::errc::timed_out);
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  CHECK(waited >= 0.9);
  CHECK(waited < 5);
  // Dead from then on: at once, without waiting again.
  t0 = Clock::now();
  std::vector<std::byte> back(4096);
  auto r = (*leg)->pread(back, 0);
  REQUIRE(!r);
  CHECK(r.error() == std::errc::timed_out);
  CHECK((*leg)->flush(true) == std::errc::timed_out);
  CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 0.5);
  t0 = Clock::now();
  leg->reset();  // the destructor does not wait for the stopped server
  CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 0.5);

  // The handshake too: a new connection to the stopped server.
  t0 = Clock::now();
  auto again = core::NbdLeg::connect(uri, "a.img", &why);
  REQUIRE(!again);
  CHECK(again.error() == std::errc::timed_out);
  CHECK(why.find("no answer within") != std::string::npos);
  CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 5);

  // Running again: a new leg works (the link's reconnect makes exactly this).
  ::kill(srv.pid(), SIGCONT);
  auto fresh = core::NbdLeg::connect(uri, "a.img", &why);
  REQUIRE_MESSAGE(fresh, why);
  auto rr = (*fresh)->pread(back, 0);
  REQUIRE(rr);
  CHECK(back[0] == std::byte{0xAB});
}

TEST_CASE("reconnect_delay: doubling from min, capped at max") {
  CHECK(core::reconnect_delay(1, 60, 1) == doctest::Approx(1));
  CHECK(core::reconnect_delay(1, 60, 2) == doctest::Approx(2));
  CHECK(core::reconnect_delay(1, 60, 4) == doctest::Approx(8));
  CHECK(core::reconnect_delay(1, 60, 7) == doctest::Approx(60));
  CHECK(core::reconnect_delay(1, 60, 1000) == doctest::Approx(60));
  CHECK(core::reconnect_delay(0.5, 0.5, 3) == doctest::Approx(0.5));
}
