// SPDX-License-Identifier: Apache-2.0
// `zerotrain --version`: what a user pastes into a bug report.
#include <hdf5.h>
#include <mpi.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <system_error>

#include "app/commands.hpp"
#include "build_info.hpp"
#include "git_revision.hpp"
#include "kernels/gemm.hpp"
#ifdef ZT_HAVE_NCCL
#include "comm/nccl_bootstrap.hpp"
#endif
#ifdef ZT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace zt::app {

namespace {

// The revision git describe found at build time; a source tree without .git (a Spack stage
// restored from its source cache, a tarball) falls back to the commit the build was given.
std::string git_revision() {
  const std::string revision = ZT_GIT_REVISION;
  const std::string commit = ZT_SOURCE_COMMIT;
  if (revision == "unknown" && !commit.empty()) return commit.substr(0, 12);
  return revision;
}

// Where the sources were: the origin the build was given (Spack: spec and commit, because its
// stage is deleted after the install), else the source directory, which is checked now, at run
// time, so that a directory that is gone is not printed as if it were there.
std::string source_description() {
  const std::string origin = ZT_SOURCE_ORIGIN;
  const std::string directory = ZT_SOURCE_DIR;
  std::error_code error;
  const bool present = std::filesystem::is_directory(directory, error);
  if (!origin.empty()) return present ? origin + " (sources in " + directory + ")" : origin;
  return present ? directory : directory + " (removed since the build)";
}

}  // namespace

std::string version_report() {
  std::ostringstream out;
  out << "zerotrain " << ZT_VERSION << " (git " << git_revision() << ")\n";
  out << "  build:     " << ZT_BUILD_TYPE << ", " << ZT_CXX_COMPILER << ", C++17"
      << (std::string(ZT_CXX_FLAGS).find_first_not_of(' ') == std::string::npos
              ? std::string()
              : std::string(", flags ") + ZT_CXX_FLAGS)
      << "\n";
  out << "  options:   " << ZT_BUILD_OPTIONS << "\n";
  out << "  source:    " << source_description() << "\n";
  char mpi_library[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int length = 0;
  MPI_Get_library_version(mpi_library, &length);
  std::string mpi_text(mpi_library, static_cast<std::size_t>(length));
  if (auto cut = mpi_text.find_first_of(",\n"); cut != std::string::npos) mpi_text.resize(cut);
  out << "  MPI:       " << mpi_text << " (MPI " << MPI_VERSION << "." << MPI_SUBVERSION << ")"
#ifdef OMPI_MAJOR_VERSION
      << ", built with Open MPI " << OMPI_MAJOR_VERSION << "." << OMPI_MINOR_VERSION << "."
      << OMPI_RELEASE_VERSION
#endif
      << "\n";
  out << "  Kokkos:    " << ZT_KOKKOS_VERSION << ", backends " << ZT_KOKKOS_DEVICES << "\n";
  unsigned hdf5_major = 0, hdf5_minor = 0, hdf5_release = 0;
  H5get_libversion(&hdf5_major, &hdf5_minor, &hdf5_release);
  out << "  HDF5:      " << hdf5_major << "." << hdf5_minor << "." << hdf5_release
      << " (built with " << H5_VERS_MAJOR << "." << H5_VERS_MINOR << "." << H5_VERS_RELEASE << ")"
#ifdef H5_HAVE_PARALLEL
      << " (parallel)"
#endif
      << "\n";
  out << "  GEMM:      " << kernels::gemm_library() << ", " << kernels::gemm_instruction_set()
      << "\n";
  out << "  yaml-cpp:  " << ZT_YAML_CPP_VERSION << "\n";
#ifdef ZT_HAVE_CUDA
  int runtime_version = 0;
  cudaRuntimeGetVersion(&runtime_version);
  out << "  CUDA:      built with " << CUDART_VERSION / 1000 << "." << (CUDART_VERSION % 1000) / 10
      << " for sm_" << ZT_CUDA_ARCHITECTURES << "; runtime " << runtime_version / 1000 << "."
      << (runtime_version % 1000) / 10 << "\n";
#else
  out << "  CUDA:      not built\n";
#endif
#ifdef ZT_HAVE_NCCL
  out << "  NCCL:      built with " << NCCL_MAJOR << "." << NCCL_MINOR << "." << NCCL_PATCH
      << "; library " << comm::nccl_version() << "\n";
#else
  out << "  NCCL:      not built\n";
#endif
  return out.str();
}

}  // namespace zt::app
