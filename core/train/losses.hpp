#pragma once
// Losses of PET training.
#include <torch/types.h>

#include "core/model/pet.hpp"
#include "core/train/jet_batches.hpp"

namespace foldfarm {

enum class Objective {
  kClassifier,  // weighted BCE (1 logit) / CE (C classes)
  kPretrain,    // the pretraining loss, pretrainLoss below (needs the generator head)
};

// Per-event classification loss: BCE-with-logits for one logit (labels 0/1), softmax
// cross-entropy for C > 1 classes. logits (B,C), labels (B) int64 -> (B).
torch::Tensor classificationLossPerEvent(const torch::Tensor& logits, const torch::Tensor& labels);

// Weighted classifier loss: mean over the batch of w_i * loss_i (Keras' sample_weight
// convention, so OmniFold weights normalised to mean 1 keep the loss scale). With
// real_rows >= 0 the sum is divided by real_rows instead (a fixed-shape batch whose padding
// rows have weight 0: the same loss as the unpadded batch).
//
// An event of negative weight (NLO generators give them) has loss_i taken at most
// kNegativeWeightLossCap: uncapped, the weighted loss is unbounded below wherever such events
// outweigh the others of their class (sparse tails), and the fit gains without limit by driving
// their logits to the wrong side; the reweighting then runs away. The cap is the loss of a
// logit ln 100 on the wrong side, a factor the reweighting clips at by default (max_weight 100):
// past it a classifier gains nothing the weights could use. Weights >= 0 give the loss and
// gradients bit for bit as without the cap.
inline constexpr double kNegativeWeightLossCap = 4.61512051684126;  // ln(1 + 100)
torch::Tensor weightedClassifierLoss(const torch::Tensor& logits, const torch::Tensor& labels,
                                     const torch::Tensor& weights, int64_t real_rows = -1);

// weightedClassifierLoss of a batch: over its real rows, counted on the device in the
// static form (JetBatch::row_mask).
torch::Tensor classifierLoss(const torch::Tensor& logits, const JetBatch& batch);

// Logits of a one- or C-logit classifier on a batch, plus the batch's logit offset when it
// has one (JetTensors::offset).
torch::Tensor classifierLogits(Pet& model, const JetBatch& batch);

// Probability of class 1 (one logit) or softmax (C classes).
torch::Tensor classProbabilities(const torch::Tensor& logits);

// The terms stay on the model's device (read them with .item() when needed: on a GPU each
// read waits for the step).
struct PretrainLoss {
  torch::Tensor total;  // CE + MSE + diffusion + noised-jet term (scalar, with graph)
  torch::Tensor ce, mse, diffusion, noised;  // detached scalars
  torch::Tensor correct;  // int64 scalar: correctly classified events (clean jets)
};

// The pretraining objective: CE(labels, logits) + MSE(jet regression) + v-loss on the first
// 3 features over real particles / (3 sum(mask)) + mean_b alpha_b^2 [CE_b + MSE_b] of the
// classifier applied to the noised jets (per event). Weights of the batch scale the
// classification terms (mean of w_i * l_i). t and noise are drawn from `gen` on its device
// (copied to the batch's device when they differ), for the batch's real rows and columns
// only: a padded batch draws what the unpadded one does. A batch in the static form
// (staticForm) draws for its whole shape and counts its rows with row_mask.
PretrainLoss pretrainLoss(Pet& model, const JetBatch& batch, at::Generator& gen);

}  // namespace foldfarm
