# Picks the host GEMM library. oneDNN dispatches on CPU features at run time (AVX-512, AMX)
# and reaches the FMA peak here; a CBLAS (OpenBLAS, BLIS, MKL) is the fallback.
set(ZT_GEMM "auto" CACHE STRING "Host GEMM library: auto, onednn or cblas")
set_property(CACHE ZT_GEMM PROPERTY STRINGS auto onednn cblas)
add_library(zt_gemm_library INTERFACE)
# oneDNN is found by its header and library, not its CMake config: Debian's dnnl-config.cmake
# requires OpenCL development files (its GPU runtime), which a CPU GEMM does not need.
if(ZT_GEMM STREQUAL "auto" OR ZT_GEMM STREQUAL "onednn")
  find_path(ZT_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h HINTS ${DNNL_ROOT} ENV DNNL_ROOT
    PATH_SUFFIXES include)
  find_library(ZT_DNNL_LIBRARY NAMES dnnl mkldnn HINTS ${DNNL_ROOT} ENV DNNL_ROOT
    PATH_SUFFIXES lib lib64)
endif()
if(ZT_DNNL_INCLUDE_DIR AND ZT_DNNL_LIBRARY)
  target_include_directories(zt_gemm_library INTERFACE ${ZT_DNNL_INCLUDE_DIR})
  target_link_libraries(zt_gemm_library INTERFACE ${ZT_DNNL_LIBRARY})
  target_compile_definitions(zt_gemm_library INTERFACE ZT_GEMM_ONEDNN=1)
  file(STRINGS ${ZT_DNNL_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h zt_dnnl_version_lines
    REGEX "#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3"
    zt_dnnl_version "${zt_dnnl_version_lines}")
  set(ZT_GEMM_NAME "oneDNN ${zt_dnnl_version}")
elseif(ZT_GEMM STREQUAL "onednn")
  message(FATAL_ERROR "ZT_GEMM=onednn but oneDNN (dnnl) was not found")
else()
  set(BLA_VENDOR_SAVED ${BLA_VENDOR})
  find_package(BLAS REQUIRED)
  find_path(ZT_CBLAS_INCLUDE_DIR NAMES cblas.h PATH_SUFFIXES openblas blis REQUIRED)
  target_link_libraries(zt_gemm_library INTERFACE BLAS::BLAS)
  target_include_directories(zt_gemm_library INTERFACE ${ZT_CBLAS_INCLUDE_DIR})
  target_compile_definitions(zt_gemm_library INTERFACE ZT_GEMM_CBLAS=1)
  set(ZT_GEMM_NAME "CBLAS")
endif()
message(STATUS "zerotrain host GEMM: ${ZT_GEMM_NAME}")
