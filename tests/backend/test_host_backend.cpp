// SPDX-License-Identifier: Apache-2.0
// The host backend: its argument checks name the op and the argument; every op in fp16 and
// bf16 gives the fp32 op's result on the same (already rounded) inputs, rounded once; fp32
// through the backend is bitwise the direct launcher; conversions, norms and copies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "kernels/gemm.hpp"
#include "kernels/host/attention.hpp"
#include "kernels/host/layer_kernels.hpp"

namespace {

namespace kh = zt::kernels::host;
using zt::backend::AttentionShape;
using zt::backend::Backend;
using zt::backend::Buffer;
using zt::backend::ConstView;
using zt::backend::View;
using zt::kernels::bf16;
using zt::kernels::DType;
using zt::kernels::fp16;
using zt::kernels::from_float;
using zt::kernels::to_float;
using zt::memory::Kind;
using zt::memory::Place;

Backend& backend() {
  static const auto instance = zt::backend::make_host_backend({});
  return *instance;
}

std::vector<float> uniform(std::size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Buffer make(DType dtype, std::int64_t count, Place place = Place::Device) {
  return Buffer(dtype, count, place, Kind::Other);
}

void store(Buffer& buffer, const std::vector<float>& values) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    switch (buffer.dtype()) {
      case DType::F32:
        buffer.as<float>()[i] = values[i];
        break;
      case DType::F16:
        buffer.as<fp16>()[i] = from_float<fp16>(values[i]);
        break;
      case DType::BF16:
        buffer.as<bf16>()[i] = from_float<bf16>(values[i]);
        break;
      case DType::I32:
        buffer.as<std::int32_t>()[i] = static_cast<std::int32_t>(values[i]);
        break;
    }
  }
}

float load(const Buffer& buffer, std::int64_t i) {
  switch (buffer.dtype()) {
    case DType::F32:
      return buffer.as<float>()[i];
    case DType::F16:
      return to_float(buffer.as<fp16>()[i]);
    case DType::BF16:
      return to_float(buffer.as<bf16>()[i]);
    case DType::I32:
      return static_cast<float>(buffer.as<std::int32_t>()[i]);
  }
  return 0;
}

std::vector<float> read(const Buffer& buffer) {
  std::vector<float> v(static_cast<std::size_t>(buffer.count()));
  for (std::int64_t i = 0; i < buffer.count(); ++i) v[i] = load(buffer, i);
  return v;
}

Buffer filled(DType dtype, const std::vector<float>& values, Place place = Place::Device) {
  Buffer b = make(dtype, static_cast<std::int64_t>(values.size()), place);
  store(b, values);
  return b;
}

Buffer tokens_buffer(const std::vector<std::int32_t>& ids) {
  Buffer b = make(DType::I32, static_cast<std::int64_t>(ids.size()));
  std::memcpy(b.as<std::int32_t>(), ids.data(), ids.size() * sizeof(std::int32_t));
  return b;
}

/// One tensor twice: in the 16-bit dtype, and in fp32 holding exactly the 16-bit values, so
/// the two runs of an op see the same inputs and differ only by what 16-bit storage changes.
struct Pair {
  Buffer low, wide;
  View get(bool use_low) { return use_low ? low.view() : wide.view(); }
};

Pair pair(DType dtype, const std::vector<float>& values) {
  Pair p{filled(dtype, values), Buffer()};
  p.wide = filled(DType::F32, read(p.low));
  return p;
}
Pair zeros(DType dtype, std::int64_t count) {
  return pair(dtype, std::vector<float>(static_cast<std::size_t>(count), 0.0f));
}

double unit_roundoff(DType dtype) {
  return dtype == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
}
// Below fp16's smallest normal the rounding step is absolute: half of 2^-24.
double absolute_floor(DType dtype) {
  return dtype == DType::F16 ? std::ldexp(1.0, -25) : 0.0;
}

std::uint16_t bits_of(const Buffer& b, std::int64_t i) {
  return b.dtype() == DType::F16 ? b.as<fp16>()[i].bits : b.as<bf16>()[i].bits;
}
std::uint16_t rounded_bits(DType dtype, float x) {
  return dtype == DType::F16 ? from_float<fp16>(x).bits : from_float<bf16>(x).bits;
}

/// The ops whose fp32 arithmetic is the same in both runs: each 16-bit output must be exactly
/// the rounding of the fp32 output (so within half an ulp, and no double rounding anywhere).
void expect_one_rounding(const Pair& p, const char* what) {
  int mismatches = 0;
  for (std::int64_t i = 0; i < p.low.count(); ++i) {
    const float wide = p.wide.as<float>()[i];
    if (bits_of(p.low, i) != rounded_bits(p.low.dtype(), wide) && ++mismatches <= 5)
      ADD_FAILURE() << what << "[" << i << "] = " << load(p.low, i) << ", fp32 gives " << wide;
  }
  EXPECT_EQ(mismatches, 0) << what;
}

