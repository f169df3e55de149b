#pragma once
// PET, the Point-Edge Transformer of OmniLearn: a body shared by a classifier
// head and an optional diffusion generator head.
//
// Inputs (all float32, on one device):
//   x     (B, P, F)  standardised particle features, padding rows 0 (F = cfg.num_features)
//   mask  (B, P)     1 for real particles, 0 for padding (real where RAW feature 2 != 0;
//                    see core/model/input_scaling.hpp: the mask must come from raw features)
//   jets  (B, J)     standardised jet features
//   t     (B, 1)     diffusion time in [0, 1]; an undefined tensor means t = 0
// Attention, normalisation and the kNN local blocks see real particles only, so outputs
// do not depend on how many padding rows a jet carries (nor on the order of particles).
// Outputs on padding rows are 0.
//
// Deviations from OmniLearn's TF code, by intent (docs/architecture.md gives the reasons):
// normalisation is a GroupNorm with one group over the jet's real particles and channels; a
// kNN neighbour that is padding (jets with <= K real particles) is left out of the neighbour
// mean instead of contributing padding; feature dropout (per jet, features
// >= feature_dropout_from) is active in training only, and the kNN local blocks see the
// dropped features too.
// OmniLearn's TF body drops them on the encoding's input alone and gives its kNN blocks the
// undropped features, so its local blocks never meet a jet without them, which is what the
// dropout is for (data sets that lack those features: fine-tuning on them feeds zeros).
//
// Thread-safety: a Pet is used by one thread at a time.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/attention.hpp"
#include "core/model/pet_config.hpp"

namespace foldfarm {

// GroupNorm with one group over the real particles (rows) and all channels of each jet.
class MaskedGroupNormImpl : public torch::nn::Module {
 public:
  MaskedGroupNormImpl(int64_t dim, double eps);
  // x (B, N, D), mask (B, N, 1) float. Output is 0 on masked rows.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  // true (default): one fused kernel (core/model/masked_norm.hpp) where it supports the
  // input (float32 on the CPU; float32 or bfloat16 on a GPU when the CUDA kernels are built);
  // false: composed tensor ops (the reference, and the benchmark baseline).
  void setFused(bool fused) { fused_ = fused; }

 private:
  bool fused_ = true;
  double eps_;
  torch::Tensor weight_, bias_;
};
TORCH_MODULE(MaskedGroupNorm);

// Multi-head attention with one fused q/k/v projection; keys where key_mask == 0 are ignored.
class MaskedAttentionImpl : public torch::nn::Module {
 public:
  MaskedAttentionImpl(int64_t dim, int64_t heads);
  // query (B, Nq, D), kv (B, Nk, D), key_mask (B, Nk) float -> (B, Nq, D)
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& kv,
                        const torch::Tensor& key_mask, bool query_is_kv);
  // kAuto (default): maskedAttention's choice by device (core/model/attention.hpp);
  // kPadded: over the padded width (baseline); kSdpa: the GPU's kernel on any device.
  void setKernel(AttentionKernel kernel) { kernel_ = kernel; }

 private:
  int64_t dim_, heads_;
  AttentionKernel kernel_ = AttentionKernel::kAuto;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
};
TORCH_MODULE(MaskedAttention);

// Pre-norm transformer block: GN -> MHSA -> LayerScale -> residual; GN -> MLP -> LayerScale
// -> residual.
class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(const PetConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);

 private:
  MaskedGroupNorm norm1_{nullptr}, norm2_{nullptr};
  MaskedAttention attn_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  torch::Tensor scale1_, scale2_;
};
TORCH_MODULE(TransformerBlock);

// kNN edge block: for each real particle i, its K nearest real neighbours j (by `points`),
// edge feature [f_j - f_i; f_i] -> Dense(2D, GELU) -> Dense(D, GELU), mean over neighbours.
// The fast path computes the first layer as W1 f_j + (W2 - W1) f_i on per-particle
// projections before the gather; the naive path gathers and concatenates (baseline).
class EdgeBlockImpl : public torch::nn::Module {
 public:
  EdgeBlockImpl(int64_t in_features, int64_t dim, int64_t k);
  torch::Tensor forward(const torch::Tensor& points, const torch::Tensor& feats,
                        const torch::Tensor& mask, bool naive);

