// test/tools/powercut_tree.hpp — a crash state's trip to a real directory and back: what
// fm_powercut needs to mount a state (config.json names absolute paths, so a state is
// written where the recorder was mounted) and to read the result of its recovery.
#pragma once

#include <string>
#include <vector>

#include "test/tools/powercut_model.hpp"

namespace fmtest {

// Writes `t` into DIR (which must not be a mount point), removing what DIR held first.
void materialize(const Tree& t, const std::string& dir);
// Reads DIR into a tree (fresh ids).
Tree load_tree(const std::string& dir);
// Differences between two trees (names, kinds, contents, modes), at most `max` lines.
std::vector<std::string> diff_trees(const Tree& a, const Tree& b, std::size_t max = 20);

}  // namespace fmtest