/// Within one rounding of the fp32 output plus `extra(i)`, the error the op's own 16-bit
/// intermediates or a different fp32 summation order may add.
void expect_within(const Pair& p, const std::function<double(std::int64_t)>& extra,
                   const char* what) {
  const double u = unit_roundoff(p.low.dtype());
  int failures = 0;
  for (std::int64_t i = 0; i < p.low.count(); ++i) {
    const double wide = p.wide.as<float>()[i];
    const double error = std::abs(static_cast<double>(load(p.low, i)) - wide);
    const double bound = u * std::abs(wide) + extra(i) + absolute_floor(p.low.dtype());
    if (!(error <= bound) && ++failures <= 5)
      ADD_FAILURE() << what << "[" << i << "] = " << load(p.low, i) << ", fp32 gives " << wide
                    << ", error " << error << " > bound " << bound;
  }
  EXPECT_EQ(failures, 0) << what;
}

void expect_same_floats(const Buffer& a, const Buffer& b, const char* what) {
  ASSERT_EQ(a.count(), b.count());
  EXPECT_EQ(std::memcmp(a.view().data, b.view().data, static_cast<std::size_t>(a.bytes())), 0)
      << what;
}

double max_abs(const Buffer& b) {
  double m = 0;
  for (std::int64_t i = 0; i < b.count(); ++i) m = std::max(m, std::abs(double(load(b, i))));
  return m;
}

template <class F>
void expect_logic_error(F&& f, const std::string& expected) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected: " << expected;
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << expected;
  }
}

constexpr int kB = 3, kT = 7, kRows = kB * kT, kC = 40, kV = 37;
const std::vector<std::int32_t> kTokens = {3, 1, 3, 6, 0, 3, 36, 2,  1, 5, 3,
                                           3, 0, 9, 9, 9, 1, 2,  35, 3, 4};

// ---- argument checks ---------------------------------------------------------------------

struct LayerNormArgs {
  Buffer x = make(DType::BF16, kRows*kC), w = make(DType::BF16, kC), b = make(DType::BF16, kC),
         out = make(DType::BF16, kRows*kC), mean = make(DType::F32, kRows),
         rstd = make(DType::F32, kRows);
  void run(Backend& be) {
    be.layernorm_forward(x.view(), w.view(), b.view(), kRows, kC, 1e-5f, out.view(), mean.view(),
                         rstd.view());
  }
};

TEST(HostBackendChecks, CorrectArgumentsPass) {
  LayerNormArgs args;
  store(args.x, uniform(kRows * kC, -1, 1, 1));
  EXPECT_NO_THROW(args.run(backend()));
  EXPECT_EQ(backend().compute_place(), Place::Device);
}

TEST(HostBackendChecks, HostViewPassedToAnOpNamesTheArgument) {
  LayerNormArgs args;
  args.w = make(DType::BF16, kC, Place::Host);
  expect_logic_error([&] { args.run(backend()); },
                     "layernorm_forward: weight is on host, expected device");
  LayerNormArgs other;
  other.rstd = make(DType::F32, kRows, Place::Host);
  expect_logic_error([&] { other.run(backend()); },
                     "layernorm_forward: rstd is on host, expected device");
}

TEST(HostBackendChecks, MixedDtypesNameTheArgument) {
  LayerNormArgs args;
  args.b = make(DType::F16, kC);
  expect_logic_error([&] { args.run(backend()); },
                     "layernorm_forward: bias is fp16, expected bf16 like x");
  LayerNormArgs stats;
  stats.mean = make(DType::BF16, kRows);
  expect_logic_error([&] { stats.run(backend()); },
                     "layernorm_forward: mean is bf16, expected fp32");
  LayerNormArgs ints;
  ints.x = make(DType::I32, kRows * kC);
  expect_logic_error([&] { ints.run(backend()); },
                     "layernorm_forward: x is int32, expected fp32, fp16 or bf16");

  Buffer logits = make(DType::BF16, kRows * kV), losses = make(DType::F32, kRows),
         lse = make(DType::F32, kRows), float_targets = make(DType::F32, kRows);
  expect_logic_error(
      [&] {
        backend().cross_entropy_forward(logits.view(), float_targets.view(), kRows, kV,
                                        losses.view(), lse.view());
      },
      "cross_entropy_forward: targets is fp32, expected int32");
}

