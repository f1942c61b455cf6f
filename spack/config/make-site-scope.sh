#!/usr/bin/env bash
# Writes a Spack configuration scope that describes THIS machine: every dependency of zerotrain
# that is installed here becomes a non-buildable external, so that
#   spack -C spack/config/site install zerotrain
# builds zerotrain alone (plus Spack's own compiler-wrapper and gcc-runtime) and fetches
# nothing from the network.
#
# Usage: spack/config/make-site-scope.sh [SCOPE_DIR]
#   SCOPE_DIR defaults to spack/config/site (ignored by git); it gets packages.yaml and
#   mirrors.yaml, both replaced on every run.
# Needs: `spack` on PATH (or $SPACK_ROOT set), and jobscripts/local/setup-deps.sh run first: it
# installs the Debian packages and builds Kokkos into <checkout>/.deps/kokkos (or uses
# $Kokkos_ROOT, which this script then uses too).
#
# Detected by Spack (`spack compiler find`, `spack external find --not-buildable`): gcc (and
# clang), cmake, gmake, openmpi, hdf5, git, python. Written here because Spack has no detection
# for them: kokkos (version and backends read from its KokkosCore_config.h), the Debian
# libraries (versions from dpkg), cuda and nccl when a CUDA toolkit is installed.
set -euo pipefail

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
scope_dir=${1:-$checkout/spack/config/site}

if ! command -v spack >/dev/null 2>&1; then
  if [[ -n ${SPACK_ROOT:-} && -x $SPACK_ROOT/bin/spack ]]; then
    PATH=$SPACK_ROOT/bin:$PATH
  else
    echo "make-site-scope: no spack on PATH; run: source \$SPACK_ROOT/share/spack/setup-env.sh" >&2
    exit 1
  fi
fi
# `spack` may be the shell function of setup-env.sh; the executable is what this script runs.
spack_exe=$(type -P spack)

# Same default as setup-deps.sh: Kokkos_ROOT wins, else the Kokkos it built.
kokkos_prefix=${Kokkos_ROOT:-${ZT_DEPS_PREFIX:-$checkout/.deps}/kokkos}
kokkos_config_h=$kokkos_prefix/include/KokkosCore_config.h
if [[ ! -f $kokkos_config_h ]]; then
  echo "make-site-scope: no Kokkos at $kokkos_prefix; run ./jobscripts/local/setup-deps.sh first" >&2
  echo "make-site-scope: (or set Kokkos_ROOT to an installed Kokkos)" >&2
  exit 1
fi
kokkos_prefix=$(cd "$kokkos_prefix" && pwd -P)

