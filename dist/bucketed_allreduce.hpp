#pragma once
// Gradient averaging as PyTorch DDP does it, for LibTorch (which has none):
//   1. Parameters are assigned to buckets in reverse registration order (the order in
//      which backward produces their gradients): the first bucket holds up to
//      first_bucket_bytes (small, so communication starts early), the others up to
//      bucket_cap_bytes. A bucket holds one dtype on one device.
//   2. A hook on each parameter copies its gradient (plus what earlier accumulation steps
//      left in .grad) into the bucket's flat buffer as soon as autograd produces it.
//   3. When all of a bucket's gradients are in, its all-reduce is started - but only after
//      every lower-numbered bucket's, so that all ranks start them in the same order
//      whatever order autograd ran the hooks in.
//   4. finish() fills in parameters that got no gradient this pass (their .grad or zero),
//      starts the remaining buckets in order, waits for all with the collective deadline,
//      divides by the number of ranks and writes the mean back into every .grad.
// While disabled (gradient accumulation), hooks do nothing and .grad accumulates locally.
//
// Thread-safety: hooks may run on autograd's threads; state is guarded by a mutex.
// finish() is (collective): all ranks call it after the same number of backward passes.
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace foldfarm::dist {

class Communicator;
class CollectiveWork;
class ControlPlane;

struct BucketOptions {
  std::size_t first_bucket_bytes = std::size_t{1} << 20;
  std::size_t bucket_cap_bytes = std::size_t{25} << 20;
};

// Time spent in the last finish(): `wait_s` is the part not hidden behind backward.
struct SyncTiming {
  double wait_s = 0.0;    // finish(): waiting for reductions still running
  double comm_s = 0.0;    // first bucket started -> last bucket complete
  std::size_t bytes = 0;  // bytes reduced
  int buckets = 0;
};

class BucketedAllreduce : public std::enable_shared_from_this<BucketedAllreduce> {
 public:
  // `params`: the trainable parameters, in registration order. Tensors must live on
  // comm.device(). Construct through create() (hooks hold weak references).
  static std::shared_ptr<BucketedAllreduce> create(Communicator& comm, ControlPlane& control,
                                                   std::vector<at::Tensor> params,
                                                   BucketOptions options);
  BucketedAllreduce(Communicator& comm, ControlPlane& control, std::vector<at::Tensor> params,
                    BucketOptions options);
  ~BucketedAllreduce();

  // Registers a gradient hook on every parameter (once). Hooks outlive nothing: when this
  // object is gone they do nothing.
  void installHooks();
  void setEnabled(bool enabled);
  bool enabled() const;
  // Step 2 (called by the hooks; public for benchmarks that feed gradients directly).
  void gradientReady(std::size_t param_index, const at::Tensor& grad);
  // Step 4 (collective). Throws PeerLostError on timeout.
  void finish();

  int bucketCount() const { return static_cast<int>(buckets_.size()); }
  std::vector<std::size_t> bucketBytes() const;
  const SyncTiming& lastTiming() const { return timing_; }

 private:
  struct Bucket {
    std::vector<std::size_t> params;  // indices into params_
    std::vector<std::int64_t> offsets;
    at::Tensor flat;
    std::size_t pending = 0;  // gradients still missing this pass
    std::unique_ptr<CollectiveWork> work;
  };
  void launchReadyLocked();
  void resetPassLocked();

  Communicator& comm_;
  ControlPlane& control_;
  std::vector<at::Tensor> params_;
  std::vector<std::size_t> bucket_of_;  // param index -> bucket
  std::vector<std::size_t> slot_of_;    // param index -> position in its bucket
  std::vector<char> ready_;             // param index -> gradient copied this pass
  std::vector<Bucket> buckets_;
  std::size_t next_launch_ = 0;
  double pass_start_ = 0.0;
  bool enabled_ = true;
  bool hooks_installed_ = false;
  SyncTiming timing_;
  mutable std::mutex mutex_;
};

}  // namespace foldfarm::dist
