#include "core/model/pet.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "core/base/error.hpp"
#include "core/model/attention.hpp"
#include "core/model/masked_norm.hpp"

namespace foldfarm {

namespace F = torch::nn::functional;
using torch::Tensor;

namespace {

torch::nn::Linear dense(int64_t in, int64_t out, bool bias = true) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// Rows `idx` (B, P, k) of `values` (B, P, C) -> (B, P, k, C), without a (B, P, P, C) tensor.
Tensor gatherRows(const Tensor& values, const Tensor& idx) {
  const int64_t b = values.size(0), p = values.size(1), c = values.size(2), k = idx.size(2);
  const Tensor offset = torch::arange(b, idx.options()).mul_(p).view({b, 1, 1});
  const Tensor flat = (idx + offset).reshape({-1});
  return values.reshape({b * p, c}).index_select(0, flat).view({b, p, k, c});
}

// k nearest real neighbours (self excluded) of every particle. Returns indices (B, P, k)
// and a float validity (B, P, k): 0 where the neighbour slot is padding (fewer than k+1
// real particles) or the particle itself is padding.
std::pair<Tensor, Tensor> nearestNeighbours(const Tensor& points, const Tensor& mask, int64_t k) {
  torch::NoGradGuard no_grad;
  // Distances in float32, outside autocast: in bfloat16 (3 significant digits) the term
  // 2 x.y of 128-wide features errs by about a neighbour's distance, and a bf16 model's
  // neighbours would be partly random. Without autocast this changes nothing.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t p = points.size(1);
  Tensor pts = points.detach();
  if (pts.scalar_type() == torch::kBFloat16 || pts.scalar_type() == torch::kHalf)
    pts = pts.to(torch::kFloat32);
  Tensor dist;
  if (pts.size(2) <= 4) {
    // Low dimension: exact differences (no cancellation, identical for any padding).
    dist = (pts.unsqueeze(2) - pts.unsqueeze(1)).pow(2).sum(-1);
  } else {
    const Tensor sq = pts.pow(2).sum(-1);
    dist = sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * torch::bmm(pts, pts.transpose(1, 2));
  }
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor eye = torch::eye(p, mask.options().dtype(torch::kBool)).unsqueeze(0);
  dist = dist.masked_fill(mask.unsqueeze(1) == 0, inf).masked_fill(eye, inf);
  auto [vals, idx] = dist.topk(k, /*dim=*/-1, /*largest=*/false, /*sorted=*/true);
  const Tensor valid = torch::isfinite(vals).to(mask.dtype()) * mask.unsqueeze(-1);
  return {idx, valid};
}

}  // namespace

// ---- MaskedGroupNorm -----------------------------------------------------------------

MaskedGroupNormImpl::MaskedGroupNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
  bias_ = register_parameter("bias", torch::zeros({dim}));
}

Tensor MaskedGroupNormImpl::forward(const Tensor& x, const Tensor& mask) {
  if (fused_ && maskedGroupNormFusedSupports(x))
    return maskedGroupNormFused(x, mask, weight_, bias_, eps_);
  const double d = static_cast<double>(x.size(2));
  const Tensor n = (mask.sum({1, 2}, /*keepdim=*/true) * d).clamp_min(1.0);
  const Tensor mean = (x * mask).sum({1, 2}, true) / n;
  const Tensor xc = (x - mean) * mask;
  const Tensor var = xc.pow(2).sum({1, 2}, true) / n;
  return (xc * torch::rsqrt(var + eps_) * weight_ + bias_) * mask;
}

// ---- MaskedAttention -----------------------------------------------------------------

