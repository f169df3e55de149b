#pragma once
// Small random jets (raw OmniLearn features) for model tests.
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/data/jet_arrays.hpp"

namespace foldfarm::modeltest {

// n jets with P slots; jet i has 2 + (i * 7) % (max_real - 1) real particles; labels
// alternate 0/1 with a class-dependent spread so that a classifier can learn them.
inline data::JetArrays randomJets(int64_t n, int64_t P, int64_t max_real, uint64_t seed) {
  data::JetArrays a = data::JetArrays::zeros(n, P, true);
  std::mt19937_64 g(seed);
  std::normal_distribution<float> norm(0.f, 1.f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = i % 2;
    a.labels[static_cast<size_t>(i)] = label;
    const int64_t m = std::min<int64_t>(max_real, 2 + (i * 7) % std::max<int64_t>(1, max_real - 1));
    const float spread = label ? 0.1f : 0.25f;
    for (int64_t j = 0; j < m; ++j) {
      float* p = a.particle(i, j);
      p[0] = spread * norm(g);
      p[1] = spread * norm(g);
      p[2] = -0.02f - 0.05f * std::fabs(norm(g));  // log(1 - pT/pT_jet) < 0: real
      p[3] = 1.9f + norm(g);
      p[4] = p[2];
      p[5] = p[3] + 0.3f;
      p[6] = std::hypot(p[0], p[1]);
      p[7] = static_cast<float>(j % 3) - 1.f;
      p[8 + j % 5] = 1.f;
    }
    float* jet = a.jet(i);
    jet[0] = 600.f + 50.f * norm(g);
    jet[1] = norm(g);
    jet[2] = 100.f + 20.f * norm(g);
    jet[3] = static_cast<float>(m);
  }
  return a;
}

// Largest |a - b| relative to max(1e-3, max |a|), over pairs of tensors (gradients).
inline double worstRelative(const std::vector<torch::Tensor>& a,
                            const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double scale = std::max(1e-3, a[i].abs().max().item<double>());
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>() / scale);
  }
  return worst;
}

// ||a - b|| / ||b|| over all the tensors together (parameters of two runs).
inline double relativeL2(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double d2 = 0, b2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d2 += (a[i] - b[i]).pow(2).sum().item<double>();
    b2 += b[i].pow(2).sum().item<double>();
  }
  return std::sqrt(d2 / std::max(b2, 1e-30));
}

// Rows of two observables for the observable MLP: label 0 has x ~ N(0, 1); label 1 the same
// density reweighted by w = exp(x0) / exp(0.5), so that the density ratio is exp(x0) up to a
// constant: a logit linear in x0 that does not depend on x1. Rows 0..n-1 are label 0.
struct ObservableSample {
  std::vector<float> x;  // 2n rows x 2 columns, row-major
  std::vector<int64_t> y;
  std::vector<float> w;
};

inline ObservableSample observableSample(int64_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> norm(0.f, 1.f);
  ObservableSample s;
  for (int64_t i = 0; i < 2 * n; ++i) {
    const float x0 = norm(g), x1 = norm(g);
    s.x.push_back(x0);
    s.x.push_back(x1);
    const int64_t label = i < n ? 0 : 1;
    s.y.push_back(label);
    s.w.push_back(label ? std::exp(x0) / std::exp(0.5f) : 1.f);
  }
  return s;
}

}  // namespace foldfarm::modeltest