 private:
  int64_t in_, k_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(EdgeBlock);

// Time embedding: 1000 t freq_k -> [sin, cos] * t -> Dense(2D, swish, no bias) ->
// Dense(D, swish, no bias). Exactly 0 at t = 0.
class FourierTimeImpl : public torch::nn::Module {
 public:
  FourierTimeImpl(int64_t freqs, int64_t dim);
  torch::Tensor forward(const torch::Tensor& t);

 private:
  torch::Tensor freq_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(FourierTime);

class PetBodyImpl : public torch::nn::Module {
 public:
  explicit PetBodyImpl(const PetConfig& cfg);
  // x must already have feature dropout applied (Pet::encode does it).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& t,
                        bool naive_edges);

 private:
  PetConfig cfg_;
  torch::nn::Linear in1_{nullptr}, in2_{nullptr}, film_{nullptr};
  FourierTime time_{nullptr};
  torch::nn::ModuleList local_{nullptr}, blocks_{nullptr};
};
TORCH_MODULE(PetBody);

struct ClassifierOutput {
  torch::Tensor logits;    // (B, C)
  torch::Tensor jet_pred;  // (B, J): regression of the standardised jet features
};

class ClassAttentionImpl : public torch::nn::Module {
 public:
  explicit ClassAttentionImpl(const PetConfig& cfg);
  // token (B,1,D), particles (B,P,D), mask_cat (B,1+P) (1 for the token) -> (B,1,D)
  torch::Tensor forward(const torch::Tensor& token, const torch::Tensor& particles,
                        const torch::Tensor& mask_cat);

 private:
  MaskedGroupNorm norm1_{nullptr}, norm2_{nullptr}, norm3_{nullptr};
  MaskedAttention attn_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  torch::Tensor scale1_, scale2_;
};
TORCH_MODULE(ClassAttention);

class ClassifierHeadImpl : public torch::nn::Module {
 public:
  explicit ClassifierHeadImpl(const PetConfig& cfg);
  ClassifierOutput forward(const torch::Tensor& enc, const torch::Tensor& mask,
                           const torch::Tensor& jets);

 private:
  torch::nn::Linear jet_film_{nullptr}, logits_{nullptr}, jet_reg_{nullptr};
  torch::Tensor token_;
  torch::nn::ModuleList layers_{nullptr};
  MaskedGroupNorm norm_{nullptr};
};
TORCH_MODULE(ClassifierHead);

class GeneratorHeadImpl : public torch::nn::Module {
 public:
  explicit GeneratorHeadImpl(const PetConfig& cfg);
  // labels: (B, C) one-hot (C > 1) or (B, 1) 0/1 (C = 1). Returns v-prediction (B, P, F).
  torch::Tensor forward(const torch::Tensor& enc, const torch::Tensor& mask,
                        const torch::Tensor& jets, const torch::Tensor& labels,
                        const torch::Tensor& t);

 private:
  FourierTime time_{nullptr};
  torch::nn::Linear jet_{nullptr}, cond1_{nullptr}, cond2_{nullptr}, label_{nullptr}, out_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  MaskedGroupNorm norm_{nullptr};
};
TORCH_MODULE(GeneratorHead);

// Parameter counts per component (for `foldfarm model info`).
struct PetParameterCounts {
  int64_t body = 0, classifier = 0, generator = 0, total = 0;
};

class PetImpl : public torch::nn::Module {
 public:
  explicit PetImpl(const PetConfig& cfg);
  const PetConfig& config() const { return cfg_; }

  // Re-initialises all parameters from `seed` (Glorot-uniform kernels, zero biases,
  // LayerScale at layer_scale_init, GroupNorm 1/0, class token 0), deterministically.
  void resetParameters(uint64_t seed);