TEST(HostBackendChecks, ShortCountsNameTheArgumentAndTheShape) {
  LayerNormArgs args;
  args.out = make(DType::BF16, kRows * kC - 1);
  expect_logic_error([&] { args.run(backend()); },
                     "layernorm_forward: out has 839 elements, needs 840 (rows * channels)");
  LayerNormArgs stats;
  stats.mean = make(DType::F32, kRows - 1);
  expect_logic_error([&] { stats.run(backend()); }, "layernorm_forward: mean has 20 elements");

  Buffer qkv = make(DType::F16, 2 * 9 * 3 * 32), prob = make(DType::F16, 2 * 4 * 9 * 9 - 1),
         out = make(DType::F16, 2 * 9 * 32);
  expect_logic_error(
      [&] {
        backend().attention_forward({2, 9, 4, 32}, qkv.view(), prob.view(), out.view());
      },
      "attention_forward: prob has 647 elements, needs 648");

  Buffer A = make(DType::F32, 6 * 5), B = make(DType::F32, 5 * 4 - 1), C = make(DType::F32, 6 * 4);
  expect_logic_error(
      [&] {
        backend().gemm(false, false, 6, 4, 5, 1.0f, A.view(), 5, B.view(), 4, 0.0f, C.view(), 4);
      },
      "gemm: B has 19 elements, needs 20");
  // transposed B: stored N x K
  Buffer Bt = make(DType::F32, 4 * 5);
  EXPECT_NO_THROW(
      backend().gemm(false, true, 6, 4, 5, 1.0f, A.view(), 5, Bt.view(), 5, 0.0f, C.view(), 4));
  Buffer Chost = make(DType::F32, 6 * 4, Place::Host);
  expect_logic_error(
      [&] {
        backend().gemm(false, true, 6, 4, 5, 1.0f, A.view(), 5, Bt.view(), 5, 0.0f, Chost.view(),
                       4);
      },
      "gemm: C is on host, expected device");

  Buffer scratch = make(DType::F32, backend().attention_backward_scratch(9) - 1);
  Buffer good_prob = make(DType::F16, 2 * 4 * 9 * 9), dqkv = make(DType::F16, 2 * 9 * 3 * 32);
  expect_logic_error(
      [&] {
        backend().attention_backward({2, 9, 4, 32}, out.view(), qkv.view(), good_prob.view(),
                                     dqkv.view(), scratch.view());
      },
      "attention_backward: scratch has");
}

TEST(HostBackendChecks, TokensOutsideTheTableAreCaught) {
  std::vector<std::int32_t> ids = kTokens;
  ids[4] = kV;  // one past the last row of wte
  Buffer tokens = tokens_buffer(ids), wte = make(DType::F32, kV * kC),
         wpe = make(DType::F32, kT * kC), out = make(DType::F32, kRows * kC);
  expect_logic_error(
      [&] {
        backend().embedding_forward(wte.view(), wpe.view(), tokens.view(), kRows, kT, kC,
                                    out.view());
      },
      "embedding_forward: tokens[4] = 37 outside [0, 37)");
  Buffer logits = make(DType::F32, kRows * kV), losses = make(DType::F32, kRows),
         lse = make(DType::F32, kRows);
  expect_logic_error(
      [&] {
        backend().cross_entropy_forward(logits.view(), tokens.view(), kRows, kV, losses.view(),
                                        lse.view());
      },
      "cross_entropy_forward: targets[4] = 37");
}

TEST(HostBackendChecks, EngineOpsAndCopiesCheckDtypesCountsAndPlaces) {
  Buffer a = make(DType::F32, 100), b = make(DType::BF16, 99), c = make(DType::BF16, 100),
         host = make(DType::BF16, 100, Place::Host), nvme_like = make(DType::F32, 100);
  expect_logic_error([&] { backend().convert(a.view(), b.view()); },
                     "convert: dst has 99 elements, src has 100");
  expect_logic_error([&] { backend().convert(a.view(), host.view()); },
                     "convert: dst is on host, src on device");
  expect_logic_error([&] { backend().copy_async(a.view(), c.view()); },
                     "copy_async: dst is bf16, src is fp32");
  expect_logic_error([&] { backend().copy_async(c.view(), b.view()); },
                     "copy_async: dst has 99 elements, src has 100");
  View nvme = nvme_like.view();
  nvme.place = Place::Nvme;
  expect_logic_error([&] { backend().copy_async(a.view(), nvme); },
                     "copy_async: dst is on nvme, expected device or host");
  Buffer ints = make(DType::I32, 10);
  expect_logic_error([&] { backend().norm_squared(ints.view()); }, "norm_squared: values is int32");
}

TEST(HostBackendChecks, OffSkipsThem) {
  const auto unchecked = zt::backend::make_host_backend({/*check_places=*/false});
  LayerNormArgs args;
  args.w = make(DType::BF16, kC, Place::Host);
  EXPECT_NO_THROW(args.run(*unchecked));
}

// ---- fp16 and bf16 against fp32 ------------------------------------------------------------

class Sixteen : public ::testing::TestWithParam<DType> {
 protected:
  DType t() const { return GetParam(); }
  double u() const { return unit_roundoff(GetParam()); }
  Backend& be = backend();
};

