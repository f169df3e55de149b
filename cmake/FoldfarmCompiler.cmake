# Compiler settings shared by every target.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_C_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

add_library(foldfarm_warnings INTERFACE)
target_compile_options(foldfarm_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter)
