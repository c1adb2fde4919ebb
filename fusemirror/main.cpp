// fusemirror/main.cpp — the command line: create, mount, unmount, status, examine-bitmap.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/filesystem.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <spdlog/spdlog.h>

#include "core/create.hpp"
#include "core/mirror_set.hpp"
#include "fusemirror/cli.hpp"
#include "fusemirror/fuse_ops.hpp"
#include "utils/error.hpp"
#include "utils/log.hpp"
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

int do_mount(const std::string& source, const std::string& mp_arg, bool foreground,
             const std::vector<std::string>& opts, bool verbose) {
  std::string config_path;
  fm::core::Config config = fm::core::load_config(source, &config_path);
  const std::string mp = absolute(mp_arg);
  check_mountpoint(mp, config);

  // Log to the terminal until daemonized, and always to the set's log file.
  fm::utils::setup_logging(config.primary + "/" + fm::core::kMetaDirName + "/" + fm::core::kLogName,
                           true, verbose);
  auto set = fm::core::MirrorSet::open(config, mp);

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
  if (!f) throw Error(mp + ": cannot create the FUSE session (bad -o option?)");
  if (fuse_mount(f, mp.c_str()) != 0) {
    fuse_destroy(f);
    throw Error(mp + ": mount failed (is /dev/fuse available and fusermount3 installed?)");
  }
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

  fuse_loop_config* lc = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(lc, 0);
  fuse_loop_cfg_set_max_threads(lc, 16);
  fuse_loop_cfg_set_idle_threads(lc, 8);
  // libfuse returns the signal's number after SIGTERM/SIGINT: that is a clean stop.
  int rc = fuse_loop_mt(f, lc);
  if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP || rc == -SIGTERM || rc == -SIGINT) rc = 0;
  fuse_loop_cfg_destroy(lc);
  fuse_remove_signal_handlers(se);
  fuse_unmount(f);
  // No FUSE request can arrive any more: drain and mark the bitmaps clean.
  set->shutdown();
  fuse_destroy(f);
  return rc == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fusemirror — mirror disk-image files to a secondary directory, with a "
               "write-intent bitmap per image (see man fusemirror)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "fusemirror 0.1.0");

  fm::core::CreateOptions copts;
  std::string chunk_size = "64K";
  bool no_bitmap = false;
  std::string bitmap_dir;
  auto* create = app.add_subcommand("create", "Initialise a mirror set over PRIMARY and SECONDARY");
  create->add_option("primary", copts.primary, "Primary directory (holds the images)")->required();
  create->add_option("secondary", copts.secondary, "Secondary directory (gets the copies)")->required();
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

  std::string umount_mp;
  double umount_timeout = 300;
  auto* umount = app.add_subcommand("unmount", "Unmount cleanly and wait for the daemon to flush and exit");
  umount->alias("umount");
  umount->add_option("mountpoint", umount_mp, "Mount point")->required();
  umount->add_option("--timeout", umount_timeout, "Seconds to wait for the daemon to exit (default 300)");

  std::string status_mp;
  bool status_json = false;
  auto* status = app.add_subcommand("status", "Show mounted mirror sets, like /proc/mdstat");
  status->add_option("mountpoint", status_mp, "Only this mount");
  status->add_flag("--json", status_json, "JSON for scripts (schema in docs/quickstart.md)");

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
      ->check(CLI::IsMember({"idle", "resync", "check", "repair"}));

  std::string bitmap_file;
  auto* examine = app.add_subcommand("examine-bitmap", "Print a bitmap file's header, like mdadm -X");
  examine->add_option("file", bitmap_file, "Bitmap file (.fmbm)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line that names the problem (SPEC §7); --help has the rest.
    std::fprintf(stderr, "fusemirror: %s (see fusemirror --help)\n", e.what());
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
                << "  primary   " << c.primary << "\n  secondary " << c.secondary << "\n"
                << "  chunk     " << fm::utils::format_size(c.chunk_size) << ", daemon sleep "
                << c.daemon_sleep << "s, bitmaps in " << c.bitmap_root() << "\n";
      return 0;
    }
    if (*mount) return do_mount(source, mountpoint, foreground, fuse_opts, verbose);
    if (*umount) return fm::cli::unmount(absolute(umount_mp), umount_timeout);
    if (*status) return fm::cli::status(status_mp.empty() ? "" : absolute(status_mp), status_json);
    if (*examine) return fm::cli::examine_bitmap(bitmap_file);
    if (*fail) return fm::cli::control(absolute(ctl_mp), "fail " + ctl_image);
    if (*readd) return fm::cli::control(absolute(ctl_mp), "re-add " + ctl_image);
    if (*action) return fm::cli::control(absolute(ctl_mp), "sync-action " + ctl_image + " " + ctl_action);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fusemirror: %s\n", e.what());
    return 1;
  }
  return 2;
}
