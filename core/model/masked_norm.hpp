#pragma once
// PET's normalisation: GroupNorm with one group over the real particles (rows) and all
// channels of each jet, computed in one fused CPU kernel with its own backward.
//
// The composed version (masked sums, centring, variance, scale and shift as separate
// tensor ops, about ten passes over the activations forward and twice that backward) is
// kept in MaskedGroupNormImpl as the reference and the benchmark baseline. The fused
// kernel reads each jet's real rows once for the statistics and once for the output,
// never touches padded rows beyond writing their zeros, and runs jets in parallel.
//
// On CUDA tensors the same kernel runs on the GPU (core/model/masked_norm_cuda.cuh: one
// thread block per jet, float32 or bfloat16 activations, float32 statistics and sums,
// deterministic weight and bias gradients) on LibTorch's current stream, when foldfarm was
// built with its CUDA kernels (nvcc found) against a LibTorch with CUDA.
#include <torch/types.h>

namespace foldfarm {

// x (B, N, D), mask (B, N, 1) or (B, 1, 1) float (1 real row, 0 padding), weight and bias
// (D). Output (B, N, D) in x's dtype, 0 on padded rows; a jet without real rows gives zeros.
// x: float32 on the CPU; float32 or bfloat16 on a CUDA device when the CUDA kernels are
// built (weight and bias are then used as float32 and may be any floating dtype; mask and
// parameters must be on x's device). Throws Error for an x that
// maskedGroupNormFusedSupports refuses.
torch::Tensor maskedGroupNormFused(const torch::Tensor& x, const torch::Tensor& mask,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   double eps);

// True when maskedGroupNormFused runs for x: 3-D float32 on the CPU; 3-D float32 or
// bfloat16 on a CUDA device in a build with the CUDA kernels and a CUDA LibTorch.
bool maskedGroupNormFusedSupports(const torch::Tensor& x);

}  // namespace foldfarm
