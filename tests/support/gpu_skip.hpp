#pragma once
// How a test labelled `gpu` ends where it cannot run: skipped (exit 77, ctest's
// SKIP_RETURN_CODE) on a machine without a GPU, but failed (exit 1) under the GPU check
// (scripts/gpu-check.sh sets FOLDFARM_GPU_CHECK=1): there a skip means the build or the
// machine is not what the check is for (a LibTorch without CUDA, no NCCL), and ctest's
// "Skipped" would read as a pass.
#include <cstdio>
#include <cstdlib>
#include <string>

namespace foldfarm::testing {

inline bool underGpuCheck() {
  const char* check = std::getenv("FOLDFARM_GPU_CHECK");
  return check != nullptr && std::string(check) == "1";
}

[[noreturn]] inline void skipGpuTest(const std::string& test, const std::string& why) {
  if (underGpuCheck()) {
    std::fprintf(stderr, "%s: %s under the GPU check (FOLDFARM_GPU_CHECK=1): failed, not skipped\n",
                 test.c_str(), why.c_str());
    std::exit(1);
  }
  std::fprintf(stderr, "%s: %s: skipped\n", test.c_str(), why.c_str());
  std::exit(77);
}

}  // namespace foldfarm::testing
