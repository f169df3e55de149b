#include "core/model/masked_norm.hpp"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/base/error.hpp"

// The CUDA path needs both the kernels (nvcc) and a LibTorch with CUDA (streams, guards).
#if defined(FOLDFARM_HAVE_CUDA_KERNELS) && defined(FOLDFARM_TORCH_CUDA)
#define FOLDFARM_MASKED_NORM_CUDA 1
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "core/model/masked_norm_cuda.cuh"
#endif

namespace foldfarm {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Row mask (B, N) contiguous from (B, N, 1) or a broadcastable (B, 1, 1).
Tensor rowMask(const Tensor& mask, int64_t b, int64_t n) {
  return mask.to(torch::kFloat32).reshape({mask.size(0), mask.size(1)}).expand({b, n}).contiguous();
}

class FusedMaskedGroupNorm : public torch::autograd::Function<FusedMaskedGroupNorm> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& mask,
                        const Tensor& weight, const Tensor& bias, double eps) {
    const Tensor x = x_in.contiguous();
    const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
    const Tensor m = rowMask(mask, B, N);
    const Tensor w = weight.contiguous(), bi = bias.contiguous();
    Tensor y = torch::empty_like(x);
    Tensor stats = torch::empty({B, 2}, x.options());  // mean, 1/std per jet
    const float* xp = x.data_ptr<float>();
    const float* mp = m.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* bp = bi.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* sp = stats.data_ptr<float>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(static_cast<size_t>(D));
      for (int64_t b = begin; b < end; ++b) {
        const float* xb = xp + b * N * D;
        const float* mb = mp + b * N;
        float* yb = yp + b * N * D;
        std::fill(acc.begin(), acc.end(), 0.0f);
        int64_t rows = 0;
        for (int64_t p = 0; p < N; ++p) {
          if (mb[p] == 0.0f) continue;
          ++rows;
          const float* r = xb + p * D;
          for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += r[d];
        }
        const double n = std::max<double>(1.0, static_cast<double>(rows * D));
        double total = 0;
        for (float a : acc) total += a;
        const float mean = static_cast<float>(total / n);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t p = 0; p < N; ++p) {
          if (mb[p] == 0.0f) continue;
          const float* r = xb + p * D;
          for (int64_t d = 0; d < D; ++d) {
            const float c = r[d] - mean;
            acc[static_cast<size_t>(d)] += c * c;
          }
        }
        total = 0;
        for (float a : acc) total += a;
        const float rstd = static_cast<float>(1.0 / std::sqrt(total / n + eps));
        sp[2 * b] = mean;
        sp[2 * b + 1] = rstd;
        for (int64_t p = 0; p < N; ++p) {
          float* o = yb + p * D;
          if (mb[p] == 0.0f) {
            std::fill(o, o + D, 0.0f);
            continue;
          }
          const float* r = xb + p * D;
          for (int64_t d = 0; d < D; ++d) o[d] = (r[d] - mean) * rstd * wp[d] + bp[d];
        }
      }
    });
    ctx->save_for_backward({x, m, w, stats});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &m = saved[1], &w = saved[2], &stats = saved[3];
    const Tensor gy = grads[0].contiguous();
    const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
    Tensor gx = torch::empty_like(x);
    Tensor gw_part = torch::zeros({B, D}, x.options()), gb_part = torch::zeros({B, D}, x.options());
    const float* xp = x.data_ptr<float>();
    const float* mp = m.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* sp = stats.data_ptr<float>();
    const float* gp = gy.data_ptr<float>();
    float* gxp = gx.data_ptr<float>();
    float* gwp = gw_part.data_ptr<float>();
    float* gbp = gb_part.data_ptr<float>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> s1(static_cast<size_t>(D)), s2(static_cast<size_t>(D));
      for (int64_t b = begin; b < end; ++b) {
        const float* xb = xp + b * N * D;
        const float* gb = gp + b * N * D;
        const float* mb = mp + b * N;
        float* gxb = gxp + b * N * D;
        float* gwb = gwp + b * D;
        float* gbb = gbp + b * D;
        const float mean = sp[2 * b], rstd = sp[2 * b + 1];
        std::fill(s1.begin(), s1.end(), 0.0f);
        std::fill(s2.begin(), s2.end(), 0.0f);
        int64_t rows = 0;
        for (int64_t p = 0; p < N; ++p) {
          if (mb[p] == 0.0f) continue;
          ++rows;
          const float* r = xb + p * D;
          const float* g = gb + p * D;
          for (int64_t d = 0; d < D; ++d) {
            const float xhat = (r[d] - mean) * rstd;
            gwb[d] += g[d] * xhat;
            gbb[d] += g[d];
            const float gw = g[d] * wp[d];
            s1[static_cast<size_t>(d)] += gw;
            s2[static_cast<size_t>(d)] += gw * xhat;
          }
        }
        const double n = std::max<double>(1.0, static_cast<double>(rows * D));
        double t1 = 0, t2 = 0;
        for (int64_t d = 0; d < D; ++d) {
          t1 += s1[static_cast<size_t>(d)];
          t2 += s2[static_cast<size_t>(d)];
        }
        const float m1 = static_cast<float>(t1 / n), m2 = static_cast<float>(t2 / n);
        for (int64_t p = 0; p < N; ++p) {
          float* o = gxb + p * D;
          if (mb[p] == 0.0f) {
            std::fill(o, o + D, 0.0f);
            continue;
          }
          const float* r = xb + p * D;
          const float* g = gb + p * D;
          for (int64_t d = 0; d < D; ++d) {
            const float xhat = (r[d] - mean) * rstd;
            o[d] = rstd * (g[d] * wp[d] - m1 - xhat * m2);
          }
        }
      }
    });
    return {gx, Tensor(), gw_part.sum(0), gb_part.sum(0), Tensor()};
  }
};

