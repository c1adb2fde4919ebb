// fusemirror/main.cpp — the command line: create, mount, unmount, status, examine-bitmap.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/filesystem.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <spdlog/spdlog.h>

#include "core/create.hpp"
#include "core/mirror_set.hpp"
#include "fusemirror/cli.hpp"
#include "fusemirror/fuse_ops.hpp"
#include "fusemirror/metrics.hpp"
#include "fusemirror/monitor.hpp"
#include "fusemirror/parallel_writes.hpp"
#include "fusemirror/service_notify.hpp"
#include "utils/error.hpp"
#include "utils/heap_trim.hpp"
#include "utils/log.hpp"
#include "utils/printable.hpp"
#include "utils/sd_notify.hpp"
#include "utils/size.hpp"

namespace fm = fusemirror;
using fm::utils::Error;

namespace {

std::string absolute(const std::string& p) {
  boost::system::error_code ec;
  auto c = boost::filesystem::canonical(p, ec);
  if (ec) throw Error(p + ": " + ec.message());
  return c.string();
}

bool is_within(const std::string& inner, const std::string& outer) {
  return inner == outer || inner.rfind(outer + "/", 0) == 0;
}

void check_mountpoint(const std::string& mp, const fm::core::Config& c) {
  struct stat st {}, parent {};
  if (::stat(mp.c_str(), &st) != 0) throw fm::utils::sys_error(mp, "mount point", errno);
  if (!S_ISDIR(st.st_mode)) throw Error(mp + ": mount point is not a directory");
  for (const auto& m : fm::cli::fusemirror_mounts())
    if (m == mp) throw Error(mp + ": mount point in use (a fusemirror set is mounted there)");
  if (::stat((mp + "/..").c_str(), &parent) == 0 && mp != "/" &&
      (parent.st_dev != st.st_dev || parent.st_ino == st.st_ino))
    throw Error(mp + ": mount point in use (something is already mounted there)");
  if (is_within(mp, c.primary) || is_within(mp, c.secondary))
    throw Error(mp + ": mount point must not be inside the primary or the secondary");
}

// `notify`: speak systemd's notification protocol when $NOTIFY_SOCKET is set (the mount
// subcommand; never the mount(8) helper, which must daemonize for mount(8) to return).
int do_mount(const std::string& source, const std::string& mp_arg, bool foreground,
             const std::vector<std::string>& opts, bool verbose, bool notify = false) {
  // libfuse starts and ends request threads as the load comes and goes. With the default
  // 8 MiB stacks, glibc's cache of 40 MiB keeps five stacks of ended threads and unmaps the
  // rest, a TLB flush on every CPU each time (docs/performance.md "Thread churn"); 1 MiB
  // keeps forty (no request path keeps large arrays on its stack). libfuse reads the
  // variable when it starts a thread; a value the user set is kept. Set first, while this
  // is the process's only thread (setenv races any getenv).
  ::setenv("FUSE_THREAD_STACK", "1048576", 0);
  fm::utils::SdNotify sd = notify ? fm::utils::SdNotify::from_environment() : fm::utils::SdNotify();
  // Type=notify wants the process systemd started to be the daemon: a fork would leave it
  // a main process that exits before READY=1 (or a MAINPID race with the exiting parent).
  if (sd.active()) foreground = true;
  std::string config_path;
  fm::core::Config config = fm::core::load_config(source, &config_path);
  const std::string mp = absolute(mp_arg);
  check_mountpoint(mp, config);

  // Log to the terminal until daemonized, and always to the set's log file.
  fm::utils::setup_logging(config.primary + "/" + fm::core::kMetaDirName + "/" + fm::core::kLogName,
                           true, verbose);
  auto set = fm::core::MirrorSet::open(config, mp);
  if (!sd.problem().empty()) spdlog::warn("sd_notify: {}", sd.problem());
  if (sd.active()) spdlog::info("sd_notify: NOTIFY_SOCKET set: staying in the foreground, notifying {}", sd.address());

  std::vector<std::string> args = {"fusemirror"};
  std::string o = "fsname=fusemirror#" + config.primary + ",subtype=fusemirror";
  bool allow_other = false, default_permissions = false;
  for (const auto& opt : opts) {
    std::stringstream ss(opt);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item == "allow_other") allow_other = true;
      if (item == "default_permissions") default_permissions = true;
    }
    o += "," + opt;
  }
  // SECURITY: other users only ever get the kernel's permission checks.
  if (allow_other && !default_permissions) o += ",default_permissions";
  args.push_back("-o");
  args.push_back(o);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  struct fuse* f = fuse_new(&fargs, &fm::fuse::operations(), sizeof(fuse_operations), set.get());
  fuse_opt_free_args(&fargs);
  if (!f) throw Error(mp + ": cannot create the FUSE session (bad -o option?)");
  if (fuse_mount(f, mp.c_str()) != 0) {
    fuse_destroy(f);
    throw Error(mp + ": mount failed (is /dev/fuse available and fusermount3 installed?)");
  }
  if (!fm::fuse::page_cache() && !fm::fuse::enable_parallel_direct_writes(fuse_get_session(f)))
    spdlog::warn("parallel direct writes unavailable: writes to one image will serialise");
  // Nothing buffered may be inherited by the daemon (it would be written a second time).
  spdlog::default_logger()->flush();
  std::fflush(nullptr);
  if (fuse_daemonize(foreground ? 1 : 0) != 0) {
    fuse_unmount(f);
    fuse_destroy(f);
    throw Error("cannot daemonize");
  }
  fuse_session* se = fuse_get_session(f);
  fuse_set_signal_handlers(se);
  spdlog::info("mirror set {} mounted on {} (primary {}, secondary {}, pid {})",
               fm::utils::to_string(config.uuid), mp, config.primary, config.secondary, ::getpid());
  set->start();
  // After the fork: its thread would not survive it.
  fm::fuse::ServiceNotifier notifier(std::move(sd), *set, mp);
  notifier.start();
  // Hands the memory of a burst's request threads back once the daemon is quiet.
  fm::utils::HeapTrimmer trimmer;
  trimmer.start();

  fuse_loop_config* lc = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(lc, 0);
  fuse_loop_cfg_set_max_threads(lc, 64);
  fuse_loop_cfg_set_idle_threads(lc, 8);
  // libfuse returns the signal's number after SIGTERM/SIGINT: that is a clean stop.
  int rc = fuse_loop_mt(f, lc);
  if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP || rc == -SIGTERM || rc == -SIGINT) rc = 0;
  fuse_loop_cfg_destroy(lc);
  notifier.stopping();
  trimmer.stop();
  fuse_remove_signal_handlers(se);
  fuse_unmount(f);
  // No FUSE request can arrive any more: drain and mark the bitmaps clean.
  set->shutdown();
  fuse_destroy(f);
  // Everything durable is flushed. Exit without running destructors: after a write-behind
  // drain timeout, worker threads stuck in a hung secondary still reference the images.
  spdlog::default_logger()->flush();
  std::fflush(nullptr);
  ::_exit(rc == 0 ? 0 : 1);
}

