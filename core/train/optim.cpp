#include "core/train/optim.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/train/flat_params.hpp"

namespace foldfarm {

using torch::Tensor;

namespace {

// The key of a parameter in Optimizer::state(), as LibTorch's own optimisers make it: the
// TensorImpl's address as text up to LibTorch 1.x, the address itself from 2.0 on.
using StateKey = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

template <typename Key>
Key keyOf(const Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

StateKey stateKey(const Tensor& p) {
  return keyOf<StateKey>(p);
}

// Calls fn(parameter, name prefix "<prefix><group>.<index>.", saved exp_avg) for every
// parameter of `opt` that has a saved state; a saved state of another shape is an InputError
// naming `source`.
template <typename Fn>
void forEachSavedState(torch::optim::Optimizer& opt, const std::string& prefix,
                       const std::map<std::string, Tensor>& tensors, const std::string& source,
                       Fn&& fn) {
  auto& groups = opt.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string base = prefix + std::to_string(g) + "." + std::to_string(i) + ".";
      auto m = tensors.find(base + "exp_avg");
      if (m == tensors.end()) continue;
      if (!m->second.sizes().equals(params[i].sizes()))
        throw InputError(source + ": optimiser state does not match the model (" + base +
                         "); start a new run directory");
      fn(params[i], base, m->second);
    }
  }
}

}  // namespace

void lionUpdate(Tensor& p, const Tensor& g, Tensor& m, const LionOptions& o) {
  if (o.weight_decay() != 0) p.mul_(1.0 - o.lr() * o.weight_decay());
  const Tensor c = m * o.beta1() + g * (1.0 - o.beta1());
  p.add_(c.sign(), -o.lr());
  m.mul_(o.beta2()).add_(g, 1.0 - o.beta2());
}

Tensor evaluateClosure(const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}

Lion::Lion(std::vector<torch::optim::OptimizerParamGroup> groups, LionOptions defaults)
    : Optimizer(std::move(groups), std::make_unique<LionOptions>(defaults)) {}

Lion::Lion(std::vector<Tensor> params, LionOptions defaults)
    : Lion({torch::optim::OptimizerParamGroup(std::move(params))}, defaults) {}

Tensor Lion::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  const Tensor loss = evaluateClosure(closure);
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const LionOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const Tensor& g = p.grad();
      auto& slot = state_[stateKey(p)];
      if (!slot) {
        auto s = std::make_unique<LionParamState>();
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(s);
      }
      Tensor& m = static_cast<LionParamState&>(*slot).exp_avg();
      lionUpdate(p, g, m, o);
    }
  }
  return loss;
}

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(Pet& model, const OptimizerSettings& s) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  const double body_lr = s.lr / s.lr_factor;
  const double body_wd = s.weight_decay * s.lr_factor;
  if (s.kind == "lion") {
    groups.emplace_back(
        model->bodyParameters(),
        std::make_unique<LionOptions>(
            LionOptions(body_lr).beta1(s.beta1).beta2(s.beta2).weight_decay(body_wd)));
    groups.emplace_back(
        model->headParameters(),
        std::make_unique<LionOptions>(
            LionOptions(s.lr).beta1(s.beta1).beta2(s.beta2).weight_decay(s.weight_decay)));
    return std::make_unique<Lion>(std::move(groups), LionOptions(s.lr));
  }
  if (s.kind == "adamw") {
    const double b1 = s.beta1 == 0.95 ? 0.9 : s.beta1;
    const double b2 = s.beta2 == 0.99 ? 0.999 : s.beta2;
    auto opts = [&](double lr, double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(lr).betas({b1, b2}).weight_decay(wd));
    };
    groups.emplace_back(model->bodyParameters(), opts(body_lr, body_wd));
    groups.emplace_back(model->headParameters(), opts(s.lr, s.weight_decay));
    return std::make_unique<torch::optim::AdamW>(std::move(groups),
                                                 torch::optim::AdamWOptions(s.lr));
  }
  throw InputError("unknown optimiser '" + s.kind + "': use lion or adamw");
}

