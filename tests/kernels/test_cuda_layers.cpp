// SPDX-License-Identifier: Apache-2.0
// The CUDA launchers against the host launchers (which the finite-difference tests check):
// same op bodies, so results agree to rounding. Skipped where no GPU is visible; built
// wherever CUDA is enabled, so the device code at least compiles in CI.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cuda/gemm_cublas.hpp"
#include "kernels/cuda/layer_launch.hpp"
#include "kernels/gemm.hpp"
#include "kernels/host/attention.hpp"
#include "kernels/host/layer_kernels.hpp"
#include "tests/kernels/gradient_check.hpp"

namespace {

namespace kh = zt::kernels::host;
namespace kc = zt::kernels::cuda;

bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// A device copy of a host vector, copied back on demand.
template <class T>
struct DeviceArray {
  T* data = nullptr;
  std::size_t size = 0;
  explicit DeviceArray(const std::vector<T>& host) : size(host.size()) {
    EXPECT_EQ(cudaMalloc(&data, size * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data, host.data(), size * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceArray() { cudaFree(data); }
  std::vector<T> to_host() const {
    std::vector<T> host(size);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), data, size * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
};

void expect_close(const std::vector<float>& device, const std::vector<float>& host, double tol,
                  const char* what) {
  ASSERT_EQ(device.size(), host.size()) << what;
  double scale = 1e-30;
  for (float v : host) scale = std::max(scale, static_cast<double>(std::abs(v)));
  for (std::size_t i = 0; i < host.size(); ++i)
    ASSERT_NEAR(device[i], host[i], tol * scale) << what << "[" << i << "]";
}

std::vector<float> random_vector(std::size_t n, float lo, float hi, unsigned seed) {
  std::vector<float> v(n);
  zt::testing::fill_uniform(v, lo, hi, seed);
  return v;
}

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible"

TEST(CudaLaunchers, GemmMatchesHostInAllTransposeCombinations) {
  SKIP_WITHOUT_GPU();
  const int M = 37, N = 29, K = 53;
  for (int combo = 0; combo < 4; ++combo) {
    const bool ta = combo & 1, tb = combo & 2;
    const int lda = ta ? M : K, ldb = tb ? K : N;
    auto A = random_vector(static_cast<std::size_t>(M) * K, -1, 1, 1);
    auto B = random_vector(static_cast<std::size_t>(K) * N, -1, 1, 2);
    auto C = random_vector(static_cast<std::size_t>(M) * N, -1, 1, 3);
    DeviceArray<float> dA(A), dB(B), dC(C);
    zt::kernels::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, C.data(), N);
    kc::gemm(ta, tb, M, N, K, 0.5f, dA.data, lda, dB.data, ldb, 0.25f, dC.data, N);
    expect_close(dC.to_host(), C, 1e-5, "gemm");
  }
}

TEST(CudaLaunchers, LayerOpsMatchHost) {
  SKIP_WITHOUT_GPU();
  const int rows = 10, C = 24, V = 17, T = 5;
  const std::vector<std::int32_t> tokens = {1, 3, 16, 0, 3, 3, 8, 2, 11, 5};
  auto wte = random_vector(V * C, -1, 1, 4), wpe = random_vector(T * C, -1, 1, 5);
  auto w = random_vector(C, 0.5f, 1.5f, 6), b = random_vector(C, -0.5f, 0.5f, 7);
  auto dout = random_vector(rows * C, -1, 1, 8);
  DeviceArray<std::int32_t> d_tokens(tokens);
  DeviceArray<float> d_wte(wte), d_wpe(wpe), d_w(w), d_b(b), d_dout(dout);

  std::vector<float> x(rows * C), ln(rows * C), mean(rows), rstd(rows);
  DeviceArray<float> dx_(x), d_ln(ln), d_mean(mean), d_rstd(rstd);
  kh::embedding_forward(wte.data(), wpe.data(), tokens.data(), rows, T, C, x.data());
  kc::embedding_forward(d_wte.data, d_wpe.data, d_tokens.data, rows, T, C, dx_.data, nullptr);
  expect_close(dx_.to_host(), x, 1e-6, "embedding_forward");
  kh::layernorm_forward(x.data(), w.data(), b.data(), rows, C, 1e-5f, ln.data(), mean.data(),
                        rstd.data());
  kc::layernorm_forward(dx_.data, d_w.data, d_b.data, rows, C, 1e-5f, d_ln.data, d_mean.data,
                        d_rstd.data, nullptr);
  expect_close(d_ln.to_host(), ln, 1e-5, "layernorm_forward");
  std::vector<float> gx(rows * C, 0.0f), gw(C, 0.0f), gb(C, 0.0f);
  DeviceArray<float> d_gx(gx), d_gw(gw), d_gb(gb);
  kh::layernorm_backward(dout.data(), x.data(), w.data(), mean.data(), rstd.data(), rows, C,
                         gx.data(), gw.data(), gb.data());
  kc::layernorm_backward(d_dout.data, dx_.data, d_w.data, d_mean.data, d_rstd.data, rows, C,
                         d_gx.data, d_gw.data, d_gb.data, nullptr);
  expect_close(d_gx.to_host(), gx, 1e-5, "layernorm_backward dx");
  expect_close(d_gw.to_host(), gw, 1e-5, "layernorm_backward dweight");
  expect_close(d_gb.to_host(), gb, 1e-5, "layernorm_backward dbias");
  std::vector<float> gwte(V * C, 0.0f), gwpe(T * C, 0.0f);
  DeviceArray<float> d_gwte(gwte), d_gwpe(gwpe);
  kh::embedding_backward(dout.data(), tokens.data(), rows, T, C, gwte.data(), gwpe.data());
  kc::embedding_backward(d_dout.data, d_tokens.data, rows, T, C, d_gwte.data, d_gwpe.data, nullptr);
  expect_close(d_gwte.to_host(), gwte, 1e-6, "embedding_backward wte");
  expect_close(d_gwpe.to_host(), gwpe, 1e-6, "embedding_backward wpe");

  // bias + GELU, its backward and the bias gradient
  auto pre = random_vector(rows * C, -4, 4, 9);
  std::vector<float> act(rows * C);
  DeviceArray<float> d_pre(pre), d_act(act);
  kh::bias_gelu_forward(b.data(), rows, C, pre.data(), act.data());
  kc::bias_gelu_forward(d_b.data, rows, C, d_pre.data, d_act.data, nullptr);
  expect_close(d_act.to_host(), act, 1e-5, "bias_gelu_forward");
  std::vector<float> g = dout;
  DeviceArray<float> d_g(g);
  kh::gelu_backward(pre.data(), rows, C, g.data());
  kc::gelu_backward(d_pre.data, rows, C, d_g.data, nullptr);
  expect_close(d_g.to_host(), g, 1e-5, "gelu_backward");
  std::vector<float> gbias(C, 0.0f);
  DeviceArray<float> d_gbias(gbias);
  kh::bias_backward(g.data(), rows, C, gbias.data());
  kc::bias_backward(d_g.data, rows, C, d_gbias.data, nullptr);
  expect_close(d_gbias.to_host(), gbias, 1e-5, "bias_backward");

  // cross-entropy
  auto logits = random_vector(rows * V, -3, 3, 10);
  std::vector<std::int32_t> targets(tokens.begin(), tokens.end());
  std::vector<float> losses(rows), lse(rows);
  DeviceArray<float> d_logits(logits), d_losses(losses), d_lse(lse);
  DeviceArray<std::int32_t> d_targets(targets);
  kh::cross_entropy_forward(logits.data(), targets.data(), rows, V, losses.data(), lse.data());
  kc::cross_entropy_forward(d_logits.data, d_targets.data, rows, V, d_losses.data, d_lse.data,
                            nullptr);
  expect_close(d_losses.to_host(), losses, 1e-5, "cross_entropy_forward");
  kh::cross_entropy_backward(targets.data(), lse.data(), rows, V, 0.3f, logits.data());
  kc::cross_entropy_backward(d_targets.data, d_lse.data, rows, V, 0.3f, d_logits.data, nullptr);
  expect_close(d_logits.to_host(), logits, 1e-5, "cross_entropy_backward");
}

TEST(CudaLaunchers, AttentionMatchesHost) {
  SKIP_WITHOUT_GPU();
  for (int T : {5, 133}) {
    const int B = 2, n_head = 3, C = 12;
    const kh::AttentionShape shape{B, T, n_head, C};
    auto qkv = random_vector(static_cast<std::size_t>(B) * T * 3 * C, -1.5f, 1.5f, 11);
    auto dout = random_vector(static_cast<std::size_t>(B) * T * C, -1, 1, 12);
    std::vector<float> prob(static_cast<std::size_t>(B) * n_head * T * T), out(B * T * C),
        dqkv(qkv.size()), scratch(kh::attention_backward_scratch_floats(T)),
        device_scratch(kc::attention_backward_scratch_floats(n_head, T));
    DeviceArray<float> d_qkv(qkv), d_dout(dout), d_prob(prob), d_out(out), d_dqkv(dqkv),
        d_scratch(device_scratch);
    kh::attention_forward(shape, qkv.data(), prob.data(), out.data());
    kc::attention_forward(B, T, n_head, C, d_qkv.data, d_prob.data, d_out.data, nullptr);
    expect_close(d_out.to_host(), out, 1e-5, "attention_forward out");
    expect_close(d_prob.to_host(), prob, 1e-5, "attention_forward prob");
    kh::attention_backward(shape, dout.data(), qkv.data(), prob.data(), dqkv.data(),
                           scratch.data());
    kc::attention_backward(B, T, n_head, C, d_dout.data, d_qkv.data, d_prob.data, d_dqkv.data,
                           d_scratch.data, nullptr);
    expect_close(d_dqkv.to_host(), dqkv, 1e-5, "attention_backward");
  }
}

}  // namespace
