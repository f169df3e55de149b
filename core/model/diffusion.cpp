#include "core/model/diffusion.hpp"

#include <torch/torch.h>

#include <cmath>

namespace foldfarm {

using torch::Tensor;

Tensor logSnr(const Tensor& t) {
  const double b = std::atan(std::exp(-10.0));
  const double a = std::atan(std::exp(10.0)) - b;
  return -2.0 * torch::log(torch::tan(a * t + b));
}

Tensor diffusionAlpha(const Tensor& t) {
  return torch::sqrt(torch::sigmoid(logSnr(t)));
}
Tensor diffusionSigma(const Tensor& t) {
  return torch::sqrt(torch::sigmoid(-logSnr(t)));
}

Tensor noiseParticles(const Tensor& x, const Tensor& mask, const Tensor& eps, const Tensor& t) {
  const Tensor a = diffusionAlpha(t).unsqueeze(-1), s = diffusionSigma(t).unsqueeze(-1);
  const Tensor z3 = (a * x.narrow(2, 0, kDiffusedFeatures) + s * eps) * mask.unsqueeze(-1);
  return torch::cat(
      {z3, torch::zeros({x.size(0), x.size(1), x.size(2) - kDiffusedFeatures}, x.options())}, 2);
}

namespace {

// x0 prediction from v: x0 = alpha z - sigma v (alpha^2 + sigma^2 = 1).
Tensor predictX0(Pet& model, const Tensor& z, const Tensor& mask, const Tensor& jets,
                 const Tensor& label_in, const Tensor& t) {
  const Tensor enc = model->encode(z, mask, t);
  const Tensor v = model->velocity(enc, mask, jets, label_in, t).narrow(2, 0, kDiffusedFeatures);
  const Tensor a = diffusionAlpha(t).unsqueeze(-1), s = diffusionSigma(t).unsqueeze(-1);
  return (a * z.narrow(2, 0, kDiffusedFeatures) - s * v) * mask.unsqueeze(-1);
}

// Deterministic DDIM move of z3 from t to s given an x0 prediction.
Tensor ddim(const Tensor& z3, const Tensor& x0, const Tensor& t, const Tensor& s) {
  const Tensor at = diffusionAlpha(t).unsqueeze(-1), st = diffusionSigma(t).unsqueeze(-1);
  const Tensor as = diffusionAlpha(s).unsqueeze(-1), ss = diffusionSigma(s).unsqueeze(-1);
  return as * x0 + ss / st * (z3 - at * x0);
}

}  // namespace

Tensor sampleParticles(Pet& model, const Tensor& mask, const Tensor& jets, const Tensor& labels,
                       int64_t steps, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t b = mask.size(0), p = mask.size(1), f = model->config().num_features;
  const Tensor label_in = model->labelInput(labels);
  const Tensor m3 = mask.unsqueeze(-1);
  // The noise is drawn on the CPU (the same jets on any device) and moved to the model's.
  const auto on = torch::TensorOptions().device(mask.device());
  Tensor z3 = torch::randn({b, p, kDiffusedFeatures}, gen, torch::kFloat32).to(mask.device()) * m3;
  const Tensor rest = torch::zeros({b, p, f - kDiffusedFeatures}, on);
  auto full = [&](const Tensor& x3) { return torch::cat({x3, rest}, 2); };
  for (int64_t i = steps; i > 0; --i) {
    const Tensor t = torch::full({b, 1}, static_cast<double>(i) / steps, on);
    const Tensor s = torch::full({b, 1}, static_cast<double>(i - 1) / steps, on);
    const Tensor u = torch::full({b, 1}, (static_cast<double>(i) - 0.5) / steps, on);
    // Midpoint (second-order) step: predict at t, move to the midpoint u, predict there,
    // and take the full step t -> s with the midpoint's x0.
    const Tensor x0_t = predictX0(model, full(z3), mask, jets, label_in, t);
    const Tensor z_u = ddim(z3, x0_t, t, u) * m3;
    const Tensor x0_u = predictX0(model, full(z_u), mask, jets, label_in, u);
    z3 = ddim(z3, x0_u, t, s) * m3;
  }
  if (was_training) model->train();
  return full(z3) * m3;
}

}  // namespace foldfarm
