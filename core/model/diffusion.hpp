#pragma once
// Diffusion of PET's generator: cosine log-SNR schedule from +20 (t = 0) to -20
// (t = 1), v-prediction on the first kDiffusedFeatures particle features, and a
// deterministic second-order sampler (DDIM steps with a midpoint correction).
#include <torch/types.h>

#include <cstdint>

#include "core/model/pet.hpp"

namespace foldfarm {

constexpr int64_t kDiffusedFeatures = 3;

// logsnr = -2 ln tan(a t + b), b = atan(e^-10), a = atan(e^10) - b.
torch::Tensor logSnr(const torch::Tensor& t);
// alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr).
torch::Tensor diffusionAlpha(const torch::Tensor& t);
torch::Tensor diffusionSigma(const torch::Tensor& t);

// Noised input: z = alpha x + sigma eps on the first 3 features (real particles), other
// features 0. x (B,P,F), eps (B,P,3), t (B,1). Returns z (B,P,F).
torch::Tensor noiseParticles(const torch::Tensor& x, const torch::Tensor& mask,
                             const torch::Tensor& eps, const torch::Tensor& t);

// Samples the first 3 features of `mask`ed particles for jets `jets` (standardised) of class
// `labels` (B) with `steps` second-order steps from t = 1 to 0. `model` must have the
// generator head (use EMA weights). Returns (B,P,F) with features >= 3 set to 0.
torch::Tensor sampleParticles(Pet& model, const torch::Tensor& mask, const torch::Tensor& jets,
                              const torch::Tensor& labels, int64_t steps, at::Generator& gen);

}  // namespace foldfarm