const char* const kHelperUsage =
    "usage: mount.fusemirror PRIMARY|fusemirror#PRIMARY MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]\n"
    "  The mount(8) helper: `mount -t fuse.fusemirror PRIMARY MOUNTPOINT -o OPTIONS` and fstab\n"
    "  lines of type fuse.fusemirror run it. It mounts like `fusemirror mount` (daemonized).\n"
    "  -o     FUSE options; mount(8)-only ones (defaults, auto, noauto, nofail, _netdev, user,\n"
    "         users, nouser, x-*, comment=*) are dropped; page_cache = --page-cache\n"
    "  -f     fake: check the arguments, mount nothing     -v  debug logging\n"
    "  -n -s  accepted and ignored (no mtab; sloppy)        -t TYPE  ignored\n";

// The mount(8) helper: argv[0] is mount.fusemirror / mount.fuse.fusemirror, or mount.fuse3
// ran `fusemirror SOURCE MOUNTPOINT -o OPTIONS` for an fstab type fuse.fusemirror.
int mount_helper(int argc, char** argv) {
  std::vector<std::string> pos, opts;
  bool fake = false, verbose = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kHelperUsage, stdout);
      return 0;
    }
    if (a == "-o" || a == "-t" || a == "-N") {
      if (i + 1 >= argc) throw Error(a + ": missing value (see mount.fusemirror --help)");
      const std::string v = argv[++i];
      if (a == "-o") opts.push_back(v);
      if (a == "-N") throw Error("-N " + v + ": mount namespaces are not supported by mount.fusemirror");
    } else if (a.rfind("-o", 0) == 0) {
      opts.push_back(a.substr(2));
    } else if (a == "-f") {
      fake = true;
    } else if (a == "-v") {
      verbose = true;
    } else if (a == "-n" || a == "-s" || a == "-i" || a.rfind("-t", 0) == 0) {
      // no mtab / sloppy / no helpers / type: nothing to do for a FUSE mount
    } else if (!a.empty() && a[0] == '-') {
      throw Error(a + ": unknown option (see mount.fusemirror --help)");
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 2) throw Error("want PRIMARY and MOUNTPOINT (see mount.fusemirror --help)");
  std::string source = pos[0];
  if (auto hash = source.find('#'); hash != std::string::npos) source = source.substr(hash + 1);
  std::string kept;
  for (const auto& o : opts) {
    std::stringstream ss(o);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty() || item == "defaults" || item == "auto" || item == "noauto" || item == "nofail" ||
          item == "_netdev" || item == "user" || item == "users" || item == "nouser" || item == "owner" ||
          item == "group" || item.rfind("x-", 0) == 0 || item.rfind("comment=", 0) == 0)
        continue;
      if (item == "page_cache") {
        fm::fuse::set_page_cache(true);
        continue;
      }
      kept += (kept.empty() ? "" : ",") + item;
    }
  }
  if (fake) {
    (void)fm::core::load_config(source);  // the checks a real mount would start with
    return 0;
  }
  std::vector<std::string> fuse_opts;
  if (!kept.empty()) fuse_opts.push_back(kept);
  return do_mount(source, pos[1], false, fuse_opts, verbose);
}

