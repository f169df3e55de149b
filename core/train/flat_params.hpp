#pragma once
// Flat parameters and gradients, and the optimisers that work on them.
//
// FlatParameters moves every trainable parameter of a model into ONE contiguous buffer (per
// dtype and device: PET has one) and gives each parameter a gradient that is a view of ONE
// gradient buffer of the same layout. The layout is reverse registration order, the order
// in which backward produces gradients, so that
//   - each optimiser parameter group is one contiguous slice when the groups are contiguous
//     in registration order (PET: body, then heads), and
//   - data-parallel all-reduce buckets (dist/bucketed_allreduce.hpp) are slices of the
//     gradient buffer: no bucket copies, and the optimiser reads the reduced gradient where
//     the all-reduce left it.
// Parameters stay ordinary leaf tensors (their storage is now the buffer's), so modules,
// checkpoints and hooks see no difference.
//
// FlatOptimizer (Lion or AdamW) is a torch::optim::Optimizer whose step is a handful of
// tensor operations over each group's slice instead of a loop over parameters. It does
// exactly what Lion (core/train/optim.hpp) and LibTorch's AdamW do per parameter, element
// for element, so results are bit-identical (a test checks it). As there, a parameter
// that never received a gradient (its .grad undefined) is left alone: the step runs over
// the runs of consecutive parameters that have one. Its state exports and imports under
// the per-parameter names (exportOptimizerState/importOptimizerState), so states move
// between the two forms.
//
// Contract for code that touches .grad: zero it in place (zeroGradients) or leave it. A
// .grad replaced by another tensor is copied back into the buffer at the next step (one
// copy, still correct).
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/train/optim.hpp"

namespace foldfarm {

class FlatParameters {
 public:
  // `params` in registration order (Module::parameters()). All of one dtype and device.
  explicit FlatParameters(std::vector<torch::Tensor> params);

  const torch::Tensor& values() const { return values_; }
  const torch::Tensor& grads() const { return grads_; }
  // Parameters in layout order (reverse registration) and their offsets in the buffers.
  const std::vector<torch::Tensor>& params() const { return params_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  // Layout position of a parameter (by identity); -1 when it is not one of them.
  int64_t positionOf(const torch::Tensor& p) const;
  // Points every defined .grad at its view of the gradient buffer (copying a replaced one
  // in). Returns, per layout position, whether the parameter has a gradient.
  std::vector<char> attachGradients();
  // The views of position k in the value and gradient buffers, and in any buffer of the
  // same layout (optimiser state, EMA). Plain tensors over the buffer's storage, not
  // autograd views (a .grad must allow detach_(), which Optimizer::zero_grad() calls).
  torch::Tensor valueView(size_t k) const { return viewIn(values_, k); }
  torch::Tensor gradView(size_t k) const { return viewIn(grads_, k); }
  torch::Tensor viewIn(const torch::Tensor& buffer, size_t k) const;

 private:
  std::vector<torch::Tensor> params_;
  std::vector<int64_t> offsets_, numels_;
  torch::Tensor values_, grads_;
};

// Lion or AdamW over flat buffers. Groups as makeOptimizer makes them (body, heads); each
// group must be one contiguous range of the layout.
class FlatOptimizer : public torch::optim::Optimizer {
 public:
  enum class Kind { kLion, kAdamW };
  FlatOptimizer(std::shared_ptr<FlatParameters> flat,
                std::vector<torch::optim::OptimizerParamGroup> groups, Kind kind);
  torch::Tensor step(LossClosure closure = nullptr) override;

  Kind kind() const { return kind_; }
  FlatParameters& flat() { return *flat_; }
  // Per group: [begin, end) of the layout.
  const std::vector<std::pair<size_t, size_t>>& ranges() const { return ranges_; }
  // Optimiser state over the whole buffer (undefined until the first step that touches it).
  torch::Tensor& expAvg() { return exp_avg_; }
  torch::Tensor& expAvgSq() { return exp_avg_sq_; }
  // AdamW step count per layout position (0: never stepped).
  std::vector<int64_t>& steps() { return steps_; }
  // Per layout position: has the state been created (the parameter was stepped once)?
  std::vector<char>& started() { return started_; }

 private:
  std::shared_ptr<FlatParameters> flat_;
  Kind kind_;
  std::vector<std::pair<size_t, size_t>> ranges_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;
  std::vector<char> started_;
};

// makeOptimizer's groups over `flat` (made from the model's parameters when null: they are
// moved into the buffer). Throws InputError for an unknown kind.
std::unique_ptr<torch::optim::Optimizer> makeFlatOptimizer(
    Pet& model, const OptimizerSettings& s, std::shared_ptr<FlatParameters> flat = nullptr);

// The flat buffers of an optimiser made by makeFlatOptimizer, else nullptr.
FlatParameters* flatParametersOf(torch::optim::Optimizer& opt);

}  // namespace foldfarm