void zeroGradients(torch::optim::Optimizer& opt) {
  torch::NoGradGuard no_grad;
  FlatParameters* flat = flatParametersOf(opt);
  // Flat: one operation zeroes every gradient that is a view of the buffer; only gradients
  // outside it (tensors that replaced a view) are zeroed one by one. On a GPU that is one
  // kernel instead of one per parameter tensor (209 for PET omnilearn).
  if (flat != nullptr) flat->grads().zero_();
  for (auto& group : opt.param_groups()) {
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (flat != nullptr && p.grad().is_alias_of(flat->grads())) continue;
      p.mutable_grad().zero_();
    }
  }
}

double WarmupCosine::at(int64_t step) const {
  const double peak = lr * warmup_scale;
  if (step < warmup_steps)
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return peak * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::string learningRateProblem(double lr, double lr_factor) {
  if (!(lr > 0 && lr <= kMaxLearningRate))
    return fmt::format("lr must be in (0, {:g}], not {:g}", kMaxLearningRate, lr);
  if (!(lr_factor >= kMinLrFactor && lr_factor <= kMaxLrFactor))
    return fmt::format("lr_factor must be in [{:g}, {:g}], not {:g}", kMinLrFactor, kMaxLrFactor,
                       lr_factor);
  return "";
}

std::string weightDecayProblem(double weight_decay, double peak_lr) {
  if (!(weight_decay >= 0 && std::isfinite(weight_decay)))
    return fmt::format("weight_decay must be >= 0, not {:g}", weight_decay);
  if (!(peak_lr * weight_decay < 1))
    return fmt::format(
        "weight_decay {:g} at the peak learning rate {:g} would multiply the weights by {:g} "
        "every step (1 - lr * weight_decay must be above 0): lower weight_decay",
        weight_decay, peak_lr, 1 - peak_lr * weight_decay);
  return "";
}

void setLearningRate(torch::optim::Optimizer& opt, double lr, double lr_factor) {
  auto& groups = opt.param_groups();
  for (size_t i = 0; i < groups.size(); ++i)
    groups[i].options().set_lr(i == 0 && groups.size() > 1 ? lr / lr_factor : lr);
}

Ema::Ema(Pet& model, double decay, FlatParameters* flat) : decay_(decay), flat_(flat) {
  torch::NoGradGuard no_grad;
  if (flat_ != nullptr) {
    // One shadow buffer of the flat layout; shadow_[i] views it in registration order.
    flat_shadow_ = flat_->values().clone();
    const auto params = model->parameters();
    for (const auto& p : params) {
      const int64_t k = flat_->positionOf(p);
      if (k < 0) throw Error("EMA: a parameter is not in the flat buffer");
      shadow_.push_back(flat_->viewIn(flat_shadow_, static_cast<size_t>(k)));
    }
    return;
  }
  for (const auto& p : model->parameters()) shadow_.push_back(p.detach().clone());
}

void Ema::load(const std::vector<Tensor>& values) {
  torch::NoGradGuard no_grad;
  if (values.size() != shadow_.size()) throw Error("EMA: state of another model");
  for (size_t i = 0; i < values.size(); ++i) shadow_[i].copy_(values[i]);
}

double Ema::decayAt(int64_t updates_before) const {
  const double n = static_cast<double>(std::max<int64_t>(0, updates_before));
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

void Ema::update(Pet& model, int64_t updates_before) {
  torch::NoGradGuard no_grad;
  const double d = decayAt(updates_before);
  if (flat_ != nullptr) {
    flat_shadow_.mul_(d).add_(flat_->values(), 1.0 - d);
    return;
  }
  const auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) shadow_[i].mul_(d).add_(params[i].detach(), 1.0 - d);
}

void Ema::copyTo(Pet& model) const {
  torch::NoGradGuard no_grad;
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(shadow_[i]);
}

void exportOptimizerState(torch::optim::Optimizer& opt, const std::string& prefix,
                          std::map<std::string, Tensor>& tensors, nlohmann::json& meta) {
  meta = nlohmann::json::object();
  auto& groups = opt.param_groups();
  if (auto* f = dynamic_cast<FlatOptimizer*>(&opt)) {
    // The per-parameter names and values: the state moves between the two forms.
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto& params = groups[g].params();
      for (size_t i = 0; i < params.size(); ++i) {
        const auto k = static_cast<size_t>(f->flat().positionOf(params[i]));
        if (!f->started()[k]) continue;
        const std::string base = prefix + std::to_string(g) + "." + std::to_string(i) + ".";
        tensors[base + "exp_avg"] = f->flat().viewIn(f->expAvg(), k).clone();
        if (f->kind() == FlatOptimizer::Kind::kAdamW) {
          tensors[base + "exp_avg_sq"] = f->flat().viewIn(f->expAvgSq(), k).clone();
          meta[base + "step"] = f->steps()[k];
        }
      }
    }
    return;
  }
  auto& state = opt.state();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = state.find(stateKey(params[i]));
      if (it == state.end()) continue;
      const std::string base = prefix + std::to_string(g) + "." + std::to_string(i) + ".";
      if (auto* l = dynamic_cast<LionParamState*>(it->second.get())) {
        tensors[base + "exp_avg"] = l->exp_avg().clone();
      } else if (auto* a = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get())) {
        tensors[base + "exp_avg"] = a->exp_avg().clone();
        tensors[base + "exp_avg_sq"] = a->exp_avg_sq().clone();
        if (a->max_exp_avg_sq().defined())
          tensors[base + "max_exp_avg_sq"] = a->max_exp_avg_sq().clone();
        meta[base + "step"] = a->step();
      }
    }
  }
}

