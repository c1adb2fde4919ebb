#!/usr/bin/env bash
# Installs dependencies, builds, prepares /dev/fuse and loop devices, and runs every test
# (doctest units + mounted integration tests) through CTest. Exits with ctest's status.
# Per-test timeouts are set in CMake. Run as root (or through sudo): the integration tests
# use loop devices and mount(8).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh
./scripts/build.sh -DFUSEMIRROR_CRASH_POINTS=ON  # the test build carries the named crash points

if ((EUID == 0)); then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  as_root=()
  echo "test.sh: not root and no sudo: cannot prepare /dev/fuse or loop devices" >&2
fi

# /dev/fuse: load the module if the node is missing; in a container without devtmpfs,
# make the node by hand (char 10:229).
if [[ ! -c /dev/fuse ]]; then
  "${as_root[@]}" modprobe fuse 2>/dev/null || true
  if [[ ! -c /dev/fuse ]]; then
    "${as_root[@]}" mknod -m 0666 /dev/fuse c 10 229 || true
  fi
fi
if [[ -c /dev/fuse ]]; then
  echo "test.sh: /dev/fuse present"
else
  echo "test.sh: WARNING: /dev/fuse is missing; mounted tests will fail or skip" >&2
fi

# Loop devices: /dev/loop-control (char 10:237) must exist and `losetup -f` must name a
# device whose block node (major 7) exists.
if [[ ! -e /dev/loop-control ]]; then
  "${as_root[@]}" modprobe loop 2>/dev/null || true
  if [[ ! -e /dev/loop-control ]]; then
    "${as_root[@]}" mknod -m 0660 /dev/loop-control c 10 237 || true
  fi
fi
if loopdev="$("${as_root[@]}" losetup -f 2>/dev/null)"; then
  if [[ ! -b "$loopdev" ]]; then
    "${as_root[@]}" mknod -m 0660 "$loopdev" b 7 "${loopdev#/dev/loop}" || true
  fi
fi
if [[ -n "${loopdev:-}" && -b "$loopdev" ]]; then
  echo "test.sh: loop devices usable (next free: $loopdev)"
else
  echo "test.sh: WARNING: loop devices are not usable; loop-based tests will fail or skip" >&2
fi

# The unit tests under ASan+UBSan, and a short libFuzzer run on the header and config
# parsers, from one clang tree (`sanitize.sh ci`; the long runs, TSan and the mounted
# sanitizer test: scripts/sanitize.sh).
# Both come before ctest so that ctest's summary is the last thing printed.
pre=0
FM_FUZZ_SECS=${FM_FUZZ_SECS:-15} ./scripts/sanitize.sh ci || pre=$?

rc=0
# Two at a time (FM_TEST_JOBS): test/integration/CMakeLists.txt keeps apart the tests that
# must not share the machine.
ctest --test-dir build --output-on-failure -j "${FM_TEST_JOBS:-2}" || rc=$?
if ((rc == 0 && pre != 0)); then
  echo "test.sh: the sanitizer or fuzz run failed (above)" >&2
  rc=$pre
fi
exit "$rc"
