#include "core/model/threads.hpp"

#include <ATen/Parallel.h>
#include <malloc.h>
#include <sched.h>

#include <cstdlib>
#include <string>

#include "core/base/error.hpp"
#include "core/base/run_threads.hpp"

extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace foldfarm {

int availableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return 1;
}

void configureAllocator() {
  // A training step allocates and frees the same multi-megabyte activations over and over.
  // glibc serves blocks above its mmap threshold with fresh mappings, so every step pays
  // page faults and page zeroing for them (measured: ~15% of a PET step in the kernel).
  // Keep such blocks in the heap and do not hand freed memory back to the system eagerly.
  // 32 MiB is the largest threshold glibc accepts, and blocks beyond it (a scoring batch's
  // kNN edge tensors: 1024 jets x 89 slots x 5 neighbours x 64 floats, 117 MB) were still
  // mapped afresh each time (page faults were 9% of a demo chain's time), so mappings are
  // off altogether: a request the heap cannot grow for still gets one.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 256 << 20);
}

void configureThreads(int threads) {
  if (threads < 0 || threads > kMaxThreads)
    throw InputError("--threads must be 0 (all cores) to " + std::to_string(kMaxThreads) +
                     ", not " + std::to_string(threads));
  static const bool allocator_configured = (configureAllocator(), true);
  (void)allocator_configured;
  if (threads <= 0) threads = availableCores();
  at::set_num_threads(threads);
  // OpenBLAS reads this on first use; the setter (if linked) changes a started pool.
  setenv("OPENBLAS_NUM_THREADS", std::to_string(threads).c_str(), 1);
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
}

}  // namespace foldfarm
