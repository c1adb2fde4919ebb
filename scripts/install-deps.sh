#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build and test fusemirror.
#
#   scripts/install-deps.sh            build + test packages
#   scripts/install-deps.sh --build    build packages only
#
# Fast path: when every package is already installed, apt is not touched at all.
# Works as root (CI) or through sudo. Extra test packages may be listed one per line in
# test/integration/PACKAGES ('#' starts a comment); they are read at run time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_pkgs=(
  cmake g++ make pkg-config
  fuse3 libfuse3-dev
  libboost-filesystem-dev nlohmann-json3-dev doctest-dev
  libcli11-dev libspdlog-dev libxxhash-dev liburing-dev
  libnbd-dev  # NBD secondaries (core/nbd_leg)
)
test_pkgs=(
  e2fsprogs fio qemu-utils jq util-linux mount kmod diffutils procps coreutils
  clang  # libFuzzer targets (test/fuzz), run briefly by scripts/test.sh
)

want=("${build_pkgs[@]}")
if [[ "${1:-}" != "--build" ]]; then
  want+=("${test_pkgs[@]}")
  if [[ -f test/integration/PACKAGES ]]; then
    while read -r line; do
      line="${line%%#*}"
      for p in $line; do want+=("$p"); done
    done < test/integration/PACKAGES
  fi
fi

declare -A seen=()
uniq=()
for p in "${want[@]}"; do
  [[ -n "${seen[$p]:-}" ]] || uniq+=("$p")
  seen[$p]=1
done
want=("${uniq[@]}")

missing=()
for p in "${want[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages already installed"
  exit 0
fi

if ((EUID == 0)); then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root, and sudo is not available" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
