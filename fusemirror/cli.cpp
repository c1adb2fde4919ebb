#include "fusemirror/cli.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/bitmap_format.hpp"
#include "core/checksum_format.hpp"
#include "core/config.hpp"
#include "core/layout.hpp"
#include "core/rescale.hpp"
#include "core/status.hpp"
#include "fusemirror/cli_text.hpp"
#include "fusemirror/status_json.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"
#include "utils/printable.hpp"
#include "utils/size.hpp"

namespace fusemirror::cli {

using utils::Error;

namespace {

// mountinfo escapes spaces etc. as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() + 0 && i + 3 <= s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string bar(double frac) {
  const int width = 20;
  int full = static_cast<int>(frac * width);
  std::string s = "[";
  for (int i = 0; i < width; ++i) s += i < full ? '=' : (i == full ? '>' : '.');
  return s + "]";
}

}  // namespace

std::string read_status_file(const std::string& mountpoint) {
  const std::string path = mountpoint + "/.fusemirror/status.json";
  std::ifstream in(path);
  if (!in) throw Error(mountpoint + ": not a fusemirror mount (cannot read " + path + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

core::SetStatus read_status(const std::string& mountpoint) {
  try {
    return fuse::set_status_from_json(nlohmann::json::parse(read_status_file(mountpoint)));
  } catch (const nlohmann::json::exception& e) {
    throw Error(mountpoint + ": the daemon's status does not parse (" + e.what() + ")");
  }
}

std::vector<std::string> fusemirror_mounts() {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ... mountpoint(5th) ... " - " fstype source options
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string f1, f2, f3, f4, mp, fstype;
    pre >> f1 >> f2 >> f3 >> f4 >> mp;
    post >> fstype;
    if (fstype == "fuse.fusemirror") out.push_back(unescape(mp));
  }
  return out;
}

namespace {

std::string duration_text(double secs) {
  char b[64];
  if (secs < 60) std::snprintf(b, sizeof b, "%.0fs", secs);
  else if (secs < 3600) std::snprintf(b, sizeof b, "%.1fmin", secs / 60);
  else std::snprintf(b, sizeof b, "%.1fh", secs / 3600);
  return b;
}

std::vector<core::SetStatus> collect_status(const std::string& mountpoint) {
  std::vector<std::string> mps = mountpoint.empty() ? fusemirror_mounts() : std::vector{mountpoint};
  std::vector<core::SetStatus> all;
  for (const auto& mp : mps) {
    try {
      all.push_back(read_status(mp));
    } catch (const Error&) {
      if (!mountpoint.empty()) throw;
      continue;  // a mount that went away meanwhile
    }
    all.back().mountpoint = mp;
  }
  return all;
}

// A string field of the status, escaped for the terminal: names and paths may hold any
// byte but '/' and NUL (an ESC sequence or a newline would rewrite the screen or forge a
// line). JSON output needs none of this: the JSON encoder escapes them.
std::string text(const std::string& v) { return utils::printable(v); }

// "      scrub: last run 2026-11-30 12:00:00, 4096 checked (12 unverified), bad: 1 primary,
//        0 secondary, 0 unrecoverable; 1 repaired" — only for images that have checksums or
// have been checked.
void print_scrub(const core::ImageStatus& i, std::ostream& cout) {
  const core::ScrubRecord& r = i.scrub.record;
  const core::ScrubCounts& k = r.counts;
  if (!i.scrub.checksums && r.last_run == 0 && !r.in_progress) return;
  const std::string when = time_text(r.last_run);
  cout << "      scrub: " << (i.scrub.checksums ? "checksums on" : "no checksums") << ", last run " << when;
  if (r.in_progress) cout << " (a pass is in progress at chunk " << r.cursor << ")";
  if (k.checked)
    cout << ", " << k.checked << " checked (" << k.unverified << " unverified), bad: " << k.bad_primary << " primary, "
         << k.bad_secondary << " secondary, " << k.unrecoverable << " unrecoverable; " << k.repaired << " repaired";
  cout << "\n";
  if (!i.scrub.checksums_error.empty()) cout << "      checksums given up: " << text(i.scrub.checksums_error) << "\n";
  if (i.scrub.read_repaired || i.scrub.read_failed)
    cout << "      verified reads: " << i.scrub.read_verified << " chunks, " << i.scrub.read_repaired
         << " served from the secondary, " << i.scrub.read_failed << " failed\n";
}

// "      link: connecting since 2026-12-01 06:00:00, 3 tries (next in 4 s): cannot connect …",
// "      link: down: held out until re-add …"; nothing while connected.
void print_link(const core::ImageStatus& i, std::ostream& cout) {
  const core::LinkStatus& l = i.link;
  if (l.state == core::LinkStatus::State::connected) return;
  cout << "      link: " << core::to_string(l.state);
  if (l.state == core::LinkStatus::State::connecting) {
    cout << " since " << time_text(l.since) << ", " << l.tries << (l.tries == 1 ? " try" : " tries");
    if (l.next_try_s >= 0) cout << " (next in " << duration_text(l.next_try_s) << ")";
  }
  if (!l.reason.empty()) cout << ": " << text(l.reason);
  cout << "\n";
}

void print_status(const std::vector<core::SetStatus>& all, std::ostream& cout) {
  cout << "Personalities : [fusemirror-raid1]\n";
  for (const auto& s : all) {
    cout << "set " << utils::to_string(s.uuid) << " : mounted on " << text(s.mountpoint) << " (pid " << s.pid << ")\n"
         << "      primary " << text(s.primary) << ", secondary " << text(s.secondary) << "\n";
    for (const auto& i : s.images) {
      cout << "  " << text(i.name) << " : " << text(i.state) << " raid1 " << (i.secondary_ok ? "[UU]" : "[U_]") << " "
           << utils::format_size(i.size) << "\n";
      if (!i.degraded_reason.empty()) cout << "      degraded: " << text(i.degraded_reason) << "\n";
      print_link(i, cout);
      cout << "      bitmap: " << i.bitmap.dirty_chunks << "/" << i.bitmap.total_chunks << " chunks dirty, "
           << utils::format_size(i.bitmap.chunk_size) << " chunk, file: " << text(i.bitmap_file) << "\n";
      if (i.bitmap.al_extents > 0)
        cout << "      activity log: " << i.bitmap.active_extents << "/" << i.bitmap.al_extents << " extents of "
             << utils::format_size(i.bitmap.al_extent_size) << " active, " << i.bitmap.logged_chunks
             << " dirty chunks not written\n";
      if (i.wb_limit > 0) {
        // "async: 12/256 outstanding writes, lag 12 MiB / 0.8s (bound 16 MiB, 5s), 2 writers held
        // (37 holds, 4.1s held)"
        char lag[96];
        std::snprintf(lag, sizeof lag, "%.1fs", i.wb_lag_seconds);
        cout << "      async: " << i.wb_outstanding << "/" << i.wb_limit << " outstanding writes, lag "
             << utils::format_size(i.wb_lag_bytes) << " / " << lag;
        if (i.wb_max_lag_bytes || i.wb_max_lag_seconds > 0) {
          std::string bound;
          if (i.wb_max_lag_bytes) bound = utils::format_size(i.wb_max_lag_bytes);
          if (i.wb_max_lag_seconds > 0) {
            std::snprintf(lag, sizeof lag, "%gs", i.wb_max_lag_seconds);
            bound += (bound.empty() ? "" : ", ") + std::string(lag);
          }
          std::snprintf(lag, sizeof lag, "%.1fs", i.wb_lag_held_seconds);
          cout << " (bound " << bound << "), " << i.wb_held_writers << " writers held (" << i.wb_lag_holds
               << " holds, " << lag << " held)";
        }
        cout << "\n";
      }
      print_scrub(i, cout);
      if (i.action != core::SyncAction::idle) {
        const double total = static_cast<double>(i.sync_total_bytes);
        const double done = static_cast<double>(i.sync_done_bytes);
        const double frac = total > 0 ? done / total : 0;
        // md: "[==>....]  resync = 12.5% (32 MiB/256 MiB) finish=1.2min speed=10 MiB/s"
        const std::uint64_t speed = i.rate ? static_cast<std::uint64_t>(i.rate->speed) : 0;
        std::string tail = " finish=";
        tail += i.rate && i.rate->eta >= 0 ? duration_text(i.rate->eta) : "?";
        tail += " speed=" + (speed ? utils::format_size(speed) + "/s" : std::string("?"));
        char line[256];
        std::snprintf(line, sizeof line, "      %s  %s = %.1f%% (%s/%s)%s\n", bar(frac).c_str(),
                      core::to_string(i.action), frac * 100,
                      utils::format_size(static_cast<std::uint64_t>(done)).c_str(),
                      utils::format_size(static_cast<std::uint64_t>(total)).c_str(), tail.c_str());
        cout << line;
      }
    }
  }
  if (all.empty()) cout << "no fusemirror sets mounted\n";
}

}  // namespace

int status(const std::string& mountpoint, bool as_json, double watch_s) {
  // --watch refreshes on a terminal only; piped or redirected it prints once (a log or a
  // script gets one clean snapshot, not a stream of escape codes).
  const bool watch = watch_s > 0 && ::isatty(STDOUT_FILENO);
  for (;;) {
    const std::vector<core::SetStatus> all = collect_status(mountpoint);
    std::ostringstream out;
    if (as_json) {
      nlohmann::json j;
      j["sets"] = nlohmann::json::array();
      for (const auto& set : all) j["sets"].push_back(fuse::to_json(set));
      out << j.dump(2) << "\n";
    } else {
      print_status(all, out);
    }
    if (!watch) {
      std::cout << out.str() << std::flush;
      return 0;
    }
    char when[64];
    const std::time_t now = std::time(nullptr);
    std::strftime(when, sizeof when, "%F %T", std::localtime(&now));
    // home, clear: redraw in place like watch(1)
    std::cout << "\033[H\033[2J" << "Every " << watch_s << "s: fusemirror status" << (as_json ? " --json" : "")
              << "    " << when << "    (Ctrl-C to stop)\n\n"
              << out.str() << std::flush;
    std::this_thread::sleep_for(std::chrono::duration<double>(watch_s));
  }
}

int unmount(const std::string& mountpoint, double timeout_s) {
  const core::SetStatus st0 = read_status(mountpoint);
  const pid_t pid = static_cast<pid_t>(st0.pid);
  // fusermount3 works for the mount's owner without root; it is also what umount uses.
  pid_t child = ::fork();
  if (child == 0) {
    ::execlp("fusermount3", "fusermount3", "-u", "--", mountpoint.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int wst = 0;
  ::waitpid(child, &wst, 0);
  if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0)
    throw Error(mountpoint + ": unmount failed (busy? a loop device or open file may still use it)");
  // Wait for the daemon to drain, flush its bitmaps and exit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  auto alive = [pid] {
    if (::kill(pid, 0) != 0) return false;
    std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
    std::string f1, f2, state;
    st >> f1 >> f2 >> state;  // a zombie has exited; only its parent has not reaped it
    return state != "Z";
  };
  while (alive()) {
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(mountpoint + ": unmounted, but daemon pid " + std::to_string(pid) +
                  " has not exited after " + std::to_string(static_cast<int>(timeout_s)) + "s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The thread-group leader shows as a zombie while the daemon's other threads are still
  // exiting with the descriptors they share, the set lock among them: wait for the lock
  // too, so that a mount right after this returns never finds the set "in use".
  for (;;) {
    const core::SetLock lock = core::probe_set_lock(st0.primary);
    if (lock == core::SetLock::kFree) break;
    if (lock == core::SetLock::kGone) {
      // Removed (the set's directory with it, or only its metadata) while mounted: nothing
      // can hold a lock that does not exist, and waiting would only time out.
      std::fprintf(stderr, "fusemirror: %s: unmounted; the set lock %s/.fusemirror/lock no longer exists\n",
                   utils::printable(mountpoint).c_str(), utils::printable(st0.primary).c_str());
      break;
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(mountpoint + ": unmounted, but the set lock on " + st0.primary + " is still held after " +
                  std::to_string(static_cast<int>(timeout_s)) + "s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

namespace {

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// What keeps one image from being "in sync" (empty when nothing does).
std::string not_settled(const core::ImageStatus& i, bool clean) {
  char b[160];
  if (i.action != core::SyncAction::idle) {
    const double total = static_cast<double>(i.sync_total_bytes);
    const double done = static_cast<double>(i.sync_done_bytes);
    std::snprintf(b, sizeof b, "%s at %.1f%%", core::to_string(i.action), total > 0 ? 100 * done / total : 0.0);
    return b;
  }
  if (!i.pending.empty()) return std::string(core::to_string(i.pending.front())) + " queued";
  if (const auto n = i.bitmap.unsynced_chunks) return std::to_string(n) + " unsynced chunks";
  if (const auto n = i.wb_outstanding) return std::to_string(n) + " write-behind writes outstanding";
  if (clean)
    if (const auto n = i.bitmap.dirty_chunks) return std::to_string(n) + " dirty chunks";
  return "";
}

}  // namespace

int wait(const std::string& mountpoint, const std::vector<std::string>& images, bool clean, double timeout_s) {
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const core::SetStatus st = read_status(mountpoint);
    std::vector<std::string> busy;
    std::vector<std::string> names;
    for (const auto& i : st.images) names.push_back(i.name);
    for (const auto& want : images)
      if (std::find(names.begin(), names.end(), want) == names.end())
        throw Error(mountpoint + ": no image '" + want + "' in this set (images: " +
                    (names.empty() ? std::string("none") : join(names, ", ")) + ")");
    for (const auto& i : st.images) {
      const std::string& name = i.name;
      if (!images.empty() && std::find(images.begin(), images.end(), name) == images.end()) continue;
      // Degraded: nothing will bring the secondary in sync until someone re-adds it.
      if (!i.secondary_ok)
        throw Error(mountpoint + ": " + name + " is degraded (its secondary failed); it cannot get in " +
                    "sync until `fusemirror re-add " + mountpoint + " " + name + "`");
      if (auto why = not_settled(i, clean); !why.empty()) busy.push_back(name + ": " + why);
    }
    if (busy.empty()) return 0;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (timeout_s > 0 && waited >= timeout_s) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", timeout_s);
      throw Error(mountpoint + ": still not in sync after " + secs + "s (" + join(busy, "; ") + ")");
    }
    // Reading status.json costs the daemon tens of microseconds: poll every 2 ms for the
    // first 0.2 s (a resync of a few chunks is reported at once), then every 10 ms, and
    // every 100 ms after 10 s (a long resync is not reported late by more than that).
    std::this_thread::sleep_for(std::chrono::milliseconds(waited < 0.2 ? 2 : waited < 10 ? 10 : 100));
  }
}

int control(const std::string& mountpoint, const std::string& line) {
  (void)read_status_file(mountpoint);  // a clear error when it is not a fusemirror mount
  const std::string path = mountpoint + "/.fusemirror/control";
  utils::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw utils::sys_error(path, "cannot open the control file", errno);
  if (::write(fd.get(), line.data(), line.size()) < 0)
    throw Error(mountpoint + ": " + line + ": " + std::strerror(errno) +
                " (the daemon's log says why)");
  return 0;
}

namespace {

std::string parent_dir(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : p.substr(0, slash);
}

bool exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

}  // namespace

int rescale_bitmap(const std::string& file_arg, std::uint64_t chunk_size, const std::string& primary_arg,
                   bool force) {
  char* rp = ::realpath(file_arg.c_str(), nullptr);
  if (!rp) throw utils::sys_error(file_arg, "cannot open the bitmap", errno);
  const std::string file = rp;
  std::free(rp);

  // Which set does the bitmap belong to? --primary, else the nearest directory above the
  // file holding .fusemirror/config.json (the default PRIMARY/.fusemirror/bitmaps/...).
  std::string primary = primary_arg;
  if (primary.empty()) {
    for (std::string d = parent_dir(file);; d = parent_dir(d)) {
      if (exists(d + "/" + core::kMetaDirName + "/" + core::kConfigName)) {
        primary = d;
        break;
      }
      if (d == "/") break;
    }
  }
  utils::UniqueFd lock;
  if (primary.empty()) {
    if (!force)
      throw Error(file + ": cannot tell which mirror set this bitmap belongs to (no " + core::kMetaDirName +
                  "/" + core::kConfigName + " above it; a bitmap_dir outside the primary?): give --primary "
                  "DIR, or --force if no daemon can be using it");
  } else {
    const std::string meta = primary + "/" + core::kMetaDirName;
    if (!exists(meta + "/" + core::kConfigName))
      throw Error(primary + ": not a mirror set's primary (no " + core::kMetaDirName + "/" + core::kConfigName + ")");
    // Offline only: the daemon holds this lock for its whole life, and a daemon starting
    // while we rewrite fails to take it.
    try {
      lock = core::lock_set_dir(primary, "primary");
    } catch (const Error& e) {
      throw Error(file + ": " + e.what() + "; unmount it first: rescale-bitmap works offline only");
    }
    // The bitmap must be this set's (a header that does not decode is reported below).
    const core::Config config = core::load_config(primary);
    utils::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (auto bf = fd ? core::read_bitmap_file(fd.get(), /*with_bits=*/false) : core::BitmapFile{};
        bf && bf->header && bf->header->set_uuid != config.uuid && !force)
      throw Error(file + ": belongs to mirror set " + utils::to_string(bf->header->set_uuid) + ", not to " +
                  primary + "'s set " + utils::to_string(config.uuid) + " (--force to rescale it anyway)");
  }

  // Progress on a terminal only (stderr, so stdout stays one clean line for scripts).
  const bool tty = ::isatty(STDERR_FILENO);
  int shown = -1;
  auto progress = [&](std::uint64_t done, std::uint64_t total) {
    if (!tty || total == 0) return;
    const int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total));
    if (pct == shown) return;
    shown = pct;
    std::fprintf(stderr, "\rrescaling %s: %3d%%", utils::printable(file).c_str(), pct);
    std::fflush(stderr);
  };
  const auto rep = core::rescale_bitmap_file(file, chunk_size, progress);
  if (tty && shown >= 0) std::fprintf(stderr, "\n");
  if (!rep.changed) {
    std::printf("%s: chunk size is already %s; nothing to do\n", utils::printable(file).c_str(),
                utils::format_size(chunk_size).c_str());
    return 0;
  }
  // The checksums were made for the old chunk size: a mount would start them over anyway
  // (docs/write-path.md §9.1); they go now, durably, so that nothing can mistake them.
  if (const std::string ck = sidecar_of(file, core::kChecksumSuffix); !ck.empty()) {
    if (::unlink(ck.c_str()) == 0) {
      utils::UniqueFd dfd(::open(parent_dir(file).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dfd || ::fsync(dfd.get()) != 0) throw utils::sys_error(parent_dir(file), "cannot fsync the directory", errno);
      std::printf("%s: removed (checksums of the old chunk size; made again as chunks are written or checked)\n",
                  utils::printable(ck).c_str());
    } else if (errno != ENOENT) {
      throw utils::sys_error(ck, "cannot remove the checksum file of the old chunk size", errno);
    }
  }
  std::printf("%s: chunk size %s -> %s, %llu -> %llu bits, %llu -> %llu dirty, events %llu -> %llu\n",
              utils::printable(file).c_str(), utils::format_size(rep.before.chunk_size).c_str(),
              utils::format_size(rep.after.chunk_size).c_str(),
              static_cast<unsigned long long>(rep.before.bit_count()),
              static_cast<unsigned long long>(rep.after.bit_count()),
              static_cast<unsigned long long>(rep.dirty_before), static_cast<unsigned long long>(rep.dirty_after),
              static_cast<unsigned long long>(rep.before.events), static_cast<unsigned long long>(rep.after.events));
  return 0;
}

}  // namespace fusemirror::cli
