#include "core/train/losses.hpp"

#include <torch/torch.h>

#include "core/model/diffusion.hpp"

namespace foldfarm {

namespace F = torch::nn::functional;
using torch::Tensor;

Tensor classificationLossPerEvent(const Tensor& logits, const Tensor& labels) {
  if (logits.size(1) == 1)
    return F::binary_cross_entropy_with_logits(
        logits.squeeze(1), labels.to(logits.dtype()),
        F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
  return F::cross_entropy(logits, labels.to(torch::kLong),
                          F::CrossEntropyFuncOptions().reduction(torch::kNone));
}

Tensor weightedClassifierLoss(const Tensor& logits, const Tensor& labels, const Tensor& weights) {
  return (classificationLossPerEvent(logits, labels) * weights).mean();
}

Tensor classProbabilities(const Tensor& logits) {
  if (logits.size(1) == 1) return torch::sigmoid(logits.squeeze(1));
  return torch::softmax(logits, 1);
}

PretrainLoss pretrainLoss(Pet& model, const JetBatch& b, at::Generator& gen) {
  PretrainLoss out;
  const int64_t n = b.size();
  const Tensor& x = b.particles;
  const Tensor& mask = b.mask;
  const Tensor& w = b.weights;

  // Clean jets: classification + jet regression.
  const ClassifierOutput clean = model->classify(x, mask, b.jets);
  const Tensor ce = (classificationLossPerEvent(clean.logits, b.labels) * w).mean();
  const Tensor mse = ((clean.jet_pred - b.jets).pow(2).mean(1) * w).mean();

  // Diffusion on the first 3 features.
  const Tensor t = torch::rand({n, 1}, gen, torch::kFloat32).to(x.device());
  const Tensor eps =
      torch::randn({n, x.size(1), kDiffusedFeatures}, gen, torch::kFloat32).to(x.device()) *
      mask.unsqueeze(-1);
  const Tensor z = noiseParticles(x, mask, eps, t);
  const Tensor alpha = diffusionAlpha(t).unsqueeze(-1), sigma = diffusionSigma(t).unsqueeze(-1);
  const Tensor v = alpha * eps - sigma * x.narrow(2, 0, kDiffusedFeatures);
  const Tensor enc_z = model->encode(z, mask, t);
  const Tensor v_hat = model->velocity(enc_z, mask, b.jets, model->labelInput(b.labels), t)
                           .narrow(2, 0, kDiffusedFeatures);
  const Tensor diff = ((v - v_hat).pow(2) * mask.unsqueeze(-1)).sum() /
                      (static_cast<double>(kDiffusedFeatures) * mask.sum()).clamp_min(1.0);

  // Classifier on the noised jets, weighted per event by alpha(t)^2.
  const ClassifierOutput noisy = model->classifyEncoded(enc_z, mask, b.jets);
  const Tensor a2 = diffusionAlpha(t).squeeze(1).pow(2);
  const Tensor per_event =
      classificationLossPerEvent(noisy.logits, b.labels) + (noisy.jet_pred - b.jets).pow(2).mean(1);
  const Tensor noised = (a2 * per_event * w).mean();

  out.total = ce + mse + diff + noised;
  out.ce = ce.item<double>();
  out.mse = mse.item<double>();
  out.diffusion = diff.item<double>();
  out.noised = noised.item<double>();
  const Tensor pred = clean.logits.size(1) == 1 ? (clean.logits.squeeze(1) > 0).to(torch::kLong)
                                                : clean.logits.argmax(1);
  out.correct = pred.eq(b.labels).sum().item<int64_t>();
  return out;
}

}  // namespace foldfarm
