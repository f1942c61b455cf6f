// SPDX-License-Identifier: Apache-2.0
// Finite-difference checks of every layer op's backward through the host launchers: the
// objective is J = sum(weight * output) in double, so d J / d output = weight is the seed of
// the analytic backward, and every input's gradient is compared with central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/gemm.hpp"
#include "kernels/host/attention.hpp"
#include "kernels/host/layer_kernels.hpp"
#include "tests/kernels/gradient_check.hpp"

namespace {

namespace kh = zt::kernels::host;
using zt::testing::check_gradients;
using zt::testing::fill_uniform;
using zt::testing::weighted_sum;
using Options = zt::testing::GradientCheckOptions;

constexpr int kB = 2, kT = 5, kRows = kB * kT;

TEST(OpGradients, Embedding) {
  const int V = 7, C = 6;
  std::vector<float> wte(V * C), wpe(kT * C), out(kRows * C), weight(kRows * C);
  fill_uniform(wte, -1, 1, 1);
  fill_uniform(wpe, -1, 1, 2);
  fill_uniform(weight, -1, 1, 3);
  const std::vector<std::int32_t> tokens = {3, 1, 3, 6, 0, 3, 3, 2, 1, 5};  // repeats on purpose
  auto objective = [&] {
    kh::embedding_forward(wte.data(), wpe.data(), tokens.data(), kRows, kT, C, out.data());
    return weighted_sum(out, weight);
  };
  std::vector<float> dwte(V * C, 0.0f), dwpe(kT * C, 0.0f);
  kh::embedding_backward(weight.data(), tokens.data(), kRows, kT, C, dwte.data(), dwpe.data());
  check_gradients({{"wte", &wte, &dwte}, {"wpe", &wpe, &dwpe}}, objective,
                  Options().with_samples(1000));
}

TEST(OpGradients, LayerNorm) {
  const int C = 16;
  std::vector<float> x(kRows * C), w(C), b(C), out(kRows * C), weight(kRows * C), mean(kRows),
      rstd(kRows);
  fill_uniform(x, -2, 2, 4);
  fill_uniform(w, 0.5f, 1.5f, 5);
  fill_uniform(b, -0.5f, 0.5f, 6);
  fill_uniform(weight, -1, 1, 7);
  auto objective = [&] {
    kh::layernorm_forward(x.data(), w.data(), b.data(), kRows, C, 1e-5f, out.data(), mean.data(),
                          rstd.data());
    return weighted_sum(out, weight);
  };
  objective();
  std::vector<float> dx(kRows * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  kh::layernorm_backward(weight.data(), x.data(), w.data(), mean.data(), rstd.data(), kRows, C,
                         dx.data(), dw.data(), db.data());
  check_gradients({{"x", &x, &dx}, {"weight", &w, &dw}, {"bias", &b, &db}}, objective,
                  Options().with_step(1e-3f).with_samples(200));
}

// The linear layer as the model runs it: out = x W^T + b via bias_fill + GEMM; backward
// dW += dout^T x, db += colsum(dout), dx = dout W.
TEST(OpGradients, Linear) {
  const int in = 12, out_features = 9;
  std::vector<float> x(kRows * in), W(out_features * in), b(out_features),
      out(kRows * out_features), weight(kRows * out_features);
  fill_uniform(x, -1, 1, 8);
  fill_uniform(W, -1, 1, 9);
  fill_uniform(b, -1, 1, 10);
  fill_uniform(weight, -1, 1, 11);
  auto objective = [&] {
    kh::bias_fill(b.data(), kRows, out_features, out.data());
    zt::kernels::gemm(false, true, kRows, out_features, in, 1.0f, x.data(), in, W.data(), in, 1.0f,
                      out.data(), out_features);
    return weighted_sum(out, weight);
  };
  std::vector<float> dx(kRows * in, 0.0f), dW(out_features * in, 0.0f), db(out_features, 0.0f);
  zt::kernels::gemm(true, false, out_features, in, kRows, 1.0f, weight.data(), out_features,
                    x.data(), in, 1.0f, dW.data(), in);
  kh::bias_backward(weight.data(), kRows, out_features, db.data());
  zt::kernels::gemm(false, false, kRows, in, out_features, 1.0f, weight.data(), out_features,
                    W.data(), in, 0.0f, dx.data(), in);
  check_gradients({{"x", &x, &dx}, {"W", &W, &dW}, {"b", &b, &db}}, objective,
                  Options().with_samples(200));
}

TEST(OpGradients, BiasGelu) {
  const int N = 24;
  std::vector<float> pre(kRows * N), b(N), work(kRows * N), out(kRows * N), weight(kRows * N);
  fill_uniform(pre, -4, 4, 12);  // covers both tails and the curved middle
  fill_uniform(b, -0.5f, 0.5f, 13);
  fill_uniform(weight, -1, 1, 14);
  auto objective = [&] {
    work = pre;  // the op adds the bias in place
    kh::bias_gelu_forward(b.data(), kRows, N, work.data(), out.data());
    return weighted_sum(out, weight);
  };
  objective();  // work = pre + b, kept for backward as the model keeps it
  std::vector<float> dpre = weight, db(N, 0.0f);
  kh::gelu_backward(work.data(), kRows, N, dpre.data());
  kh::bias_backward(dpre.data(), kRows, N, db.data());
  check_gradients({{"pre", &pre, &dpre}, {"bias", &b, &db}}, objective,
                  Options().with_step(1e-3f).with_samples(240));
}

TEST(OpGradients, ResidualBiasFill) {
  const int N = 8;
  std::vector<float> r(kRows * N), b(N), out(kRows * N), weight(kRows * N);
  fill_uniform(r, -1, 1, 15);
  fill_uniform(b, -1, 1, 16);
  fill_uniform(weight, -1, 1, 17);
  auto objective = [&] {
    kh::residual_bias_fill(r.data(), b.data(), kRows, N, out.data());
    return weighted_sum(out, weight);
  };
  std::vector<float> dr = weight, db(N, 0.0f);
  kh::bias_backward(weight.data(), kRows, N, db.data());
  check_gradients({{"residual", &r, &dr}, {"bias", &b, &db}}, objective);
}

void check_attention(int B, int T, int n_head, int head_size, kh::AttentionParallelism mode,
                     int samples) {
  kh::set_attention_parallelism(mode);
  const int C = n_head * head_size;
  const kh::AttentionShape shape{B, T, n_head, C};
  std::vector<float> qkv(B * T * 3 * C), prob(B * n_head * T * T), out(B * T * C),
      weight(B * T * C);
  fill_uniform(qkv, -1.5f, 1.5f, 18);
  fill_uniform(weight, -1, 1, 19);
  auto objective = [&] {
    kh::attention_forward(shape, qkv.data(), prob.data(), out.data());
    return weighted_sum(out, weight);
  };
  objective();
  // causal: probabilities are zero above the diagonal and rows sum to one
  for (int bh = 0; bh < B * n_head; ++bh)
    for (int t = 0; t < T; ++t) {
      double sum = 0;
      for (int j = 0; j < T; ++j) {
        const float p = prob[(static_cast<std::size_t>(bh) * T + t) * T + j];
        if (j > t) {
          ASSERT_EQ(p, 0.0f);
        }
        sum += p;
      }
      ASSERT_NEAR(sum, 1.0, 1e-5);
    }
  std::vector<float> dqkv(qkv.size(), -7.0f);  // written, not accumulated
  std::vector<float> scratch(kh::attention_backward_scratch_floats(T));
  kh::attention_backward(shape, weight.data(), qkv.data(), prob.data(), dqkv.data(),
                         scratch.data());
  check_gradients({{"qkv", &qkv, &dqkv}}, objective, Options().with_samples(samples));
  kh::set_attention_parallelism(kh::AttentionParallelism::Automatic);
}

TEST(OpGradients, CausalAttentionOverHeads) {
  check_attention(kB, kT, 2, 4, kh::AttentionParallelism::OverHeads, 240);
}
TEST(OpGradients, CausalAttentionInsideGemm) {
  check_attention(kB, kT, 2, 4, kh::AttentionParallelism::InsideGemm, 240);
}
// Longer than the 128-row block the attention uses to skip the upper triangle.
TEST(OpGradients, CausalAttentionAcrossRowBlocks) {
  check_attention(1, 133, 2, 3, kh::AttentionParallelism::OverHeads, 150);
  check_attention(1, 133, 2, 3, kh::AttentionParallelism::InsideGemm, 150);
}

TEST(OpGradients, CrossEntropyMeanLossWithLossScale) {
  const int V = 13;
  std::vector<float> logits(kRows * V), losses(kRows), lse(kRows);
  fill_uniform(logits, -3, 3, 20);
  const std::vector<std::int32_t> targets = {0, 12, 5, 5, 7, 1, 3, 12, 9, 2};
  auto objective = [&] {
    return kh::cross_entropy_forward(logits.data(), targets.data(), kRows, V, losses.data(),
                                     lse.data());
  };
  // reference value of one row
  const double loss = objective();
  double expected = 0;
  for (int r = 0; r < kRows; ++r) {
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[r * V + v]));
    expected += std::log(sum) - logits[r * V + targets[r]];
  }
  EXPECT_NEAR(loss, expected / kRows, 1e-6);
  const float loss_scale = 4.0f;
  std::vector<float> grad = logits;
  kh::cross_entropy_backward(targets.data(), lse.data(), kRows, V, loss_scale / kRows, grad.data());
  for (float& g : grad) g /= loss_scale;  // compare d(mean loss)/d logits
  check_gradients({{"logits", &logits, &grad}}, objective,
                  Options().with_step(1e-2f).with_tolerances(2e-2, 1e-4).with_samples(130));
}

}  // namespace
