// PET's two hot kernels on a GPU (label `gpu`; exit 77, skipped, without a CUDA device):
// the fused masked GroupNorm's CUDA kernels give what the CPU fused kernel gives (float32
// and bfloat16; output and the gradients of x, weight and bias; a jet without real rows,
// D = 37, N = 1), with bitwise-repeatable parameter gradients; attention on CUDA (the SDPA
// path) gives what the trimmed CPU path gives, output and the gradients of q, k and v, with
// padding keys and a jet without real keys.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/model/attention.hpp"
#include "core/model/masked_norm.hpp"
#include "tests/support/gpu_skip.hpp"

using namespace foldfarm;

namespace {

void skipWithoutGpu() {
  if (!torch::cuda::is_available())
    foldfarm::testing::skipGpuTest("test_model_gpu_kernels", "no CUDA device visible to LibTorch");
}

const torch::Device kGpu(torch::kCUDA, 0);
constexpr double kEps = 1e-5;

// max |a - b| / (1 + |b|), in float64 on the CPU.
double relErr(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor a64 = a.to(torch::kCPU, torch::kFloat64);
  const torch::Tensor b64 = b.to(torch::kCPU, torch::kFloat64);
  return ((a64 - b64).abs() / (1 + b64.abs())).max().item<double>();
}

double maxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64))
      .abs()
      .max()
      .item<double>();
}

bool allFinite(const torch::Tensor& t) {
  return torch::isfinite(t).all().item<bool>();
}

// Row mask (B, N, 1): jet 0 without real rows, jet 1 all real, the others a random subset
// (holes included).
torch::Tensor jetMask(int64_t b, int64_t n) {
  torch::Tensor m = (torch::rand({b, n}) < 0.6).to(torch::kFloat32);
  m[0].zero_();
  if (b > 1) m[1].fill_(1);
  return m.unsqueeze(-1);
}

struct NormGrads {
  torch::Tensor y, gx, gw, gb;
};

// Output and gradients (for the incoming gradient gy) of the fused kernel on the inputs'
// device.
NormGrads fusedNorm(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& w,
                    const torch::Tensor& b, const torch::Tensor& gy) {
  const torch::Tensor xl = x.detach().clone().requires_grad_(true);
  const torch::Tensor wl = w.detach().clone().requires_grad_(true);
  const torch::Tensor bl = b.detach().clone().requires_grad_(true);
  const torch::Tensor y = maskedGroupNormFused(xl, mask, wl, bl, kEps);
  const auto g = torch::autograd::grad({y}, {xl, wl, bl}, {gy});
  return {y.detach(), g[0], g[1], g[2]};
}

bool cudaKernelsBuilt() {
  return maskedGroupNormFusedSupports(torch::empty({1, 1, 1}, torch::TensorOptions(kGpu)));
}

struct NormCase {
  int64_t b, n, d;
};

constexpr const char* kNoKernels =
    "foldfarm was built without its CUDA kernels (no nvcc, or a LibTorch without CUDA): the "
    "fused GroupNorm has no CUDA path";

// A GPU but no kernels: skipped, or failed under the GPU check, whose build must have them
// (a GTEST_SKIP counts as passed there).
#define REQUIRE_CUDA_KERNELS()              \
  if (!cudaKernelsBuilt()) {                \
    if (foldfarm::testing::underGpuCheck()) \
      FAIL() << kNoKernels;                 \
    else                                    \
      GTEST_SKIP() << kNoKernels;           \
  }

// 200 jets: the weight and bias gradients are summed in chunks of 64 jets, the last one short.
const std::vector<NormCase> kNormCases = {
    {6, 30, 64}, {4, 17, 37}, {5, 1, 37}, {3, 128, 256}, {200, 12, 37}};

}  // namespace