MaskedAttentionImpl::MaskedAttentionImpl(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {
  qkv_ = register_module("qkv", dense(dim, 3 * dim));
  out_ = register_module("out", dense(dim, dim));
}

Tensor MaskedAttentionImpl::forward(const Tensor& query, const Tensor& kv, const Tensor& key_mask,
                                    bool query_is_kv) {
  const int64_t b = kv.size(0), nk = kv.size(1), nq = query.size(1), dh = dim_ / heads_;
  Tensor q, k, v;
  if (query_is_kv) {
    const Tensor p = qkv_(kv).view({b, nk, 3, heads_, dh}).permute({2, 0, 3, 1, 4});
    q = p[0];
    k = p[1];
    v = p[2];
  } else {
    const Tensor& w = qkv_->weight;
    const Tensor& bias = qkv_->bias;
    q = F::linear(query, w.narrow(0, 0, dim_), bias.narrow(0, 0, dim_))
            .view({b, nq, heads_, dh})
            .transpose(1, 2);
    const Tensor p = F::linear(kv, w.narrow(0, dim_, 2 * dim_), bias.narrow(0, dim_, 2 * dim_))
                         .view({b, nk, 2, heads_, dh})
                         .permute({2, 0, 3, 1, 4});
    k = p[0];
    v = p[1];
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  // Self-attention: queries are the particles (padding beyond the key extent); class
  // attention: the one class token. Only the trimmed path (kAuto on the CPU) reads it.
  const Tensor query_extent = !attentionReadsQueryExtent(kernel_, q) ? Tensor()
                              : query_is_kv
                                  ? maskExtent(key_mask)
                                  : torch::full({b}, nq, key_mask.options().dtype(torch::kInt64));
  const Tensor o = maskedAttentionWith(kernel_, q, k, v, key_mask, query_extent, scale);
  return out_(o.transpose(1, 2).reshape({b, nq, dim_}));
}

// ---- TransformerBlock ----------------------------------------------------------------

TransformerBlockImpl::TransformerBlockImpl(const PetConfig& cfg) {
  const int64_t d = cfg.dim;
  norm1_ = register_module("norm1", MaskedGroupNorm(d, cfg.norm_eps));
  attn_ = register_module("attn", MaskedAttention(d, cfg.heads));
  scale1_ = register_parameter("ls1", torch::full({d}, cfg.layer_scale_init));
  norm2_ = register_module("norm2", MaskedGroupNorm(d, cfg.norm_eps));
  fc1_ = register_module("fc1", dense(d, 2 * d));
  fc2_ = register_module("fc2", dense(2 * d, d));
  scale2_ = register_parameter("ls2", torch::full({d}, cfg.layer_scale_init));
}

Tensor TransformerBlockImpl::forward(const Tensor& x, const Tensor& mask) {
  const Tensor m3 = mask.unsqueeze(-1);
  const Tensor h = norm1_(x, m3);
  const Tensor x2 = x + scale1_ * attn_(h, h, mask, true) * m3;
  const Tensor y = fc2_(torch::gelu(fc1_(norm2_(x2, m3))));
  return (x2 + scale2_ * y) * m3;
}

// ---- EdgeBlock -----------------------------------------------------------------------

EdgeBlockImpl::EdgeBlockImpl(int64_t in_features, int64_t dim, int64_t k)
    : in_(in_features), k_(k) {
  fc1_ = register_module("fc1", dense(2 * in_features, 2 * dim));
  fc2_ = register_module("fc2", dense(2 * dim, dim));
}

Tensor EdgeBlockImpl::forward(const Tensor& points, const Tensor& feats, const Tensor& mask,
                              bool naive) {
  const int64_t b = feats.size(0), p = feats.size(1);
  const int64_t dout = fc2_->weight.size(0);
  const int64_t k = std::min<int64_t>(k_, p - 1);
  if (k <= 0) return torch::zeros({b, p, dout}, feats.options());
  auto [idx, valid] = nearestNeighbours(points, mask, k);
  Tensor h;
  if (!naive) {
    // W [f_j - f_i; f_i] + c = W1 f_j + (W2 - W1) f_i + c: project every particle once,
    // then gather the projections (K times fewer products for this layer).
    const Tensor& w = fc1_->weight;
    const int64_t hid = w.size(0);
    const Tensor w1 = w.narrow(1, 0, in_);
    const Tensor w2 = w.narrow(1, in_, in_);
    const Tensor proj = torch::matmul(feats, torch::cat({w1, w2 - w1}, 0).t());
    const Tensor nbr = gatherRows(proj.narrow(-1, 0, hid).contiguous(), idx);
    // The bias in the projection's type: under bf16 autocast an fp32 bias would promote the
    // layer's largest tensor, (B, P, K, hidden), and its GELU to fp32 (add is no autocast op).
    const Tensor self = proj.narrow(-1, hid, hid) + fc1_->bias.to(proj.scalar_type());
    h = torch::gelu(nbr + self.unsqueeze(2));
  } else {
    const Tensor fj = gatherRows(feats.contiguous(), idx);
    const Tensor fi = feats.unsqueeze(2).expand_as(fj);
    h = torch::gelu(fc1_(torch::cat({fj - fi, fi}, -1)));
  }
  h = torch::gelu(fc2_(h));
  const Tensor count = valid.sum(2, /*keepdim=*/true).clamp_min(1.0);
  // `valid` in h's type, for the same reason (a no-op in fp32).
  return (h * valid.to(h.scalar_type()).unsqueeze(-1)).sum(2) / count * mask.unsqueeze(-1);
}

// ---- FourierTime ---------------------------------------------------------------------

FourierTimeImpl::FourierTimeImpl(int64_t freqs, int64_t dim) {
  const double step = std::log(10000.0) / static_cast<double>(freqs - 1);
  freq_ = register_buffer(
      "freq", torch::exp(-step * torch::arange(freqs, torch::kFloat64)).to(torch::kFloat32));
  fc1_ = register_module("fc1", dense(2 * freqs, 2 * dim, false));
  fc2_ = register_module("fc2", dense(2 * dim, dim, false));
}

Tensor FourierTimeImpl::forward(const Tensor& t) {
  const Tensor angle = 1000.0 * t * freq_;  // (B, freqs)
  const Tensor emb = torch::cat({torch::sin(angle), torch::cos(angle)}, -1) * t;
  return torch::silu(fc2_(torch::silu(fc1_(emb))));
}

// ---- Body ----------------------------------------------------------------------------

PetBodyImpl::PetBodyImpl(const PetConfig& cfg) : cfg_(cfg) {
  const int64_t d = cfg.dim;
  in1_ = register_module("in1", dense(cfg.num_features, 2 * d));
  in2_ = register_module("in2", dense(2 * d, d));
  time_ = register_module("time", FourierTime(cfg.fourier_freqs, d));
  // No bias: FiLM is exactly the identity at t = 0 (the time embedding is 0 there).
  film_ = register_module("film", dense(d, 2 * d, false));
  local_ = register_module("local", torch::nn::ModuleList());
  for (int i = 0; i < cfg.local_blocks; ++i)
    local_->push_back(EdgeBlock(i == 0 ? cfg.num_features : d, d, cfg.k));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < cfg.blocks; ++i) blocks_->push_back(TransformerBlock(cfg));
}

Tensor PetBodyImpl::forward(const Tensor& x, const Tensor& mask, const Tensor& t,
                            bool naive_edges) {
  const Tensor m3 = mask.unsqueeze(-1);
  Tensor enc = torch::gelu(in2_(torch::gelu(in1_(x)))) * m3;
  if (t.defined()) {
    const auto ss = torch::gelu(film_(time_(t))).chunk(2, -1);
    enc = (enc * (1.0 + ss[0].unsqueeze(1)) + ss[1].unsqueeze(1)) * m3;
  }
  if (!local_->is_empty()) {
    Tensor points = x.narrow(-1, 0, 2);
    Tensor feats = x;
    for (const auto& m : *local_) {
      feats = m->as<EdgeBlockImpl>()->forward(points, feats, mask, naive_edges);
      points = feats;
    }
    enc = enc + feats;
  }
  const Tensor skip = enc;
  for (const auto& m : *blocks_) enc = m->as<TransformerBlockImpl>()->forward(enc, mask);
  return enc + skip;
}

// ---- Classifier head -----------------------------------------------------------------

ClassAttentionImpl::ClassAttentionImpl(const PetConfig& cfg) {
  const int64_t d = cfg.dim;
  norm1_ = register_module("norm1", MaskedGroupNorm(d, cfg.norm_eps));
  attn_ = register_module("attn", MaskedAttention(d, cfg.heads));
  norm2_ = register_module("norm2", MaskedGroupNorm(d, cfg.norm_eps));
  scale1_ = register_parameter("ls1", torch::full({d}, cfg.layer_scale_init));
  norm3_ = register_module("norm3", MaskedGroupNorm(d, cfg.norm_eps));
  fc1_ = register_module("fc1", dense(d, 2 * d));
  fc2_ = register_module("fc2", dense(2 * d, d));
  scale2_ = register_parameter("ls2", torch::full({d}, cfg.layer_scale_init));
}

Tensor ClassAttentionImpl::forward(const Tensor& token, const Tensor& particles,
                                   const Tensor& mask_cat) {
  const Tensor m3 = mask_cat.unsqueeze(-1);
  const Tensor one = torch::ones({token.size(0), 1, 1}, token.options());
  const Tensor x1 = norm1_(torch::cat({token, particles}, 1), m3);
  Tensor u = attn_(x1.narrow(1, 0, 1), x1, mask_cat, false);
  u = scale1_ * norm2_(u, one);
  const Tensor x2 = u + token;
  const Tensor y = fc2_(torch::gelu(fc1_(norm3_(x2, one))));
  return x2 + scale2_ * y;
}

ClassifierHeadImpl::ClassifierHeadImpl(const PetConfig& cfg) {
  const int64_t d = cfg.dim;
  jet_film_ = register_module("jet_film", dense(cfg.num_jet, 2 * d));
  token_ = register_parameter("token", torch::zeros({1, 1, d}));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < cfg.class_layers; ++i) layers_->push_back(ClassAttention(cfg));
  norm_ = register_module("norm", MaskedGroupNorm(d, cfg.norm_eps));
  logits_ = register_module("logits", dense(d, cfg.num_classes));
  jet_reg_ = register_module("jet_reg", dense(d, cfg.num_jet));
}