#ifdef FOLDFARM_MASKED_NORM_CUDA

static_assert(sizeof(at::BFloat16) == sizeof(__nv_bfloat16) &&
                  alignof(at::BFloat16) == alignof(__nv_bfloat16),
              "at::BFloat16 and __nv_bfloat16 must share their layout");

const __nv_bfloat16* bf16(const Tensor& t) {
  return reinterpret_cast<const __nv_bfloat16*>(t.data_ptr<at::BFloat16>());
}
__nv_bfloat16* bf16Out(const Tensor& t) {
  return reinterpret_cast<__nv_bfloat16*>(t.data_ptr<at::BFloat16>());
}

// The CUDA kernels of masked_norm_cuda.cuh on the current stream of x's device. x, y, the
// incoming and outgoing gradients keep x's dtype (float32 or bfloat16); the row mask,
// weight, bias, statistics and parameter gradients are float32, the latter cast back to the
// parameters' dtype.
class CudaFusedMaskedGroupNorm : public torch::autograd::Function<CudaFusedMaskedGroupNorm> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& mask,
                        const Tensor& weight, const Tensor& bias, double eps) {
    const c10::cuda::CUDAGuard guard(x_in.device());
    const Tensor x = x_in.contiguous();
    const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
    const Tensor m = rowMask(mask.to(x.device()), B, N);
    const Tensor w = weight.to(torch::kFloat32).contiguous();
    const Tensor bi = bias.to(torch::kFloat32).contiguous();
    Tensor y = torch::empty({B, N, D}, x.options());
    Tensor stats = torch::empty({B, 2}, x.options().dtype(torch::kFloat32));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    const float e = static_cast<float>(eps);
    if (x.scalar_type() == torch::kBFloat16)
      maskedGroupNormForwardCuda(bf16(x), m.data_ptr<float>(), w.data_ptr<float>(),
                                 bi.data_ptr<float>(), bf16Out(y), stats.data_ptr<float>(), B, N, D,
                                 e, stream);
    else
      maskedGroupNormForwardCuda(x.data_ptr<float>(), m.data_ptr<float>(), w.data_ptr<float>(),
                                 bi.data_ptr<float>(), y.data_ptr<float>(), stats.data_ptr<float>(),
                                 B, N, D, e, stream);
    ctx->save_for_backward({x, m, w, stats});
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &m = saved[1], &w = saved[2], &stats = saved[3];
    const c10::cuda::CUDAGuard guard(x.device());
    const Tensor gy = grads[0].to(x.scalar_type()).contiguous();
    const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
    const auto f32 = x.options().dtype(torch::kFloat32);
    Tensor gx = torch::empty({B, N, D}, x.options());
    // Per-jet column partials of gw and gb (and room for their sums per chunk of jets),
    // summed over the jets by the column sum.
    const int64_t rows = maskedGroupNormWorkspaceRows(B);
    Tensor partials = torch::empty({2, rows, D}, f32);
    Tensor gw = torch::empty({D}, f32), gb = torch::empty({D}, f32);
    float* gw_part = partials.data_ptr<float>();
    float* gb_part = gw_part + rows * D;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    if (x.scalar_type() == torch::kBFloat16)
      maskedGroupNormBackwardCuda(bf16(x), bf16(gy), m.data_ptr<float>(), w.data_ptr<float>(),
                                  stats.data_ptr<float>(), bf16Out(gx), gw_part, gb_part,
                                  gw.data_ptr<float>(), gb.data_ptr<float>(), B, N, D, stream);
    else
      maskedGroupNormBackwardCuda(x.data_ptr<float>(), gy.data_ptr<float>(), m.data_ptr<float>(),
                                  w.data_ptr<float>(), stats.data_ptr<float>(),
                                  gx.data_ptr<float>(), gw_part, gb_part, gw.data_ptr<float>(),
                                  gb.data_ptr<float>(), B, N, D, stream);
    const auto weight_dtype = static_cast<c10::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    const auto bias_dtype = static_cast<c10::ScalarType>(ctx->saved_data["bias_dtype"].toInt());
    return {gx, Tensor(), gw.to(weight_dtype), gb.to(bias_dtype), Tensor()};
  }
};

#endif  // FOLDFARM_MASKED_NORM_CUDA

}  // namespace

bool maskedGroupNormFusedSupports(const Tensor& x) {
  if (x.dim() != 3) return false;
  if (x.device().is_cpu()) return x.scalar_type() == torch::kFloat32;
#ifdef FOLDFARM_MASKED_NORM_CUDA
  if (x.device().is_cuda())
    return x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16;
#endif
  return false;
}

Tensor maskedGroupNormFused(const Tensor& x, const Tensor& mask, const Tensor& weight,
                            const Tensor& bias, double eps) {
  if (!maskedGroupNormFusedSupports(x))
    throw Error("fused masked GroupNorm: no kernel for a " + std::to_string(x.dim()) + "-D " +
                c10::toString(x.scalar_type()) + " tensor on " + x.device().str() +
                " (it takes 3-D float32 on the CPU, and float32 or bfloat16 on CUDA in a build "
                "with the CUDA kernels); use MaskedGroupNorm's composed path for others");
  if (weight.device() != x.device() || bias.device() != x.device())
    throw Error("fused masked GroupNorm: weight and bias must be on the input's device " +
                x.device().str());
#ifdef FOLDFARM_MASKED_NORM_CUDA
  if (x.device().is_cuda()) return CudaFusedMaskedGroupNorm::apply(x, mask, weight, bias, eps);
#endif
  return FusedMaskedGroupNorm::apply(x, mask, weight, bias, eps);
}

}  // namespace foldfarm
