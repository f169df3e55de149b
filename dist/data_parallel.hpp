#pragma once
// Data-parallel training context: what the single-process trainer (core/train) calls at
// fixed points of each step, implemented over a control plane (MPI: metrics, stop
// agreement, deadlines) and a data plane (MPI or NCCL: parameter broadcast, bucketed
// gradient all-reduce). Built by makeParallelContext() (dist/make_context.hpp).
//
// What the trainer gets from it (and must do itself):
//   - rank()/worldSize(): shard the data (BatchStream by rank/world) so that every rank
//     takes the same number of steps; scale the warm-up lr target by sqrt(worldSize()).
//   - prepare(model) once per model, after moving the model to device() and before creating
//     the optimiser: parameters and buffers are broadcast from rank 0, hooks are installed.
//     Preparing another model (a chain trains a new one per step) releases the previous
//     model's buckets; its hooks then do nothing.
//   - per step: setGradientSync(false) for accumulation micro-batches, setGradientSync(true)
//     before the last backward, finishGradientSync() before the optimiser step.
//   - allreduceMean() for reported metrics, anyOf(stop and save requests) once per step, and
//     checkpoints written by isRoot() only (parameters are identical on all ranks).
// Errors: PeerLostError (exit 3) when a collective misses the deadline, naming the ranks
// that did not arrive; Error on library failures.
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/train/parallel.hpp"
#include "dist/bucketed_allreduce.hpp"
#include "dist/launch.hpp"
#include "dist/make_context.hpp"

namespace foldfarm::dist {

class Communicator;
class ControlPlane;

class DataParallelContext final : public ParallelContext {
 public:
  // (collective) Initialises MPI, the control plane and the chosen data-plane backend.
  DataParallelContext(const LaunchInfo& launch, const DistOptions& options);
  ~DataParallelContext() override;

  int rank() const override;
  int worldSize() const override;
  void prepare(torch::nn::Module& model, const FlatParameters* flat = nullptr) override;
  void setGradientSync(bool enabled) override;
  void finishGradientSync() override;
  void allreduceMean(std::vector<double>& values) override;
  void allreduceSum(std::vector<double>& values) override;
  unsigned anyOf(unsigned local) override;
  void barrier() override;
  void leave(int exit_code, const std::string& why) noexcept override;

  // The device the model must live on (CPU for MPI, this rank's GPU for NCCL).
  c10::Device device() const;
  const char* backendName() const;
  // (collective) Hashes every parameter and buffer bit-for-bit and compares with rank 0;
  // throws Error naming the ranks whose model differs. Returns this rank's hash.
  std::uint64_t verifyParametersIdentical(torch::nn::Module& model);
  // True when the prepared model's gradient buckets are slices of its flat gradient buffer.
  bool bucketsSliceFlatGradient() const { return buckets_ && buckets_->slicesFlatGradient(); }
  // Timing of the last synchronised pass (communication, and waiting not overlapped).
  SyncTiming lastSync() const;
  Communicator& communicator() { return *comm_; }
  ControlPlane& control() { return *control_; }

 private:
  LaunchInfo launch_;
  DistOptions options_;
  std::unique_ptr<ControlPlane> control_;
  std::unique_ptr<Communicator> comm_;
  std::shared_ptr<BucketedAllreduce> buckets_;
  bool sync_enabled_ = true;
};

// Bit-exact hash of a module's parameters and buffers, in registration order (FNV-1a 64).
std::uint64_t hashModuleState(torch::nn::Module& model);

}  // namespace foldfarm::dist