void importOptimizerState(torch::optim::Optimizer& opt, const std::string& prefix,
                          const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta,
                          const std::string& source) {
  if (auto* f = dynamic_cast<FlatOptimizer*>(&opt)) {
    torch::NoGradGuard no_grad;
    f->expAvg().zero_();
    if (f->expAvgSq().defined()) f->expAvgSq().zero_();
    std::fill(f->started().begin(), f->started().end(), 0);
    std::fill(f->steps().begin(), f->steps().end(), 0);
    forEachSavedState(opt, prefix, tensors, source,
                      [&](const Tensor& p, const std::string& base, const Tensor& exp_avg) {
                        const auto k = static_cast<size_t>(f->flat().positionOf(p));
                        f->flat().viewIn(f->expAvg(), k).copy_(exp_avg);
                        if (f->kind() == FlatOptimizer::Kind::kAdamW) {
                          auto sq = tensors.find(base + "exp_avg_sq");
                          if (sq == tensors.end())
                            throw InputError(source + ": optimiser state lacks " + base +
                                             "exp_avg_sq (written by Lion?); resume with the "
                                             "same optimiser");
                          f->flat().viewIn(f->expAvgSq(), k).copy_(sq->second);
                          f->steps()[k] = meta.value(base + "step", int64_t{0});
                        }
                        f->started()[k] = 1;
                      });
    return;
  }
  const bool lion = dynamic_cast<Lion*>(&opt) != nullptr;
  auto& state = opt.state();
  state.clear();
  forEachSavedState(
      opt, prefix, tensors, source,
      [&](const Tensor& p, const std::string& base, const Tensor& exp_avg) {
        if (lion) {
          auto s = std::make_unique<LionParamState>();
          s->exp_avg(exp_avg.clone().to(p.device()));
          state[stateKey(p)] = std::move(s);
          return;
        }
        auto sq = tensors.find(base + "exp_avg_sq");
        if (sq == tensors.end())
          throw InputError(source + ": optimiser state lacks " + base +
                           "exp_avg_sq (written by Lion?); resume with the same optimiser");
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->exp_avg(exp_avg.clone().to(p.device()));
        s->exp_avg_sq(sq->second.clone().to(p.device()));
        auto mx = tensors.find(base + "max_exp_avg_sq");
        if (mx != tensors.end()) s->max_exp_avg_sq(mx->second.clone().to(p.device()));
        s->step(meta.value(base + "step", int64_t{0}));
        state[stateKey(p)] = std::move(s);
      });
}

}  // namespace foldfarm
