# Writes OUTPUT, the C++ source of foldfarm::build_detail::commit(): the commit the source tree
# SOURCE_DIR is at (the short hash, "-dirty" when tracked files differ from it; "unknown" when
# SOURCE_DIR is no git checkout or git cannot read it). Run at every build (the custom target
# foldfarm_build_commit, core/CMakeLists.txt) with
#   cmake -DSOURCE_DIR=… -DOUTPUT=… [-DGIT_EXECUTABLE=…] -P FoldfarmBuildCommit.cmake
# The file is rewritten only when its content changes: a build at the same commit compiles
# nothing, a new commit compiles this one file (core/build_info/build_info.hpp).
cmake_minimum_required(VERSION 3.20)
set(commit "unknown")
if(NOT EXISTS "${SOURCE_DIR}/.git")
  # A tarball or an export: no commit to name.
elseif(NOT GIT_EXECUTABLE)
  message(STATUS "foldfarm: git not found; the build's commit is recorded as unknown")
else()
  # safe.directory: a checkout owned by another user (a CI container) is read as well; this
  # build compiles and runs its code anyway. --no-optional-locks: git status does not write
  # the index while another git command may hold it.
  set(git "${GIT_EXECUTABLE}" -c "safe.directory=${SOURCE_DIR}" --no-optional-locks)
  execute_process(COMMAND ${git} rev-parse --short HEAD
                  WORKING_DIRECTORY "${SOURCE_DIR}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE hash ERROR_VARIABLE err
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 0 AND hash MATCHES "^[0-9a-f]+$")
    set(commit "${hash}")
    execute_process(COMMAND ${git} status --porcelain --untracked-files=no
                    WORKING_DIRECTORY "${SOURCE_DIR}"
                    RESULT_VARIABLE rc OUTPUT_VARIABLE changes ERROR_VARIABLE err)
    # A status that cannot be read cannot say the tree was clean.
    if(NOT rc EQUAL 0 OR NOT changes STREQUAL "")
      string(APPEND commit "-dirty")
    endif()
  else()
    message(STATUS "foldfarm: git cannot read the commit of ${SOURCE_DIR} (${err}); "
                   "the build's commit is recorded as unknown")
  endif()
endif()

set(content "// Written by cmake/FoldfarmBuildCommit.cmake at build time; do not edit.
namespace foldfarm::build_detail {
const char* commit() { return \"${commit}\"; }
}  // namespace foldfarm::build_detail
")
set(old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUTPUT}" "${content}")
endif()
