#pragma once
// MPI data plane: CPU tensors, non-blocking MPI_Iallreduce / MPI_Ibcast on its own
// duplicate of MPI_COMM_WORLD (so gradient traffic never interleaves with the control
// plane's). Works under any MPI launcher (mpirun, mpiexec, srun --mpi=pmix).
#include "core/mpi/mpi_runtime.hpp"
#include "dist/communicator.hpp"

namespace foldfarm::dist {

class MpiCommunicator final : public Communicator {
 public:
  // (collective over MPI_COMM_WORLD) MPI must be initialised (ControlPlane does it).
  MpiCommunicator();
  const char* backendName() const override { return "mpi"; }
  int rank() const override { return comm_.rank(); }
  int worldSize() const override { return comm_.size(); }
  c10::Device device() const override { return c10::Device(c10::kCPU); }
  std::unique_ptr<CollectiveWork> allreduceSum(const at::Tensor& t) override;
  std::unique_ptr<CollectiveWork> broadcast(const at::Tensor& t, int root) override;
  void abort(const std::string& reason) noexcept override;

 private:
  MpiComm comm_;
  bool aborted_ = false;
};

}  // namespace foldfarm::dist
