// NCCL data plane: one GPU per rank (chosen by local rank), the ncclUniqueId broadcast
// over the MPI control plane, collectives on a dedicated stream ordered after the work
// already queued on the legacy default stream (where LibTorch computes unless told
// otherwise) and before anything queued there later.
#include <torch/cuda.h>

#include <exception>
#include <memory>
#include <mutex>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/mpi/mpi_runtime.hpp"
#include "dist/backend_registry.hpp"
#include "dist/control_plane.hpp"
#include "dist/nccl_check.hpp"

namespace foldfarm::dist {
namespace {

// Move-only owners of the CUDA and NCCL handles; destructors log, never throw.
class CudaStream {
 public:
  explicit CudaStream(int device) : device_(device) {
    FF_CUDA_CHECK(cudaSetDevice(device));
    FF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream() {
    if (stream_ == nullptr) return;
    const cudaError_t rc = cudaStreamDestroy(stream_);
    if (rc != cudaSuccess) logWarn("cudaStreamDestroy failed: {}", cudaGetErrorString(rc));
  }
  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent() { FF_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent() {
    const cudaError_t rc = cudaEventDestroy(event_);
    if (rc != cudaSuccess) logWarn("cudaEventDestroy failed: {}", cudaGetErrorString(rc));
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class NcclComm {
 public:
  NcclComm() = default;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;
  ~NcclComm() {
    if (comm_ == nullptr) return;
    // Destroy waits for queued work: it finished when the last collective was waited for, but
    // not when the job was aborted (a lost peer) or an error unwinds past a collective, where
    // the wait can be for ever: abort then. After an abort the handle is gone.
    if (!aborted_ && (MpiRuntime::aborted() || std::uncaught_exceptions() > 0)) abort();
    if (aborted_) return;
    const ncclResult_t rc = ncclCommDestroy(comm_);
    if (rc != ncclSuccess) logWarn("ncclCommDestroy failed: {}", ncclGetErrorString(rc));
  }
  ncclComm_t* out() { return &comm_; }
  ncclComm_t get() const { return comm_; }
  // Ends outstanding collectives (which may wait for a lost peer forever).
  void abort() noexcept {
    if (comm_ == nullptr || aborted_) return;
    aborted_ = true;
    const ncclResult_t rc = ncclCommAbort(comm_);
    if (rc != ncclSuccess) logWarn("ncclCommAbort failed: {}", ncclGetErrorString(rc));
  }
  // Throws when NCCL reported an asynchronous error; true while an operation is pending.
  bool inProgress() const {
    if (aborted_) throw Error("NCCL communicator used after it was aborted");
    ncclResult_t async = ncclSuccess;
    FF_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    if (async == ncclInProgress) return true;
    if (async != ncclSuccess) {
      throwCallError("NCCL", "ncclCommGetAsyncError", __FILE__, __LINE__,
                     ncclGetErrorString(async));
    }
    return false;
  }

 private:
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
};

ncclDataType_t ncclType(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kByte:
      return ncclUint8;
    default:
      throw Error(std::string("NCCL collective of dtype ") + c10::toString(t) +
                  " is not supported");
  }
}

class NcclWork final : public CollectiveWork {
 public:
  NcclWork(const NcclComm& comm, at::Tensor keep) : comm_(comm), keep_(std::move(keep)) {}
  cudaEvent_t event() const { return done_event_.get(); }
  bool test() override {
    if (done_) return true;
    const cudaError_t rc = cudaEventQuery(done_event_.get());
    if (rc == cudaSuccess) {
      done_ = true;
      return true;
    }
    if (rc != cudaErrorNotReady) {
      throwCallError("CUDA", "cudaEventQuery", __FILE__, __LINE__, cudaGetErrorString(rc));
    }
    comm_.inProgress();  // surfaces NCCL's asynchronous errors (peer gone, network)
    return false;
  }

 private:
  const NcclComm& comm_;
  at::Tensor keep_;
  CudaEvent done_event_;
  bool done_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ControlPlane& control, const LaunchInfo& launch)
      : control_(control),
        rank_(control.rank()),
        size_(control.worldSize()),
        device_(pickDevice(launch)),
        stream_(device_) {
    // 1. rank 0 creates the unique id; 2. the control plane broadcasts it; 3. every rank
    // initialises non-blocking, so that a missing peer ends in a deadline, not a hang.
    ncclUniqueId id{};
    if (rank_ == 0) FF_NCCL_CHECK(ncclGetUniqueId(&id));
    control.broadcastBytes(&id, static_cast<int>(sizeof id), 0);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    control.announce("NCCL communicator initialisation");
    FF_NCCL_CHECK(ncclCommInitRankConfig(comm_.out(), size_, id, rank_, &config));
    control.waitUntil([&] { return !comm_.inProgress(); }, [&] { comm_.abort(); });
    logInfo("NCCL {}.{}.{} communicator on cuda:{}", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, device_);
  }

  const char* backendName() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int worldSize() const override { return size_; }
  c10::Device device() const override {
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_));
  }