TEST_P(Sixteen, Embedding) {
  Pair wte = pair(t(), uniform(kV * kC, -1, 1, 1)), wpe = pair(t(), uniform(kT * kC, -1, 1, 2));
  Pair out = zeros(t(), kRows * kC);
  Pair dout = pair(t(), uniform(kRows * kC, -1, 1, 3));
  Pair dwte = pair(t(), uniform(kV * kC, -0.1f, 0.1f, 4));
  Pair dwpe = pair(t(), uniform(kT * kC, -0.1f, 0.1f, 5));
  Buffer tokens = tokens_buffer(kTokens);
  for (bool low : {true, false}) {
    be.embedding_forward(wte.get(low), wpe.get(low), tokens.view(), kRows, kT, kC, out.get(low));
    be.embedding_backward(dout.get(low), tokens.view(), kRows, kT, kC, dwte.get(low),
                          dwpe.get(low));
  }
  expect_one_rounding(out, "out");
  expect_one_rounding(dwte, "dwte");  // token 3 repeats 6 times: summed in fp32, rounded once
  expect_one_rounding(dwpe, "dwpe");
}

TEST_P(Sixteen, LayerNorm) {
  Pair x = pair(t(), uniform(kRows * kC, -2, 2, 6)), w = pair(t(), uniform(kC, 0.5f, 1.5f, 7)),
       b = pair(t(), uniform(kC, -0.5f, 0.5f, 8)), out = zeros(t(), kRows * kC);
  Pair mean = zeros(DType::F32, kRows), rstd = zeros(DType::F32, kRows);
  Pair dout = pair(t(), uniform(kRows * kC, -1, 1, 9));
  Pair dx = pair(t(), uniform(kRows * kC, -1, 1, 10)), dw = pair(t(), uniform(kC, -1, 1, 11)),
       db = pair(t(), uniform(kC, -1, 1, 12));
  for (bool low : {true, false}) {
    // the fp32 statistics are shared, so the backward of both runs sees the same ones
    be.layernorm_forward(x.get(low), w.get(low), b.get(low), kRows, kC, 1e-5f, out.get(low),
                         mean.get(low), rstd.get(low));
    be.layernorm_backward(dout.get(low), x.get(low), w.get(low), mean.get(low), rstd.get(low),
                          kRows, kC, dx.get(low), dw.get(low), db.get(low));
  }
  expect_one_rounding(out, "out");
  expect_same_floats(mean.low, mean.wide, "mean");
  expect_same_floats(rstd.low, rstd.wide, "rstd");
  expect_one_rounding(dx, "dx");
  expect_one_rounding(dw, "dweight");
  expect_one_rounding(db, "dbias");
}

TEST_P(Sixteen, BiasResidualAndGelu) {
  const int width = 4 * kC;
  Pair bias = pair(t(), uniform(width, -1, 1, 13)),
       residual = pair(t(), uniform(kRows * width, -2, 2, 14));
  Pair filled_out = zeros(t(), kRows * width), residual_out = zeros(t(), kRows * width);
  Pair pre = pair(t(), uniform(kRows * width, -4, 4, 15)), gelu_out = zeros(t(), kRows * width);
  Pair dout = pair(t(), uniform(kRows * width, -1, 1, 16));
  Pair dbias = pair(t(), uniform(width, -1, 1, 17));
  Pair grad = pair(t(), uniform(kRows * width, -1, 1, 18));
  Pair pre_for_backward = pair(t(), uniform(kRows * width, -4, 4, 19));
  for (bool low : {true, false}) {
    be.bias_fill(bias.get(low), kRows, width, filled_out.get(low));
    be.residual_bias_fill(residual.get(low), bias.get(low), kRows, width, residual_out.get(low));
    be.bias_gelu_forward(bias.get(low), kRows, width, pre.get(low), gelu_out.get(low));
    be.bias_backward(dout.get(low), kRows, width, dbias.get(low));  // 21 rows in one rounding
    be.gelu_backward(pre_for_backward.get(low), kRows, width, grad.get(low));
  }
  expect_one_rounding(filled_out, "bias_fill");
  expect_one_rounding(residual_out, "residual_bias_fill");
  expect_one_rounding(pre, "pre");
  // out = gelu of the ROUNDED pre: |gelu'| <= 1.13, so pre's rounding (u |pre|) moves it by at
  // most 1.13 u |pre| before out's own rounding.
  const std::vector<float> pre_values = read(pre.wide);
  expect_within(
      gelu_out, [&](std::int64_t i) { return 1.13 * (1 + u()) * u() * std::abs(pre_values[i]); },
      "bias_gelu out");
  expect_one_rounding(dbias, "dbias");
  expect_one_rounding(grad, "gelu_backward");
}

