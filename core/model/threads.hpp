#pragma once
// Thread configuration of LibTorch and OpenBLAS. Debian's LibTorch starts with one
// intra-op thread; OpenBLAS keeps its own pool for matrix products. Call once at start-up
// (before any tensor work) with the --threads value; under mpirun with one rank per core
// pass 1.
namespace foldfarm {

// threads == 0: use all cores of this process's CPU affinity mask; a negative count or one
// above kMaxThreads is refused (InputError naming --threads). The first call also calls
// configureAllocator().
void configureThreads(int threads);
// Large tensor blocks stay in the process heap between steps (no mmap/munmap per step).
void configureAllocator();
int availableCores();

}  // namespace foldfarm
