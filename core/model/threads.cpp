#include "core/model/threads.hpp"

#include <ATen/Parallel.h>
#include <sched.h>

#include <cstdlib>
#include <string>

extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace foldfarm {

int availableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return 1;
}

void configureThreads(int threads) {
  if (threads <= 0) threads = availableCores();
  at::set_num_threads(threads);
  // OpenBLAS reads this on first use; the setter (if linked) changes a started pool.
  setenv("OPENBLAS_NUM_THREADS", std::to_string(threads).c_str(), 1);
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
}

}  // namespace foldfarm
