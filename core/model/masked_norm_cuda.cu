#include "core/model/masked_norm_cuda.cuh"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

namespace foldfarm {
namespace {

// Threads per block (a multiple of the warp size). A block is one jet; PET's jets are a few
// hundred rows of 64 to 256 channels, a few tens of thousands of elements.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// The backward's column chunk: the 32 lanes of a warp read 32 adjacent channels of one row.
constexpr int kColumns = 32;

// Launch errors (bad configuration, no kernel image for this GPU) are reported by the next
// cudaGetLastError of this runtime; a kernel's execution errors surface later, at the next
// synchronising call.
void checkLaunch(const char* kernel, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA kernel ") + kernel + " failed to launch at " + file +
                             ":" + std::to_string(line) + ": " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
}
#define FF_CUDA_CHECK_LAUNCH(kernel) checkLaunch(kernel, __FILE__, __LINE__)

void checkCall(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                             ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}
#define FF_CUDA_CHECK(expr) checkCall((expr), #expr, __FILE__, __LINE__)

void checkShape(const char* what, int64_t B, int64_t N, int64_t D) {
  if (B < 0 || N < 0 || D < 0 || B > INT_MAX || (N > 0 && D > INT_MAX / N))
    throw std::invalid_argument(std::string(what) + ": shape (" + std::to_string(B) + ", " +
                                std::to_string(N) + ", " + std::to_string(D) +
                                ") out of range (B and N * D must be below 2^31)");
}

__device__ __forceinline__ float load(const float* p) {
  return *p;
}
__device__ __forceinline__ float load(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

__device__ __forceinline__ void store(float* p, float v) {
  *p = v;
}
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16(v);
}

// Butterfly sum over a warp: every lane ends with the same bits.
__device__ __forceinline__ float warpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block in a fixed order, returned to every thread. Every thread of the block
// must call it; `scratch` holds kWarps floats and may be reused by the next call.
__device__ float blockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpSum(v);
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return warpSum(lane < kWarps ? scratch[lane] : 0.0f);
}

// Number of real rows times D, at least 1 (so that an empty jet divides 0 by 1).
__device__ float realCount(const float* mb, int N, int D, float* scratch) {
  float rows = 0.0f;
  for (int p = threadIdx.x; p < N; p += kThreads) rows += mb[p] != 0.0f ? 1.0f : 0.0f;
  return fmaxf(1.0f, blockSum(rows, scratch) * static_cast<float>(D));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    maskedGroupNormForwardKernel(const T* __restrict__ x, const float* __restrict__ mask,
                                 const float* __restrict__ weight, const float* __restrict__ bias,
                                 T* __restrict__ y, float* __restrict__ stats, int N, int D,
                                 float eps) {
  __shared__ float scratch[kWarps];
  const int64_t b = blockIdx.x;
  const int nd = N * D;
  const T* xb = x + b * nd;
  T* yb = y + b * nd;
  const float* mb = mask + b * N;

  const float n = realCount(mb, N, D, scratch);
  float sum = 0.0f;
  for (int e = threadIdx.x; e < nd; e += kThreads)
    if (mb[e / D] != 0.0f) sum += load(xb + e);
  const float mean = blockSum(sum, scratch) / n;
  // Centred second pass, as the CPU kernel: no cancellation for jets far from zero mean.
  float sq = 0.0f;
  for (int e = threadIdx.x; e < nd; e += kThreads) {
    if (mb[e / D] == 0.0f) continue;
    const float c = load(xb + e) - mean;
    sq += c * c;
  }
  const float rstd = 1.0f / sqrtf(blockSum(sq, scratch) / n + eps);
  if (threadIdx.x == 0) {
    stats[2 * b] = mean;
    stats[2 * b + 1] = rstd;
  }
  for (int e = threadIdx.x; e < nd; e += kThreads) {
    const int p = e / D, d = e - p * D;
    store(yb + e, mb[p] != 0.0f ? (load(xb + e) - mean) * rstd * weight[d] + bias[d] : 0.0f);
  }
}

// Per jet: the column partials of gw (sum of gy * xhat) and gb (sum of gy) over its real rows,
// and gx = rstd * (gy * w - mean(gy * w) - xhat * mean(gy * w * xhat)) on real rows, 0 on
// padding (the means over the real rows and all channels).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    maskedGroupNormBackwardKernel(const T* __restrict__ x, const T* __restrict__ gy,
                                  const float* __restrict__ mask, const float* __restrict__ weight,
                                  const float* __restrict__ stats, T* __restrict__ gx,
                                  float* __restrict__ gw_part, float* __restrict__ gb_part, int N,
                                  int D) {
  __shared__ float scratch[kWarps];
  __shared__ float col_gw[kWarps][kColumns];
  __shared__ float col_gb[kWarps][kColumns];
  const int64_t b = blockIdx.x;
  const int nd = N * D;
  const T* xb = x + b * nd;
  const T* gyb = gy + b * nd;
  T* gxb = gx + b * nd;
  const float* mb = mask + b * N;
  const float mean = stats[2 * b], rstd = stats[2 * b + 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  const float n = realCount(mb, N, D, scratch);
  float s1 = 0.0f, s2 = 0.0f;
  // Warp w takes rows w, w + kWarps, ... of each 32-column chunk; the warps' column sums
  // are then added in warp order, so the partials do not depend on scheduling.
  for (int d0 = 0; d0 < D; d0 += kColumns) {
    const int d = d0 + lane;
    float acc_gw = 0.0f, acc_gb = 0.0f;
    if (d < D) {
      const float w = weight[d];
      for (int p = warp; p < N; p += kWarps) {
        if (mb[p] == 0.0f) continue;
        const int e = p * D + d;
        const float g = load(gyb + e);
        const float xhat = (load(xb + e) - mean) * rstd;
        acc_gw += g * xhat;
        acc_gb += g;
        const float gw = g * w;
        s1 += gw;
        s2 += gw * xhat;
      }
    }
    col_gw[warp][lane] = acc_gw;
    col_gb[warp][lane] = acc_gb;
    __syncthreads();
    if (warp == 0 && d < D) {
      float tw = 0.0f, tb = 0.0f;
      for (int r = 0; r < kWarps; ++r) {
        tw += col_gw[r][lane];
        tb += col_gb[r][lane];
      }
      gw_part[b * D + d] = tw;
      gb_part[b * D + d] = tb;
    }
    __syncthreads();  // before the next chunk overwrites col_gw and col_gb
  }
  const float m1 = blockSum(s1, scratch) / n;
  const float m2 = blockSum(s2, scratch) / n;
  for (int e = threadIdx.x; e < nd; e += kThreads) {
    const int p = e / D, d = e - p * D;
    float v = 0.0f;
    if (mb[p] != 0.0f) {
      const float xhat = (load(xb + e) - mean) * rstd;
      v = rstd * (load(gyb + e) * weight[d] - m1 - xhat * m2);
    }
    store(gxb + e, v);
  }
}

// Rows summed by one block of the column sum's first pass: 8 per warp (more when the chunks
// would exceed a grid's 65535 blocks in y).
constexpr int kRowsPerBlock = 64;
constexpr int64_t kMaxGridY = 65535;

int64_t chunkSize(int64_t B) {
  return std::max<int64_t>(kRowsPerBlock, (B + kMaxGridY - 1) / kMaxGridY);
}

// Rows of the first pass's output: one per chunk of jets, or none when one block sums all the
// jets at once.
int64_t chunkRows(int64_t B) {
  const int64_t size = chunkSize(B);
  return B > size ? (B + size - 1) / size : 0;
}

// out_w[c, d] = sum of in_w[b, d] over the rows b of chunk c (rows c * rows_per_block up to
// rows_per_block of them), out_b likewise; block (x, c) takes 32 columns of chunk c, warp w
// summing its rows w, w + kWarps, ..., then the warps in order (deterministic). Launched over
// (B / 64) x (D / 32) blocks and then once more over the chunks' sums, so that the whole
// chip works (one pass with a block per 32 columns kept 4 of an H100's 132 SMs busy for
// D = 128: about a millisecond per step at batch 4096).
__global__ void __launch_bounds__(kThreads)
    columnSumKernel(const float* __restrict__ in_w, const float* __restrict__ in_b,
                    float* __restrict__ out_w, float* __restrict__ out_b, int rows,
                    int rows_per_block, int D) {
  __shared__ float col_gw[kWarps][kColumns];
  __shared__ float col_gb[kWarps][kColumns];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int d = blockIdx.x * kColumns + lane;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t last = first + rows_per_block;
  const int64_t end = last < rows ? last : rows;
  float tw = 0.0f, tb = 0.0f;
  if (d < D) {
    for (int64_t b = first + warp; b < end; b += kWarps) {
      tw += in_w[b * D + d];
      tb += in_b[b * D + d];
    }
  }
  col_gw[warp][lane] = tw;
  col_gb[warp][lane] = tb;
  __syncthreads();
  if (warp == 0 && d < D) {
    float sw = 0.0f, sb = 0.0f;
    for (int r = 0; r < kWarps; ++r) {
      sw += col_gw[r][lane];
      sb += col_gb[r][lane];
    }
    out_w[blockIdx.y * static_cast<int64_t>(D) + d] = sw;
    out_b[blockIdx.y * static_cast<int64_t>(D) + d] = sb;
  }
}

// gw[d] = sum_b gw_part[b, d] and gb likewise. With more than kRowsPerBlock jets, the first
// pass writes each chunk's sums to rows B.. of the workspaces, and the second sums those.
void launchColumnSum(float* gw_part, float* gb_part, float* gw, float* gb, int64_t B, int64_t D,
                     cudaStream_t stream) {
  const unsigned column_blocks = static_cast<unsigned>((D + kColumns - 1) / kColumns);
  const int64_t chunks = chunkRows(B);
  const float *in_w = gw_part, *in_b = gb_part;
  int64_t rows = B;
  if (chunks > 0) {
    float* chunk_w = gw_part + B * D;
    float* chunk_b = gb_part + B * D;
    columnSumKernel<<<dim3(column_blocks, static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(
        gw_part, gb_part, chunk_w, chunk_b, static_cast<int>(B), static_cast<int>(chunkSize(B)),
        static_cast<int>(D));
    FF_CUDA_CHECK_LAUNCH("columnSumKernel (masked GroupNorm gradients, per chunk of jets)");
    in_w = chunk_w;
    in_b = chunk_b;
    rows = chunks;
  }
  columnSumKernel<<<dim3(column_blocks, 1), kThreads, 0, stream>>>(
      in_w, in_b, gw, gb, static_cast<int>(rows), static_cast<int>(rows), static_cast<int>(D));
  FF_CUDA_CHECK_LAUNCH("columnSumKernel (masked GroupNorm weight and bias gradients)");
}

template <typename T>
void launchForward(const T* x, const float* mask, const float* weight, const float* bias, T* y,
                   float* stats, int64_t B, int64_t N, int64_t D, float eps, cudaStream_t stream) {
  checkShape("maskedGroupNormForwardCuda", B, N, D);
  if (B == 0) return;
  maskedGroupNormForwardKernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
      x, mask, weight, bias, y, stats, static_cast<int>(N), static_cast<int>(D), eps);
  FF_CUDA_CHECK_LAUNCH("maskedGroupNormForwardKernel");
}

template <typename T>
void launchBackward(const T* x, const T* gy, const float* mask, const float* weight,
                    const float* stats, T* gx, float* gw_part, float* gb_part, float* gw, float* gb,
                    int64_t B, int64_t N, int64_t D, cudaStream_t stream) {
  checkShape("maskedGroupNormBackwardCuda", B, N, D);
  if (D == 0) return;
  if (B == 0) {
    FF_CUDA_CHECK(cudaMemsetAsync(gw, 0, static_cast<size_t>(D) * sizeof(float), stream));
    FF_CUDA_CHECK(cudaMemsetAsync(gb, 0, static_cast<size_t>(D) * sizeof(float), stream));
    return;
  }
  maskedGroupNormBackwardKernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
      x, gy, mask, weight, stats, gx, gw_part, gb_part, static_cast<int>(N), static_cast<int>(D));
  FF_CUDA_CHECK_LAUNCH("maskedGroupNormBackwardKernel");
  launchColumnSum(gw_part, gb_part, gw, gb, B, D, stream);
}

}  // namespace

