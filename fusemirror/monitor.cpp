#include "fusemirror/monitor.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/events.hpp"
#include "fusemirror/cli.hpp"
#include "fusemirror/status_json.hpp"
#include "utils/error.hpp"
#include "utils/printable.hpp"

namespace fusemirror::cli {

using utils::Error;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kProgramTimeout = std::chrono::seconds(60);

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ------------------------------------------------------------------ reading a mount's files

// One read of a file under the mount, on a thread of its own: a hung daemon leaves that
// thread blocked in the kernel, never the monitor (it reports the mount gone meanwhile).
struct Read {
  std::string path;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string text;  // guarded by mu
  int err = 0;       // guarded by mu
  Clock::time_point started = Clock::now();
};

std::shared_ptr<Read> start_read(const std::string& path) {
  auto r = std::make_shared<Read>();
  r->path = path;
  std::thread([r, path] {
    std::string text;
    int err = 0;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
    } else {
      char buf[65536];
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) err = errno;
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
      }
      ::close(fd);
    }
    std::lock_guard lk(r->mu);
    r->text = std::move(text);
    r->err = err;
    r->done = true;
    r->cv.notify_all();
  }).detach();
  return r;
}

// Waits for `r` until `timeout` after it started; true when it is done.
bool wait_read(Read& r, Clock::duration timeout) {
  std::unique_lock lk(r.mu);
  return r.cv.wait_until(lk, r.started + timeout, [&] { return r.done; });
}

std::string errno_reason(int err) {
  switch (err) {
    case ENOTCONN:
      return "the daemon is gone (transport endpoint is not connected)";
    case ENOENT:
      return "not mounted any more";
    default:
      return std::strerror(err);
  }
}

// ------------------------------------------------------------------ reporting

struct Reported {
  std::string name, mount, image, detail;
  std::int64_t time_ms = 0;
  std::uint64_t seq = 0;  // the daemon's, 0 for the monitor's own events
};

int syslog_priority(const std::string& e) {
  if (e == "Fail" || e == "DegradedArray" || e == "DeviceDisappeared") return LOG_CRIT;
  if (e == "MismatchesFound" || e == "LagExceeded" || e == "EventsLost" ||
      e.rfind("Rebuild", 0) == 0)
    return LOG_WARNING;
  return LOG_INFO;
}

class Reporter {
 public:
  explicit Reporter(const MonitorOptions& o) : o_(o) {
    if (o_.syslog) ::openlog("fusemirror-monitor", LOG_PID, LOG_DAEMON);
  }

  void report(const Reported& e) {
    if (!o_.program.empty()) run_program(e);
    if (o_.syslog) {
      std::string msg = e.name + " event on " + utils::printable(e.mount);
      if (!e.image.empty()) msg += ", image " + utils::printable(e.image);
      if (!e.detail.empty()) msg += ": " + utils::printable(e.detail);
      ::syslog(syslog_priority(e.name), "%s", msg.c_str());
    }
    if (o_.program.empty() && !o_.syslog) {
      std::string line = core::format_event_time(e.time_ms) + ' ' + utils::field(e.name) + ' ' +
                         utils::field(e.mount) + ' ' + utils::field(e.image);
      if (!e.detail.empty()) line += ' ' + utils::printable(e.detail);
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  }

 private:
  // PROGRAM EVENT MOUNT IMAGE [DETAIL], mdadm's order; no shell sees the names.
  void run_program(const Reported& e) {
    std::vector<std::string> args = {o_.program, e.name, e.mount, e.image};
    if (!e.detail.empty()) args.push_back(e.detail);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string when = core::format_event_time(e.time_ms), seq = std::to_string(e.seq);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::fprintf(stderr, "fusemirror monitor: cannot run %s: %s\n",
                   utils::printable(o_.program).c_str(), std::strerror(errno));
      return;
    }
    if (pid == 0) {
      ::setpgid(0, 0);  // its own process group: a timeout ends whatever it started
      const int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) ::dup2(null, STDIN_FILENO);
      ::setenv("FUSEMIRROR_EVENT_TIME", when.c_str(), 1);
      ::setenv("FUSEMIRROR_EVENT_SEQ", seq.c_str(), 1);
      ::execvp(argv[0], argv.data());
      std::fprintf(stderr, "fusemirror monitor: cannot run %s: %s\n",
                   utils::printable(o_.program).c_str(), std::strerror(errno));
      ::_exit(127);
    }
    int wst = 0;
    const auto deadline = Clock::now() + kProgramTimeout;
    for (;;) {
      const pid_t r = ::waitpid(pid, &wst, WNOHANG);
      if (r == pid || (r < 0 && errno != EINTR)) break;
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "fusemirror monitor: %s %s still running after %llds; killed\n",
                     utils::printable(o_.program).c_str(), e.name.c_str(),
                     static_cast<long long>(kProgramTimeout.count()));
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &wst, 0);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (WIFEXITED(wst) && WEXITSTATUS(wst) != 0 && WEXITSTATUS(wst) != 127)
      std::fprintf(stderr, "fusemirror monitor: %s %s exited %d\n",
                   utils::printable(o_.program).c_str(), e.name.c_str(), WEXITSTATUS(wst));
  }

  const MonitorOptions& o_;
};

