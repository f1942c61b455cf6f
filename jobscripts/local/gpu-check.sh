#!/usr/bin/env bash
# The GPU check: builds zerotrain with CUDA (sm_90) and NCCL, then runs the GPU-labelled tests
# and the NCCL bootstrap and communicator tests on every visible GPU. Meant for one H100/H200
# node; under 8 minutes.
#   jobscripts/local/gpu-check.sh            # build into build-gpu/ and test
#   ZT_BUILD_DIR=... ZT_CUDA_ARCH=90 jobscripts/local/gpu-check.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${ZT_BUILD_DIR:-$repo/build-gpu}
arch=${ZT_CUDA_ARCH:-90}

echo "== GPUs"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || echo 0)

echo "== build (sm_$arch)"
if [[ ! -f $build_dir/CMakeCache.txt ]]; then
  cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DZT_ENABLE_CUDA=ON \
    -DZT_ENABLE_NCCL=ON -DCMAKE_CUDA_ARCHITECTURES="$arch"
fi
cmake --build "$build_dir" -j "$(nproc)"
"$build_dir/app/zerotrain" --version

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== GPU tests"
(cd "$build_dir" && ctest -L gpu --output-on-failure --timeout 300)
if ((gpus >= 2)); then
  echo "== NCCL bootstrap and communicator over $gpus ranks, one per GPU"
  mpirun -np "$gpus" --oversubscribe "$build_dir/tests/comm/test_nccl_bootstrap"
  mpirun -np "$gpus" --oversubscribe "$build_dir/tests/comm/test_nccl_communicator"
fi