int64_t maskedGroupNormWorkspaceRows(int64_t B) {
  return B + chunkRows(B);
}

void maskedGroupNormForwardCuda(const float* x, const float* mask, const float* weight,
                                const float* bias, float* y, float* stats, int64_t B, int64_t N,
                                int64_t D, float eps, cudaStream_t stream) {
  launchForward(x, mask, weight, bias, y, stats, B, N, D, eps, stream);
}

void maskedGroupNormForwardCuda(const __nv_bfloat16* x, const float* mask, const float* weight,
                                const float* bias, __nv_bfloat16* y, float* stats, int64_t B,
                                int64_t N, int64_t D, float eps, cudaStream_t stream) {
  launchForward(x, mask, weight, bias, y, stats, B, N, D, eps, stream);
}

void maskedGroupNormBackwardCuda(const float* x, const float* gy, const float* mask,
                                 const float* weight, const float* stats, float* gx, float* gw_part,
                                 float* gb_part, float* gw, float* gb, int64_t B, int64_t N,
                                 int64_t D, cudaStream_t stream) {
  launchBackward(x, gy, mask, weight, stats, gx, gw_part, gb_part, gw, gb, B, N, D, stream);
}

void maskedGroupNormBackwardCuda(const __nv_bfloat16* x, const __nv_bfloat16* gy, const float* mask,
                                 const float* weight, const float* stats, __nv_bfloat16* gx,
                                 float* gw_part, float* gb_part, float* gw, float* gb, int64_t B,
                                 int64_t N, int64_t D, cudaStream_t stream) {
  launchBackward(x, gy, mask, weight, stats, gx, gw_part, gb_part, gw, gb, B, N, D, stream);
}

}  // namespace foldfarm