// ------------------------------------------------------------------ one watched mount

struct Watched {
  std::string mount;
  bool named = false;
  bool known = false;      // a daemon of this mount has been seen answering
  bool gone = false;       // DeviceDisappeared reported, no answer since
  bool hung = false;       // the last read is still in flight (no error: it may answer yet)
  std::string start;       // that daemon's life (the events file's start id)
  std::uint64_t next = 1;  // the first sequence number not reported yet
  std::shared_ptr<Read> inflight;
};

class Monitor {
 public:
  explicit Monitor(const MonitorOptions& o) : o_(o), out_(o) {}

  int run() {
    for (const auto& mp : o_.mounts) {
      Watched w;
      w.mount = mp;
      w.named = true;
      // A named mount must be a set now: a typo is an error, not a DeviceDisappeared.
      std::string why;
      auto snap = read_events(w, &why);
      if (!snap) throw Error(mp + ": cannot monitor: " + why);
      baseline(w, *snap);
      watched_.push_back(std::move(w));
    }
    if (o_.scan) rescan(/*at_start=*/true);
    if (o_.oneshot) return 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::duration<double>(o_.delay));
      if (o_.scan) rescan(false);
      for (auto& w : watched_) poll(w);
      // mdadm: nothing left to monitor ends the monitor (--scan waits for new sets). A
      // daemon that does not answer is not gone for good: it is waited for.
      if (!o_.scan &&
          std::all_of(watched_.begin(), watched_.end(), [](const Watched& w) { return w.gone && !w.hung; }))
        return 0;
      if (o_.scan)
        std::erase_if(watched_,
                      [&](const Watched& w) { return w.gone && !w.named && !mounted(w.mount); });
    }
  }

 private:
  bool mounted(const std::string& mp) const {
    const auto all = fusemirror_mounts();
    return std::find(all.begin(), all.end(), mp) != all.end();
  }

  void rescan(bool at_start) {
    for (const auto& mp : fusemirror_mounts()) {
      if (std::any_of(watched_.begin(), watched_.end(),
                      [&](const Watched& w) { return w.mount == mp; }))
        continue;
      Watched w;
      w.mount = mp;
      std::string why;
      // A set that does not answer yet (or is not ours to read) is tried again next poll.
      auto snap = read_events(w, &why);
      if (!snap) continue;
      if (at_start)
        baseline(w, *snap);
      else
        report_new_daemon(w, *snap);
      watched_.push_back(std::move(w));
    }
  }

  // The mount's events file, parsed; nullopt with the reason when it cannot be had. A read
  // still in flight after --timeout counts as no answer.
  std::optional<core::EventSnapshot> read_events(Watched& w, std::string* why) {
    auto text = read_file(w, w.mount + "/.fusemirror/events", why);
    if (!text) return std::nullopt;
    std::string perr;
    auto s = core::parse_events(*text, &perr);
    if (!s) *why = "events file: " + perr;
    return s;
  }

  std::optional<std::string> read_file(Watched& w, const std::string& path, std::string* why) {
    // A read of another file still in flight: its answer is of no use now, but while it
    // hangs the daemon does not answer.
    const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.timeout));
    if (w.inflight && w.inflight->path != path && wait_read(*w.inflight, timeout)) w.inflight.reset();
    if (!w.inflight) w.inflight = start_read(path);
    w.hung = !wait_read(*w.inflight, timeout);
    if (w.hung) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", o_.timeout);
      *why = std::string("the daemon does not answer (no reply in ") + secs + " s)";
      return std::nullopt;  // the read stays in flight; the next poll looks at it again
    }
    auto r = std::move(w.inflight);
    std::lock_guard lk(r->mu);
    if (r->err) {
      *why = errno_reason(r->err);
      return std::nullopt;
    }
    return std::move(r->text);
  }

  // The mount as the monitor first finds it: DegradedArray for each degraded image (what
  // mdadm reports for an array it first sees), nothing of the ring's past.
  void baseline(Watched& w, const core::EventSnapshot& s) {
    w.known = true;
    w.start = s.start;
    w.next =
        s.next;  // the events file first: an event racing the status is reported twice, never lost
    std::string why;
    auto text = read_file(w, w.mount + "/.fusemirror/status.json", &why);
    if (!text) return;  // the next poll finds it gone
    core::SetStatus st;
    try {
      st = fuse::set_status_from_json(nlohmann::json::parse(*text));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fusemirror monitor: %s: status does not parse: %s\n",
                   utils::printable(w.mount).c_str(), e.what());
      return;
    }
    for (const auto& i : st.images)
      if (!i.secondary_ok)
        out_.report({"DegradedArray", w.mount, i.name, "image state " + i.state, now_ms(), 0});
  }

  // Another daemon than the one the monitor knew (a set mounted while it runs, a remount):
  // everything it posted since it started.
  void report_new_daemon(Watched& w, const core::EventSnapshot& s) {
    w.known = true;
    w.gone = false;
    w.start = s.start;
    w.next = 1;
    report_since(w, s);
  }

  void report_since(Watched& w, const core::EventSnapshot& s) {
    if (s.first > w.next)
      out_.report({"EventsLost", w.mount, "",
                   std::to_string(s.first - w.next) + " events (" + std::to_string(w.next) + ".." +
                       std::to_string(s.first - 1) +
                       ") were dropped from the daemon's ring (it keeps the last " +
                       std::to_string(core::EventLog::kDefaultCapacity) +
                       ") before this monitor read them",
                   now_ms(), 0});
    for (const auto& e : s.events)
      if (e.seq >= w.next) out_.report({e.name, w.mount, e.image, e.detail, e.time_ms, e.seq});
    w.next = std::max(w.next, s.next);
  }

  void poll(Watched& w) {
    std::string why;
    auto s = read_events(w, &why);
    if (!s) {
      if (w.known && !w.gone) {
        out_.report({"DeviceDisappeared", w.mount, "", why, now_ms(), 0});
        w.gone = true;
      }
      return;
    }
    if (!w.known || s->start != w.start) {
      report_new_daemon(w, *s);  // a remount, or a set the monitor had not seen answer
      return;
    }
    w.gone = false;  // the same daemon answers again (it was hung): nothing was lost
    report_since(w, *s);
  }

  const MonitorOptions& o_;
  Reporter out_;
  std::vector<Watched> watched_;
};

}  // namespace

int monitor(const MonitorOptions& o) {
  if (!(o.delay > 0 && o.delay <= 86400))
    throw Error("--delay: must be a number of seconds in (0, 86400]");
  if (o.mounts.empty() && !o.scan) throw Error("monitor: name mount points, or give --scan");
  return Monitor(o).run();
}

}  // namespace fusemirror::cli
