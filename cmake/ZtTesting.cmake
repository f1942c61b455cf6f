# zt_add_test(NAME name SOURCES a.cpp ... LIBRARIES lib ... [RANKS 1 2 4] [MPI_MAIN] [KOKKOS]
#             [LABELS ...])
# Builds one GoogleTest executable. Without RANKS it is one serial ctest. With RANKS it runs
# under mpiexec once per rank count (ctest name <name>_np<N>, PROCESSORS N, label RANK_N) and
# links the MPI+Kokkos test main (tests/support/mpi_main.cpp). KOKKOS: a serial test that needs
# Kokkos initialised (tests/support/kokkos_environment.cpp).
set(ZT_TEST_ENVIRONMENT
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1 OMP_PROC_BIND=false
  OMPI_MCA_btl_vader_single_copy_mechanism=none)

function(zt_add_test)
  cmake_parse_arguments(T "MPI_MAIN;KOKKOS" "NAME;TIMEOUT" "SOURCES;LIBRARIES;RANKS;LABELS" ${ARGN})
  if(T_KOKKOS)
    list(APPEND T_SOURCES ${PROJECT_SOURCE_DIR}/tests/support/kokkos_environment.cpp)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBRARIES} GTest::gtest zt_build_settings)
  if(T_MPI_MAIN OR T_RANKS)
    target_link_libraries(${T_NAME} PRIVATE zt_test_mpi_main)
  else()
    target_link_libraries(${T_NAME} PRIVATE GTest::gtest_main)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(T_RANKS)
    foreach(n IN LISTS T_RANKS)
      add_test(NAME ${T_NAME}_np${n}
        COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} --oversubscribe
                ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${T_NAME}> ${MPIEXEC_POSTFLAGS})
      set_tests_properties(${T_NAME}_np${n} PROPERTIES PROCESSORS ${n} TIMEOUT ${T_TIMEOUT}
        LABELS "RANK_${n};${T_LABELS}" ENVIRONMENT "${ZT_TEST_ENVIRONMENT}")
    endforeach()
  else()
    add_test(NAME ${T_NAME} COMMAND ${T_NAME})
    set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
      ENVIRONMENT "${ZT_TEST_ENVIRONMENT}")
  endif()
endfunction()
