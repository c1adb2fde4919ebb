#!/usr/bin/env bash
# Configures and builds fusemirror into build/ (RelWithDebInfo).
# Extra arguments go to the configure step, e.g. scripts/build.sh -DFUSEMIRROR_SANITIZE=ON
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build build -j"$(nproc)"
