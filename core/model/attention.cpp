#include "core/model/attention.hpp"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/base/error.hpp"

namespace foldfarm {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// A masked key's score: large, finite and negative (not -inf), so that a row without any
// real key stays finite (uniform weights) in both paths.
constexpr float kMaskedScore = -1e9f;

// CBLAS sgemm of the BLAS LibTorch already loaded (OpenBLAS on Debian), looked up at run
// time so that a LibTorch without a CBLAS (e.g. a static MKL build) still links and uses
// the padded path.
using SgemmFn = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

SgemmFn sgemm() {
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  return fn;
}

// C (m x n, row stride ldc) = alpha * op(A) op(B) + beta * C, row-major.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm()(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, static_cast<int>(m),
          static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
          static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// Per-jet extents as used by the kernels: queries [0, ql), keys [0, kl). A jet without
// real keys attends uniformly over all keys, as the padded path does.
void extents(const Tensor& key_mask, const Tensor& query_extent, int64_t nq, int64_t nk,
             std::vector<int64_t>& ql, std::vector<int64_t>& kl) {
  const Tensor ke = maskExtent(key_mask).contiguous();
  const Tensor qe = query_extent.to(torch::kInt64).contiguous();
  const int64_t b = ke.size(0);
  ql.resize(static_cast<size_t>(b));
  kl.resize(static_cast<size_t>(b));
  const int64_t* kp = ke.data_ptr<int64_t>();
  const int64_t* qp = qe.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    kl[static_cast<size_t>(i)] = kp[i] == 0 ? nk : kp[i];
    ql[static_cast<size_t>(i)] = std::clamp<int64_t>(qp[i], 0, nq);
  }
}

