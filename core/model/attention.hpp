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
// maskedAttention picks the trimmed path for float32 CPU tensors when a CBLAS sgemm is
// loaded in the process (LibTorch's BLAS), else the padded one.
#include <torch/types.h>

namespace foldfarm {

// q (B, H, Nq, Dh), k and v (B, H, Nk, Dh), key_mask (B, Nk) float (1 real, 0 padding),
// query_extent (B) int64: queries at or beyond it are padding (their output rows are 0 in
// the trimmed path; callers mask them anyway). Returns (B, H, Nq, Dh).
torch::Tensor maskedAttention(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const torch::Tensor& key_mask,
                              const torch::Tensor& query_extent, double scale);
torch::Tensor maskedAttentionPadded(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, const torch::Tensor& key_mask,
                                    double scale);
torch::Tensor maskedAttentionTrimmed(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& key_mask,
                                     const torch::Tensor& query_extent, double scale);

// True when the trimmed path can run here (a CBLAS sgemm is available).
bool trimmedAttentionAvailable();

// Index one past the last real entry of each row of a (B, N) float mask; rows without any
// real entry get 0.
torch::Tensor maskExtent(const torch::Tensor& mask);

}  // namespace foldfarm
