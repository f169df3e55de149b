#include "core/train/flat_params.hpp"

#include <torch/torch.h>

#include <cmath>
#include <unordered_map>
#include <utility>

#include "core/base/error.hpp"

namespace foldfarm {

using torch::Tensor;

FlatParameters::FlatParameters(std::vector<Tensor> params) {
  torch::NoGradGuard no_grad;
  params_.assign(params.rbegin(), params.rend());
  int64_t total = 0;
  for (const Tensor& p : params_) {
    if (p.scalar_type() != params_.front().scalar_type() || p.device() != params_.front().device())
      throw Error("flat parameters need one dtype and one device");
    offsets_.push_back(total);
    numels_.push_back(p.numel());
    total += p.numel();
  }
  const auto opts =
      params_.empty() ? torch::TensorOptions().dtype(torch::kFloat32) : params_.front().options();
  values_ = torch::empty({total}, opts);
  grads_ = torch::zeros({total}, opts);
  for (size_t k = 0; k < params_.size(); ++k) {
    Tensor view = valueView(k);
    view.copy_(params_[k].detach());
    params_[k].set_data(view);
  }
}

int64_t FlatParameters::positionOf(const Tensor& p) const {
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) return static_cast<int64_t>(k);
  return -1;
}

Tensor FlatParameters::viewIn(const Tensor& buffer, size_t k) const {
  const at::IntArrayRef sizes = params_[k].sizes();
  Tensor v = at::empty({0}, buffer.options().requires_grad(false));
  v.set_(buffer.storage(), buffer.storage_offset() + offsets_[k], sizes,
         c10::contiguous_strides(sizes));
  return v;
}

std::vector<char> FlatParameters::attachGradients() {
  torch::NoGradGuard no_grad;
  std::vector<char> has(params_.size(), 0);
  for (size_t k = 0; k < params_.size(); ++k) {
    Tensor& p = params_[k];
    if (!p.grad().defined()) continue;
    has[k] = 1;
    const Tensor view = gradView(k);
    if (p.grad().data_ptr() == view.data_ptr() && p.grad().sizes().equals(view.sizes()) &&
        p.grad().is_contiguous())
      continue;  // already its place in the buffer (ours, or an all-reduce bucket's slice)
    view.copy_(p.grad());
    p.mutable_grad() = view;
  }
  return has;
}

namespace {

// The runs of consecutive positions in [begin, end) with has[k] and equal key[k].
template <typename Key>
std::vector<std::pair<size_t, size_t>> runs(size_t begin, size_t end, const std::vector<char>& has,
                                            const Key& key) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t k = begin;
  while (k < end) {
    if (!has[k]) {
      ++k;
      continue;
    }
    size_t j = k + 1;
    while (j < end && has[j] && key(j) == key(k)) ++j;
    out.emplace_back(k, j);
    k = j;
  }
  return out;
}

}  // namespace

FlatOptimizer::FlatOptimizer(std::shared_ptr<FlatParameters> flat,
                             std::vector<torch::optim::OptimizerParamGroup> groups, Kind kind)
    : Optimizer(std::move(groups), kind == Kind::kLion
                                       ? std::unique_ptr<torch::optim::OptimizerOptions>(
                                             std::make_unique<LionOptions>())
                                       : std::unique_ptr<torch::optim::OptimizerOptions>(
                                             std::make_unique<torch::optim::AdamWOptions>())),
      flat_(std::move(flat)),
      kind_(kind) {
  const size_t n = flat_->params().size();
  steps_.assign(n, 0);
  started_.assign(n, 0);
  for (const auto& group : param_groups_) {
    size_t lo = n, hi = 0;
    for (const Tensor& p : group.params()) {
      const int64_t k = flat_->positionOf(p);
      if (k < 0) throw Error("flat optimiser: a parameter of a group is not in the flat buffer");
      lo = std::min(lo, static_cast<size_t>(k));
      hi = std::max(hi, static_cast<size_t>(k) + 1);
    }
    if (group.params().empty()) lo = hi = 0;
    if (hi - lo != group.params().size())
      throw Error("flat optimiser: a parameter group is not one contiguous range of the layout");
    ranges_.emplace_back(lo, hi);
  }
  exp_avg_ = torch::zeros_like(flat_->values());
  if (kind_ == Kind::kAdamW) exp_avg_sq_ = torch::zeros_like(flat_->values());
}

Tensor FlatOptimizer::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  const Tensor loss = evaluateClosure(closure);
  const std::vector<char> has = flat_->attachGradients();
  const auto& off = flat_->offsets();
  const auto& params = flat_->params();
  auto slice = [&](const Tensor& buf, size_t a, size_t b) {
    const int64_t begin = off[a];
    const int64_t end = off[b - 1] + params[b - 1].numel();
    return buf.narrow(0, begin, end - begin);
  };
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto [lo, hi] = ranges_[g];
    if (kind_ == Kind::kLion) {
      const auto& o = static_cast<const LionOptions&>(param_groups_[g].options());
      for (const auto& [a, b] : runs(lo, hi, has, [](size_t) { return 0; })) {
        Tensor p = slice(flat_->values(), a, b);
        const Tensor grad = slice(flat_->grads(), a, b);
        Tensor m = slice(exp_avg_, a, b);
        lionUpdate(p, grad, m, o);  // what Lion::step does to each parameter
        for (size_t k = a; k < b; ++k) started_[k] = 1;
      }
    } else {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(param_groups_[g].options());
      for (const auto& [a, b] : runs(lo, hi, has, [&](size_t k) { return steps_[k]; })) {
        Tensor p = slice(flat_->values(), a, b);
        const Tensor grad = slice(flat_->grads(), a, b);
        Tensor exp_avg = slice(exp_avg_, a, b), exp_avg_sq = slice(exp_avg_sq_, a, b);
        // LibTorch's AdamW::step (amsgrad off), element for element.
        if (o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());
        const int64_t step = steps_[a] + 1;
        for (size_t k = a; k < b; ++k) {
          steps_[k] = step;
          started_[k] = 1;
        }
        const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
        const double bias_correction1 = 1 - std::pow(beta1, step);
        const double bias_correction2 = 1 - std::pow(beta2, step);
        exp_avg.mul_(beta1).add_(grad, 1 - beta1);
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
        const Tensor denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(o.eps());
        const double step_size = o.lr() / bias_correction1;
        p.addcdiv_(exp_avg, denom, -step_size);
      }
    }
  }
  return loss;
}

std::unique_ptr<torch::optim::Optimizer> makeFlatOptimizer(Pet& model, const OptimizerSettings& s,
                                                           std::shared_ptr<FlatParameters> flat) {
  // The groups and their settings exactly as makeOptimizer makes them.
  std::unique_ptr<torch::optim::Optimizer> reference = makeOptimizer(model, s);
  if (!flat) flat = std::make_shared<FlatParameters>(model->parameters());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto& g : reference->param_groups()) groups.emplace_back(g.params(), g.options().clone());
  return std::make_unique<FlatOptimizer>(
      std::move(flat), std::move(groups),
      s.kind == "lion" ? FlatOptimizer::Kind::kLion : FlatOptimizer::Kind::kAdamW);
}

FlatParameters* flatParametersOf(torch::optim::Optimizer& opt) {
  auto* f = dynamic_cast<FlatOptimizer*>(&opt);
  return f != nullptr ? &f->flat() : nullptr;
}

}  // namespace foldfarm