class TrimmedAttention : public torch::autograd::Function<TrimmedAttention> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in,
                        const Tensor& v_in, const Tensor& key_mask, const Tensor& query_extent,
                        double scale) {
    const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const Tensor km = key_mask.to(torch::kFloat32).contiguous();
    const int64_t B = q.size(0), H = q.size(1), NQ = q.size(2), D = q.size(3), NK = k.size(2);
    std::vector<int64_t> ql, kl;
    extents(km, query_extent, NQ, NK, ql, kl);
    // Only each (jet, head)'s [0, ql) x [0, kl) block of `a` is written and read.
    Tensor a = torch::empty({B, H, NQ, NK}, q.options());
    Tensor out = torch::zeros({B, H, NQ, D}, q.options());
    const float* qp = q.data_ptr<float>();
    const float* kp = k.data_ptr<float>();
    const float* vp = v.data_ptr<float>();
    const float* mp = km.data_ptr<float>();
    float* ap = a.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const float s = static_cast<float>(scale);
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H;
        const int64_t nq = ql[static_cast<size_t>(b)], nk = kl[static_cast<size_t>(b)];
        if (nq == 0) continue;
        float* ab = ap + bh * NQ * NK;
        const float* mb = mp + b * NK;
        gemm(false, true, nq, nk, D, s, qp + bh * NQ * D, D, kp + bh * NK * D, D, 0.0f, ab, NK);
        for (int64_t i = 0; i < nq; ++i) {
          float* row = ab + i * NK;
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < nk; ++j) {
            if (mb[j] == 0.0f) row[j] = kMaskedScore;
            mx = std::max(mx, row[j]);
          }
          float sum = 0.0f;
          for (int64_t j = 0; j < nk; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j < nk; ++j) row[j] *= inv;
        }
        gemm(false, false, nq, D, nk, 1.0f, ab, NK, vp + bh * NK * D, D, 0.0f, op + bh * NQ * D, D);
      }
    });
    ctx->save_for_backward({q, k, v, km, a, query_extent});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &km = saved[3], &a = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const Tensor go = grads[0].contiguous();
    const int64_t B = q.size(0), H = q.size(1), NQ = q.size(2), D = q.size(3), NK = k.size(2);
    std::vector<int64_t> ql, kl;
    extents(km, saved[5], NQ, NK, ql, kl);
    Tensor gq = torch::zeros_like(q), gk = torch::zeros_like(k), gv = torch::zeros_like(v);
    const float* qp = q.data_ptr<float>();
    const float* kp = k.data_ptr<float>();
    const float* vp = v.data_ptr<float>();
    const float* mp = km.data_ptr<float>();
    const float* ap = a.data_ptr<float>();
    const float* gop = go.data_ptr<float>();
    float* gqp = gq.data_ptr<float>();
    float* gkp = gk.data_ptr<float>();
    float* gvp = gv.data_ptr<float>();
    const float s = static_cast<float>(scale);
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> ds;
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H;
        const int64_t nq = ql[static_cast<size_t>(b)], nk = kl[static_cast<size_t>(b)];
        if (nq == 0) continue;
        const float* ab = ap + bh * NQ * NK;
        const float* gob = gop + bh * NQ * D;
        const float* mb = mp + b * NK;
        // dV = A^T dO; dA = dO V^T.
        gemm(true, false, nk, D, nq, 1.0f, ab, NK, gob, D, 0.0f, gvp + bh * NK * D, D);
        ds.resize(static_cast<size_t>(nq * nk));
        gemm(false, true, nq, nk, D, 1.0f, gob, D, vp + bh * NK * D, D, 0.0f, ds.data(), nk);
        // Softmax backward: dS = A (dA - sum_j dA A); masked scores get no gradient.
        for (int64_t i = 0; i < nq; ++i) {
          float* row = ds.data() + i * nk;
          const float* arow = ab + i * NK;
          float dot = 0.0f;
          for (int64_t j = 0; j < nk; ++j) dot += row[j] * arow[j];
          for (int64_t j = 0; j < nk; ++j) row[j] = mb[j] == 0.0f ? 0.0f : arow[j] * (row[j] - dot);
        }
        // dQ = scale dS K; dK = scale dS^T Q.
        gemm(false, false, nq, D, nk, s, ds.data(), nk, kp + bh * NK * D, D, 0.0f,
             gqp + bh * NQ * D, D);
        gemm(true, false, nk, D, nq, s, ds.data(), nk, qp + bh * NQ * D, D, 0.0f, gkp + bh * NK * D,
             D);
      }
    });
    return {gq, gk, gv, Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

bool trimmedAttentionAvailable() {
  return sgemm() != nullptr;
}

Tensor maskExtent(const Tensor& mask) {
  const int64_t n = mask.size(1);
  const Tensor pos = torch::arange(1, n + 1, mask.options().dtype(torch::kInt64));
  return (mask.gt(0).to(torch::kInt64) * pos).amax(1);
}

Tensor maskedAttentionPadded(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& key_mask, double scale) {
  const int64_t b = k.size(0), nk = k.size(2);
  Tensor s = torch::matmul(q * scale, k.transpose(-2, -1));
  s = s.masked_fill(key_mask.view({b, 1, 1, nk}) == 0, kMaskedScore);
  return torch::matmul(torch::softmax(s, -1), v);
}

Tensor maskedAttentionSdpa(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& key_mask, double scale) {
  const int64_t b = k.size(0), h = k.size(1), nq = q.size(2), nk = k.size(2);
  const int64_t dh = q.size(-1), dv = v.size(-1);
  const Tensor real = key_mask.to(q.device()).reshape({b, 1, nk, 1}) != 0;
  const Tensor any_real = real.any(2, /*keepdim=*/true);  // (b, 1, 1, 1)
  // -1e9 would overflow float16 to -inf; half its lowest finite value does not.
  const bool half = q.scalar_type() == torch::kHalf;
  const double masked = half ? -32752.0 : kMaskedScore;
  // The key padding rides in the product instead of an additive mask: q' = [q, 1, 0…] and
  // k' = [k, m/scale, 0…] give scale q'·k' = scale q·k + m, with m 0 for a real key and the
  // masked score for padding. A mask would be expanded by SDPA to (B, H, Nq, Nk) and kept for
  // the backward pass (PyTorch 2.1 on: 1.2 GB per self-attention at batch 4096, width 192),
  // and it keeps flash attention, which takes none, out; this costs 8 more columns of q, k
  // and v (all three one width, a multiple of 8, as flash attention wants).
  // A jet without real keys gets no padding score and zero queries: equal scores, hence
  // uniform weights as on the other paths, and no gradient to its queries and keys. Scoring
  // its keys as padding too would be wrong in the backward pass: SDPA's kernels recompute
  // the weights as exp(score - logsumexp), and in float32 -1e9 + log(Nk) rounds to -1e9, so
  // every weight would come back as 1 and its values' gradient Nk times too large (seen with
  // LibTorch 2.6's CPU kernels).
  const int64_t width = (std::max(dh, dv) + 1 + 7) / 8 * 8;
  const auto opts = q.options();
  const Tensor q_used = q * any_real.to(q.scalar_type());
  // float16: the key column holds the masked score itself (its quotient by a small scale
  // would overflow); the score is then `scale` times it, still far below any real one.
  const Tensor key_col =
      torch::zeros({b, 1, nk, 1}, opts)
          .masked_fill(real.logical_not().logical_and(any_real), half ? masked : masked / scale)
          .expand({b, h, nk, 1});
  const Tensor qp = torch::cat(
      {q_used, torch::ones({b, h, nq, 1}, opts), torch::zeros({b, h, nq, width - dh - 1}, opts)},
      -1);
  const Tensor kp = torch::cat({k, key_col, torch::zeros({b, h, nk, width - dh - 1}, opts)}, -1);
  const Tensor vp =
      dv == width ? v : torch::cat({v, torch::zeros({b, h, nk, width - dv}, opts)}, -1);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  const Tensor out = at::scaled_dot_product_attention(qp, kp, vp, /*attn_mask=*/{},
                                                      /*dropout_p=*/0.0, /*is_causal=*/false,
                                                      /*scale=*/scale);
#elif TORCH_VERSION_MAJOR == 2
  // No `scale` argument: SDPA divides by sqrt(width) itself.
  const Tensor out = at::scaled_dot_product_attention(
      qp * (scale * std::sqrt(static_cast<double>(width))), kp, vp, /*attn_mask=*/{},
      /*dropout_p=*/0.0, /*is_causal=*/false);
#else
  // LibTorch 1.x has no SDPA: the operator's definition, softmax(scale q' k'ᵀ) v', on the
  // same inputs. The folded padding and the zeroed queries are then checked by every build's
  // tests; the fused kernels' own numerics (the recomputed weights above) only where
  // LibTorch 2.x runs.
  const Tensor out =
      torch::matmul(torch::softmax(torch::matmul(qp * scale, kp.transpose(-2, -1)), -1), vp);
#endif
  return dv == width ? out : out.narrow(-1, 0, dv);
}

Tensor maskedAttentionTrimmed(const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& key_mask, const Tensor& query_extent, double scale) {
  if (!trimmedAttentionAvailable())
    throw Error("trimmed attention needs a CBLAS sgemm in the process (none was found)");
  if (q.scalar_type() != torch::kFloat32 || !q.device().is_cpu())
    throw Error("trimmed attention runs on float32 CPU tensors only");
  return TrimmedAttention::apply(q, k, v, key_mask, query_extent, scale);
}

namespace {
// maskedAttention's choice of the trimmed path.
bool takesTrimmedPath(const Tensor& q) {
  return q.device().is_cpu() && q.scalar_type() == torch::kFloat32 && trimmedAttentionAvailable();
}
}  // namespace

Tensor maskedAttention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                       const Tensor& query_extent, double scale) {
  if (q.is_cuda()) return maskedAttentionSdpa(q, k, v, key_mask, scale);
  if (takesTrimmedPath(q)) return TrimmedAttention::apply(q, k, v, key_mask, query_extent, scale);
  return maskedAttentionPadded(q, k, v, key_mask, scale);
}

bool attentionReadsQueryExtent(AttentionKernel kernel, const Tensor& q) {
  return kernel == AttentionKernel::kAuto && takesTrimmedPath(q);
}

Tensor maskedAttentionWith(AttentionKernel kernel, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& key_mask, const Tensor& query_extent,
                           double scale) {
  switch (kernel) {
    case AttentionKernel::kPadded:
      return maskedAttentionPadded(q, k, v, key_mask, scale);
    case AttentionKernel::kSdpa:
      return maskedAttentionSdpa(q, k, v, key_mask, scale);
    case AttentionKernel::kAuto:
      break;
  }
  return maskedAttention(q, k, v, key_mask, query_extent, scale);
}

}  // namespace foldfarm
