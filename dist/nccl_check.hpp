#pragma once
// Checks for NCCL and CUDA runtime calls (included only by dist/nccl_*.cpp, which compile
// only when foldfarm is built with NCCL). Same message shape as FF_MPI_CHECK.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "core/mpi/check.hpp"

// ncclInProgress is success for a non-blocking communicator: the caller polls
// ncclCommGetAsyncError until the operation is no longer in progress (NcclComm::inProgress).
#define FF_NCCL_CHECK(expr)                                               \
  do {                                                                    \
    const ncclResult_t ff_nccl_rc_ = (expr);                              \
    if (ff_nccl_rc_ != ncclSuccess && ff_nccl_rc_ != ncclInProgress)      \
      ::foldfarm::dist::throwCallError("NCCL", #expr, __FILE__, __LINE__, \
                                       ncclGetErrorString(ff_nccl_rc_));  \
  } while (0)

#define FF_CUDA_CHECK(expr)                                               \
  do {                                                                    \
    const cudaError_t ff_cuda_rc_ = (expr);                               \
    if (ff_cuda_rc_ != cudaSuccess)                                       \
      ::foldfarm::dist::throwCallError("CUDA", #expr, __FILE__, __LINE__, \
                                       cudaGetErrorString(ff_cuda_rc_));  \
  } while (0)