work=$(mktemp -d "${TMPDIR:-/tmp}/zt-site-scope.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Detection runs in an empty user scope of its own: `spack external find` and `spack compiler
# find` skip whatever another scope already lists, and the generated scope must be complete on
# its own. It keeps the caller's package repositories (the offline builtin path, say), and
# SPACK_USER_CACHE_PATH stays, so an already cloned builtin repository is reused.
mkdir -p "$work/user"
"$spack_exe" config get repos >"$work/user/repos.yaml"
export SPACK_USER_CONFIG_PATH=$work/user
spack() { "$spack_exe" "$@"; }

echo "make-site-scope: spack compiler find (about a minute)"
spack compiler find --scope user >/dev/null
echo "make-site-scope: spack external find"
spack external find --not-buildable --scope user cmake gmake openmpi hdf5 git >/dev/null
# Python only from the directory of the interpreter `python3` really is: detection on PATH also
# takes pyenv's shims directory as a prefix, which has no bin/python3 for Spack to run.
python_bin=$(dirname "$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')")
spack external find --not-buildable --scope user --path "$python_bin" python >/dev/null

# --- hand-written externals --------------------------------------------------------------
hand=$work/hand.yaml
echo "packages:" >"$hand"

# external NAME SPEC PREFIX: one non-buildable external.
external() {
  printf '  %s:\n    buildable: false\n    externals:\n    - spec: "%s"\n      prefix: %s\n' \
    "$1" "$2" "$3" >>"$hand"
}

# Prefer gcc when clang was found too: the project is built and tested with gcc.
if grep -q '^  gcc:' "$work/user/packages.yaml"; then
  printf '  %s:\n    prefer: [gcc]\n' c cxx fortran >>"$hand"
fi

# Kokkos: version and backends from the header its CMake configuration generated.
kokkos_defined() { grep -q "^#define KOKKOS_ENABLE_$1[[:space:]]*\$" "$kokkos_config_h"; }
kokkos_number=$(sed -n 's/^#define KOKKOS_VERSION \([0-9]*\).*/\1/p' "$kokkos_config_h")
# KOKKOS_VERSION is MMmmpp; Spack names Kokkos versions M.mm.pp with a two-digit patch (4.6.00).
kokkos_version=$((kokkos_number / 10000)).$((kokkos_number / 100 % 100)).$(printf '%02d' $((kokkos_number % 100)))
kokkos_spec=kokkos@$kokkos_version
# Kokkos' macro -> the builtin recipe's variant.
for pair in SERIAL:serial OPENMP:openmp THREADS:threads CUDA:cuda HIP:rocm SYCL:sycl \
  OPENMPTARGET:openmptarget; do
  if kokkos_defined "${pair%%:*}"; then kokkos_spec+=+${pair#*:}; else kokkos_spec+=~${pair#*:}; fi
done
if compgen -G "$kokkos_prefix/lib*/libkokkoscore.so" >/dev/null; then
  kokkos_spec+=+shared
else
  kokkos_spec+=~shared
fi
if kokkos_defined CUDA; then
  for pair in CUDA_LAMBDA:cuda_lambda CUDA_CONSTEXPR:cuda_constexpr CUDA_UVM:cuda_uvm \
    CUDA_RELOCATABLE_DEVICE_CODE:cuda_relocatable_device_code; do
    if kokkos_defined "${pair%%:*}"; then kokkos_spec+=+${pair#*:}; else kokkos_spec+=~${pair#*:}; fi
  done
  # A CUDA Kokkos built by g++ compiles through its nvcc_wrapper.
  if grep -qs 'Kokkos_CXX_COMPILER ".*nvcc_wrapper"' "$kokkos_prefix"/lib*/cmake/Kokkos/KokkosConfigCommon.cmake; then
    kokkos_spec+=+wrapper
  fi
  # KOKKOS_ARCH_HOPPER90 -> cuda_arch=90 (Kokkos builds for one GPU architecture).
  kokkos_arch=$(sed -n 's/^#define KOKKOS_ARCH_\(KEPLER\|MAXWELL\|PASCAL\|VOLTA\|TURING\|AMPERE\|ADA\|HOPPER\|BLACKWELL\)\([0-9]*\)$/\2/p' "$kokkos_config_h" | head -n 1)
  [[ -n $kokkos_arch ]] && kokkos_spec+=" cuda_arch=$kokkos_arch"
fi
for std in 23 20 17 14; do
  if kokkos_defined "CXX$std"; then kokkos_spec+=" cxxstd=$std"; break; fi
done
external kokkos "$kokkos_spec" "$kokkos_prefix"

# Debian's -dev packages (the ones setup-deps.sh installs), with the variants Debian builds
# them with. The version is the upstream part of dpkg's: 0.7.0+dfsg-8+b1 -> 0.7.0.
debian_version() {
  local version
  version=$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null) || return 1
  [[ $version == "install ok installed "* ]] || return 1
  version=${version##* }
  version=${version#*:}
  echo "${version%%[-+~]*}"
}
# debian NAME DEBIAN_PACKAGE VARIANTS
debian() {
  local version
  if version=$(debian_version "$2"); then
    external "$1" "$1@$version$3" /usr
  else
    echo "make-site-scope: $2 is not installed: no $1 external (run ./jobscripts/local/setup-deps.sh)" >&2
  fi
}
if command -v dpkg-query >/dev/null; then
  debian yaml-cpp libyaml-cpp-dev "+shared+pic~tests"
  debian nlohmann-json nlohmann-json3-dev ""
  debian cli11 libcli11-dev ""
  debian libaio libaio-dev ""
  # Debian ships GoogleTest as static libraries, GoogleMock in a separate package.
  gmock="~gmock"
  debian_version libgmock-dev >/dev/null && gmock="+gmock"
  debian googletest libgtest-dev "$gmock+pthreads~shared~absl cxxstd=17"
  debian benchmark libbenchmark-dev "+shared~performance_counters build_type=Release"
  debian onednn libdnnl-dev " cpu_runtime=omp gpu_runtime=none"
  debian openblas libopenblas-dev "+shared+fortran~ilp64 threads=pthreads"
else
  echo "make-site-scope: no dpkg: yaml-cpp, nlohmann-json, cli11, libaio, googletest, benchmark," >&2
  echo "make-site-scope: onednn and openblas get no externals; add your system's to the scope" >&2
fi

# CUDA: the first toolkit that has nvcc, headers and libcudart, named by its real path (so the
# external says cuda-13.0 rather than the /usr/local/cuda symbolic link).
cuda_prefix=
nvcc_on_path=$(type -P nvcc || true)
for candidate in "${CUDA_HOME:-}" "${CUDA_PATH:-}" \
  "${nvcc_on_path:+$(dirname "$(dirname "$(readlink -f "$nvcc_on_path")")")}" /usr/local/cuda; do
  if [[ -n $candidate && -x $candidate/bin/nvcc && -f $candidate/include/cuda_runtime.h ]] &&
    compgen -G "$candidate/lib*/libcudart.so*" >/dev/null; then
    cuda_prefix=$(cd "$candidate" && pwd -P)
    break
  fi
done
if [[ -n $cuda_prefix ]]; then
  # "Cuda compilation tools, release 13.0, V13.0.88" -> 13.0.88
  cuda_version=$("$cuda_prefix/bin/nvcc" --version | sed -n 's/.*release .*, V\([0-9.]*\).*/\1/p')
  external cuda "cuda@$cuda_version" "$cuda_prefix"
  # NCCL: in the toolkit's prefix or Debian's multiarch directory (NVIDIA's libnccl-dev).
  for nccl_prefix in "${NCCL_ROOT:-}" "$cuda_prefix" /usr; do
    [[ -n $nccl_prefix && -f $nccl_prefix/include/nccl.h ]] || continue
    compgen -G "$nccl_prefix/lib*/libnccl.so" >/dev/null ||
      compgen -G "$nccl_prefix/lib/*-linux-gnu/libnccl.so" >/dev/null || continue
    nccl_version=$(sed -n 's/^#define NCCL_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' \
      "$nccl_prefix/include/nccl.h" | paste -sd.)
    # NVIDIA builds NCCL for every architecture of the toolkit it ships with: list those that
    # Spack knows, so that `nccl cuda_arch=<sm>` (what zerotrain+nccl asks for) is satisfied.
    spack_arches=$(spack python -c 'from spack_repo.builtin.build_systems.cuda import CudaPackage as C; print(" ".join(C.cuda_arch_values))')
    nccl_arches=()
    for code in $("$cuda_prefix/bin/nvcc" --list-gpu-code); do
      [[ " $spack_arches " == *" ${code#sm_} "* ]] && nccl_arches+=("${code#sm_}")
    done
    nccl_spec="nccl@$nccl_version+cuda"
    ((${#nccl_arches[@]})) && nccl_spec+=" cuda_arch=$(IFS=,; echo "${nccl_arches[*]}")"
    external nccl "$nccl_spec" "$nccl_prefix"
    break
  done
fi

spack config --scope user add -f "$hand"

mkdir -p "$scope_dir"
{
  echo "# Generated by spack/config/make-site-scope.sh on $(hostname) ($(date -u +%Y-%m-%d)):"
  echo "# the externals of this machine. Regenerate after installing or upgrading a dependency."
  echo "# Use as a configuration scope: spack -C $scope_dir <command>"
  cat "$work/user/packages.yaml"
} >"$work/packages.yaml"
mv "$work/packages.yaml" "$scope_dir/packages.yaml"
# No source mirrors: at every concretization Spack 1.1 first asks each source mirror (by default
# https://mirror.spack.io) for an archive of zerotrain@main to read its commit from, before
# `git ls-remote` on the checkout. No mirror has zerotrain, every dependency is an external,
# and offline the request only fails.
cat >"$scope_dir/mirrors.yaml" <<'EOF'
# Generated by spack/config/make-site-scope.sh: no source mirrors (see that script).
mirrors:: {}
EOF
echo "make-site-scope: wrote $scope_dir/packages.yaml and $scope_dir/mirrors.yaml"
grep -o 'spec: .*' "$scope_dir/packages.yaml" | sed 's/^spec: /  /'
