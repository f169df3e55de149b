#include "dist/bucketed_allreduce.hpp"

#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <chrono>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "dist/communicator.hpp"
#include "dist/control_plane.hpp"

namespace foldfarm::dist {
namespace {

double nowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::shared_ptr<BucketedAllreduce> BucketedAllreduce::create(
    Communicator& comm, ControlPlane& control, std::vector<at::Tensor> params,
    BucketOptions options, const at::Tensor& flat_grad, std::vector<std::int64_t> flat_offsets) {
  return std::make_shared<BucketedAllreduce>(comm, control, std::move(params), options, flat_grad,
                                             std::move(flat_offsets));
}

BucketedAllreduce::BucketedAllreduce(Communicator& comm, ControlPlane& control,
                                     std::vector<at::Tensor> params, BucketOptions options,
                                     const at::Tensor& flat_grad,
                                     std::vector<std::int64_t> flat_offsets)
    : comm_(comm), control_(control), params_(std::move(params)) {
  if (flat_grad.defined() && flat_offsets.size() != params_.size())
    throw Error("flat gradient layout: " + std::to_string(flat_offsets.size()) + " offsets for " +
                std::to_string(params_.size()) + " parameters");
  if (options.first_bucket_bytes == 0 || options.bucket_cap_bytes == 0) {
    throw InputError("gradient bucket sizes must be > 0 bytes");
  }
  bucket_of_.assign(params_.size(), 0);
  slot_of_.assign(params_.size(), 0);
  ready_.assign(params_.size(), 0);
  std::size_t bytes = 0;
  for (std::size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    if (p.device() != comm_.device()) {
      throw Error("parameter " + std::to_string(k) + " is on " + p.device().str() + " but the " +
                  comm_.backendName() + " backend reduces on " + comm_.device().str() +
                  "; move the model there before prepare()");
    }
    const std::size_t pbytes = static_cast<std::size_t>(p.numel() * p.element_size());
    bool fresh = buckets_.empty();
    if (!fresh) {
      const std::size_t cap =
          buckets_.size() == 1 ? options.first_bucket_bytes : options.bucket_cap_bytes;
      fresh = bytes + pbytes > cap ||
              params_[buckets_.back().params.front()].scalar_type() != p.scalar_type();
    }
    if (fresh) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = b.params.size();
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(k);
    bytes += pbytes;
  }
  torch::NoGradGuard no_grad;
  sliced_ = flat_grad.defined();
  for (Bucket& b : buckets_) {
    const at::Tensor& last = params_[b.params.back()];
    const std::int64_t numel = b.offsets.back() + last.numel();
    if (sliced_) {
      // The bucket's parameters follow each other in the flat layout (reverse registration
      // order, as the buckets are filled): the bucket is the slice that holds them.
      const std::int64_t start = flat_offsets[b.params.front()];
      for (std::size_t s = 0; s < b.params.size(); ++s)
        if (flat_offsets[b.params[s]] != start + b.offsets[s] ||
            params_[b.params[s]].scalar_type() != flat_grad.scalar_type())
          throw Error("flat gradient layout does not follow the bucket order (parameter " +
                      std::to_string(b.params[s]) + ")");
      if (flat_grad.device() != last.device() || start + numel > flat_grad.numel())
        throw Error("flat gradient buffer does not hold the parameters' gradients");
      b.flat = at::empty({0}, flat_grad.options().requires_grad(false));
      b.flat.set_(flat_grad.storage(), flat_grad.storage_offset() + start, {numel}, {1});
    } else {
      b.flat = at::zeros({numel}, last.options().requires_grad(false));
    }
    b.pending = b.params.size();
    // Plain tensors over the bucket's storage rather than narrow() views: autograd views
    // cannot be detach_()ed, which Optimizer::zero_grad() does to every .grad.
    for (std::size_t s = 0; s < b.params.size(); ++s) {
      const at::Tensor& p = params_[b.params[s]];
      at::Tensor v = at::empty({0}, b.flat.options());
      v.set_(b.flat.storage(), b.flat.storage_offset() + b.offsets[s], p.sizes(),
             c10::contiguous_strides(p.sizes()));
      b.views.push_back(std::move(v));
    }
  }
}

BucketedAllreduce::~BucketedAllreduce() = default;

std::vector<std::size_t> BucketedAllreduce::bucketBytes() const {
  std::vector<std::size_t> out;
  for (const Bucket& b : buckets_) {
    out.push_back(static_cast<std::size_t>(b.flat.numel() * b.flat.element_size()));
  }
  return out;
}

void BucketedAllreduce::installHooks() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (hooks_installed_) return;
  hooks_installed_ = true;
  std::weak_ptr<BucketedAllreduce> weak = weak_from_this();
  using torch::autograd::variable_list;
  for (std::size_t k = 0; k < params_.size(); ++k) {
    // A post-hook of the leaf's AccumulateGrad node runs once .grad holds the gradient,
    // which is what lets .grad be the bucket buffer (a tensor hook runs before it).
    std::shared_ptr<torch::autograd::Node> acc =
        torch::autograd::impl::grad_accumulator(params_[k]);
    if (!acc) throw Error("parameter " + std::to_string(k) + " does not require a gradient");
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [weak, k](const variable_list& outputs, const variable_list&) {
          if (auto self = weak.lock()) self->gradientAccumulated(k);
          return outputs;
        }));
    grad_accumulators_.push_back(std::move(acc));
  }
}