  // Body encoding (B, P, D); applies feature dropout when training.
  torch::Tensor encode(const torch::Tensor& x, const torch::Tensor& mask,
                       const torch::Tensor& t = {});
  ClassifierOutput classify(const torch::Tensor& x, const torch::Tensor& mask,
                            const torch::Tensor& jets);
  ClassifierOutput classifyEncoded(const torch::Tensor& enc, const torch::Tensor& mask,
                                   const torch::Tensor& jets);
  // Generator head on an encoding of the noised particles. Requires cfg.generator.
  torch::Tensor velocity(const torch::Tensor& enc, const torch::Tensor& mask,
                         const torch::Tensor& jets, const torch::Tensor& labels,
                         const torch::Tensor& t);
  // labels (B) int64 class index -> the generator's label input.
  torch::Tensor labelInput(const torch::Tensor& labels) const;

  // Baseline switch for benchmarks: naive (gather + concat) edge layers.
  void setNaiveEdges(bool naive) { naive_edges_ = naive; }
  // Baseline of `bench pet --baseline`: naive edge layers, attention over the padded width
  // and the composed normalisation (the batches themselves are padded to P by the caller).
  void setBaseline(bool baseline);
  // Every attention layer's implementation (MaskedAttention::setKernel); setBaseline(false)
  // restores kAuto. kSdpa runs the GPU's attention in the whole model on the CPU (tests).
  void setAttentionKernel(AttentionKernel kernel);
  bool naiveEdges() const { return naive_edges_; }

  // Random source of feature dropout (seeded by resetParameters; state saved in checkpoints).
  at::Generator& generator() { return gen_; }
  // Where the model's training draws come from: generator() (draws on the CPU, copied to the
  // model's device), or a generator of the model's GPU set here (draws made on the device;
  // core/train/gradient_step.hpp sets it for a fit). An undefined one restores generator().
  void setDrawGenerator(at::Generator g) { draw_gen_ = std::move(g); }
  at::Generator& drawGenerator() { return draw_gen_.defined() ? draw_gen_ : gen_; }
  // Feature dropout draws for the first `rows` rows of a batch only (-1: every row): the
  // padding rows of a fixed-shape batch draw nothing, so that a padded batch consumes the
  // generator exactly as the unpadded one (DrawRowsGuard sets it for one step).
  void setDrawRows(int64_t rows) { draw_rows_ = rows; }
  int64_t drawRows() const { return draw_rows_; }

  PetParameterCounts parameterCounts() const;
  // Whether the classifier head's output layer (its weight and bias) is exactly zero: the
  // logits of classify() are then +0 for every jet whose encoding is finite (a boosted
  // classifier's starting point, PetClassifier::zeroOutputLayer).
  bool classifierOutputIsZero() const;
  // Parameter groups: names starting with "body." vs the heads.
  std::vector<torch::Tensor> bodyParameters() const;
  std::vector<torch::Tensor> headParameters() const;

 private:
  PetConfig cfg_;
  PetBody body_{nullptr};
  ClassifierHead classifier_{nullptr};
  GeneratorHead generator_{nullptr};
  bool naive_edges_ = false;
  int64_t draw_rows_ = -1;
  at::Generator gen_;
  at::Generator draw_gen_;
};
TORCH_MODULE(Pet);

// Sets PetImpl::setDrawRows for a scope and restores the previous value.
class DrawRowsGuard {
 public:
  DrawRowsGuard(Pet& model, int64_t rows) : model_(model), previous_(model->drawRows()) {
    model_->setDrawRows(rows);
  }
  ~DrawRowsGuard() { model_->setDrawRows(previous_); }
  DrawRowsGuard(const DrawRowsGuard&) = delete;
  DrawRowsGuard& operator=(const DrawRowsGuard&) = delete;

 private:
  Pet& model_;
  int64_t previous_;
};

// Analytic estimate of the useful multiply-add FLOPs (2 per MAC) of one forward pass of
// one jet with n real particles through the body + classifier head (+ generator path when
// `pretrain`: a second body pass on noised particles plus both heads). Backward ~2x forward.
double petForwardFlops(const PetConfig& cfg, double n, bool pretrain);

}  // namespace foldfarm