  std::unique_ptr<CollectiveWork> allreduceSum(const at::Tensor& t) override {
    check(t);
    auto work = std::make_unique<NcclWork>(comm_, t);
    enqueue(
        [&] {
          FF_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                      ncclType(t.scalar_type()), ncclSum, comm_.get(),
                                      stream_.get()));
        },
        work->event());
    return work;
  }

  std::unique_ptr<CollectiveWork> broadcast(const at::Tensor& t, int root) override {
    check(t);
    auto work = std::make_unique<NcclWork>(comm_, t);
    enqueue(
        [&] {
          FF_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(),
                                      static_cast<size_t>(t.numel() * t.element_size()), ncclUint8,
                                      root, comm_.get(), stream_.get()));
        },
        work->event());
    return work;
  }

  void abort(const std::string& reason) noexcept override {
    logWarn("NCCL data plane aborted: {}", reason);
    comm_.abort();
  }

 private:
  static int pickDevice(const LaunchInfo& launch) {
    int count = 0;
    FF_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (count <= 0) throw Error("no CUDA device for the NCCL backend");
    // One GPU per rank: local rank modulo the visible devices (CUDA_VISIBLE_DEVICES set
    // per task by the launcher leaves exactly one, index 0).
    return gpuOfLocalRank(launch.local_rank, count);
  }

  void check(const at::Tensor& t) const {
    if (!t.defined() || !t.is_cuda() || t.get_device() != device_ || !t.is_contiguous()) {
      throw Error("NCCL collective needs a contiguous tensor on cuda:" + std::to_string(device_));
    }
  }

  // Orders the collective after the compute already queued on the legacy default stream,
  // and everything queued there afterwards after the collective.
  template <typename Launch>
  void enqueue(Launch&& launch, cudaEvent_t done) {
    FF_CUDA_CHECK(cudaSetDevice(device_));
    FF_CUDA_CHECK(cudaEventRecord(ready_.get(), cudaStreamLegacy));
    FF_CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), ready_.get(), 0));
    launch();
    // A non-blocking communicator may answer ncclInProgress before the collective is on the
    // stream (newer NCCL connects to the peers at the first collective): until it is, `done`
    // recorded now would fire before the reduction ran and the optimiser would read
    // unreduced gradients. NCCL's rule: poll ncclCommGetAsyncError until it is no longer in
    // progress before using the stream. A peer that never comes ends in the deadline.
    control_.waitUntil([&] { return !comm_.inProgress(); }, [&] { comm_.abort(); });
    FF_CUDA_CHECK(cudaEventRecord(done, stream_.get()));
    FF_CUDA_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, done, 0));
  }

  ControlPlane& control_;
  int rank_;
  int size_;
  int device_;
  CudaStream stream_;
  CudaEvent ready_;
  NcclComm comm_;
};

}  // namespace

CommBackend ncclBackend() {
  CommBackend b;
  b.name = "nccl";
  b.description = "NCCL collectives on this rank's GPU";
  b.unavailableReason = [](const LaunchInfo& launch) -> std::string {
    if (!torch::cuda::is_available()) return "LibTorch has no CUDA or sees no GPU";
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return "no CUDA device";
    // One GPU per rank: NCCL refuses two ranks of a communicator on one device.
    if (launch.local_size > count)
      return std::to_string(launch.local_size) + " ranks on this node share " +
             std::to_string(count) + " GPU(s); NCCL needs one GPU per rank (start at most " +
             std::to_string(count) + " ranks per node, or use --dist-backend mpi)";
    return {};
  };
  b.create = [](ControlPlane& control, const LaunchInfo& launch) -> std::unique_ptr<Communicator> {
    return std::make_unique<NcclCommunicator>(control, launch);
  };
  return b;
}

}  // namespace foldfarm::dist