ClassifierOutput ClassifierHeadImpl::forward(const Tensor& enc, const Tensor& mask,
                                             const Tensor& jets) {
  const int64_t b = enc.size(0);
  const auto ss = torch::gelu(jet_film_(jets)).chunk(2, -1);
  const Tensor particles =
      (enc * (1.0 + ss[0].unsqueeze(1)) + ss[1].unsqueeze(1)) * mask.unsqueeze(-1);
  const Tensor mask_cat = torch::cat({torch::ones({b, 1}, mask.options()), mask}, 1);
  Tensor token = token_.expand({b, 1, token_.size(2)});
  for (const auto& m : *layers_)
    token = m->as<ClassAttentionImpl>()->forward(token, particles, mask_cat);
  token = norm_(token, torch::ones({b, 1, 1}, enc.options())).squeeze(1);
  return {logits_(token), jet_reg_(token)};
}

// ---- Generator head ------------------------------------------------------------------

GeneratorHeadImpl::GeneratorHeadImpl(const PetConfig& cfg) {
  const int64_t d = cfg.dim;
  time_ = register_module("time", FourierTime(cfg.fourier_freqs, d));
  jet_ = register_module("jet", dense(cfg.num_jet, d));
  cond1_ = register_module("cond1", dense(2 * d, 2 * d));
  cond2_ = register_module("cond2", dense(2 * d, d));
  label_ = register_module("label", dense(cfg.num_classes, d, false));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < cfg.gen_layers; ++i) blocks_->push_back(TransformerBlock(cfg));
  norm_ = register_module("norm", MaskedGroupNorm(d, cfg.norm_eps));
  out_ = register_module("out", dense(d, cfg.num_features));
}

