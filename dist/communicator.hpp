#pragma once
// The data plane of data-parallel training: in-place collectives on tensors that live on
// the backend's device (CPU for MPI, this rank's GPU for NCCL). Backends are listed, in
// order of preference, in dist/backend_registry.hpp; each says whether it can run here.
//
// Collective contract: every method marked (collective) must be started by all ranks in
// the same order with tensors of the same size and dtype. Completion is observed through
// CollectiveWork::test(), which never blocks: callers wait with a deadline
// (ControlPlane::waitUntil), so a lost peer never hangs a rank silently.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace foldfarm::dist {

class CollectiveWork {
 public:
  virtual ~CollectiveWork() = default;
  // True once the collective has completed and its result is visible to the next
  // operation on the tensor. Throws Error when the library reports a failure.
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* backendName() const = 0;
  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  // Where tensors passed to this communicator must live.
  virtual c10::Device device() const = 0;

  // (collective) Sum over ranks, in place. `t` must be contiguous, on device(), of a
  // floating or integer dtype, and must stay alive until the work completes.
  virtual std::unique_ptr<CollectiveWork> allreduceSum(const at::Tensor& t) = 0;
  // (collective) Copies root's `t` into every rank's `t` (any dtype, contiguous).
  virtual std::unique_ptr<CollectiveWork> broadcast(const at::Tensor& t, int root) = 0;
  // Gives up on outstanding collectives after a timeout or peer loss, so that the process
  // can exit: no further call may be made on this communicator. Never throws.
  virtual void abort(const std::string& reason) noexcept = 0;
};

}  // namespace foldfarm::dist