TEST(GpuMaskedGroupNorm, SupportsFloatAndBFloat16OnCuda) {
  skipWithoutGpu();
  REQUIRE_CUDA_KERNELS();
  const auto on = torch::TensorOptions(kGpu);
  EXPECT_TRUE(maskedGroupNormFusedSupports(torch::empty({2, 3, 4}, on.dtype(torch::kFloat32))));
  EXPECT_TRUE(maskedGroupNormFusedSupports(torch::empty({2, 3, 4}, on.dtype(torch::kBFloat16))));
  EXPECT_FALSE(maskedGroupNormFusedSupports(torch::empty({2, 3, 4}, on.dtype(torch::kFloat16))));
  EXPECT_FALSE(maskedGroupNormFusedSupports(torch::empty({6, 4}, on.dtype(torch::kFloat32))));
}

TEST(GpuMaskedGroupNorm, Float32EqualsTheCpuKernel) {
  skipWithoutGpu();
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(11);
  for (const NormCase& c : kNormCases) {
    SCOPED_TRACE("B=" + std::to_string(c.b) + " N=" + std::to_string(c.n) +
                 " D=" + std::to_string(c.d));
    const torch::Tensor mask = jetMask(c.b, c.n);
    const torch::Tensor x = torch::randn({c.b, c.n, c.d}) * 2 + 0.5;
    const torch::Tensor w = torch::randn({c.d}), b = torch::randn({c.d});
    const torch::Tensor gy = torch::randn({c.b, c.n, c.d});
    const NormGrads cpu = fusedNorm(x, mask, w, b, gy);
    const NormGrads gpu = fusedNorm(x.to(kGpu), mask.to(kGpu), w.to(kGpu), b.to(kGpu), gy.to(kGpu));
    ASSERT_TRUE(gpu.y.is_cuda());
    EXPECT_LT(relErr(gpu.y, cpu.y), 1e-5);
    EXPECT_LT(relErr(gpu.gx, cpu.gx), 1e-5);
    EXPECT_LT(relErr(gpu.gw, cpu.gw), 1e-5);
    EXPECT_LT(relErr(gpu.gb, cpu.gb), 1e-5);
    // The jet without real rows: zeros, not NaN, and no gradient.
    EXPECT_EQ(gpu.y[0].abs().max().item<float>(), 0.0f);
    EXPECT_EQ(gpu.gx[0].abs().max().item<float>(), 0.0f);
    EXPECT_TRUE(allFinite(gpu.y) && allFinite(gpu.gx) && allFinite(gpu.gw) && allFinite(gpu.gb));
  }
}

TEST(GpuMaskedGroupNorm, JetLevelMaskEqualsTheCpuKernel) {
  skipWithoutGpu();
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(12);
  const int64_t B = 4, N = 9, D = 37;
  const torch::Tensor mask = torch::tensor({0.f, 1.f, 1.f, 1.f}).view({B, 1, 1});
  const torch::Tensor x = torch::randn({B, N, D}), gy = torch::randn({B, N, D});
  const torch::Tensor w = torch::randn({D}), b = torch::randn({D});
  const NormGrads cpu = fusedNorm(x, mask, w, b, gy);
  const NormGrads gpu = fusedNorm(x.to(kGpu), mask.to(kGpu), w.to(kGpu), b.to(kGpu), gy.to(kGpu));
  EXPECT_LT(relErr(gpu.y, cpu.y), 1e-5);
  EXPECT_LT(relErr(gpu.gx, cpu.gx), 1e-5);
  EXPECT_LT(relErr(gpu.gw, cpu.gw), 1e-5);
  EXPECT_LT(relErr(gpu.gb, cpu.gb), 1e-5);
}

