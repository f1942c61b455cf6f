// SPDX-License-Identifier: Apache-2.0
// Training throughput on CPU, reported against baselines measured in the same run:
//   1. the machine's fp32 FMA peak (FMA chains on every thread),
//   2. the GEMM library's rate at the model's own layer shapes (forward, dinput and dweight
//      GEMMs of every linear layer, FLOP-weighted as one training step uses them),
//   3. whole training steps (forward, backward, optimizer) of a tiny model and GPT-2 small, in
//      fp32, bf16 and fp16 (16-bit parameters, activations and gradients; fp32 master weights).
// The summary prints GEMM rate / FMA peak, training rate / GEMM rate, and each 16-bit step's
// speed-up over the fp32 step of the same model in the same run.
//
//   ./train_bench [--quick] [--benchmark_filter=...] [--benchmark_out=results.json]
// Threads: OMP_NUM_THREADS, else every core this process may use.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/common/fma_peak.hpp"
#include "comm/communicator.hpp"
#include "kernels/gemm.hpp"
#include "model/gpt.hpp"
#include "runtime/environment.hpp"
#include "zero/engine.hpp"

namespace {

struct ModelCase {
  std::string name;
  zt::model::GptConfig config;
  int batch;
  int seq_len;
};

zt::model::GptConfig tiny_config() {
  zt::model::GptConfig config;
  config.vocab_size = 256;
  config.n_positions = 128;
  config.n_embd = 128;
  config.n_layer = 4;
  config.n_head = 4;
  return config;
}

std::vector<ModelCase> model_cases(bool quick) {
  std::vector<ModelCase> cases = {{"tiny_B8_T128", tiny_config(), 8, 128},
                                  {"gpt2_small_B4_T64", zt::model::GptConfig::gpt2_small(), 4, 64}};
  if (!quick) cases.push_back({"gpt2_small_B4_T1024", zt::model::GptConfig::gpt2_small(), 4, 1024});
  return cases;
}

/// A linear layer's GEMM shapes: out(M, N) = in(M, K) * W(N, K)^T.
struct LinearShape {
  const char* name;
  std::int64_t N, K;
  int count_per_model;  // how many such layers one step runs
};

std::vector<LinearShape> linear_shapes(const zt::model::GptConfig& config) {
  const std::int64_t C = config.n_embd;
  return {{"qkv", 3 * C, C, config.n_layer},
          {"attn_proj", C, C, config.n_layer},
          {"fc", 4 * C, C, config.n_layer},
          {"fc_proj", C, 4 * C, config.n_layer},
          {"lm_head", config.vocab_size, C, 1}};
}

// Results kept for the summary: seconds per call of each GEMM, GFLOP/s of each model step.
std::map<std::string, double> g_gemm_seconds;
std::map<std::string, double> g_step_gflops;
std::map<std::string, double> g_step_tokens_per_second;

std::string gemm_key(const LinearShape& shape, const char* pass, std::int64_t M) {
  return std::string(shape.name) + "_" + std::to_string(shape.N) + "x" + std::to_string(shape.K) +
         "/" + pass + "/M" + std::to_string(M);
}

void fill_random(std::vector<float>& values, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (auto& value : values) value = uniform(generator);
}

void register_gemm(const LinearShape& shape, std::int64_t M) {
  static const char* passes[] = {"forward", "dinput", "dweight"};
  for (int pass = 0; pass < 3; ++pass) {
    const std::string key = gemm_key(shape, passes[pass], M);
    benchmark::RegisterBenchmark(
        ("gemm/" + key).c_str(),
        [=](benchmark::State& state) {
          const std::int64_t N = shape.N, K = shape.K;
          std::vector<float> input(M * K), weight(N * K), output(M * N);
          fill_random(input, 1);
          fill_random(weight, 2);
          fill_random(output, 3);
          for (auto _ : state) {
            switch (pass) {
              case 0:  // out = in * W^T
                zt::kernels::gemm(false, true, M, N, K, 1.0f, input.data(), K, weight.data(), K,
                                  0.0f, output.data(), N);
                break;
              case 1:  // din = dout * W
                zt::kernels::gemm(false, false, M, K, N, 1.0f, output.data(), N, weight.data(), K,
                                  0.0f, input.data(), K);
                break;
              default:  // dW += dout^T * in
                zt::kernels::gemm(true, false, N, K, M, 1.0f, output.data(), N, input.data(), K,
                                  1.0f, weight.data(), K);
            }
            benchmark::ClobberMemory();
          }
          const double flops = 2.0 * M * N * K;
          state.counters["GFLOP/s"] =
              benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
        })
        ->UseRealTime()
        ->MinTime(0.2)
        ->Unit(benchmark::kMillisecond);
  }
}

std::string step_name(const ModelCase& model_case, zt::backend::DType dtype) {
  return model_case.name + "/" + zt::kernels::dtype_name(dtype);
}

void register_training_step(const ModelCase& model_case, zt::backend::DType dtype) {
  benchmark::RegisterBenchmark(
      ("train_step/" + step_name(model_case, dtype)).c_str(),
      [=](benchmark::State& state) {
        auto comm = zt::comm::make_mpi_communicator(MPI_COMM_SELF);
        zt::model::Gpt model(model_case.config, model_case.batch, model_case.seq_len, dtype);
        zt::zero::EngineSettings settings;
        settings.dtype = dtype;
        settings.communication_dtype = dtype;
        settings.gradient_accumulation_dtype = dtype;
        // fp16: a static scale keeps every timed step a real update (no overflow skips).
        settings.loss_scaler.dynamic = false;
        settings.loss_scaler.static_scale = 1024;
        settings.micro_batch = model_case.batch;
        settings.seq_len = model_case.seq_len;
        settings.gradient_clipping = 1.0;
        settings.optimizer.lr = 1e-4;
        zt::zero::Engine engine(model, *comm, settings);
        std::mt19937 generator(5);
        std::uniform_int_distribution<int> token(0, model_case.config.vocab_size - 1);
        std::vector<std::int32_t> tokens(static_cast<std::size_t>(model_case.batch) *
                                         (model_case.seq_len + 1));
        for (auto& t : tokens) t = token(generator);
        auto fill = [&](int, std::int32_t* inputs, std::int32_t* targets) {
          for (int b = 0; b < model_case.batch; ++b)
            for (int t = 0; t < model_case.seq_len; ++t) {
              inputs[b * model_case.seq_len + t] = tokens[b * (model_case.seq_len + 1) + t];
              targets[b * model_case.seq_len + t] = tokens[b * (model_case.seq_len + 1) + t + 1];
            }
        };
        engine.train_step(fill);  // first touch of every buffer happens here, not in the timing
        double forward = 0, backward = 0, optimizer = 0;
        for (auto _ : state) {
          const auto result = engine.train_step(fill);
          forward += result.phases.forward;
          backward += result.phases.backward;
          optimizer += result.phases.optimizer;
        }
        const double tokens_per_step = static_cast<double>(model_case.batch) * model_case.seq_len;
        const double flops = model.flops_per_token_training(model_case.seq_len) * tokens_per_step;
        const double iterations = static_cast<double>(state.iterations());
        state.counters["tokens/s"] =
            benchmark::Counter(tokens_per_step * iterations, benchmark::Counter::kIsRate);
        state.counters["GFLOP/s"] =
            benchmark::Counter(flops * iterations / 1e9, benchmark::Counter::kIsRate);
        state.counters["fwd_ms"] = forward / iterations * 1e3;
        state.counters["bwd_ms"] = backward / iterations * 1e3;
        state.counters["optim_ms"] = optimizer / iterations * 1e3;
      })
      ->UseRealTime()
      ->MinTime(model_case.config.n_layer > 4 ? 2.0 : 1.0)
      ->Unit(benchmark::kMillisecond);
}

/// Keeps per-benchmark results for the summary while printing as usual.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      const std::string name = run.run_name.function_name;
      const double seconds_per_iteration = run.real_accumulated_time / run.iterations;
      if (name.rfind("gemm/", 0) == 0) g_gemm_seconds[name.substr(5)] = seconds_per_iteration;
      if (name.rfind("train_step/", 0) == 0) {
        g_step_gflops[name.substr(11)] = run.counters.at("GFLOP/s");
        g_step_tokens_per_second[name.substr(11)] = run.counters.at("tokens/s");
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

/// The rate a training step's GEMMs run at: all its linear-layer GEMM FLOPs over the time the
/// measured GEMMs at those shapes take. 0 when a shape was not measured.
double gemm_rate_for(const ModelCase& model_case) {
  const std::int64_t M = static_cast<std::int64_t>(model_case.batch) * model_case.seq_len;
  double flops = 0, seconds = 0;
  for (const auto& shape : linear_shapes(model_case.config)) {
    for (const char* pass : {"forward", "dinput", "dweight"}) {
      const auto found = g_gemm_seconds.find(gemm_key(shape, pass, M));
      if (found == g_gemm_seconds.end()) return 0;
      flops += 2.0 * M * shape.N * shape.K * shape.count_per_model;
      seconds += found->second * shape.count_per_model;
    }
  }
  return flops / seconds / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  zt::runtime::Environment environment(argc, argv);
  bool quick = false;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  benchmark::Initialize(&argc, argv);

  const int threads = omp_get_max_threads();
  const auto peak = zt::bench::measure_fma_peak(threads);
  const auto peak_one = zt::bench::measure_fma_peak(1);
  benchmark::AddCustomContext("fma_peak_gflops", std::to_string(peak.gflops));
  benchmark::AddCustomContext("fma_instruction", peak.instruction);
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext(
      "gemm_library", zt::kernels::gemm_library() + ", " + zt::kernels::gemm_instruction_set());

  const auto cases = model_cases(quick);
  std::map<std::string, bool> registered;  // models share layer shapes: measure each once
  for (const auto& model_case : cases) {
    const std::int64_t M = static_cast<std::int64_t>(model_case.batch) * model_case.seq_len;
    for (const auto& shape : linear_shapes(model_case.config)) {
      const std::string key = gemm_key(shape, "", M);
      if (registered[key]) continue;
      registered[key] = true;
      register_gemm(shape, M);
    }
  }
  const zt::backend::DType dtypes[] = {zt::backend::DType::F32, zt::backend::DType::BF16,
                                       zt::backend::DType::F16};
  for (const auto& model_case : cases)
    for (const auto dtype : dtypes) register_training_step(model_case, dtype);

  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf("\nsummary (%d threads, %s):\n", threads,
              (zt::kernels::gemm_library() + ", " + zt::kernels::gemm_instruction_set()).c_str());
  std::printf("  fp32 FMA peak          %8.1f GFLOP/s (%s; %.1f on one thread)\n", peak.gflops,
              peak.instruction.c_str(), peak_one.gflops);
  for (const auto& model_case : cases) {
    const double gemm_rate = gemm_rate_for(model_case);
    const std::string fp32_name = step_name(model_case, zt::backend::DType::F32);
    const auto step = g_step_gflops.find(fp32_name);
    std::printf("  %-22s GEMM rate at its shapes %7.1f GFLOP/s = %5.1f%% of FMA peak",
                model_case.name.c_str(), gemm_rate, 100.0 * gemm_rate / peak.gflops);
    if (step != g_step_gflops.end() && gemm_rate > 0)
      std::printf("; training %7.1f GFLOP/s, %8.0f tokens/s = %5.1f%% of the GEMM rate",
                  step->second, g_step_tokens_per_second[fp32_name],
                  100.0 * step->second / gemm_rate);
    std::printf("\n");
    for (const auto dtype : {zt::backend::DType::BF16, zt::backend::DType::F16}) {
      const auto sixteen = g_step_tokens_per_second.find(step_name(model_case, dtype));
      const auto fp32 = g_step_tokens_per_second.find(fp32_name);
      if (sixteen == g_step_tokens_per_second.end() || fp32 == g_step_tokens_per_second.end())
        continue;
      std::printf("  %-22s %s step %8.0f tokens/s = %5.2fx the fp32 step (GEMMs: %s)\n",
                  model_case.name.c_str(), zt::kernels::dtype_name(dtype), sixteen->second,
                  sixteen->second / fp32->second,
                  zt::backend::host_backend().gemm_path(dtype).c_str());
    }
  }
  return 0;
}
