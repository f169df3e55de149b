#include "core/model/masked_norm.hpp"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

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

}  // namespace

Tensor maskedGroupNormFused(const Tensor& x, const Tensor& mask, const Tensor& weight,
                            const Tensor& bias, double eps) {
  return FusedMaskedGroupNorm::apply(x, mask, weight, bias, eps);
}

}  // namespace foldfarm
