#pragma once
// Scaled dot-product attention over masked keys, as PET's attention layers use it.
//
// Two implementations with the same results:
//  - maskedAttentionPadded: batched tensor ops over the full padded width (the reference,
//    and the benchmark baseline);
//  - maskedAttentionTrimmed: each (jet, head) product is computed only over that jet's
//    real extent (queries and keys up to its last real particle), with one small BLAS
//    product per (jet, head) spread over the intra-op threads. LibTorch 1.x runs a CPU
//    bmm as a serial loop of per-matrix products with several tensor views per matrix;
//    for PET's many small matrices that loop, not the arithmetic, dominated attention.
//  - maskedAttentionSdpa: LibTorch's fused scaled_dot_product_attention (flash or
//    memory-efficient kernels on a GPU) with a finite additive key mask; LibTorch >= 2.0.
// maskedAttention picks the SDPA path for CUDA tensors, the trimmed path for float32 CPU
// tensors when a CBLAS sgemm is loaded in the process (LibTorch's BLAS), else the padded one.
//
// Padding keys get a large negative finite score (never -inf), so that a jet without any
// real key stays finite: it attends uniformly over all its keys, and its queries and keys
// get no gradient, in every path.
#include <torch/types.h>

namespace foldfarm {

// Which implementation an attention layer runs (PET's MaskedAttention::setKernel).
//  kAuto: maskedAttention's choice by device (SDPA on CUDA, else trimmed when available,
//    else padded); what training and inference use.
//  kPadded: maskedAttentionPadded (the benchmark baseline).
//  kSdpa: maskedAttentionSdpa on any device (on LibTorch 1.x SDPA's definition on its
//    inputs), so that the GPU's attention runs in a whole model on the CPU (tests).
enum class AttentionKernel { kAuto, kPadded, kSdpa };

// q (B, H, Nq, Dh), k and v (B, H, Nk, Dh), key_mask (B, Nk) float (1 real, 0 padding),
// query_extent (B) int64: queries at or beyond it are padding (their output rows are 0 in
// the trimmed path; callers mask them anyway). Returns (B, H, Nq, Dh).
torch::Tensor maskedAttention(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const torch::Tensor& key_mask,
                              const torch::Tensor& query_extent, double scale);
torch::Tensor maskedAttentionPadded(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, const torch::Tensor& key_mask,
                                    double scale);
// The padded path's result from at::scaled_dot_product_attention (any device, any floating
// dtype), with no attention mask: key_mask (B, Nk) rides in the product, q' = [q, 1, 0…],
// k' = [k, m/scale, 0…], v' = [v, 0…] (one width, a multiple of 8), m = 0 for real keys and
// -1e9 for padding (-32752, half the lowest finite value, for float16), so that SDPA neither
// expands a mask to (B, H, Nq, Nk) nor is kept from flash attention; the queries of a jet
// without real keys are zeroed first (uniform weights, no gradient to q and k, as in the
// other paths). All query rows are computed; padding queries are the caller's to mask.
// LibTorch 2.0 has no `scale` argument: q is prescaled. LibTorch 1.x has no SDPA: there the
// operator's definition, softmax(scale q' k'ᵀ) v', runs on the same inputs.
torch::Tensor maskedAttentionSdpa(const torch::Tensor& q, const torch::Tensor& k,
                                  const torch::Tensor& v, const torch::Tensor& key_mask,
                                  double scale);
torch::Tensor maskedAttentionTrimmed(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& key_mask,
                                     const torch::Tensor& query_extent, double scale);

// Whether maskedAttentionWith(kernel, q, ...) reads its query_extent (kAuto taking the
// trimmed path): callers compute the extent only then (on a GPU it would be kernel launches
// for nothing); otherwise an undefined tensor may be passed.
bool attentionReadsQueryExtent(AttentionKernel kernel, const torch::Tensor& q);
// The implementation `kernel` names (kAuto: maskedAttention).
torch::Tensor maskedAttentionWith(AttentionKernel kernel, const torch::Tensor& q,
                                  const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& key_mask, const torch::Tensor& query_extent,
                                  double scale);

// True when the trimmed path can run here (a CBLAS sgemm is available).
bool trimmedAttentionAvailable();

// Index one past the last real entry of each row of a (B, N) float mask; rows without any
// real entry get 0.
torch::Tensor maskExtent(const torch::Tensor& mask);

}  // namespace foldfarm
