#!/usr/bin/env bash
# Installs what zerotrain needs on Debian 12 (when run as root) and builds a
# Kokkos with the OpenMP host backend into .deps/kokkos when none is installed.
# Idempotent: a second run does nothing but checks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
deps_prefix=${ZT_DEPS_PREFIX:-$repo/.deps}

# openssh-client: Open MPI's mpirun looks for an rsh/ssh agent even for jobs on one node.
# slurmctld, slurmd, slurm-client, munge: the one-node Slurm of jobscripts/local/slurm-test.sh
# (srun --mpi=pmix is in slurm-wlm-basic-plugins, which they pull in); libpmix-dev: that
# plugin dlopens pmix2/lib/libpmix.so, a name only the -dev package ships.
# git: the build reads the revision for --version and the tests compare it with HEAD.
# python3-h5py: the checkpoint tests read zerotrain's HDF5 files with h5py, as users do.
# fio: bench/aio_vs_fio.py measures the aio engine against it (same ioengine, --direct=1).
# clang, libclang-rt-14-dev: the fuzz build (jobscripts/local/fuzz.sh); libFuzzer and the
# sanitizer runtimes are in the latter, which clang only recommends.
debian_packages=(
  build-essential cmake pkg-config dpkg-dev
  libopenmpi-dev openmpi-bin openssh-client
  libhdf5-openmpi-dev hdf5-tools
  libyaml-cpp-dev libdnnl-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libaio-dev liburing-dev libcli11-dev nlohmann-json3-dev
  python3 python3-h5py shellcheck git fio
  slurmctld slurmd slurm-client munge libpmix-dev
  clang libclang-rt-14-dev
)

missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-deps: missing Debian packages: ${missing[*]}" >&2
    echo "setup-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Kokkos: accept an installed one that has a threaded host backend (Spack,
# modules, Kokkos_ROOT); Debian's libtrilinos-kokkos-dev is Serial-only with a
# broken CMake config, so otherwise build Debian's trilinos source package's
# standalone packages/kokkos (3.4.1) with OpenMP.
kokkos_prefix=$deps_prefix/kokkos
if [[ -n "${Kokkos_ROOT:-}" ]]; then
  echo "setup-deps: using Kokkos_ROOT=$Kokkos_ROOT"
  exit 0
fi
if [[ -f $kokkos_prefix/lib/cmake/Kokkos/KokkosConfig.cmake ]]; then
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/zt-kokkos.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get source --download-only trilinos >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-deps: cannot fetch Debian's trilinos source (needs a deb-src line; run as root to add one)" >&2
    exit 1
  fi
  echo "setup-deps: adding a deb-src line for bookworm to fetch Debian's trilinos source"
  cat >/etc/apt/sources.list.d/zerotrain-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -q
  apt-get source --download-only trilinos
fi
tarballs=(trilinos_*.orig.tar.*)
echo "setup-deps: extracting Kokkos from ${tarballs[0]}"
tar -xf "${tarballs[0]}" --wildcards '*/packages/kokkos/*'
kokkos_src=(*/packages/kokkos)
cmake -S "${kokkos_src[0]}" -B build -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_STANDARD=17 -DCMAKE_CXX_EXTENSIONS=OFF \
  -DKokkos_ENABLE_OPENMP=ON -DKokkos_ENABLE_SERIAL=ON \
  -DCMAKE_INSTALL_PREFIX="$kokkos_prefix" -DCMAKE_POSITION_INDEPENDENT_CODE=ON >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
cmake --install build >/dev/null
echo "setup-deps: Kokkos installed in $kokkos_prefix"