TEST_P(Sixteen, CrossEntropy) {
  Pair logits = pair(t(), uniform(kRows * kV, -6, 6, 20));
  Pair losses = zeros(DType::F32, kRows), lse = zeros(DType::F32, kRows);
  Buffer targets = tokens_buffer(kTokens);
  double mean_loss[2];
  for (bool low : {true, false})
    mean_loss[low] = be.cross_entropy_forward(logits.get(low), targets.view(), kRows, kV,
                                              losses.get(low), lse.get(low));
  EXPECT_EQ(mean_loss[0], mean_loss[1]);
  expect_same_floats(losses.low, losses.wide, "losses");
  expect_same_floats(lse.low, lse.wide, "log_sum_exp");
  for (bool low : {true, false})
    be.cross_entropy_backward(targets.view(), lse.get(low), kRows, kV, 0.25f, logits.get(low));
  expect_one_rounding(logits, "dlogits");
}

TEST_P(Sixteen, Attention) {
  // the second shape crosses the host kernel's 128-row blocks
  for (const AttentionShape s : {AttentionShape{2, 9, 4, 32}, AttentionShape{1, 130, 2, 16}}) {
    for (const auto mode :
         {kh::AttentionParallelism::OverHeads, kh::AttentionParallelism::InsideGemm}) {
      SCOPED_TRACE("T = " + std::to_string(s.seq_len) + ", mode " +
                   std::to_string(static_cast<int>(mode)));
      kh::set_attention_parallelism(mode);
      const std::int64_t qkv_count = std::int64_t{s.batch} * s.seq_len * 3 * s.channels;
      const std::int64_t out_count = std::int64_t{s.batch} * s.seq_len * s.channels;
      const std::int64_t prob_count = std::int64_t{s.batch} * s.n_head * s.seq_len * s.seq_len;
      Pair qkv = pair(t(), uniform(qkv_count, -2, 2, 21)), prob = zeros(t(), prob_count),
           out = zeros(t(), out_count);
      for (bool low : {true, false})
        be.attention_forward(s, qkv.get(low), prob.get(low), out.get(low));
      // The two runs use fp32 GEMMs of different layouts (contiguous widened heads vs strided
      // views), whose sums of <= 130 terms may differ in the last fp32 bits: 1e-5 of the
      // largest value covers that with room to spare, far below one 16-bit rounding.
      const double prob_noise = 1e-5, out_noise = 1e-5 * max_abs(out.wide);
      expect_within(
          prob, [&](std::int64_t) { return prob_noise; }, "prob");
      expect_within(
          out, [&](std::int64_t) { return out_noise; }, "out");

      // backward on the same rounded prob in both runs
      store(prob.wide, read(prob.low));
      Pair dout = pair(t(), uniform(out_count, -1, 1, 22)), dqkv = zeros(t(), qkv_count);
      Buffer scratch = make(DType::F32, be.attention_backward_scratch(s.seq_len));
      for (bool low : {true, false})
        be.attention_backward(s, dout.get(low), qkv.get(low), prob.get(low), dqkv.get(low),
                              scratch.view());
      const double grad_noise = 1e-5 * max_abs(dqkv.wide);
      expect_within(
          dqkv, [&](std::int64_t) { return grad_noise; }, "dqkv");
    }
  }
  kh::set_attention_parallelism(kh::AttentionParallelism::Automatic);
}

TEST_P(Sixteen, Gemm) {
  const int M = 13, N = 11, K = 37;
  Pair A = pair(t(), uniform(K * M, -1, 1, 23)), B = pair(t(), uniform(K * N, -1, 1, 24));
  Pair C = pair(t(), uniform(M * N, -1, 1, 25));
  for (bool low : {true, false})
    be.gemm(true, false, M, N, K, 1.0f, A.get(low), M, B.get(low), N, 0.5f, C.get(low), N);
  // Accumulation order may differ between a native 16-bit kernel and the fp32 one: bounded by
  // K fp32 roundings of the sum of |products| (computed below in fp32).
  Buffer abs_A = filled(DType::F32, read(A.wide)), abs_B = filled(DType::F32, read(B.wide));
  for (std::int64_t i = 0; i < abs_A.count(); ++i)
    abs_A.as<float>()[i] = std::abs(abs_A.as<float>()[i]);
  for (std::int64_t i = 0; i < abs_B.count(); ++i)
    abs_B.as<float>()[i] = std::abs(abs_B.as<float>()[i]);
  Buffer abs_C = make(DType::F32, M * N);
  be.gemm(true, false, M, N, K, 1.0f, abs_A.view(), M, abs_B.view(), N, 0.0f, abs_C.view(), N);
  const double c0_bound = 0.5;  // |0.5 * C0| <= 0.5
  expect_within(
      C,
      [&](std::int64_t i) {
        return 2.0 * K * std::ldexp(1.0, -24) * (abs_C.as<float>()[i] + c0_bound);
      },
      "C");
}

INSTANTIATE_TEST_SUITE_P(HostBackend, Sixteen, ::testing::Values(DType::F16, DType::BF16),
                         [](const auto& info) {
                           return std::string(zt::kernels::dtype_name(info.param));
                         });

// ---- fp32 through the backend is the launcher ------------------------------------------------

