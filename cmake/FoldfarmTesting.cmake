# ff_add_test(NAME name SOURCES a.cpp ... LIBS lib ... LABELS unit|mpi|slurm|gpu [NP n] [TIMEOUT s])
# One GoogleTest executable per call. Tests labelled `mpi` run under `mpirun -np NP` (default 2).
# FOLDFARM_TEST_TIMEOUT_SCALE multiplies every test's TIMEOUT (scripts/sanitize.sh sets 3: a
# sanitized build runs two to three times slower).
find_package(GTest REQUIRED)
set(FOLDFARM_TEST_TIMEOUT_SCALE 1 CACHE STRING "Factor applied to every test's TIMEOUT")
find_program(MPIRUN_EXECUTABLE NAMES mpirun mpiexec)

function(ff_add_test)
  cmake_parse_arguments(T "" "NAME;NP;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main foldfarm_warnings)
  target_compile_definitions(${T_NAME} PRIVATE
    FOLDFARM_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    FOLDFARM_SHARED_DATA_DIR="${PROJECT_SOURCE_DIR}/../shared/data"
    FOLDFARM_BINARY="$<$<TARGET_EXISTS:foldfarm-torch>:$<TARGET_FILE:foldfarm>>")
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  math(EXPR T_TIMEOUT "${T_TIMEOUT} * ${FOLDFARM_TEST_TIMEOUT_SCALE}")
  if("mpi" IN_LIST T_LABELS)
    if(NOT T_NP)
      set(T_NP 2)
    endif()
    add_test(NAME ${T_NAME}
      COMMAND ${MPIRUN_EXECUTABLE} --allow-run-as-root --oversubscribe -np ${T_NP}
              $<TARGET_FILE:${T_NAME}>)
  else()
    add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "OMPI_MCA_rmaps_base_oversubscribe=1;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1"
    SKIP_RETURN_CODE 77)
  # One local Slurm node (scripts/slurm-local.sh, as many CPUs as the machine) for every `slurm`
  # test: never two at once, or one's jobs wait for the other's and pass their deadlines.
  if("slurm" IN_LIST T_LABELS)
    set_property(TEST ${T_NAME} APPEND PROPERTY RESOURCE_LOCK foldfarm_local_slurm)
  endif()
endfunction()
