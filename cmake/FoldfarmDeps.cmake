# Every third-party dependency is found here, once.
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.9 REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 QUIET CONFIG)
find_package(SQLite3 REQUIRED)
find_package(MPI REQUIRED COMPONENTS CXX)
set(HDF5_PREFER_PARALLEL OFF)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(ZLIB REQUIRED)  # decoding deflated chunks outside HDF5's lock (jet_reader.cpp)

add_library(foldfarm_hdf5 INTERFACE)
target_include_directories(foldfarm_hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(foldfarm_hdf5 INTERFACE ${HDF5_LIBRARIES} ZLIB::ZLIB)
target_compile_definitions(foldfarm_hdf5 INTERFACE ${HDF5_DEFINITIONS})

if(FOLDFARM_WITH_TORCH)
  find_package(Torch REQUIRED)
  # A LibTorch of the old libstdc++ string ABI (older PyTorch pip wheels, LibTorch's
  # "Pre-cxx11 ABI" downloads) cannot be linked with the system's spdlog, HDF5, MPI, ...
  # (C++11 ABI): the build would end in undefined symbols. Said here, unless this build
  # asks for that ABI itself (all dependencies built so).
  if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0"
     AND NOT CMAKE_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
    message(FATAL_ERROR
      "foldfarm: the LibTorch at ${Torch_DIR} was built with the pre-C++11 string ABI "
      "(-D_GLIBCXX_USE_CXX11_ABI=0) and cannot be linked with foldfarm's other dependencies; "
      "use a LibTorch built with the C++11 ABI (recent PyTorch wheels, or LibTorch's "
      "cxx11-ABI download) and point CMAKE_PREFIX_PATH or Torch_DIR at it")
  endif()
  add_library(foldfarm_torch INTERFACE)
  target_include_directories(foldfarm_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  # PyTorch's pip wheels carry private copies of some libstdc++ symbols (std::filesystem
  # among them) in libtorch.so; an executable that binds to those crashes in
  # std::filesystem::remove_all. libstdc++ is listed first so that its definitions win.
  target_link_libraries(foldfarm_torch INTERFACE
    "-Wl,--push-state,--no-as-needed" stdc++ "-Wl,--pop-state" ${TORCH_LIBRARIES})
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(foldfarm_torch INTERFACE ${_torch_flags})
  # The version LibTorch's headers give (TORCH_VERSION, torch/version.h), for the build
  # identity (core/build_info): the front end, which links no LibTorch, prints it too.
  set(FOLDFARM_TORCH_VERSION "${Torch_VERSION}")
  foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
    if(EXISTS "${_dir}/torch/version.h")
      file(READ "${_dir}/torch/version.h" _torch_version_h)
      if(_torch_version_h MATCHES "#define TORCH_VERSION[ \t\\\r\n]*\"([^\"]*)\"")
        set(FOLDFARM_TORCH_VERSION "${CMAKE_MATCH_1}")
        break()
      endif()
    endif()
  endforeach()
  if(Torch_VERSION VERSION_GREATER_EQUAL 2.13 AND CMAKE_CXX_STANDARD LESS 20)
    set(CMAKE_CXX_STANDARD 20)
    message(STATUS "foldfarm: LibTorch ${Torch_VERSION} needs C++20; building as C++20")
  endif()

  # `bench pet --profile` reads LibTorch's legacy profiler, an internal interface that may
  # change or go: compiled in only when this LibTorch still has it as used here.
  if(NOT DEFINED FOLDFARM_HAVE_LEGACY_PROFILER)
    set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)  # compile only: nothing is linked
    try_compile(FOLDFARM_HAVE_LEGACY_PROFILER ${CMAKE_BINARY_DIR}/probes/legacy_profiler
      ${CMAKE_CURRENT_LIST_DIR}/probes/legacy_profiler.cpp
      CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${TORCH_INCLUDE_DIRS}"
      COMPILE_DEFINITIONS ${_torch_flags}
      CXX_STANDARD ${CMAKE_CXX_STANDARD} CXX_STANDARD_REQUIRED ON
      OUTPUT_VARIABLE _probe_out)
    unset(CMAKE_TRY_COMPILE_TARGET_TYPE)
    set(FOLDFARM_HAVE_LEGACY_PROFILER ${FOLDFARM_HAVE_LEGACY_PROFILER} CACHE BOOL
        "LibTorch's legacy profiler is usable (bench pet --profile)")
    message(STATUS "foldfarm: LibTorch's legacy profiler (bench pet --profile): "
                   "${FOLDFARM_HAVE_LEGACY_PROFILER}")
  endif()
  if(FOLDFARM_HAVE_LEGACY_PROFILER)
    target_compile_definitions(foldfarm_torch INTERFACE FOLDFARM_HAVE_LEGACY_PROFILER=1)
  endif()

  # CUDA/NCCL communicator: compiled when the LibTorch found has CUDA, or when asked.
  set(FOLDFARM_HAVE_NCCL OFF)
  if(NOT FOLDFARM_WITH_CUDA STREQUAL "OFF")
    # NCCL_HOME: -DNCCL_HOME=… on the command line, else the environment variable.
    set(NCCL_HOME "$ENV{NCCL_HOME}" CACHE PATH "NCCL installation prefix (include/, lib/)")
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_HOME}/include /usr/local/cuda/include)
    find_library(NCCL_LIBRARY nccl HINTS ${NCCL_HOME}/lib ${NCCL_HOME}/lib64 /usr/local/cuda/lib64
                 /usr/local/cuda/lib)
    # The CUDA runtime from the toolkit CMake finds (nvcc on PATH, CUDAToolkit_ROOT, CUDA_HOME),
    # not only /usr/local/cuda.
    find_package(CUDAToolkit QUIET)
    find_path(CUDART_INCLUDE_DIR cuda_runtime_api.h
              HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{CUDA_HOME}/include /usr/local/cuda/include)
    find_library(CUDART_LIBRARY cudart
                 HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{CUDA_HOME}/lib64 /usr/local/cuda/lib64
                       /usr/local/cuda/lib)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND CUDART_INCLUDE_DIR AND CUDART_LIBRARY)
      set(FOLDFARM_HAVE_NCCL ON)
      add_library(foldfarm_nccl INTERFACE)
      target_include_directories(foldfarm_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR} ${CUDART_INCLUDE_DIR})
      target_link_libraries(foldfarm_nccl INTERFACE ${NCCL_LIBRARY} ${CUDART_LIBRARY})
      message(STATUS "foldfarm: NCCL communicator enabled (${NCCL_LIBRARY})")
    elseif(FOLDFARM_WITH_CUDA STREQUAL "ON")
      set(_missing "")
      foreach(_v NCCL_INCLUDE_DIR NCCL_LIBRARY CUDART_INCLUDE_DIR CUDART_LIBRARY)
        if(NOT ${_v})
          list(APPEND _missing ${_v})
        endif()
      endforeach()
      message(FATAL_ERROR "FOLDFARM_WITH_CUDA=ON but not found: ${_missing} (NCCL: pass "
                          "-DNCCL_HOME=PREFIX; the CUDA runtime: put the toolkit's nvcc on PATH "
                          "or pass -DCUDAToolkit_ROOT=PREFIX)")
    else()
      message(STATUS "foldfarm: NCCL not found; the NCCL communicator is not built")
    endif()
  endif()

  # A LibTorch built with CUDA exports c10_cuda (Caffe2Targets) and sets TORCH_CUDA_LIBRARIES
  # (TorchConfig); Debian's CPU-only LibTorch does neither. foldfarm_core then gets
  # FOLDFARM_TORCH_CUDA (core/CMakeLists.txt).
  set(FOLDFARM_TORCH_CUDA OFF)
  if(TARGET c10_cuda OR TORCH_CUDA_LIBRARIES)
    set(FOLDFARM_TORCH_CUDA ON)
  endif()

  # CUDA kernels (core/model/*.cu, the static library foldfarm_cuda_kernels): built when a
  # CUDA compiler is found, unless FOLDFARM_WITH_CUDA=OFF; with ON a missing nvcc is an error.
  # They need no GPU to compile, and run only through a LibTorch with CUDA. nvcc uses the
  # `c++` on PATH as host compiler unless -DCMAKE_CUDA_HOST_COMPILER=... says otherwise.
  set(FOLDFARM_HAVE_CUDA_KERNELS OFF)
  set(FOLDFARM_CUDA_ARCHITECTURES "80;90" CACHE STRING
      "CUDA architectures of foldfarm's kernels (CUDA_ARCHITECTURES syntax, e.g. 80;90)")
  if(NOT FOLDFARM_WITH_CUDA STREQUAL "OFF")
    # The toolkit's usual prefix, for a machine whose PATH lacks it; check_language still
    # tries it before it is used.
    if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
      set(ENV{CUDACXX} /usr/local/cuda/bin/nvcc)
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      if(CCACHE_PROGRAM)
        set(CMAKE_CUDA_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
      endif()
      enable_language(CUDA)
      set(FOLDFARM_HAVE_CUDA_KERNELS ON)
      message(STATUS "foldfarm: CUDA kernels enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                     "architectures ${FOLDFARM_CUDA_ARCHITECTURES})")
    elseif(FOLDFARM_WITH_CUDA STREQUAL "ON")
      message(FATAL_ERROR "FOLDFARM_WITH_CUDA=ON but no CUDA compiler was found: put nvcc on "
                          "PATH or pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc (or use AUTO or OFF)")
    else()
      message(STATUS "foldfarm: no CUDA compiler found; the CUDA kernels are not built")
    endif()
  endif()
endif()