Tensor GeneratorHeadImpl::forward(const Tensor& enc, const Tensor& mask, const Tensor& jets,
                                  const Tensor& labels, const Tensor& t) {
  const Tensor m3 = mask.unsqueeze(-1);
  const Tensor cond_in = torch::cat({time_(t), torch::gelu(jet_(jets))}, -1);
  const Tensor cond = torch::gelu(cond2_(torch::gelu(cond1_(cond_in)))) + label_(labels);
  Tensor x = (enc + cond.unsqueeze(1)) * m3;
  for (const auto& m : *blocks_) x = m->as<TransformerBlockImpl>()->forward(x, mask);
  return out_(norm_(x, m3)) * m3;
}

// ---- Pet -----------------------------------------------------------------------------

PetImpl::PetImpl(const PetConfig& cfg) : cfg_(cfg) {
  validatePetConfig(cfg, "PET config");
  body_ = register_module("body", PetBody(cfg));
  classifier_ = register_module("classifier", ClassifierHead(cfg));
  if (cfg.generator) generator_ = register_module("generator", GeneratorHead(cfg));
  resetParameters(0);
}

void PetImpl::resetParameters(uint64_t seed) {
  torch::NoGradGuard no_grad;
  gen_ = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    Tensor& p = item.value();
    const auto dot = name.rfind('.');
    const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
    Tensor init;
    if (p.dim() == 2) {
      // Glorot-uniform, as Keras' Dense layers in OmniLearn.
      const double limit = std::sqrt(6.0 / static_cast<double>(p.size(0) + p.size(1)));
      init = torch::empty(p.sizes(), torch::kFloat32).uniform_(-limit, limit, gen_);
    } else if (leaf == "ls1" || leaf == "ls2") {
      init = torch::full(p.sizes(), cfg_.layer_scale_init);
    } else if (leaf == "weight") {
      init = torch::ones(p.sizes());
    } else {
      init = torch::zeros(p.sizes());
    }
    p.copy_(init);
  }
}

void PetImpl::setBaseline(bool baseline) {
  naive_edges_ = baseline;
  setAttentionKernel(baseline ? AttentionKernel::kPadded : AttentionKernel::kAuto);
  for (auto& m : modules(/*include_self=*/false))
    if (auto* n = dynamic_cast<MaskedGroupNormImpl*>(m.get())) n->setFused(!baseline);
}

