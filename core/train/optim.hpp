#pragma once
// Optimisers, learning-rate schedule and EMA for PET training.
//
// Lion (Chen et al. 2023) as a torch::optim::Optimizer, with decoupled weight decay:
//   p <- p * (1 - lr * wd);  c = b1 m + (1 - b1) g;  p <- p - lr * sign(c);
//   m <- b2 m + (1 - b2) g.
// Parameter groups (makeOptimizer): group 0 = body at lr / lr_factor with weight decay
// wd * lr_factor, group 1 = heads at lr with wd. The schedule sets both groups every step.
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model/pet.hpp"

namespace foldfarm {

struct LionOptions : public torch::optim::OptimizerCloneableOptions<LionOptions> {
  LionOptions(double lr = 1e-4) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-4;
  TORCH_ARG(double, beta1) = 0.95;
  TORCH_ARG(double, beta2) = 0.99;
  TORCH_ARG(double, weight_decay) = 0.0;

 public:
  double get_lr() const override { return lr_; }
  void set_lr(const double lr) override { lr_ = lr; }
};

struct LionParamState : public torch::optim::OptimizerCloneableParamState<LionParamState> {
  TORCH_ARG(torch::Tensor, exp_avg);
};

// One Lion update of parameter p (gradient g, momentum m) in place: the one definition that
// Lion (per parameter) and FlatOptimizer (over slices of flat buffers) both run.
void lionUpdate(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& m, const LionOptions& o);

class Lion : public torch::optim::Optimizer {
 public:
  explicit Lion(std::vector<torch::optim::OptimizerParamGroup> groups, LionOptions defaults = {});
  explicit Lion(std::vector<torch::Tensor> params, LionOptions defaults = {});
  torch::Tensor step(LossClosure closure = nullptr) override;
};

struct OptimizerSettings {
  std::string kind = "lion";  // "lion" or "adamw"
  double lr = 3e-5;           // head learning rate at the end of warm-up (before warmup_scale)
  double lr_factor = 1.0;     // body: lr / lr_factor, weight decay * lr_factor
  double weight_decay = 1e-5;
  double beta1 = 0.95, beta2 = 0.99;  // Lion defaults; AdamW uses 0.9/0.999 unless set
};

// The learning rates a run may use: lr in (0, 1] (3e4 typed for 3e-4 diverges at the first
// step, and 1e308 does not fit the float of LibTorch's fp32 optimiser) and lr_factor in
// [1e-3, 1e3] (the body trains at lr / lr_factor: 1e-320 made that infinite).
inline constexpr double kMaxLearningRate = 1.0;
inline constexpr double kMinLrFactor = 1e-3;
inline constexpr double kMaxLrFactor = 1e3;
// "" when both are usable, else what is wrong with which ("lr must be in (0, 1], not 1e+308");
// NaN is refused too.
std::string learningRateProblem(double lr, double lr_factor);
// "" when decoupled weight decay at the schedule's peak learning rate shrinks the weights
// (each step multiplies them by 1 - peak_lr * weight_decay, which must stay in (0, 1]), else
// what is wrong. NaN and negative values are refused too.
std::string weightDecayProblem(double weight_decay, double peak_lr);

// Throws InputError for an unknown kind.
std::unique_ptr<torch::optim::Optimizer> makeOptimizer(Pet& model, const OptimizerSettings& s);

// An optimiser step's closure evaluated with gradients on (undefined without one), as
// LibTorch's optimisers do before their update.
torch::Tensor evaluateClosure(const torch::optim::Optimizer::LossClosure& closure);

// Zeroes every gradient of the optimiser's parameters in place, keeping the gradient
// tensors: data-parallel training makes them views of its all-reduce buckets
// (dist/bucketed_allreduce.hpp), which Optimizer::zero_grad() would drop on LibTorch 2.x
// (set_to_none by default) and detach on 1.x. Use this instead of zero_grad().
void zeroGradients(torch::optim::Optimizer& opt);

// Linear warm-up from lr/warmup_steps to peak = lr * warmup_scale over warmup_steps, then
// cosine decay to 0 at total_steps. warmup_scale: e.g. sqrt(ranks), as
// OmniLearn's Horovod training (scripts/train.py) scales its warm-up target.
struct WarmupCosine {
  double lr = 3e-5;
  double warmup_scale = 1.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double at(int64_t step) const;
};
// Sets group 0 (body) to lr / lr_factor and group 1 (heads) to lr.
void setLearningRate(torch::optim::Optimizer& opt, double lr, double lr_factor);

class FlatParameters;

// Exponential moving average of the parameters (sampling uses EMA weights). With `flat`
// (the model's parameters in one buffer, core/train/flat_params.hpp) the shadow is one
// buffer of the same layout and an update is one operation; the values are the same.
class Ema {
 public:
  Ema(Pet& model, double decay, FlatParameters* flat = nullptr);
  // One more step into the average: shadow = d * shadow + (1 - d) * parameters, with
  // d = decayAt(updates_before), the updates made before this one (a trainer's step count, so
  // that a resumed training averages alike).
  void update(Pet& model, int64_t updates_before);
  // min(decay, (1 + n) / (10 + n)): the average warms up, as TensorFlow's with num_updates, and
  // forgets the random initial weights within the first steps (before: a constant 0.999 left
  // 98% of them in the average of a training of 24 steps, which `generate` samples with).
  double decayAt(int64_t updates_before) const;
  // Sets the averages (in registration order), keeping the shadow's storage.
  void load(const std::vector<torch::Tensor>& values);
  // Copies the averaged values into the model.
  void copyTo(Pet& model) const;
  const std::vector<torch::Tensor>& shadow() const { return shadow_; }
  double decay() const { return decay_; }

 private:
  double decay_;
  FlatParameters* flat_ = nullptr;
  torch::Tensor flat_shadow_;
  std::vector<torch::Tensor> shadow_;
};

// Optimiser state as named tensors ("<prefix><group>.<param>.<field>") plus JSON (step
// counters), and back. The optimiser must have been built the same way (same groups and
// parameters). Works for Lion and LibTorch's AdamW.
void exportOptimizerState(torch::optim::Optimizer& opt, const std::string& prefix,
                          std::map<std::string, torch::Tensor>& tensors, nlohmann::json& meta);
void importOptimizerState(torch::optim::Optimizer& opt, const std::string& prefix,
                          const std::map<std::string, torch::Tensor>& tensors,
                          const nlohmann::json& meta, const std::string& source);

}  // namespace foldfarm
