// fusemirror/cli.hpp — the subcommands other than mount.
#pragma once

#include <string>
#include <vector>

namespace fusemirror::cli {

// Each returns the process exit code; errors are printed as one line on stderr.
int examine_bitmap(const std::string& file);
int status(const std::string& mountpoint, bool json);
int unmount(const std::string& mountpoint, double timeout_s);
// Writes one control line to MOUNTPOINT/.fusemirror/control.
int control(const std::string& mountpoint, const std::string& line);

// Mount points of running fusemirror sets (from /proc/self/mountinfo).
std::vector<std::string> fusemirror_mounts();

}  // namespace fusemirror::cli