void PetImpl::setAttentionKernel(AttentionKernel kernel) {
  for (auto& m : modules(/*include_self=*/false))
    if (auto* a = dynamic_cast<MaskedAttentionImpl*>(m.get())) a->setKernel(kernel);
}

Tensor PetImpl::encode(const Tensor& x, const Tensor& mask, const Tensor& t) {
  Tensor input = x;
  const int64_t from = cfg_.feature_dropout_from;
  if (is_training() && cfg_.feature_dropout > 0 && from < x.size(2)) {
    const int64_t rows = draw_rows_ < 0 ? x.size(0) : std::min(draw_rows_, x.size(0));
    at::Generator& gen = drawGenerator();
    const auto on = torch::TensorOptions(torch::kFloat32).device(gen.device());
    Tensor u = torch::rand({rows, 1, 1}, gen, on);
    if (rows < x.size(0)) u = torch::cat({u, torch::ones({x.size(0) - rows, 1, 1}, on)});
    const Tensor keep =
        (u.to(x.device(), /*non_blocking=*/x.device().is_cuda()) >= cfg_.feature_dropout)
            .to(x.dtype());
    input = torch::cat({x.narrow(2, 0, from), x.narrow(2, from, x.size(2) - from) * keep}, 2);
  }
  return body_(input, mask, t, naive_edges_);
}

ClassifierOutput PetImpl::classify(const Tensor& x, const Tensor& mask, const Tensor& jets) {
  return classifier_(encode(x, mask), mask, jets);
}

ClassifierOutput PetImpl::classifyEncoded(const Tensor& enc, const Tensor& mask,
                                          const Tensor& jets) {
  return classifier_(enc, mask, jets);
}

Tensor PetImpl::velocity(const Tensor& enc, const Tensor& mask, const Tensor& jets,
                         const Tensor& labels, const Tensor& t) {
  if (!generator_) throw Error("PET built without the generator head (config generator=false)");
  return generator_(enc, mask, jets, labels, t);
}

Tensor PetImpl::labelInput(const Tensor& labels) const {
  if (cfg_.num_classes == 1) return labels.to(torch::kFloat32).view({-1, 1});
  return F::one_hot(labels.to(torch::kLong), cfg_.num_classes).to(torch::kFloat32);
}

PetParameterCounts PetImpl::parameterCounts() const {
  PetParameterCounts c;
  for (const auto& item : named_parameters(true)) {
    const int64_t n = item.value().numel();
    const std::string& name = item.key();
    if (name.rfind("body.", 0) == 0)
      c.body += n;
    else if (name.rfind("classifier.", 0) == 0)
      c.classifier += n;
    else
      c.generator += n;
    c.total += n;
  }
  return c;
}

bool PetImpl::classifierOutputIsZero() const {
  for (const auto& item : named_parameters(true))
    if (item.key().rfind("classifier.logits.", 0) == 0 && !item.value().eq(0).all().item<bool>())
      return false;
  return true;
}

std::vector<Tensor> PetImpl::bodyParameters() const {
  std::vector<Tensor> out;
  for (const auto& item : named_parameters(true))
    if (item.key().rfind("body.", 0) == 0) out.push_back(item.value());
  return out;
}

std::vector<Tensor> PetImpl::headParameters() const {
  std::vector<Tensor> out;
  for (const auto& item : named_parameters(true))
    if (item.key().rfind("body.", 0) != 0) out.push_back(item.value());
  return out;
}

double petForwardFlops(const PetConfig& cfg, double n, bool pretrain) {
  const double d = cfg.dim, f = cfg.num_features, k = std::min<double>(cfg.k, std::max(0.0, n - 1));
  auto block = [&](double m) { return m * (4 * d * d + 4 * d * d) + 2 * m * m * d; };
  double body = n * (f * 2 * d + 2 * d * d);
  for (int i = 0; i < cfg.local_blocks; ++i) {
    const double in = i == 0 ? f : d;
    body += n * in * 4 * d + n * k * 2 * d * d + (i == 0 ? 0 : n * n * d);
  }
  body += cfg.blocks * block(n);
  double cls = 0;
  for (int i = 0; i < cfg.class_layers; ++i)
    cls += (n + 1) * 2 * d * d + d * d + 2 * (n + 1) * d + d * d + 4 * d * d;
  cls += d * (cfg.num_classes + cfg.num_jet);
  double macs = body + cls;
  if (pretrain) {
    const double gen = 4 * d * d + 2 * d * d + cfg.gen_layers * block(n) + n * d * f;
    macs += body + cls + gen;
  }
  return 2.0 * macs;
}

}  // namespace foldfarm
