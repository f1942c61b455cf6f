# SPDX-License-Identifier: Apache-2.0
#
# Spack recipe for zerotrain, package API v2 (Spack >= 1.0; checked with Spack 1.1.0 and
# spack-packages v2025.11.0). See spack/README.md for how to use it.

import os

from spack_repo.builtin.build_systems.cmake import CMakePackage
from spack_repo.builtin.build_systems.cuda import CudaPackage

from spack.package import *

# This recipe lives in zerotrain's own checkout, at
# <checkout>/spack/spack_repo/zerotrain/packages/zerotrain/package.py.
_CHECKOUT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 5))


class Zerotrain(CMakePackage, CudaPackage):
    """ZeRO data-parallel transformer training, MPI-native: optimizer state, gradients and
    parameters partitioned over MPI ranks (ZeRO stages 0-3), host kernels through Kokkos,
    device kernels in CUDA, NCCL or MPI collectives, HDF5 checkpoints.

    zerotrain@main is the `main` branch of the checkout that holds this recipe (a file:// git
    URL, works offline). To build another clone set, in packages.yaml,
    `zerotrain: {package_attributes: {git: <url>}}`; to build the working tree with
    uncommitted changes use `spack develop` (the environments in spack/environments do).

    With +kokkos_cuda, Kokkos' cuda_arch is single-valued: give exactly one cuda_arch.
    """

    homepage = f"file://{_CHECKOUT}/README.md"
    git = f"file://{_CHECKOUT}"

    license("Apache-2.0")

    version("main", branch="main")

    variant("openmp", default=True, description="Kokkos' OpenMP host backend (threaded host kernels)")
    variant("nccl", default=True, when="+cuda", description="NCCL communicator backend")
    variant(
        "kokkos_cuda",
        default=False,
        when="+cuda",
        description="Also require Kokkos' CUDA backend (zerotrain's host kernels run on "
        "Kokkos' host space either way; its device kernels are its own .cu files)",
    )
    variant(
        "gemm",
        default="onednn",
        values=("onednn", "cblas"),
        multi=False,
        description="Host GEMM library: oneDNN, or any CBLAS provider (OpenBLAS, BLIS, MKL)",
    )
    variant("benchmarks", default=False, description="Build the Google Benchmark drivers in bench/")

    conflicts("cuda_arch=none", when="+cuda", msg="+cuda needs a cuda_arch, e.g. cuda_arch=90")

    depends_on("c", type="build")  # FindHDF5's try-compile
    depends_on("cxx", type="build")
    depends_on("cmake@3.20:", type="build")

    depends_on("mpi")
    depends_on("hdf5+mpi")
    depends_on("yaml-cpp")
    depends_on("nlohmann-json")
    depends_on("cli11")
    depends_on("libaio")  # NVMe offload: the aio engine builds both interfaces
    depends_on("liburing")

    depends_on("kokkos@3.4:")
    depends_on("kokkos+openmp", when="+openmp")
    depends_on("kokkos+serial", when="~openmp")
    depends_on("kokkos~cuda", when="~cuda")
    depends_on("kokkos~cuda", when="+cuda~kokkos_cuda")
    depends_on("kokkos+cuda", when="+kokkos_cuda")
    # Kokkos refuses +cuda with gcc unless its nvcc wrapper is used.
    depends_on("kokkos+wrapper", when="+kokkos_cuda %cxx=gcc")

    depends_on("onednn", when="gemm=onednn")
    depends_on("blas", when="gemm=cblas")

    depends_on("nccl", when="+nccl")
    for _arch in CudaPackage.cuda_arch_values:
        depends_on(f"nccl cuda_arch={_arch}", when=f"+nccl cuda_arch={_arch}")
        depends_on(f"kokkos cuda_arch={_arch}", when=f"+kokkos_cuda cuda_arch={_arch}")

    depends_on("googletest", type="test")
    # tests/e2e (Python) is configured with the tests, so CMake needs an interpreter even
    # though check() leaves that label out; give Spack the system's as an external
    # (spack/config/make-site-scope.sh does), or it builds Python and its ~25 dependencies.
    depends_on("python@3:", type="test")
    depends_on("benchmark", when="+benchmarks")

    sanity_check_is_file = ["bin/zerotrain"]

    def cmake_args(self):
        spec = self.spec
        args = [
            self.define_from_variant("ZT_ENABLE_CUDA", "cuda"),
            self.define("ZT_ENABLE_NCCL", spec.satisfies("+nccl")),
            # Spack passes its own target flags; -march=native would tie the binary to the
            # build host.
            self.define("ZT_NATIVE_ARCH", False),
            self.define("ZT_BUILD_TESTS", self.run_tests),
            self.define_from_variant("ZT_BUILD_BENCH", "benchmarks"),
            self.define_from_variant("ZT_GEMM", "gemm"),
            self.define("Kokkos_ROOT", spec["kokkos"].prefix),
            self.define("HDF5_PREFER_PARALLEL", True),
            self.define("MPIEXEC_EXECUTABLE", join_path(spec["mpi"].prefix.bin, "mpiexec")),
            # `zerotrain --version` names these instead of the stage, which is deleted after
            # the install.
            self.define("ZT_SOURCE_ORIGIN", self._source_origin()),
            self.define("ZT_SOURCE_COMMIT", self._source_commit()),
        ]
        if spec.satisfies("gemm=onednn"):
            args.append(self.define("DNNL_ROOT", spec["onednn"].prefix))
        elif spec["blas"].name == "openblas":
            # FindBLAS would otherwise take the first BLAS it meets on the prefix path.
            args.append(self.define("BLA_VENDOR", "OpenBLAS"))
        if spec.satisfies("+cuda"):
            args.append(self.define("CMAKE_CUDA_COMPILER", join_path(spec["cuda"].prefix.bin, "nvcc")))
            args.append(self.define("CMAKE_CUDA_ARCHITECTURES", spec.variants["cuda_arch"].value))
        if spec.satisfies("+nccl"):
            args.append(self.define("NCCL_ROOT", spec["nccl"].prefix))
        return args

    def _source_commit(self):
        """The commit concretization pinned (`commit=` of a git version), or empty."""
        variants = self.spec.variants
        return variants["commit"].value if "commit" in variants else ""

    def _source_origin(self):
        """What the build was made from, for `zerotrain --version`: the spec (name, version,
        hash), then the commit and the repository it was fetched from, or that it is a develop
        build (whose sources, the developer's tree, --version then names too)."""
        spec = self.spec
        origin = f"spack {spec.name}@{spec.version}/{spec.dag_hash(7)}"
        if "dev_path" in spec.variants:
            return f"{origin}, develop build"
        commit = self._source_commit()
        return f"{origin}, commit {commit} of {self.git}" if commit else origin

    def check(self):
        """Build-time tests (`spack install --test=root`): the unit and MPI tests. The e2e
        label (whole training runs, minutes) and the gpu label (needs a GPU) are left out."""
        env = {"CTEST_OUTPUT_ON_FAILURE": "1"}
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Open MPI refuses to start as root without these (also set per test by CMake).
            env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
        ctest = Executable(join_path(self.spec["cmake"].prefix.bin, "ctest"))
        with working_dir(self.build_directory):
            ctest("-j", str(make_jobs), "-LE", "e2e|gpu", extra_env=env)

    def test_version(self):
        """`zerotrain --version` runs and names the build options"""
        zerotrain = which(self.prefix.bin.zerotrain, required=True)
        out = zerotrain("--version", output=str.split, error=str.split)
        assert "ZT_ENABLE_CUDA=" in out, out
