#include "core/train/losses.hpp"

#include <torch/torch.h>

#include "core/base/error.hpp"
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

namespace {

// Mean over the batch, or over its real rows when it is padded (padding rows weigh 0).
Tensor batchMean(const Tensor& per_event, int64_t real_rows) {
  if (real_rows < 0 || real_rows == per_event.size(0)) return per_event.mean();
  return per_event.sum() / static_cast<double>(std::max<int64_t>(1, real_rows));
}

// The same for a batch: in the static form the real rows are counted on the device.
Tensor batchMean(const Tensor& per_event, const JetBatch& b) {
  if (b.row_mask.defined()) return per_event.sum() / b.row_mask.sum().clamp_min(1.0);
  return batchMean(per_event, b.padded() ? b.realRows() : -1);
}

// A draw for the real rows/columns, zero-padded to `shape`.
Tensor padDraw(const Tensor& draw, at::IntArrayRef shape) {
  if (draw.sizes().equals(shape)) return draw;
  Tensor out = torch::zeros(shape, draw.options());
  Tensor region = out;
  for (int64_t d = 0; d < draw.dim(); ++d) region = region.narrow(d, 0, draw.size(d));
  region.copy_(draw);
  return out;
}

// w_i * loss_i, a negative-weight event's loss capped (kNegativeWeightLossCap).
Tensor weightedPerEvent(const Tensor& per_event, const Tensor& w) {
  return torch::where(w < 0, per_event.clamp_max(kNegativeWeightLossCap), per_event) * w;
}

}  // namespace

Tensor weightedClassifierLoss(const Tensor& logits, const Tensor& labels, const Tensor& weights,
                              int64_t real_rows) {
  return batchMean(weightedPerEvent(classificationLossPerEvent(logits, labels), weights),
                   real_rows);
}

Tensor classifierLoss(const Tensor& logits, const JetBatch& b) {
  return batchMean(weightedPerEvent(classificationLossPerEvent(logits, b.labels), b.weights), b);
}

Tensor classifierLogits(Pet& model, const JetBatch& b) {
  Tensor logits = model->classify(b.particles, b.mask, b.jets).logits;
  if (b.offset.defined()) {
    if (logits.size(1) != 1)
      throw InputError("logit offsets need a one-logit classifier (the model has " +
                       std::to_string(logits.size(1)) + " outputs)");
    logits = logits + b.offset.unsqueeze(1);
  }
  return logits;
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
  // Draws of the model itself (feature dropout) for the real rows only.
  const DrawRowsGuard draw_rows(model, b.realRows());

  // Clean jets: classification + jet regression.
  const ClassifierOutput clean = model->classify(x, mask, b.jets);
  const Tensor ce = batchMean(classificationLossPerEvent(clean.logits, b.labels) * w, b);
  const Tensor mse = batchMean((clean.jet_pred - b.jets).pow(2).mean(1) * w, b);

  // Diffusion on the first 3 features; drawn where `gen` lives (a no-op copy then).
  const bool async = x.device().is_cuda();
  const auto on = torch::TensorOptions(torch::kFloat32).device(gen.device());
  const Tensor t = padDraw(torch::rand({b.realRows(), 1}, gen, on), {n, 1}).to(x.device(), async);
  const Tensor eps = padDraw(torch::randn({b.realRows(), b.realCols(), kDiffusedFeatures}, gen, on),
                             {n, x.size(1), kDiffusedFeatures})
                         .to(x.device(), async) *
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
  const Tensor noised = batchMean(a2 * per_event * w, b);

  out.total = ce + mse + diff + noised;
  out.ce = ce.detach();
  out.mse = mse.detach();
  out.diffusion = diff.detach();
  out.noised = noised.detach();
  const Tensor pred = clean.logits.size(1) == 1 ? (clean.logits.squeeze(1) > 0).to(torch::kLong)
                                                : clean.logits.argmax(1);
  out.correct = b.row_mask.defined() ? pred.eq(b.labels).logical_and(b.row_mask > 0).sum()
                                     : pred.eq(b.labels).narrow(0, 0, b.realRows()).sum();
  return out;
}

}  // namespace foldfarm
