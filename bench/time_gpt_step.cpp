// SPDX-License-Identifier: Apache-2.0
// Quick timing of one GPT-2 training step (forward + backward, no optimizer) and of the host
// GEMM. A development tool, not a test: the benchmarks with reported numbers live in bench/.
//   time_gpt_step [B] [T] [steps] [n_layer] [attention: auto|heads|gemm]
#include <Kokkos_Core.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/gemm.hpp"
#include "kernels/host/attention.hpp"
#include "model/gpt.hpp"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void time_gemm(bool ta, bool tb, int M, int N, int K, const char* what) {
  std::vector<float> A(static_cast<std::size_t>(M) * K, 0.01f),
      B(static_cast<std::size_t>(K) * N, 0.02f), C(static_cast<std::size_t>(M) * N);
  const int lda = ta ? M : K, ldb = tb ? K : N;
  zt::kernels::gemm(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), N);
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto start = std::chrono::steady_clock::now();
    zt::kernels::gemm(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), N);
    best = std::min(best, seconds_since(start));
  }
  std::printf("  gemm %-22s M=%5d N=%5d K=%5d %c%c: %7.1f GFLOP/s\n", what, M, N, K, ta ? 'T' : 'N',
              tb ? 'T' : 'N', 2.0 * M * N * K / best * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  {
    const int B = argc > 1 ? std::atoi(argv[1]) : 4;
    const int T = argc > 2 ? std::atoi(argv[2]) : 64;
    const int steps = argc > 3 ? std::atoi(argv[3]) : 5;
    const int n_layer = argc > 4 ? std::atoi(argv[4]) : 12;
    const std::string attention = argc > 5 ? argv[5] : "auto";
    namespace kh = zt::kernels::host;
    kh::set_attention_parallelism(attention == "heads"  ? kh::AttentionParallelism::OverHeads
                                  : attention == "gemm" ? kh::AttentionParallelism::InsideGemm
                                                        : kh::AttentionParallelism::Automatic);
    std::printf("%s, %s, %d host threads\n", zt::kernels::gemm_library().c_str(),
                zt::kernels::gemm_instruction_set().c_str(),
                Kokkos::DefaultHostExecutionSpace().concurrency());
    const int M = B * T;
    time_gemm(false, true, M, 2304, 768, "qkv fwd");
    time_gemm(false, false, M, 768, 3072, "fc-proj dX");
    time_gemm(true, false, 3072, 768, M, "fc dW");
    time_gemm(false, true, M, 50257, 768, "lm head fwd");
    time_gemm(false, false, M, 768, 50257, "lm head dX");
    time_gemm(true, false, 50257, 768, M, "lm head dW");

    {  // attention alone (one layer's worth), to see its share of the step
      const int C = 768, n_head = 12;
      const kh::AttentionShape shape{B, T, n_head, C};
      std::vector<float> qkv(static_cast<std::size_t>(M) * 3 * C, 0.01f),
          prob(static_cast<std::size_t>(B) * n_head * T * T), out(static_cast<std::size_t>(M) * C),
          dqkv(qkv.size()), scratch(kh::attention_backward_scratch_floats(T));
      kh::attention_forward(shape, qkv.data(), prob.data(), out.data());
      auto start = std::chrono::steady_clock::now();
      kh::attention_forward(shape, qkv.data(), prob.data(), out.data());
      const double forward_s = seconds_since(start);
      start = std::chrono::steady_clock::now();
      kh::attention_backward(shape, out.data(), qkv.data(), prob.data(), dqkv.data(),
                             scratch.data());
      const double backward_s = seconds_since(start);
      std::printf("  attention (one layer): fwd %.1f ms, bwd %.1f ms\n", forward_s * 1e3,
                  backward_s * 1e3);
    }
    zt::model::GptConfig config = zt::model::GptConfig::gpt2_small();
    config.n_layer = n_layer;
    zt::model::Gpt model(config, B, T);
    const auto& registry = model.parameters();
    std::vector<std::vector<float>> weights(registry.size()), grads(registry.size());
    zt::model::ParamTable param_table;
    zt::model::GradTable grad_table;
    for (std::size_t i = 0; i < registry.size(); ++i) {
      weights[i].resize(registry[i].numel);
      grads[i].assign(registry[i].numel, 0.0f);
      zt::model::init_parameter_range(registry[i], static_cast<int>(i), 1234, 0, registry[i].numel,
                                      weights[i].data());
      param_table.emplace_back(weights[i].data(), registry[i].numel, zt::backend::DType::F32,
                               zt::memory::Place::Device);
      grad_table.push_back(zt::backend::View{grads[i].data(), registry[i].numel,
                                             zt::backend::DType::F32, zt::memory::Place::Device});
    }
    std::vector<std::int32_t> inputs(M), targets(M);
    for (int i = 0; i < M; ++i) {
      inputs[i] = (i * 7919) % config.vocab_size;
      targets[i] = (i * 104729 + 13) % config.vocab_size;
    }
    const double flops = model.flops_per_token_training(T) * M;
    std::vector<double> times;
    for (int s = 0; s < steps + 1; ++s) {
      const auto start = std::chrono::steady_clock::now();
      const float loss = model.forward(param_table, inputs.data(), targets.data(), B, T);
      const double forward_s = seconds_since(start);
      model.backward(param_table, grad_table, 1.0f);
      const double step_s = seconds_since(start);
      std::printf("step %d: loss %.6f  fwd %.1f ms  fwd+bwd %.1f ms  %.1f GFLOP/s\n", s, loss,
                  forward_s * 1e3, step_s * 1e3, flops / step_s * 1e-9);
      if (s > 0) times.push_back(step_s);
    }
    std::sort(times.begin(), times.end());
    if (!times.empty())
      std::printf("B=%d T=%d L=%d: median fwd+bwd %.1f ms (%.1f GFLOP/step, %.1f GFLOP/s)\n", B, T,
                  n_layer, times[times.size() / 2] * 1e3, flops * 1e-9,
                  flops / times[times.size() / 2] * 1e-9);
  }
  Kokkos::finalize();
  return 0;
}