TEST(GpuMaskedGroupNorm, BFloat16EqualsTheCpuKernelOnTheRoundedInputs) {
  skipWithoutGpu();
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(13);
  for (const NormCase& c : kNormCases) {
    SCOPED_TRACE("B=" + std::to_string(c.b) + " N=" + std::to_string(c.n) +
                 " D=" + std::to_string(c.d));
    const torch::Tensor mask = jetMask(c.b, c.n);
    // The CPU reference sees the same bfloat16-rounded activations, in float32.
    const torch::Tensor x = (torch::randn({c.b, c.n, c.d}) * 2 + 0.5).to(torch::kBFloat16);
    const torch::Tensor gy = torch::randn({c.b, c.n, c.d}).to(torch::kBFloat16);
    const torch::Tensor w = torch::randn({c.d}), b = torch::randn({c.d});
    const NormGrads cpu = fusedNorm(x.to(torch::kFloat32), mask, w, b, gy.to(torch::kFloat32));
    const NormGrads gpu = fusedNorm(x.to(kGpu), mask.to(kGpu), w.to(kGpu), b.to(kGpu), gy.to(kGpu));
    EXPECT_EQ(gpu.y.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(gpu.gx.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(gpu.gw.scalar_type(), torch::kFloat32);
    // y and gx are rounded to bfloat16 (8 significant bits) once, at the end.
    EXPECT_LT(relErr(gpu.y, cpu.y), 2e-2);
    EXPECT_LT(relErr(gpu.gx, cpu.gx), 2e-2);
    // gw and gb stay float32 sums of the same rounded inputs.
    EXPECT_LT(relErr(gpu.gw, cpu.gw), 1e-4);
    EXPECT_LT(relErr(gpu.gb, cpu.gb), 1e-4);
    EXPECT_EQ(gpu.y[0].to(torch::kFloat32).abs().max().item<float>(), 0.0f);
    EXPECT_TRUE(allFinite(gpu.y) && allFinite(gpu.gx));
  }
}

TEST(GpuMaskedGroupNorm, ParameterGradientsRepeatBitwise) {
  skipWithoutGpu();
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(14);
  const int64_t B = 150, N = 40, D = 96;  // three chunks of jets in the column sum
  const torch::Tensor mask = jetMask(B, N).to(kGpu);
  const torch::Tensor x = torch::randn({B, N, D}, kGpu), gy = torch::randn({B, N, D}, kGpu);
  const torch::Tensor w = torch::randn({D}, kGpu), b = torch::randn({D}, kGpu);
  const NormGrads first = fusedNorm(x, mask, w, b, gy);
  const NormGrads second = fusedNorm(x, mask, w, b, gy);
  EXPECT_TRUE(torch::equal(first.gw, second.gw));
  EXPECT_TRUE(torch::equal(first.gb, second.gb));
  EXPECT_TRUE(torch::equal(first.gx, second.gx));
}

namespace {

struct AttnGrads {
  torch::Tensor out, gq, gk, gv;
};

// maskedAttention (the SDPA path for CUDA tensors) and its gradients for the incoming go.
AttnGrads attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                    const torch::Tensor& key_mask, const torch::Tensor& go, double scale,
                    bool reference) {
  const torch::Tensor ql = q.detach().clone().requires_grad_(true);
  const torch::Tensor kl = k.detach().clone().requires_grad_(true);
  const torch::Tensor vl = v.detach().clone().requires_grad_(true);
  // Every query row is compared, so the reference computes all of them.
  const torch::Tensor all_queries =
      torch::full({q.size(0)}, q.size(2), torch::TensorOptions(torch::kLong));
  torch::Tensor out;
  if (!reference)
    out = maskedAttention(ql, kl, vl, key_mask, all_queries.to(q.device()), scale);
  else if (trimmedAttentionAvailable())
    out = maskedAttentionTrimmed(ql, kl, vl, key_mask, all_queries, scale);
  else  // a LibTorch without a CBLAS in the process: the padded path, same contract
    out = maskedAttentionPadded(ql, kl, vl, key_mask, scale);
  const auto g = torch::autograd::grad({out}, {ql, kl, vl}, {go});
  return {out.detach(), g[0], g[1], g[2]};
}

// Key mask (B, Nk): jet 0 without real keys, jet 1 all real, the others trailing padding
// and one hole.
torch::Tensor keyMask(int64_t b, int64_t nk) {
  torch::Tensor m = torch::ones({b, nk});
  m[0].zero_();
  for (int64_t i = 2; i < b; ++i) {
    m[i].narrow(0, 1 + (i * 5) % (nk - 1), nk - 1 - (i * 5) % (nk - 1)).zero_();
    m[i][0] = 1;
    if (nk > 3 && i % 2 == 0) m[i][1] = 0;
  }
  return m;
}

}  // namespace

TEST(GpuAttention, SdpaEqualsTheTrimmedCpuPath) {
  skipWithoutGpu();
  // Full float32 products on the GPU, as on the CPU.
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  torch::manual_seed(21);
  struct Case {
    int64_t b, h, nq, nk, dh;
  };
  // Self-attention, and one class-token query over the particles.
  for (const Case& c : {Case{5, 4, 23, 23, 16}, Case{4, 2, 1, 30, 8}, Case{3, 8, 64, 64, 32}}) {
    SCOPED_TRACE("B=" + std::to_string(c.b) + " Nq=" + std::to_string(c.nq) +
                 " Nk=" + std::to_string(c.nk) + " Dh=" + std::to_string(c.dh));
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
    const torch::Tensor q = torch::randn({c.b, c.h, c.nq, c.dh});
    const torch::Tensor k = torch::randn({c.b, c.h, c.nk, c.dh});
    const torch::Tensor v = torch::randn({c.b, c.h, c.nk, c.dh});
    const torch::Tensor go = torch::randn({c.b, c.h, c.nq, c.dh});
    const torch::Tensor mask = keyMask(c.b, c.nk);
    const AttnGrads cpu = attention(q, k, v, mask, go, scale, /*reference=*/true);
    const AttnGrads gpu = attention(q.to(kGpu), k.to(kGpu), v.to(kGpu), mask.to(kGpu), go.to(kGpu),
                                    scale, /*reference=*/false);
    ASSERT_TRUE(gpu.out.is_cuda());
    EXPECT_TRUE(allFinite(gpu.out) && allFinite(gpu.gq) && allFinite(gpu.gk) && allFinite(gpu.gv));
    EXPECT_LT(maxAbs(gpu.out, cpu.out), 1e-4);
    EXPECT_LT(maxAbs(gpu.gq, cpu.gq), 1e-4);
    EXPECT_LT(maxAbs(gpu.gk, cpu.gk), 1e-4);
    EXPECT_LT(maxAbs(gpu.gv, cpu.gv), 1e-4);
    // The jet without real keys: no gradient to its queries and keys.
    EXPECT_EQ(gpu.gq[0].abs().max().item<float>(), 0.0f);
    EXPECT_EQ(gpu.gk[0].abs().max().item<float>(), 0.0f);
  }
}

TEST(GpuAttention, BFloat16SdpaIsFiniteAndCloseToFloat32) {
  skipWithoutGpu();
  torch::manual_seed(22);
  const int64_t B = 4, H = 4, N = 40, Dh = 16;
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  const torch::Tensor q = torch::randn({B, H, N, Dh}).to(torch::kBFloat16);
  const torch::Tensor k = torch::randn({B, H, N, Dh}).to(torch::kBFloat16);
  const torch::Tensor v = torch::randn({B, H, N, Dh}).to(torch::kBFloat16);
  const torch::Tensor go = torch::randn({B, H, N, Dh}).to(torch::kBFloat16);
  const torch::Tensor mask = keyMask(B, N);
  const AttnGrads cpu = attention(q.to(torch::kFloat32), k.to(torch::kFloat32),
                                  v.to(torch::kFloat32), mask, go.to(torch::kFloat32), scale,
                                  /*reference=*/true);
  const AttnGrads gpu = attention(q.to(kGpu), k.to(kGpu), v.to(kGpu), mask.to(kGpu), go.to(kGpu),
                                  scale, /*reference=*/false);
  EXPECT_EQ(gpu.out.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(allFinite(gpu.out) && allFinite(gpu.gq) && allFinite(gpu.gk) && allFinite(gpu.gv));
  // Values of order 1, bfloat16 inputs to products of length 16 to 40.
  EXPECT_LT(maxAbs(gpu.out, cpu.out), 5e-2);
  EXPECT_LT(maxAbs(gpu.gv, cpu.gv), 1e-1);
}
