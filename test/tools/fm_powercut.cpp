// fm_powercut — builds the states a power cut can leave from a snapshot and an fm_recordfs
// op log, and checks each one (test/tools/powercut_model.hpp: the crash model;
// powercut_check.hpp: the checks).
//
//   fm_powercut run --log LOG --snapshot DIR --mount-path M [--primary REL] [--seed S]
//                   [--states N] [--first I] [--recover-every K --recover-cmd CMD]
//                   [--label NAME] [-v]
//       States I .. I+N-1 of seed S (default 1, 0, 200). Every state: intent before data
//       and the acknowledged writes, offline. With K > 0, every K-th state (and every state
//       that failed offline) is also written to M (the recorder's mount point, now a plain
//       directory, so that config.json's paths hold) and CMD is run by sh with FM_PC_STATE
//       and FM_PC_MOUNT set (it mounts fusemirror, waits for --clean, unmounts; may run
//       e2fsck); then the legs must be identical and the acknowledged writes read back.
//       Prints figures, each violation with the command that replays that state alone,
//       and "powercut NAME: N states, V violations". Exit 1 if V > 0.
//   fm_powercut state --log LOG --snapshot DIR --mount-path M --seed S --state I [--final OUT]
//       Writes state I of seed S to M (or OUT) and describes it (to look at it by hand).
//   fm_powercut selftest --log LOG --snapshot DIR --final DIR
//       Every record applied must give exactly DIR (the recorder's root after the run):
//       proves the recorder saw everything and the replay applies it right.
//   fm_powercut dump --log LOG
//       One line per record.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "test/tools/powercut_check.hpp"
#include "test/tools/powercut_tree.hpp"
#include "test/tools/powercut_model.hpp"

namespace {

using namespace fmtest;

struct Args {
  std::string cmd, log, snapshot, mount, primary = "primary", final_dir, recover_cmd, label = "run";
  std::uint64_t seed = 1, states = 200, first = 0, state = 0, recover_every = 0;
  bool verbose = false;
};

[[noreturn]] void usage(const char* why = nullptr) {
  if (why) std::fprintf(stderr, "fm_powercut: %s\n", why);
  std::fprintf(stderr,
               "usage: fm_powercut run --log LOG --snapshot DIR --mount-path M [--primary REL] [--seed S]\n"
               "                       [--states N] [--first I] [--recover-every K --recover-cmd CMD]\n"
               "                       [--label NAME] [-v]\n"
               "       fm_powercut state --log LOG --snapshot DIR --mount-path M --seed S --state I\n"
               "       fm_powercut selftest --log LOG --snapshot DIR --final DIR\n"
               "       fm_powercut dump --log LOG\n");
  std::exit(2);
}

Args parse(int argc, char** argv) {
  if (argc < 2) usage();
  Args a;
  a.cmd = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-v") {
      a.verbose = true;
      continue;
    }
    if (i + 1 >= argc) usage((k + " needs a value").c_str());
    std::string v = argv[++i];
    auto num = [&] {
      char* end = nullptr;
      unsigned long long n = std::strtoull(v.c_str(), &end, 0);
      if (v.empty() || *end) usage((k + ": not a number: " + v).c_str());
      return static_cast<std::uint64_t>(n);
    };
    if (k == "--log") a.log = v;
    else if (k == "--snapshot") a.snapshot = v == "none" ? "" : v;
    else if (k == "--mount-path") a.mount = v;
    else if (k == "--primary") a.primary = v;
    else if (k == "--final") a.final_dir = v;
    else if (k == "--recover-cmd") a.recover_cmd = v;
    else if (k == "--label") a.label = v;
    else if (k == "--seed") a.seed = num();
    else if (k == "--states") a.states = num();
    else if (k == "--first") a.first = num();
    else if (k == "--state") a.state = num();
    else if (k == "--recover-every") a.recover_every = num();
    else usage(("unknown option " + k).c_str());
  }
  if (a.log.empty()) usage("--log is required");
  return a;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string replay_command(const Args& a, std::uint64_t index, bool recover) {
  std::string c = "fm_powercut run --log " + shell_quote(a.log) + " --snapshot " +
                  shell_quote(a.snapshot.empty() ? "none" : a.snapshot) + " --mount-path " + shell_quote(a.mount) +
                  " --primary " + shell_quote(a.primary) + " --seed " + std::to_string(a.seed) + " --first " +
                  std::to_string(index) + " --states 1";
  if (recover && !a.recover_cmd.empty()) c += " --recover-every 1 --recover-cmd " + shell_quote(a.recover_cmd);
  return c + " -v";
}