void BucketedAllreduce::setEnabled(bool enabled) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!enabled && next_launch_ > 0) {
    throw Error(
        "gradient sync disabled while reductions of this pass are running; call "
        "finishGradientSync() first");
  }
  enabled_ = enabled;
}

bool BucketedAllreduce::enabled() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return enabled_;
}

void BucketedAllreduce::gradientReady(std::size_t k, const at::Tensor& grad) {
  {
    torch::NoGradGuard no_grad;
    at::Tensor& g = params_[k].mutable_grad();
    if (g.defined())
      g.add_(grad);
    else
      g = grad.detach();
  }
  gradientAccumulated(k);
}

void BucketedAllreduce::attachGradLocked(std::size_t k) {
  const Bucket& b = buckets_[bucket_of_[k]];
  const at::Tensor& view = b.views[slot_of_[k]];
  at::Tensor& g = params_[k].mutable_grad();
  if (g.defined() && g.unsafeGetTensorImpl() == view.unsafeGetTensorImpl()) return;
  if (g.defined() && g.data_ptr() == view.data_ptr() && g.sizes().equals(view.sizes()) &&
      g.strides().equals(view.strides())) {
    g = view;  // already the same memory (a flat buffer's view of it)
    return;
  }
  if (g.defined()) {
    if (g.is_sparse()) throw Error("sparse gradients are not supported by data-parallel training");
    view.copy_(g);
  } else {
    view.zero_();
  }
  g = view;
}

void BucketedAllreduce::gradientAccumulated(std::size_t k) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!enabled_) return;
  if (ready_[k]) {
    throw Error("parameter " + std::to_string(k) +
                " received two gradients in one synchronised backward pass; call "
                "finishGradientSync() after each backward, or disable sync while accumulating");
  }
  {
    torch::NoGradGuard no_grad;
    attachGradLocked(k);
  }
  ready_[k] = 1;
  Bucket& b = buckets_[bucket_of_[k]];
  if (--b.pending == 0) launchReadyLocked();
  // Give MPI a chance to progress the reductions already running.
  for (std::size_t i = 0; i < next_launch_; ++i) buckets_[i].work->test();
}

void BucketedAllreduce::launchReadyLocked() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    if (next_launch_ == 0) {
      control_.announce("all-reduce of " + std::to_string(buckets_.size()) + " gradient buckets");
      pass_start_ = nowSeconds();
    }
    Bucket& b = buckets_[next_launch_];
    b.work = comm_.allreduceSum(b.flat);
    ++next_launch_;
  }
}

void BucketedAllreduce::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!enabled_) return;
  torch::NoGradGuard no_grad;
  // Parameters without a gradient this pass (unused by the loss on this rank)
  // contribute their accumulated .grad, or zero.
  for (std::size_t bi = next_launch_; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    for (std::size_t k : b.params) {
      if (ready_[k]) continue;
      attachGradLocked(k);
      ready_[k] = 1;
    }
    b.pending = 0;
  }
  launchReadyLocked();

  // Each bucket is averaged as soon as its sum is complete, while later ones still run.
  const double wait_start = nowSeconds();
  const double inv = 1.0 / static_cast<double>(comm_.worldSize());
  std::size_t next_average = 0;
  control_.waitUntil(
      [&] {
        for (; next_average < buckets_.size(); ++next_average) {
          Bucket& b = buckets_[next_average];
          if (!b.work->test()) return false;
          if (comm_.worldSize() > 1) b.flat.mul_(inv);
        }
        return true;
      },
      [&] { comm_.abort("the gradient all-reduce is given up (the error says why)"); });
  const double end = nowSeconds();
  timing_.wait_s = end - wait_start;
  timing_.comm_s = end - pass_start_;
  timing_.buckets = static_cast<int>(buckets_.size());
  timing_.bytes = 0;
  for (const Bucket& b : buckets_) {
    timing_.bytes += static_cast<std::size_t>(b.flat.numel() * b.flat.element_size());
  }
  resetPassLocked();
}

void BucketedAllreduce::resetPassLocked() {
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.work.reset();
  }
  std::fill(ready_.begin(), ready_.end(), 0);
  next_launch_ = 0;
}

}  // namespace foldfarm::dist
