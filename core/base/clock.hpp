#pragma once
// Elapsed time on the monotonic clock, as benchmarks, progress lines and time-outs measure it.
//
// Thread-safety: pure functions.
#include <chrono>

namespace foldfarm {

// Seconds from `t0` (a steady_clock reading) to now.
inline double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace foldfarm