TEST(HostBackendFp32, BitwiseEqualToTheDirectLaunchers) {
  Backend& be = backend();
  const std::vector<float> x = uniform(kRows * kC, -2, 2, 30), w = uniform(kC, 0.5f, 1.5f, 31),
                           b = uniform(kC, -0.5f, 0.5f, 32), g = uniform(kRows * kC, -1, 1, 33),
                           acc = uniform(kRows * kC, -1, 1, 34), pacc = uniform(kC, -1, 1, 35);
  // layernorm forward + backward
  Buffer bx = filled(DType::F32, x), bw = filled(DType::F32, w), bb = filled(DType::F32, b),
         bout = make(DType::F32, kRows * kC), bmean = make(DType::F32, kRows),
         brstd = make(DType::F32, kRows), bg = filled(DType::F32, g), bdx = filled(DType::F32, acc),
         bdw = filled(DType::F32, pacc), bdb = filled(DType::F32, pacc);
  be.layernorm_forward(bx.view(), bw.view(), bb.view(), kRows, kC, 1e-5f, bout.view(), bmean.view(),
                       brstd.view());
  be.layernorm_backward(bg.view(), bx.view(), bw.view(), bmean.view(), brstd.view(), kRows, kC,
                        bdx.view(), bdw.view(), bdb.view());
  std::vector<float> out(kRows * kC), mean(kRows), rstd(kRows), dx = acc, dw = pacc, db = pacc;
  kh::layernorm_forward(x.data(), w.data(), b.data(), kRows, kC, 1e-5f, out.data(), mean.data(),
                        rstd.data());
  kh::layernorm_backward(g.data(), x.data(), w.data(), mean.data(), rstd.data(), kRows, kC,
                         dx.data(), dw.data(), db.data());
  EXPECT_EQ(read(bout), out);
  EXPECT_EQ(read(bmean), mean);
  EXPECT_EQ(read(brstd), rstd);
  EXPECT_EQ(read(bdx), dx);
  EXPECT_EQ(read(bdw), dw);
  EXPECT_EQ(read(bdb), db);

  // bias_gelu + gelu_backward + bias_backward
  Buffer bpre = filled(DType::F32, x), bgelu = make(DType::F32, kRows * kC);
  be.bias_gelu_forward(bw.view(), kRows, kC, bpre.view(), bgelu.view());
  be.gelu_backward(bpre.view(), kRows, kC, bg.view());
  be.bias_backward(bg.view(), kRows, kC, bdb.view());
  std::vector<float> pre = x, gelu(kRows * kC), grad = g;
  kh::bias_gelu_forward(w.data(), kRows, kC, pre.data(), gelu.data());
  kh::gelu_backward(pre.data(), kRows, kC, grad.data());
  kh::bias_backward(grad.data(), kRows, kC, db.data());
  EXPECT_EQ(read(bpre), pre);
  EXPECT_EQ(read(bgelu), gelu);
  EXPECT_EQ(read(bg), grad);
  EXPECT_EQ(read(bdb), db);

  // embedding
  const std::vector<float> wte = uniform(kV * kC, -1, 1, 36), wpe = uniform(kT * kC, -1, 1, 37);
  Buffer bwte = filled(DType::F32, wte), bwpe = filled(DType::F32, wpe),
         btok = tokens_buffer(kTokens), bdwte = make(DType::F32, kV * kC),
         bdwpe = make(DType::F32, kT * kC);
  be.embedding_forward(bwte.view(), bwpe.view(), btok.view(), kRows, kT, kC, bout.view());
  be.embedding_backward(bg.view(), btok.view(), kRows, kT, kC, bdwte.view(), bdwpe.view());
  std::vector<float> dwte(kV * kC), dwpe(kT * kC);
  kh::embedding_forward(wte.data(), wpe.data(), kTokens.data(), kRows, kT, kC, out.data());
  kh::embedding_backward(grad.data(), kTokens.data(), kRows, kT, kC, dwte.data(), dwpe.data());
  EXPECT_EQ(read(bout), out);
  EXPECT_EQ(read(bdwte), dwte);
  EXPECT_EQ(read(bdwpe), dwpe);

  // cross-entropy
  const std::vector<float> logits = uniform(kRows * kV, -5, 5, 38);
  Buffer blogits = filled(DType::F32, logits), blosses = make(DType::F32, kRows),
         blse = make(DType::F32, kRows);
  const double loss =
      be.cross_entropy_forward(blogits.view(), btok.view(), kRows, kV, blosses.view(), blse.view());
  be.cross_entropy_backward(btok.view(), blse.view(), kRows, kV, 0.5f, blogits.view());
  std::vector<float> losses(kRows), lse(kRows), dlogits = logits;
  EXPECT_EQ(loss, kh::cross_entropy_forward(logits.data(), kTokens.data(), kRows, kV, losses.data(),
                                            lse.data()));
  kh::cross_entropy_backward(kTokens.data(), lse.data(), kRows, kV, 0.5f, dlogits.data());
  EXPECT_EQ(read(blosses), losses);
  EXPECT_EQ(read(blogits), dlogits);

  // attention
  const kh::AttentionShape s{2, 9, 4, 32};
  const std::vector<float> qkv = uniform(2 * 9 * 96, -2, 2, 39),
                           dy = uniform(2 * 9 * 32, -1, 1, 40);
  Buffer bqkv = filled(DType::F32, qkv), bprob = make(DType::F32, 2 * 4 * 81),
         by = make(DType::F32, 2 * 9 * 32), bdy = filled(DType::F32, dy),
         bdqkv = make(DType::F32, 2 * 9 * 96),
         bscratch = make(DType::F32, be.attention_backward_scratch(9));
  be.attention_forward({2, 9, 4, 32}, bqkv.view(), bprob.view(), by.view());
  be.attention_backward({2, 9, 4, 32}, bdy.view(), bqkv.view(), bprob.view(), bdqkv.view(),
                        bscratch.view());
  std::vector<float> prob(2 * 4 * 81), y(2 * 9 * 32), dqkv(2 * 9 * 96),
      scratch(kh::attention_backward_scratch_floats(9));
  kh::attention_forward(s, qkv.data(), prob.data(), y.data());
  kh::attention_backward(s, dy.data(), qkv.data(), prob.data(), dqkv.data(), scratch.data());
  EXPECT_EQ(read(bprob), prob);
  EXPECT_EQ(read(by), y);
  EXPECT_EQ(read(bdqkv), dqkv);

  // set_zero and bias fills
  be.set_zero(bout.view());
  EXPECT_EQ(read(bout), std::vector<float>(kRows * kC, 0.0f));
  Buffer bints = tokens_buffer(kTokens);
  be.set_zero(bints.view());
  EXPECT_EQ(read(bints), std::vector<float>(kRows, 0.0f));
}

