#pragma once
// One gradient step of PET as the Trainer and `bench pet` take it: the step's random draws
// seeded, the gradients zeroed, then forward, loss and backward of a batch on the model's
// device. What follows it (gradient synchronisation, clipping, the optimiser step, EMA)
// stays with the caller.
//
// Draws. On a GPU the step's draws (feature dropout, diffusion time and noise) are made on
// the device by the GPU's default CUDA generator, reseeded every step from `draw_seed`:
// no host-to-device copy of random numbers. `host_draws` keeps them on the model's CPU
// generator (drawn on the host, copied), which gives a GPU run the CPU run's noise (tests
// compare the two). On the CPU both are the same generator.
//
// CUDA graphs (`cuda_graphs`: a GPU, one rank, fixed-shape batches). Every batch is taken
// in the static form (staticForm: draws over the whole shape, real rows counted on the
// device). Per batch shape:
//   1. the first batch runs eagerly on a side stream (warm-up: lazily made handles and
//      workspaces, gradients that become views of the flat buffer at the optimiser step);
//   2. the second is captured: forward, loss and backward, the gradients accumulating in
//      place into the gradient buffer, then replayed;
//   3. every later one copies its values into the capture's input tensors and replays it.
// Graphs of all shapes share one memory pool. A replay draws as the eager step does: the
// generator is reseeded before it and the capture records offsets from that seed. At most
// kMaxGraphs shapes are captured; further shapes run eagerly in the static form.
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model/pet.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"

namespace foldfarm {

struct GradientStepOptions {
  Objective objective = Objective::kClassifier;
  std::string precision = "fp32";  // "fp32" or "bf16" (autocast of the forward pass and loss)
  bool cuda_graphs = false;
  bool host_draws = false;
  // The ranks training together: data-parallel gradient hooks run collectives inside
  // backward, so graphs need 1.
  int world_size = 1;
  bool fixed_shapes = false;  // the caller pads batches to fixed shapes (graphs need it)
  // The draws' generator when defined (newGenerator: models trained side by side in one
  // process each draw from their own); else the GPU's default one, or with `host_draws` or
  // on the CPU the model's own. CUDA graphs capture only the default one.
  at::Generator draw_generator;
};

class GradientStep {
 public:
  static constexpr int kMaxGraphs = 16;

  // Sets the model's draw generator for the life of this object. Throws InputError when
  // graphs are asked for and cannot run (graphsUnavailableReason).
  GradientStep(Pet model, torch::optim::Optimizer& opt, GradientStepOptions o);
  ~GradientStep();
  GradientStep(const GradientStep&) = delete;
  GradientStep& operator=(const GradientStep&) = delete;

  // The step on `batch` (on the model's device). Returns the loss, detached (with graphs a
  // copy of the capture's output, which the next replay of any shape may overwrite).
  torch::Tensor run(const JetBatch& batch, uint64_t draw_seed);

  bool graphs() const { return graphs_ != nullptr; }
  // Whether run(batch) captures a graph (the second batch of its shape). A capture is
  // process-wide: another thread's CUDA calls meanwhile (a page-locked allocation for the
  // next batch) invalidate it, so such work waits until run returns.
  bool wouldCapture(const JetBatch& batch) const;
  int64_t graphsCaptured() const;
  int64_t replays() const;

  // "" when CUDA graphs can run with these options on `device`, else why not (one phrase).
  static std::string graphsUnavailableReason(const torch::Device& device,
                                             const GradientStepOptions& o);

 private:
  torch::Tensor eager(const JetBatch& batch);
  void seedDraws(uint64_t seed);

  struct Graphs;
  Pet model_;
  torch::optim::Optimizer& opt_;
  GradientStepOptions o_;
  torch::Device device_;
  std::unique_ptr<Graphs> graphs_;
};

// Throws InputError "<who>: CUDA graphs cannot be used: <why>" when graphs cannot run on
// `device` with `world_size` ranks (the fixed shapes they need are implied).
void requireCudaGraphs(const torch::Device& device, int world_size, const std::string& who);

// Clips the global gradient norm to `max_norm` as torch::nn::utils::clip_grad_norm_ does,
// without its host synchronisation (it returns nothing). On the CPU, or without flat
// buffers: the same operations (per-parameter norms, their norm), so bit-identical
// results. On a GPU with flat buffers: one norm over the gradient buffer and one scaling
// (mathematically the same; rounding differs).
void clipGradientNorm(const std::vector<torch::Tensor>& params, double max_norm,
                      FlatParameters* flat = nullptr);

}  // namespace foldfarm
