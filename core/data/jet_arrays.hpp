#pragma once
// In-memory jets in the OmniLearn layout (core/data/jet_reader.hpp). Plain row-major float
// arrays so that the model, the OmniFold chains and the writers share them without copies or
// LibTorch.
//
// Contracts:
//  - particles: n*P*13 floats, row-major (jet, particle, feature). A particle row is real
//    where its RAW feature 2 (log(1 - pT/pT_jet)) is non-zero; padding rows are all zero
//    and come after the real rows. After standardisation (features.hpp) feature 2 no
//    longer marks padding: take masks from raw arrays (realMask()) before standardising.
//  - jets: n*4 floats [pT, eta, mass, multiplicity].
//  - labels: n class indices, or empty when the file has none.
//  - weights: n per-jet weights, or empty meaning every weight is 1.
// Thread-safety: plain values; const access from many threads is safe.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace foldfarm::data {

constexpr int kNumParticleFeatures = 13;
constexpr int kNumJetFeatures = 4;
constexpr int kNumSubs = 6;  // [mass, width, multiplicity, ln rho, z_g, tau21]

struct JetArrays {
  int64_t n = 0;  // jets
  int64_t P = 0;  // particle slots per jet
  std::vector<float> particles;
  std::vector<float> jets;
  std::vector<int64_t> labels;
  std::vector<float> weights;

  // n jets of P zero (padding) particles; labels sized n when with_labels.
  static JetArrays zeros(int64_t n, int64_t P, bool with_labels = false);

  float* particle(int64_t i, int64_t j) {
    return particles.data() + (i * P + j) * kNumParticleFeatures;
  }
  const float* particle(int64_t i, int64_t j) const {
    return particles.data() + (i * P + j) * kNumParticleFeatures;
  }
  float* jet(int64_t i) { return jets.data() + i * kNumJetFeatures; }
  const float* jet(int64_t i) const { return jets.data() + i * kNumJetFeatures; }
  float weight(int64_t i) const { return weights.empty() ? 1.0f : weights[static_cast<size_t>(i)]; }

  // Number of real particles of jet i (rows with raw feature 2 != 0). Only valid on raw,
  // unstandardised features.
  int64_t multiplicity(int64_t i) const;
  // n*P mask (1 real, 0 padding) from raw features.
  std::vector<uint8_t> realMask() const;

  // Rows [begin, end) / the given rows in the given order (labels and weights follow).
  // Throws std::out_of_range on bad indices.
  JetArrays slice(int64_t begin, int64_t end) const;
  JetArrays subset(const std::vector<int64_t>& rows) const;
  // The same jets with P2 >= P slots, the extra ones padding (InputError-free: Error when
  // P2 < P). PET's outputs do not depend on padding, so a model sees the same jets.
  JetArrays widened(int64_t P2) const;
  // Appends the rows of `other` (same P; both with or both without labels/weights).
  // Throws Error on mismatched layouts.
  void append(const JetArrays& other);
  // Throws Error when vector sizes disagree with n and P.
  void checkShapes() const;
};

// An unfolding sample: one event = a detector-level (reco) and particle-level (gen) jet.
// reco.n == gen.n == n(); subs are n*6 or empty; pass flags n or empty (= all pass);
// weights n or empty (= all 1). reco/gen carry no labels and no weights of their own.
// A sample may hold one level only: experimental data its reco level, a truth sample its gen
// level. The absent level is an empty JetArrays (P 0) with no subs and no pass flags.
struct UnfoldArrays {
  JetArrays reco, gen;
  std::vector<float> reco_subs, gen_subs;
  std::vector<uint8_t> pass_reco, pass_gen;
  std::vector<float> weights;

  bool hasReco() const { return reco.P > 0; }
  bool hasGen() const { return gen.P > 0; }
  int64_t n() const { return hasGen() ? gen.n : reco.n; }
  bool passReco(int64_t i) const {
    return pass_reco.empty() || pass_reco[static_cast<size_t>(i)] != 0;
  }
  bool passGen(int64_t i) const {
    return pass_gen.empty() || pass_gen[static_cast<size_t>(i)] != 0;
  }
  float weight(int64_t i) const { return weights.empty() ? 1.0f : weights[static_cast<size_t>(i)]; }

  UnfoldArrays slice(int64_t begin, int64_t end) const;
  UnfoldArrays subset(const std::vector<int64_t>& rows) const;
  void append(const UnfoldArrays& other);
  void checkShapes() const;
};

}  // namespace foldfarm::data
