#pragma once
// CUDA kernels of the fused masked GroupNorm (core/model/masked_norm.hpp): the same contract
// and the same arithmetic as the CPU kernel, on raw device pointers, so that this header
// needs no LibTorch and the kernels compile with nvcc alone. masked_norm.cpp wraps them in
// an autograd function on LibTorch's current stream.
//
// Layout, for every launcher: x, y, gy and gx are (B, N, D) row-major contiguous in the
// activation dtype (float or bfloat16); mask is (B, N) float32, 1 for a real row and 0 for
// padding (only `!= 0` matters); weight, bias, stats, gw and gb are float32, and every sum is
// accumulated in float32. stats is (B, 2): each jet's mean and 1/sqrt(var + eps) over its
// real rows and all D channels. A jet without real rows gets mean 0, rstd 1/sqrt(eps), an
// output and an input gradient of zeros, and no contribution to gw and gb.
//
// Kernel design: one thread block per jet. The forward makes two reductions over the jet's
// real rows (the mean, then the centred variance, as the CPU kernel does) and one pass that
// writes the output. The backward accumulates per-column partial sums of gy * xhat and gy
// into (B, D) workspaces in a fixed order, and a column sum adds those over the jets (in
// chunks of 64 jets, then over the chunks), so that gw and gb are deterministic (no atomics).
//
// Preconditions (checked by the caller, not here): all pointers on the current device, N * D
// below 2^31, B below 2^31. Launchers are asynchronous on `stream` and return once the
// kernels are queued. Errors: std::runtime_error naming the kernel and CUDA's reason when a
// launch fails (cudaGetLastError after each launch); errors of the kernels' execution
// surface at the next synchronising CUDA call, as for any kernel.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace foldfarm {

// y (B, N, D) and stats (B, 2) from x, mask, weight (D) and bias (D).
void maskedGroupNormForwardCuda(const float* x, const float* mask, const float* weight,
                                const float* bias, float* y, float* stats, int64_t B, int64_t N,
                                int64_t D, float eps, cudaStream_t stream);
void maskedGroupNormForwardCuda(const __nv_bfloat16* x, const float* mask, const float* weight,
                                const float* bias, __nv_bfloat16* y, float* stats, int64_t B,
                                int64_t N, int64_t D, float eps, cudaStream_t stream);

// gx (B, N, D), gw (D) and gb (D) from gy (B, N, D) and the forward's x, mask, weight and
// stats. gw_part and gb_part are caller-owned float32 workspaces of
// maskedGroupNormWorkspaceRows(B) * D each; they are overwritten.
int64_t maskedGroupNormWorkspaceRows(int64_t B);
void maskedGroupNormBackwardCuda(const float* x, const float* gy, const float* mask,
                                 const float* weight, const float* stats, float* gx, float* gw_part,
                                 float* gb_part, float* gw, float* gb, int64_t B, int64_t N,
                                 int64_t D, cudaStream_t stream);
void maskedGroupNormBackwardCuda(const __nv_bfloat16* x, const __nv_bfloat16* gy, const float* mask,
                                 const float* weight, const float* stats, __nv_bfloat16* gx,
                                 float* gw_part, float* gb_part, float* gw, float* gb, int64_t B,
                                 int64_t N, int64_t D, cudaStream_t stream);

}  // namespace foldfarm
