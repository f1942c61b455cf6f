#!/usr/bin/env bash
# Installs what is missing (as root, from Debian's archive), then configures and builds
# zerotrain into build/ (or $ZT_BUILD_DIR). Fast when everything is already there.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${ZT_BUILD_DIR:-$repo/build}

"$repo/jobscripts/local/setup-deps.sh"

# Extra CMake arguments, e.g. ZT_CMAKE_ARGS="-DZT_ENABLE_CUDA=OFF -DZT_GEMM=cblas".
read -r -a extra_cmake_args <<<"${ZT_CMAKE_ARGS:-}"
if [[ ! -f $build_dir/CMakeCache.txt ]]; then
  cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${extra_cmake_args[@]}"
fi
cmake --build "$build_dir" -j "$(nproc)"
