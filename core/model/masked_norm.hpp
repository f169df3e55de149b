#pragma once
// PET's normalisation: GroupNorm with one group over the real particles (rows) and all
// channels of each jet, computed in one fused CPU kernel with its own backward.
//
// The composed version (masked sums, centring, variance, scale and shift as separate
// tensor ops, about ten passes over the activations forward and twice that backward) is
// kept in MaskedGroupNormImpl as the reference and the benchmark baseline. The fused
// kernel reads each jet's real rows once for the statistics and once for the output,
// never touches padded rows beyond writing their zeros, and runs jets in parallel.
#include <torch/types.h>

namespace foldfarm {

// x (B, N, D) float32 CPU, mask (B, N, 1) or (B, 1, 1) float (1 real row, 0 padding),
// weight and bias (D). Output (B, N, D), 0 on padded rows.
torch::Tensor maskedGroupNormFused(const torch::Tensor& x, const torch::Tensor& mask,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   double eps);

}  // namespace foldfarm
