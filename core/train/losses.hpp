#pragma once
// Losses of PET training (SPEC §4).
#include <torch/types.h>

#include "core/model/pet.hpp"
#include "core/train/jet_batches.hpp"

namespace foldfarm {

// Per-event classification loss: BCE-with-logits for one logit (labels 0/1), softmax
// cross-entropy for C > 1 classes. logits (B,C), labels (B) int64 -> (B).
torch::Tensor classificationLossPerEvent(const torch::Tensor& logits, const torch::Tensor& labels);

// Weighted classifier loss: mean over the batch of w_i * loss_i (Keras' sample_weight
// convention, so OmniFold weights normalised to mean 1 keep the loss scale).
torch::Tensor weightedClassifierLoss(const torch::Tensor& logits, const torch::Tensor& labels,
                                     const torch::Tensor& weights);

// Probability of class 1 (one logit) or softmax (C classes).
torch::Tensor classProbabilities(const torch::Tensor& logits);

struct PretrainLoss {
  torch::Tensor total;  // CE + MSE + diffusion + noised-jet term (scalar, with graph)
  double ce = 0, mse = 0, diffusion = 0, noised = 0;
  int64_t correct = 0;  // correctly classified events of the batch (clean jets)
};

// The pretraining objective: CE(labels, logits) + MSE(jet regression) + v-loss on the first
// 3 features over real particles / (3 sum(mask)) + mean_b alpha_b^2 [CE_b + MSE_b] of the
// classifier applied to the noised jets (per event). Weights of the batch scale the
// classification terms (mean of w_i * l_i). t and noise are drawn from `gen`.
PretrainLoss pretrainLoss(Pet& model, const JetBatch& batch, at::Generator& gen);

}  // namespace foldfarm