// ---- convert, add_scaled ---------------------------------------------------------------------

// Longer than one of the backend's 8192-element blocks, with a tail.
constexpr std::int64_t kLong = 3 * 8192 + 1234;

TEST(HostBackendConvert, RoundTripsAndScale) {
  Backend& be = backend();
  std::vector<float> values = uniform(kLong, -3, 3, 41);
  values[0] = 1e-6f;  // fp16 subnormal
  values[1] = 7e4f;   // fp16 overflow
  values[2] = -0.0f;
  Buffer f32 = filled(DType::F32, values), f16 = make(DType::F16, kLong),
         b16 = make(DType::BF16, kLong), back = make(DType::F32, kLong),
         f16_again = make(DType::F16, kLong);
  be.convert(f32.view(), f16.view());
  be.convert(f32.view(), b16.view());
  for (std::int64_t i = 0; i < kLong; ++i) {
    ASSERT_EQ(f16.as<fp16>()[i].bits, from_float<fp16>(values[i]).bits) << i;
    ASSERT_EQ(b16.as<bf16>()[i].bits, from_float<bf16>(values[i]).bits) << i;
  }
  // 16-bit -> fp32 -> 16-bit is the identity
  be.convert(f16.view(), back.view());
  be.convert(back.view(), f16_again.view());
  EXPECT_EQ(std::memcmp(f16.as<fp16>(), f16_again.as<fp16>(), kLong * 2), 0);
  // bf16 -> fp16: one rounding of the exact bf16 value
  be.convert(b16.view(), f16_again.view());
  for (std::int64_t i = 0; i < kLong; ++i)
    ASSERT_EQ(f16_again.as<fp16>()[i].bits, from_float<fp16>(to_float(b16.as<bf16>()[i])).bits)
        << i;
  // the scale applies in fp32 before the one rounding (3 * round(x) would differ often)
  be.convert(f32.view(), b16.view(), 3.0f);
  int differs_from_scaling_rounded = 0;
  for (std::int64_t i = 0; i < kLong; ++i) {
    ASSERT_EQ(b16.as<bf16>()[i].bits, from_float<bf16>(3.0f * values[i]).bits) << i;
    differs_from_scaling_rounded +=
        from_float<bf16>(3.0f * to_float(from_float<bf16>(values[i]))).bits !=
        b16.as<bf16>()[i].bits;
  }
  EXPECT_GT(differs_from_scaling_rounded, 0);
  // fp32 -> fp32 with a scale, and an empty view
  be.convert(f32.view(), back.view(), -0.5f);
  for (std::int64_t i = 0; i < kLong; ++i) ASSERT_EQ(back.as<float>()[i], -0.5f * values[i]);
  EXPECT_NO_THROW(be.convert(f32.slice(0, 0), back.slice(0, 0)));
}

