# NCCL ships inside recent CUDA toolkits; NCCL_ROOT points elsewhere (Spack).
set(ZT_NCCL_FOUND OFF)
if(CMAKE_CUDA_COMPILER)
  get_filename_component(zt_cuda_bin ${CMAKE_CUDA_COMPILER} DIRECTORY)
  get_filename_component(zt_cuda_root ${zt_cuda_bin} DIRECTORY)
  find_path(ZT_NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} ENV NCCL_ROOT ${zt_cuda_root}
    PATH_SUFFIXES include targets/x86_64-linux/include)
  find_library(ZT_NCCL_LIBRARY nccl HINTS ${NCCL_ROOT} ENV NCCL_ROOT ${zt_cuda_root}
    PATH_SUFFIXES lib lib64 targets/x86_64-linux/lib)
  if(ZT_NCCL_INCLUDE_DIR AND ZT_NCCL_LIBRARY)
    set(ZT_NCCL_FOUND ON)
    add_library(zt_nccl INTERFACE)
    target_include_directories(zt_nccl INTERFACE ${ZT_NCCL_INCLUDE_DIR})
    target_link_libraries(zt_nccl INTERFACE ${ZT_NCCL_LIBRARY})
  endif()
endif()