bool is_helper_call(int argc, char** argv) {
  std::string prog = argv[0];
  if (auto slash = prog.rfind('/'); slash != std::string::npos) prog = prog.substr(slash + 1);
  if (prog == "mount.fusemirror" || prog == "mount.fuse.fusemirror") return true;
  // mount.fuse3's form: `fusemirror SOURCE MOUNTPOINT [-o OPTIONS]`: two existing paths
  // (a subcommand name is never taken for one: none of them is a path with a slash).
  if (argc < 3 || argv[1][0] == '-' || argv[2][0] == '-') return false;
  const std::string src = argv[1];
  struct stat st {};
  const bool src_ok = src.find('/') != std::string::npos && (src.find('#') != std::string::npos ||
                                                               ::stat(src.c_str(), &st) == 0);
  return src_ok && ::stat(argv[2], &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 0 && is_helper_call(argc, argv)) {
    try {
      return mount_helper(argc, argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mount.fusemirror: %s\n", fm::utils::printable(e.what(), false).c_str());
      return 32;  // mount(8)'s "mount failure"
    }
  }
  CLI::App app{"fusemirror — mirror disk-image files to a secondary directory, with a "
               "write-intent bitmap per image (see man fusemirror)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "fusemirror 0.1.0");
  app.footer(
      "Each subcommand takes --help. From mount(8) and fstab: `mount -t fuse.fusemirror PRIMARY "
      "MOUNTPOINT -o OPTIONS` (the mount.fusemirror helper; mount.fusemirror --help). Live controls: "
      "files under MOUNTPOINT/.fusemirror/images/IMAGE/ (sync_action, sync_completed, sync_speed, "
      "sync_speed_min, sync_speed_max, mismatch_cnt, state, degraded, secondary, dirty_chunks). "
      "Details: man fusemirror.");

  fm::core::CreateOptions copts;
  std::string chunk_size = "64K";
  bool no_bitmap = false;
  std::string bitmap_dir;
  auto* create = app.add_subcommand("create", "Initialise a mirror set over PRIMARY and SECONDARY");
  create->add_option("primary", copts.primary, "Primary directory (holds the images)")->required();
  create->add_option("secondary", copts.secondary, "Secondary directory (gets the copies), or an NBD server: nbd://HOST[:PORT], nbd+unix:///?socket=PATH, or over TLS nbds://HOST[:PORT]?tls-psk-file=FILE (docs/operations.md §9.1)")->required();
  create->add_option("--chunk-size", chunk_size, "Bytes per bitmap bit (power of two >= 4K; default 64K)");
  create->add_option("--daemon-sleep", copts.daemon_sleep, "Seconds a chunk stays idle before its bit is cleared (default 5)");
  create->add_option("--bitmap-dir", bitmap_dir, "Directory for the bitmaps (default PRIMARY/.fusemirror/bitmaps)");
  create->add_flag("--no-bitmap", no_bitmap, "No write-intent bitmap: any crash means a full resync");
  std::string role = "mirror";
  create->add_option("--write-behind", copts.write_behind, "Max outstanding secondary writes (0 = synchronous; md's --write-behind)");
  create->add_option("--role", role, "Secondary role: mirror (may serve reads if the primary fails) or backup (write-mostly, never read)")
      ->check(CLI::IsMember({"mirror", "backup"}));
  create->add_flag("--force", copts.force, "Re-create an existing set / overwrite a differing secondary");

  std::string source, mountpoint;
  bool foreground = false, verbose = false;
  std::vector<std::string> fuse_opts;
  auto* mount = app.add_subcommand("mount", "Serve a mirror set at MOUNTPOINT");
  mount->add_option("source", source, "Primary directory or its .fusemirror/config.json")->required();
  mount->add_option("mountpoint", mountpoint, "Where to mount")->required();
  mount->add_flag("-f,--foreground", foreground, "Stay in the foreground (SIGTERM/SIGINT unmount cleanly)");
  mount->add_option("-o", fuse_opts, "FUSE mount options (comma-separated; allow_other implies default_permissions)");
  mount->add_flag("-v,--verbose", verbose, "Debug logging");
  bool page_cache = false;
  mount->add_flag("--page-cache", page_cache,
                  "Use the kernel's page cache for images (default: direct I/O, like cache=none)");

  std::string umount_mp;
  double umount_timeout = 300;
  auto* umount = app.add_subcommand("unmount", "Unmount cleanly and wait for the daemon to flush and exit");
  umount->alias("umount");
  umount->add_option("mountpoint", umount_mp, "Mount point")->required();
  umount->add_option("--timeout", umount_timeout, "Seconds to wait for the daemon to exit (default 300)");

  std::string status_mp, status_watch;
  bool status_json = false;
  auto* status = app.add_subcommand("status", "Show mounted mirror sets, like /proc/mdstat");
  status->add_option("mountpoint", status_mp, "Only this mount (default: every mounted fusemirror set)");
  status->add_flag("--json", status_json, "JSON for scripts (schema in docs/quickstart.md and man fusemirror)");
  auto* watch_opt = status->add_option("--watch", status_watch,
                                       "Redraw every SECS seconds (default 2) while stdout is a terminal; "
                                       "prints once when it is not")
                        ->expected(0, 1)
                        ->type_name("[SECS]");

  std::string ctl_mp, ctl_image, ctl_action;
  auto* fail = app.add_subcommand("fail", "Mark an image's secondary failed (degraded; changes tracked in the bitmap)");
  fail->add_option("mountpoint", ctl_mp, "Mount point")->required();
  fail->add_option("image", ctl_image, "Image path relative to the mount")->required();
  auto* readd = app.add_subcommand("re-add", "Put an image's secondary back; resync only what the bitmap proves it missed");
  readd->add_option("mountpoint", ctl_mp, "Mount point")->required();
  readd->add_option("image", ctl_image, "Image path relative to the mount")->required();
  auto* action = app.add_subcommand("sync-action", "Start or stop resync, check or repair of an image (md's sync_action)");
  action->add_option("mountpoint", ctl_mp, "Mount point")->required();
  action->add_option("image", ctl_image, "Image path relative to the mount")->required();
  action->add_option("action", ctl_action, "idle | resync | check | repair")
      ->required()
      ->check(CLI::IsMember(std::vector<std::string>(fm::core::kSyncActionNames.begin(),
                                                     fm::core::kSyncActionNames.end())));

  std::string wait_mp;
  std::vector<std::string> wait_images;
  bool wait_clean = false;
  double wait_timeout = 0;
  auto* waitc = app.add_subcommand("wait", "Wait until images are in sync: no resync/check queued or running, "
                                           "nothing unsynced (mdadm --wait)");
  waitc->add_option("mountpoint", wait_mp, "Mount point")->required();
  waitc->add_option("images", wait_images, "Images to wait for, relative to the mount (default: all)");
  waitc->add_flag("--clean", wait_clean, "Also wait until no bit is dirty (writes idle for daemon_sleep)");
  waitc->add_option("--timeout", wait_timeout, "Give up after SECS seconds, exit 1 (default 0: wait forever)");

  fm::cli::MonitorOptions mon;
  auto* monitorc = app.add_subcommand(
      "monitor", "Report events of mounted sets (Fail, DegradedArray, RebuildFinished, ...), like mdadm --monitor");
  monitorc->add_option("mountpoints", mon.mounts, "Sets to watch (mount points)");
  monitorc->add_flag("--scan", mon.scan, "Watch every mounted fusemirror set, including sets mounted later");
  monitorc->add_option("--program", mon.program,
                       "Run PROGRAM EVENT MOUNT IMAGE [DETAIL] once per event (no shell; IMAGE is empty for a "
                       "set-wide event)");
  monitorc->add_flag("--syslog", mon.syslog, "Log each event with syslog(3) (facility daemon)");
  monitorc->add_flag("-1,--oneshot", mon.oneshot, "Report DegradedArray for every degraded image, then exit");
  monitorc->add_option("-d,--delay", mon.delay, "Seconds between polls (default 1)");
  monitorc->add_option("--timeout", mon.timeout,
                       "Seconds a daemon may take to answer before DeviceDisappeared (default 10)");

  std::vector<std::string> metrics_mps;
  auto* metricsc = app.add_subcommand(
      "metrics", "Print the sets' status in the Prometheus text format (for node_exporter's textfile collector)");
  metricsc->add_option("mountpoints", metrics_mps, "Sets to report (default: every mounted set)");

  std::string bitmap_file;
  auto* examine = app.add_subcommand("examine-bitmap", "Print a bitmap file's header, like mdadm -X");
  examine->add_option("file", bitmap_file, "Bitmap file (.fmbm)")->required();

  std::string rescale_file, rescale_chunk, rescale_primary;
  bool rescale_force = false;
  auto* rescale = app.add_subcommand(
      "rescale-bitmap",
      "Change a bitmap file's chunk size offline (collapsing ORs bits, expanding copies them)");
  rescale->add_option("file", rescale_file, "Bitmap file (.fmbm) of an unmounted set")->required();
  rescale->add_option("--chunk-size", rescale_chunk, "New bytes per bit (power of two, 4K..1G; suffixes K, M, G)")
      ->required();
  rescale->add_option("--primary", rescale_primary,
                      "The set's primary directory, whose lock proves it is not mounted (default: "
                      "found above FILE)");
  rescale->add_flag("--force", rescale_force,
                    "Rescale a bitmap whose set cannot be found or whose UUID is another set's");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line that names the problem (docs/quickstart.md §4); --help has the rest.
    std::fprintf(stderr, "fusemirror: %s (see fusemirror --help)\n", fm::utils::printable(e.what(), false).c_str());
    return e.get_exit_code() ? e.get_exit_code() : 2;
  }

  try {
    if (*create) {
      auto cs = fm::utils::parse_size(chunk_size);
      if (!cs) throw Error("--chunk-size: '" + chunk_size + "' is not a size (e.g. 64K)");
      copts.chunk_size = *cs;
      copts.bitmap = !no_bitmap;
      copts.role = role == "backup" ? fm::core::Role::backup : fm::core::Role::mirror;
      if (!bitmap_dir.empty()) copts.bitmap_dir = bitmap_dir;
      auto c = fm::core::create_set(copts);
      std::cout << "fusemirror: created mirror set " << fm::utils::to_string(c.uuid) << "\n"
                << "  primary   " << fm::utils::printable(c.primary) << "\n  secondary "
                << fm::utils::printable(c.secondary) << "\n"
                << "  chunk     " << fm::utils::format_size(c.chunk_size) << ", daemon sleep "
                << c.daemon_sleep << "s, bitmaps in " << fm::utils::printable(c.bitmap_root()) << "\n";
      return 0;
    }
    fm::fuse::set_page_cache(page_cache);
    if (*mount) return do_mount(source, mountpoint, foreground, fuse_opts, verbose, /*notify=*/true);
    if (*umount) return fm::cli::unmount(absolute(umount_mp), umount_timeout);
    if (*status) {
      double watch = 0;
      if (watch_opt->count()) {
        watch = 2;
        if (!status_watch.empty()) {
          char* end = nullptr;
          const double v = std::strtod(status_watch.c_str(), &end);
          if (end && *end == '\0' && v > 0) {
            watch = v;
          } else if (status_mp.empty()) {
            status_mp = status_watch;  // `status --watch MOUNTPOINT`
          } else {
            throw Error("--watch: '" + status_watch + "' is not a number of seconds");
          }
        }
      }
      return fm::cli::status(status_mp.empty() ? "" : absolute(status_mp), status_json, watch);
    }
    if (*rescale) {
      auto cs = fm::utils::parse_size(rescale_chunk);
      if (!cs) throw Error("--chunk-size: '" + rescale_chunk + "' is not a size (e.g. 64K)");
      return fm::cli::rescale_bitmap(rescale_file, *cs, rescale_primary, rescale_force);
    }
    if (*examine) return fm::cli::examine_bitmap(bitmap_file);
    if (*monitorc) {
      for (auto& m : mon.mounts) m = absolute(m);
      return fm::cli::monitor(mon);
    }
    if (*metricsc) {
      for (auto& m : metrics_mps) m = absolute(m);
      return fm::cli::metrics(metrics_mps);
    }
    if (*waitc && !(wait_timeout >= 0))
      throw Error("--timeout: " + std::to_string(wait_timeout) + " is not a number of seconds >= 0");
    if (*waitc) return fm::cli::wait(absolute(wait_mp), wait_images, wait_clean, wait_timeout);
    using Verb = fm::core::ControlLine::Verb;
    auto send = [&](Verb verb, fm::core::SyncAction a = fm::core::SyncAction::idle) {
      return fm::cli::control(absolute(ctl_mp), fm::core::format_control_line({verb, ctl_image, a}));
    };
    if (*fail) return send(Verb::fail);
    if (*readd) return send(Verb::readd);
    if (*action) return send(Verb::sync_action, *fm::core::parse_sync_action(ctl_action));
  } catch (const std::exception& e) {
    // Messages name images and paths, which may hold control characters: one escaped line
    // (backslashes kept: core may have escaped a name already).
    std::fprintf(stderr, "fusemirror: %s\n", fm::utils::printable(e.what(), false).c_str());
    return 1;
  }
  return 2;
}
