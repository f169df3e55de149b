#include "dist/bucketed_allreduce.hpp"

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

std::shared_ptr<BucketedAllreduce> BucketedAllreduce::create(Communicator& comm,
                                                             ControlPlane& control,
                                                             std::vector<at::Tensor> params,
                                                             BucketOptions options) {
  return std::make_shared<BucketedAllreduce>(comm, control, std::move(params), options);
}

BucketedAllreduce::BucketedAllreduce(Communicator& comm, ControlPlane& control,
                                     std::vector<at::Tensor> params, BucketOptions options)
    : comm_(comm), control_(control), params_(std::move(params)) {
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
  for (Bucket& b : buckets_) {
    const at::Tensor& last = params_[b.params.back()];
    const std::int64_t numel = b.offsets.back() + last.numel();
    b.flat = at::zeros({numel}, last.options().requires_grad(false));
    b.pending = b.params.size();
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
  for (std::size_t k = 0; k < params_.size(); ++k) {
    params_[k].register_hook([weak, k](at::Tensor grad) {
      if (auto self = weak.lock()) self->gradientReady(k, grad);
    });
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
  std::lock_guard<std::mutex> lock(mutex_);
  if (!enabled_) return;
  if (ready_[k]) {
    throw Error("parameter " + std::to_string(k) +
                " received two gradients in one synchronised backward pass; call "
                "finishGradientSync() after each backward, or disable sync while accumulating");
  }
  if (grad.is_sparse()) throw Error("sparse gradients are not supported by data-parallel training");
  Bucket& b = buckets_[bucket_of_[k]];
  const at::Tensor& p = params_[k];
  torch::NoGradGuard no_grad;
  at::Tensor slot = b.flat.narrow(0, b.offsets[slot_of_[k]], p.numel()).view(p.sizes());
  // .grad still holds what earlier (unsynchronised) accumulation steps left there;
  // AccumulateGrad adds this gradient to it after the hook, and finish() overwrites it.
  if (p.grad().defined()) {
    at::add_out(slot, p.grad(), grad);
  } else {
    slot.copy_(grad);
  }
  ready_[k] = 1;
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
    for (std::size_t s = 0; s < b.params.size(); ++s) {
      const std::size_t k = b.params[s];
      if (ready_[k]) continue;
      const at::Tensor& p = params_[k];
      at::Tensor slot = b.flat.narrow(0, b.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined())
        slot.copy_(p.grad());
      else
        slot.zero_();
      ready_[k] = 1;
    }
    b.pending = 0;
  }
  launchReadyLocked();

  const double wait_start = nowSeconds();
  control_.waitUntil(
      [&] {
        for (Bucket& b : buckets_) {
          if (!b.work->test()) return false;
        }
        return true;
      },
      [&] { comm_.abort("gradient all-reduce did not complete"); });
  const double end = nowSeconds();
  timing_.wait_s = end - wait_start;
  timing_.comm_s = end - pass_start_;
  timing_.buckets = static_cast<int>(buckets_.size());
  timing_.bytes = 0;

  const double inv = 1.0 / static_cast<double>(comm_.worldSize());
  for (Bucket& b : buckets_) {
    b.flat.mul_(inv);
    timing_.bytes += static_cast<std::size_t>(b.flat.numel() * b.flat.element_size());
    for (std::size_t s = 0; s < b.params.size(); ++s) {
      at::Tensor& p = params_[b.params[s]];
      at::Tensor mean = b.flat.narrow(0, b.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(mean);
      else
        p.mutable_grad() = mean.clone();
    }
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
