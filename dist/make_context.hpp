#pragma once
// One call for every command that trains: under mpirun/mpiexec/srun it returns a
// DataParallelContext (MPI or NCCL), alone a SingleProcessContext - so that
// `foldfarm pretrain` behaves the same in all three. Sets the log rank.
//
// Options come from the environment (distOptionsFromEnv), overridden by the command line:
//   --collective-timeout S   FOLDFARM_COLLECTIVE_TIMEOUT  (seconds, default 600)
//   --dist-backend NAME      FOLDFARM_DIST_BACKEND        (auto, nccl, mpi)
//   --bucket-cap-mb MB       FOLDFARM_BUCKET_CAP_MB       (default 25; first bucket 1 MB)
#include <cstddef>
#include <memory>
#include <string>

#include "core/train/parallel.hpp"
#include "dist/bucketed_allreduce.hpp"

namespace foldfarm::dist {

// The largest gradient bucket cap in MiB (--bucket-cap-mb, FOLDFARM_BUCKET_CAP_MB): 1 TiB,
// beyond any model; its bytes must fit a size_t.
inline constexpr double kMaxBucketCapMb = 1e6;

struct DistOptions {
  std::string backend = "auto";
  double collective_timeout_s = 600.0;
  BucketOptions buckets;
};

// Throws InputError naming the variable when a value is malformed.
DistOptions distOptionsFromEnv();

// (collective when launched by an MPI launcher or srun)
std::unique_ptr<ParallelContext> makeParallelContext(const DistOptions& options);
inline std::unique_ptr<ParallelContext> makeParallelContext() {
  return makeParallelContext(distOptionsFromEnv());
}

}  // namespace foldfarm::dist