int run_recover(const Args& a, std::uint64_t index) {
  std::string env = "FM_PC_STATE=" + std::to_string(index) + " FM_PC_MOUNT=" + shell_quote(a.mount) + " ";
  int rc = std::system((env + a.recover_cmd).c_str());
  if (rc == -1) return 127;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

int cmd_run(const Args& a) {
  if (a.mount.empty()) usage("--mount-path is required");
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  Model m(a.log, a.snapshot);
  AckChecker acks(m, a.primary);
  std::uint64_t writes = 0, syncs = 0, marks = 0;
  bool complete = false;
  for (const Record& r : m.records()) {
    writes += r.op == Op::write;
    syncs += r.op == Op::fsync || r.op == Op::fsyncdir;
    marks += r.op == Op::mark;
    complete |= r.op == Op::end;
  }
  if (!complete) std::printf("powercut %s: warning: the log has no END record (the recorder did not stop cleanly)\n", a.label.c_str());
  CheckCounts total;
  std::uint64_t violations = 0, bad_states = 0, recovered = 0;
  double recover_s = 0;
  std::map<std::string, std::uint64_t> by_invariant;
  // Differences planted before recording (a check/repair workload) are known, not new.
  KnownDiffs known;
  if (SetPaths bset = find_set(m.base(), a.mount, a.primary); bset.present) {
    CheckCounts ignored;
    std::vector<Violation> none;
    check_intent(m.base(), bset, ignored, none, nullptr, &known);
    if (!known.empty())
      std::printf("powercut %s: %zu chunks differ without their bit in the snapshot (planted): not counted\n",
                  a.label.c_str(), known.size());
  }
  const double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  const auto t1 = clock::now();
  for (std::uint64_t i = a.first; i < a.first + a.states; ++i) {
    StateChoice choice;
    const std::uint64_t sseed = state_seed(a.seed, i);
    Tree t = m.build(sseed, &choice);
    CheckCounts c;
    c.states = 1;
    std::vector<Violation> found;
    SetPaths set = find_set(t, a.mount, a.primary);
    if (!set.present) {
      ++c.no_set;
    } else {
      check_intent(t, set, c, found, &known);
      acks.check(t, t, choice.crash, c, found);
    }
    const bool recover = set.present && !a.recover_cmd.empty() &&
                         a.recover_every &&
                         ((i - a.first) % a.recover_every == 0 || !found.empty());
    if (recover) {
      const auto r0 = clock::now();
      materialize(t, a.mount);
      if (int rc = run_recover(a, i); rc != 0) {
        found.push_back({"recovery", "the recovery command exited " + std::to_string(rc)});
      } else {
        Tree disk = load_tree(a.mount);
        SetPaths dset = find_set(disk, a.mount, a.primary);
        check_legs_identical(disk, dset, found);
        CheckCounts ignored;
        acks.check(disk, t, choice.crash, ignored, found);
      }
      ++recovered;
      recover_s += std::chrono::duration<double>(clock::now() - r0).count();
    }
    total.add(c);
    if (a.verbose)
      std::printf("state %llu (seed %llu): %s; images %llu, trusted %llu, differing chunks %llu, acked %llu%s\n",
                  static_cast<unsigned long long>(i), static_cast<unsigned long long>(sseed), choice.describe().c_str(),
                  static_cast<unsigned long long>(c.images), static_cast<unsigned long long>(c.trusted),
                  static_cast<unsigned long long>(c.differing_chunks), static_cast<unsigned long long>(c.acks),
                  set.present ? "" : (", no set: " + set.problem).c_str());
    if (found.empty()) continue;
    ++bad_states;
    for (const Violation& v : found) {
      ++violations;
      ++by_invariant[v.invariant];
      std::printf("VIOLATION %s state %llu (state seed %llu): %s: %s\n", a.label.c_str(),
                  static_cast<unsigned long long>(i), static_cast<unsigned long long>(sseed), v.invariant.c_str(),
                  v.detail.c_str());
    }
    std::printf("  state: %s\n  replay: %s\n", choice.describe().c_str(), replay_command(a, i, recover).c_str());
  }
  const double states_s = std::chrono::duration<double>(clock::now() - t1).count();
  std::string reasons;
  for (const auto& [k, v] : total.full_reasons) reasons += (reasons.empty() ? "" : ", ") + k + " " + std::to_string(v);
  std::printf("powercut %s: log %zu records (%llu writes, %llu syncs, %llu marks); states %llu (%.1f ms each, "
              "log read in %.1f s): images checked %llu, bitmap trusted %llu, full resync by bitmap %llu%s%s%s, "
              "by record %llu, no copy %llu, empty %llu; differing chunks %llu (%llu of them without their bit); trusted "
              "checksums checked %llu (%llu accusing a leg); acknowledged "
              "blocks checked %llu (image absent %llu), durable names %llu; recovered %llu (%.2f s each)\n",
              a.label.c_str(), m.size(), static_cast<unsigned long long>(writes), static_cast<unsigned long long>(syncs),
              static_cast<unsigned long long>(marks), static_cast<unsigned long long>(total.states),
              total.states ? 1000 * (states_s - recover_s) / static_cast<double>(total.states) : 0.0, load_s,
              static_cast<unsigned long long>(total.images), static_cast<unsigned long long>(total.trusted),
              static_cast<unsigned long long>(total.full_bitmap), reasons.empty() ? "" : " (", reasons.c_str(),
              reasons.empty() ? "" : ")", static_cast<unsigned long long>(total.full_record),
              static_cast<unsigned long long>(total.no_copy), static_cast<unsigned long long>(total.empty),
              static_cast<unsigned long long>(total.differing_chunks),
              static_cast<unsigned long long>(total.unmarked_chunks), static_cast<unsigned long long>(total.cksum_entries),
              static_cast<unsigned long long>(total.cksum_accusing), static_cast<unsigned long long>(total.acks),
              static_cast<unsigned long long>(total.acks_no_image), static_cast<unsigned long long>(total.names),
              static_cast<unsigned long long>(recovered),
              recovered ? recover_s / static_cast<double>(recovered) : 0.0);
  if (total.no_set) std::printf("powercut %s: %llu states hold no mirror set yet (crash before create finished)\n", a.label.c_str(),
                                static_cast<unsigned long long>(total.no_set));
  for (const auto& [k, v] : by_invariant)
    std::printf("powercut %s: invariant broken: %s (%llu)\n", a.label.c_str(), k.c_str(), static_cast<unsigned long long>(v));
  std::printf("powercut %s: %llu states, %llu violations\n", a.label.c_str(), static_cast<unsigned long long>(total.states),
              static_cast<unsigned long long>(violations));
  return violations ? 1 : 0;
}

int cmd_state(const Args& a) {
  if (a.mount.empty()) usage("--mount-path is required");
  Model m(a.log, a.snapshot);
  StateChoice choice;
  Tree t = m.build(state_seed(a.seed, a.state), &choice);
  const std::string out = a.final_dir.empty() ? a.mount : a.final_dir;
  materialize(t, out);
  std::printf("state %llu of seed %llu written to %s: %s\n", static_cast<unsigned long long>(a.state),
              static_cast<unsigned long long>(a.seed), out.c_str(), choice.describe().c_str());
  return 0;
}

int cmd_selftest(const Args& a) {
  if (a.final_dir.empty()) usage("--final is required");
  Model m(a.log, a.snapshot);
  Tree replayed = m.build_all();
  Tree actual = load_tree(a.final_dir);
  auto diffs = diff_trees(replayed, actual);
  for (const auto& d : diffs) std::printf("selftest: replay vs %s: %s\n", a.final_dir.c_str(), d.c_str());
  std::printf("selftest: %zu records replayed, %zu differences\n", m.size(), diffs.size());
  return diffs.empty() ? 0 : 1;
}

int cmd_dump(const Args& a) {
  for (const Record& r : read_log(a.log))
    std::printf("%llu %s id=%llu id2=%llu id3=%llu a=%llu b=%llu c=%llu %s%s%s data=%zu\n",
                static_cast<unsigned long long>(r.seq), op_name(r.op), static_cast<unsigned long long>(r.id),
                static_cast<unsigned long long>(r.id2), static_cast<unsigned long long>(r.id3),
                static_cast<unsigned long long>(r.a), static_cast<unsigned long long>(r.b),
                static_cast<unsigned long long>(r.c), r.name1.substr(0, 80).c_str(), r.name2.empty() ? "" : " -> ",
                r.name2.c_str(), r.data.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  try {
    if (a.cmd == "run") return cmd_run(a);
    if (a.cmd == "state") return cmd_state(a);
    if (a.cmd == "selftest") return cmd_selftest(a);
    if (a.cmd == "dump") return cmd_dump(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm_powercut: %s\n", e.what());
    return 2;
  }
  usage(("unknown command " + a.cmd).c_str());
}