TEST(HostBackendConvert, AddScaledRoundsOnce) {
  Backend& be = backend();
  const std::vector<float> src = uniform(kLong, -1, 1, 42), dst = uniform(kLong, -1, 1, 43);
  Buffer s = filled(DType::F32, src), d = filled(DType::BF16, dst);
  const std::vector<float> d0 = read(d);
  be.add_scaled(s.view(), d.view(), 0.125f);
  for (std::int64_t i = 0; i < kLong; ++i)
    ASSERT_EQ(d.as<bf16>()[i].bits, from_float<bf16>(d0[i] + 0.125f * src[i]).bits) << i;
  Buffer host_src = filled(DType::F16, src, Place::Host),
         host_dst = filled(DType::F32, dst, Place::Host);
  be.add_scaled(host_src.view(), host_dst.view(), -1.0f);
  for (std::int64_t i = 0; i < kLong; ++i)
    ASSERT_EQ(host_dst.as<float>()[i], dst[i] - to_float(from_float<fp16>(src[i]))) << i;
}

// ---- norm_squared ----------------------------------------------------------------------------

double reference_sum_of_squares(const Buffer& b) {
  double sum = 0;
  for (std::int64_t i = 0; i < b.count(); ++i) sum += double(load(b, i)) * double(load(b, i));
  return sum;
}

TEST(HostBackendNorm, MatchesADoubleReference) {
  Backend& be = backend();
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (const std::int64_t n :
         {std::int64_t{0}, std::int64_t{1}, std::int64_t{15}, kLong, std::int64_t{1} << 20}) {
      Buffer b = filled(dtype, uniform(n, -2, 2, 44));
      const auto result = be.norm_squared(b.view());
      const double reference = reference_sum_of_squares(b);
      // both sum non-negative doubles (exact squares): any order is within n * 2^-53 relative
      EXPECT_NEAR(result.sum_of_squares, reference, 1e-12 * reference + 1e-300)
          << zt::kernels::dtype_name(dtype) << " n=" << n;
      EXPECT_TRUE(result.finite);
      EXPECT_EQ(be.norm_squared(b.view()).sum_of_squares, result.sum_of_squares);  // deterministic
    }
  }
  // the largest finite values square to far above fp32 range, not to inf
  Buffer big = filled(DType::F32, std::vector<float>(1000, std::numeric_limits<float>::max()));
  const auto result = be.norm_squared(big.view());
  EXPECT_TRUE(result.finite);
  const double square =
      double(std::numeric_limits<float>::max()) * double(std::numeric_limits<float>::max());
  EXPECT_NEAR(result.sum_of_squares, 1000.0 * square, 1e-12 * 1000.0 * square);
}

TEST(HostBackendNorm, FlagsInfAndNanAnywhere) {
  Backend& be = backend();
  const float specials[] = {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()};
  // first, last, middle of a block, a block boundary, inside the short tail block
  const std::int64_t positions[] = {0, kLong - 1, kLong / 2, 8192, 3 * 8192 + 100};
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16})
    for (const float special : specials)
      for (const std::int64_t at : positions) {
        std::vector<float> values = uniform(kLong, -1, 1, 45);
        values[at] = special;
        Buffer b = filled(dtype, values);
        EXPECT_FALSE(be.norm_squared(b.view()).finite)
            << zt::kernels::dtype_name(dtype) << " " << special << " at " << at;
      }
}

// ---- copies ----------------------------------------------------------------------------------

TEST(HostBackendCopy, BetweenHostAndDevice) {
  Backend& be = backend();
  // 3 Mi elements of fp32 (12 MiB) takes the parallel path; the small one a single memcpy
  for (const std::int64_t n : {std::int64_t{1000}, std::int64_t{3} << 20}) {
    const std::vector<float> values = uniform(n, -1, 1, 46);
    Buffer host = filled(DType::F32, values, Place::Host), device = make(DType::F32, n),
           host_back = make(DType::F32, n, Place::Host), device_copy = make(DType::F32, n);
    zt::backend::Event up = be.copy_async(host.view(), device.view());
    EXPECT_TRUE(up.ready());
    up.wait();
    be.copy_async(device.view(), device_copy.view()).wait();
    be.copy_async(device_copy.view(), host_back.view()).wait();
    be.synchronize();
    EXPECT_EQ(read(device), values);
    EXPECT_EQ(read(host_back), values);
  }
  Buffer b16 = filled(DType::BF16, uniform(77, -1, 1, 47), Place::Host),
         b16_device = make(DType::BF16, 77);
  be.copy_async(b16.view(), b16_device.view()).wait();
  EXPECT_EQ(std::memcmp(b16.as<bf16>(), b16_device.as<bf16>(), 77 * 2), 0);
  // a slice lands where its offset says
  Buffer whole = make(DType::F32, 10);
  Buffer part = filled(DType::F32, {1, 2, 3}, Place::Host);
  be.copy_async(part.view(), whole.slice(4, 3)).wait();
  EXPECT_EQ(read(whole), (std::vector<float>{0, 0, 0, 0, 1, 2, 3, 0, 0, 0}));
}

}  // namespace
