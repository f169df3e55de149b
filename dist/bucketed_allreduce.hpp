#pragma once
// Gradient averaging as PyTorch DDP does it with gradient_as_bucket_view, for LibTorch
// (which has none):
//   1. Parameters are assigned to buckets in reverse registration order (the order in
//      which backward produces their gradients): the first bucket holds up to
//      first_bucket_bytes (small, so communication starts early), the others up to
//      bucket_cap_bytes. A bucket holds one dtype on one device, in one flat buffer that
//      lives as long as this object.
//   2. Every parameter's .grad becomes a view into its bucket's buffer (attached the first
//      time a gradient arrives, by one copy; after that autograd accumulates straight into
//      the buffer and nothing is copied). A hook that runs after autograd has accumulated
//      the parameter's gradient marks it ready.
//   3. When all of a bucket's gradients are in, its all-reduce is started - but only after
//      every lower-numbered bucket's, so that all ranks start them in the same order
//      whatever order autograd ran the hooks in.
//   4. finish() fills in parameters that got no gradient this pass (their .grad, or zero),
//      starts the remaining buckets in order, and waits for all with the collective
//      deadline, dividing each bucket by the number of ranks in place as soon as its sum
//      is complete. Every .grad then holds the mean (it is the buffer).
// While disabled (gradient accumulation), hooks do nothing and autograd accumulates into
// .grad locally (which, once attached, is the bucket buffer: still no copy).
//
// Contract for code that touches .grad: zero it in place (Optimizer::zero_grad() does) or
// leave it; a .grad that is replaced by another tensor is copied back into the bucket at
// the next synchronised pass (correct, one copy slower). The .grad tensors are plain
// tensors sharing the bucket's storage, not autograd views, so detach_() works on them.
//
// Thread-safety: hooks may run on autograd's threads; state is guarded by a mutex.
// finish() is (collective): all ranks call it after the same number of backward passes.
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
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
  // `flat_grad` (optional): one gradient buffer laid out in reverse registration order
  // (core/train/flat_params.hpp), `flat_offsets[k]` parameter k's offset in it. The buckets
  // are then slices of it instead of buffers of their own, so the gradients the optimiser
  // reads are where the all-reduce leaves them. Throws Error if the layout does not match.
  static std::shared_ptr<BucketedAllreduce> create(Communicator& comm, ControlPlane& control,
                                                   std::vector<at::Tensor> params,
                                                   BucketOptions options,
                                                   const at::Tensor& flat_grad = {},
                                                   std::vector<std::int64_t> flat_offsets = {});
  BucketedAllreduce(Communicator& comm, ControlPlane& control, std::vector<at::Tensor> params,
                    BucketOptions options, const at::Tensor& flat_grad = {},
                    std::vector<std::int64_t> flat_offsets = {});
  // True when the buckets are slices of a flat gradient buffer given at construction.
  bool slicesFlatGradient() const { return sliced_; }
  ~BucketedAllreduce();

  // Registers a hook that runs after autograd accumulated each parameter's gradient
  // (once). Hooks outlive nothing: when this object is gone they do nothing.
  void installHooks();
  void setEnabled(bool enabled);
  bool enabled() const;
  // Step 2, called by the hooks: parameter `param_index`'s .grad holds this pass's
  // gradient (plus what unsynchronised passes accumulated).
  void gradientAccumulated(std::size_t param_index);
  // What autograd does for a leaf, for benchmarks and tests that feed gradients without a
  // backward pass: adds `grad` into .grad (or sets it), then gradientAccumulated().
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
    std::vector<at::Tensor> views;  // per slot: the parameter's shape over `flat`
    at::Tensor flat;
    std::size_t pending = 0;  // gradients still missing this pass
    std::unique_ptr<CollectiveWork> work;
  };
  void launchReadyLocked();
  // Makes .grad of parameter k its bucket view (copying what .grad held, or zero).
  void attachGradLocked(std::size_t k);
  void resetPassLocked();

  Communicator& comm_;
  ControlPlane& control_;
  std::vector<at::Tensor> params_;
  std::vector<std::size_t> bucket_of_;  // param index -> bucket
  std::vector<std::size_t> slot_of_;    // param index -> position in its bucket
  std::vector<char> ready_;             // param index -> gradient copied this pass
  std::vector<Bucket> buckets_;
  // Autograd creates a leaf's accumulator on demand and keeps only a weak reference;
  // holding it keeps the hooks registered on it alive.
  std::vector<std::shared_ptr<void>> grad_accumulators_;
  std::size_t next_launch_ = 0;
  double pass_start_ = 0.0;
  bool enabled_ = true;
  bool hooks_installed_ = false;
  bool sliced_ = false;
  SyncTiming timing_;
  mutable std::mutex mutex_;
};

}  // namespace foldfarm::dist
