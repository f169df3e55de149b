#include "dist/mpi_communicator.hpp"

#include <climits>
#include <mutex>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/mpi/check.hpp"
#include "dist/control_plane.hpp"

namespace foldfarm::dist {
namespace {

MPI_Datatype mpiType(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    default:
      throw Error(std::string("MPI all-reduce of dtype ") + c10::toString(t) +
                  " is not supported (use float32, float64, int32 or int64)");
  }
}

// Requests of one collective, split in chunks of at most INT_MAX elements (MPI counts
// are int). The tensor is held so that its memory outlives the operation.
class MpiWork final : public CollectiveWork {
 public:
  MpiWork(std::vector<MPI_Request> reqs, at::Tensor keep)
      : reqs_(std::move(reqs)), keep_(std::move(keep)) {}
  ~MpiWork() override {
    if (done_) return;
    // An unfinished collective cannot be freed in MPI: MPI may still write into the tensor's
    // memory, so that stays allocated (leaked on purpose) until the process ends (before: freed
    // here, a write into freed memory); the requests are left to the runtime.
    (void)new at::Tensor(std::move(keep_));
    if (!MpiRuntime::aborted())
      logWarn("an MPI collective was destroyed before it completed ({} requests)", reqs_.size());
  }
  bool test() override {
    if (done_) return true;
    std::lock_guard<std::mutex> lock(mpiLock());
    int flag = 0;
    FF_MPI_CHECK(
        MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag, MPI_STATUSES_IGNORE));
    done_ = flag != 0;
    return done_;
  }

 private:
  std::vector<MPI_Request> reqs_;
  at::Tensor keep_;
  bool done_ = false;
};

void checkTensor(const at::Tensor& t, const char* what) {
  if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous()) {
    throw Error(std::string("MPI ") + what + " needs a defined, contiguous CPU tensor");
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator() {
  std::lock_guard<std::mutex> lock(mpiLock());
  comm_ = MpiComm::duplicate(MPI_COMM_WORLD, "gradients");
}

std::unique_ptr<CollectiveWork> MpiCommunicator::allreduceSum(const at::Tensor& t) {
  checkTensor(t, "all-reduce");
  if (aborted_) throw Error("all-reduce on an aborted MPI communicator");
  const MPI_Datatype type = mpiType(t.scalar_type());
  std::vector<MPI_Request> reqs;
  auto* base = static_cast<char*>(t.data_ptr());
  const std::int64_t n = t.numel();
  const std::int64_t esize = t.element_size();
  std::lock_guard<std::mutex> lock(mpiLock());
  for (std::int64_t off = 0; off < n || (n == 0 && reqs.empty()); off += INT_MAX) {
    const int count = static_cast<int>(std::min<std::int64_t>(INT_MAX, n - off));
    reqs.push_back(MPI_REQUEST_NULL);
    FF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, base + off * esize, count, type, MPI_SUM, comm_.get(),
                                &reqs.back()));
    if (n == 0) break;
  }
  return std::make_unique<MpiWork>(std::move(reqs), t);
}

std::unique_ptr<CollectiveWork> MpiCommunicator::broadcast(const at::Tensor& t, int root) {
  checkTensor(t, "broadcast");
  if (aborted_) throw Error("broadcast on an aborted MPI communicator");
  std::vector<MPI_Request> reqs;
  auto* base = static_cast<char*>(t.data_ptr());
  const std::int64_t bytes = t.numel() * t.element_size();
  std::lock_guard<std::mutex> lock(mpiLock());
  for (std::int64_t off = 0; off < bytes || (bytes == 0 && reqs.empty()); off += INT_MAX) {
    const int count = static_cast<int>(std::min<std::int64_t>(INT_MAX, bytes - off));
    reqs.push_back(MPI_REQUEST_NULL);
    FF_MPI_CHECK(MPI_Ibcast(base + off, count, MPI_BYTE, root, comm_.get(), &reqs.back()));
    if (bytes == 0) break;
  }
  return std::make_unique<MpiWork>(std::move(reqs), t);
}

void MpiCommunicator::abort(const std::string& reason) noexcept {
  // MPI has no portable way to cancel a collective; the process exits without
  // MPI_Finalize (MpiRuntime::markAborted) and mpirun collects it.
  aborted_ = true;
  MpiRuntime::markAborted();
  logWarn("MPI data plane aborted: {}", reason);
}

}  // namespace foldfarm::dist
