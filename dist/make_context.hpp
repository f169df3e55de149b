#pragma once
// One call for every command that trains: under mpirun/mpiexec/srun it returns a
// DataParallelContext (MPI or NCCL), alone a SingleProcessContext - so that
// `foldfarm pretrain` behaves the same in all three. Sets the log rank.
//
// Options come from the environment (distOptionsFromEnv), overridden by the command line:
//   --collective-timeout S   FOLDFARM_COLLECTIVE_TIMEOUT  (seconds, default 600)
//   --dist-backend NAME      FOLDFARM_DIST_BACKEND        (auto, nccl, mpi)
//   --bucket-cap-mb MB       FOLDFARM_BUCKET_CAP_MB       (default 25; first bucket 1 MB)
#include <c10/core/Device.h>

#include <cstddef>
#include <memory>
#include <optional>
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

// Values given on the command line: each replaces its environment variable, which is then
// not read (a malformed variable beside a given option is not an error).
struct DistOverrides {
  std::optional<double> collective_timeout_s;  // --collective-timeout
  std::optional<std::string> backend;          // --dist-backend
  std::optional<double> bucket_cap_mb;         // --bucket-cap-mb
};

// The environment's options less those `given`. Throws InputError naming the variable when a
// value it reads is malformed.
DistOptions distOptionsFromEnv(const DistOverrides& given = {});

// `o` (the environment's, or the command line's over them) for a trainer on `device`: GPU
// tensors are reduced by NCCL (`auto` picks it; MPI, which reduces host tensors, is refused,
// and so is a build without NCCL when several ranks train), host tensors by MPI
// (resolveForCpuTraining: `auto` picks it; NCCL, which needs GPU tensors, is refused).
// InputError naming `command` and what to use instead.
DistOptions resolveForTraining(DistOptions o, const std::string& command,
                               const c10::Device& device);
DistOptions resolveForCpuTraining(DistOptions o, const std::string& command);

// (collective when launched by an MPI launcher or srun)
std::unique_ptr<ParallelContext> makeParallelContext(const DistOptions& options);
inline std::unique_ptr<ParallelContext> makeParallelContext() {
  return makeParallelContext(distOptionsFromEnv());
}

}  // namespace foldfarm::dist
