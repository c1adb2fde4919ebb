// fusemirror/cli.hpp — the subcommands other than mount.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace fusemirror::cli {

// Each returns 0 on success and throws utils::Error (one line naming the thing and the
// reason) otherwise; main() prints it on stderr and exits 1.
int examine_bitmap(const std::string& file);
// watch_s > 0: redraw every watch_s seconds while stdout is a terminal (else print once).
int status(const std::string& mountpoint, bool json, double watch_s = 0);
int unmount(const std::string& mountpoint, double timeout_s);
// Blocks until the images (all when `images` is empty) are in sync, like `mdadm --wait`:
// no resync, check or repair running or queued, no unsynced chunk, no write-behind write
// outstanding; with `clean`, also no dirty bit (the sweeper cleared them). Throws when an
// image is degraded (it cannot get in sync before a re-add), unknown, or when timeout_s > 0
// passes first, naming what is still pending.
int wait(const std::string& mountpoint, const std::vector<std::string>& images, bool clean, double timeout_s);
// Writes one control line to MOUNTPOINT/.fusemirror/control.
int control(const std::string& mountpoint, const std::string& line);

// Changes a bitmap file's chunk size offline; refuses while the set is mounted (the
// primary's lock is held). `primary` empty: found by walking up from the file.
int rescale_bitmap(const std::string& file, std::uint64_t chunk_size, const std::string& primary, bool force);

// Mount points of running fusemirror sets (from /proc/self/mountinfo).
std::vector<std::string> fusemirror_mounts();

// MOUNTPOINT/.fusemirror/status.json, as text and parsed (fusemirror/status_json.hpp).
// Throw utils::Error naming the mount point when it is not a fusemirror mount or the
// status does not parse.
std::string read_status_file(const std::string& mountpoint);
core::SetStatus read_status(const std::string& mountpoint);

}  // namespace fusemirror::cli
