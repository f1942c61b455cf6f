// SPDX-License-Identifier: Apache-2.0
// The host backend: the Kokkos launchers of kernels/host and the host GEMM behind the Backend
// interface. Its "device" is host memory (the tracked device arena of a CPU run), so copies
// are memcpys and events are born complete; what it adds over calling the launchers is the
// checking a GPU would otherwise do by crashing: every view at the place the op expects, of
// the dtype the op expects, and long enough for the shape.
#include <atomic>
#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/backend.hpp"
#include "kernels/gemm.hpp"
#include "kernels/host/attention.hpp"
#include "kernels/host/layer_kernels.hpp"
#include "kernels/ops/layer_ops.hpp"

namespace zt::backend {
namespace {

namespace kh = kernels::host;
// the vectorising forms of to_float / from_float (same bits)
using kernels::ops::load;
using kernels::ops::load_n;
using kernels::ops::store;
using kernels::ops::store_n;
using HostSpace = Kokkos::DefaultHostExecutionSpace;
using BlockRange = Kokkos::RangePolicy<HostSpace, Kokkos::IndexType<std::int64_t>>;

bool is_storage(DType type) {
  return type == DType::F32 || type == DType::F16 || type == DType::BF16;
}

std::string name_of(DType type) {
  return kernels::dtype_name(type);
}

// ---- argument checks ---------------------------------------------------------------------

/// The checks of one op call. The first storage() view fixes the op's storage dtype; later
/// ones must match it. Everything is a no-op when checking is off.
class OpCheck {
 public:
  OpCheck(bool enabled, const char* op, Place place) : enabled_(enabled), op_(op), place_(place) {}

  /// An activation, parameter or gradient: fp32, fp16 or bf16, like the op's other ones.
  OpCheck& storage(const char* name, ConstView view, std::int64_t need, const char* shape) {
    if (!enabled_) return *this;
    if (storage_name_ == nullptr) {
      if (!is_storage(view.dtype))
        fail(std::string(name) + " is " + name_of(view.dtype) + ", expected fp32, fp16 or bf16");
      storage_name_ = name;
      storage_ = view.dtype;
    } else if (view.dtype != storage_) {
      fail(std::string(name) + " is " + name_of(view.dtype) + ", expected " + name_of(storage_) +
           " like " + storage_name_);
    }
    return placed(name, view, need, shape);
  }

  /// A view of one fixed dtype (fp32 statistics and scratch, int32 tokens).
  OpCheck& fixed(const char* name, ConstView view, DType dtype, std::int64_t need,
                 const char* shape) {
    if (!enabled_) return *this;
    if (view.dtype != dtype)
      fail(std::string(name) + " is " + name_of(view.dtype) + ", expected " + name_of(dtype));
    return placed(name, view, need, shape);
  }

  OpCheck& positive(const char* name, std::int64_t value) {
    if (enabled_ && value <= 0)
      fail(std::string(name) + " = " + std::to_string(value) + " (must be > 0)");
    return *this;
  }

  /// Token ids index rows of a table: an id outside [0, limit) reads or writes out of bounds
  /// (a wild write on a GPU), so the host backend looks at every one.
  OpCheck& indices(const char* name, ConstView view, std::int64_t count, std::int64_t limit,
                   const char* what) {
    if (!enabled_) return *this;
    const auto* ids = static_cast<const std::int32_t*>(view.data);
    for (std::int64_t i = 0; i < count; ++i)
      if (ids[i] < 0 || ids[i] >= limit)
        fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
             " outside [0, " + std::to_string(limit) + ") (" + what + ")");
    return *this;
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw std::logic_error(std::string(op_) + ": " + message);
  }
  bool enabled() const { return enabled_; }

 private:
  OpCheck& placed(const char* name, ConstView view, std::int64_t need, const char* shape) {
    if (view.place != place_)
      fail(std::string(name) + " is on " + memory::place_name(view.place) + ", expected " +
           memory::place_name(place_));
    if (view.count < need)
      fail(std::string(name) + " has " + std::to_string(view.count) + " elements, needs " +
           std::to_string(need) + " (" + shape + ")");
    if (need > 0 && view.data == nullptr) fail(std::string(name) + " is null");
    return *this;
  }

  bool enabled_;
  const char* op_;
  Place place_;
  const char* storage_name_ = nullptr;
  DType storage_ = DType::F32;
};

std::int64_t product(std::int64_t a, std::int64_t b) {
  return a * b;
}
std::int64_t product(std::int64_t a, std::int64_t b, std::int64_t c) {
  return a * b * c;
}

/// Elements a row-major rows x cols matrix with row stride ld spans.
std::int64_t matrix_span(std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  return rows <= 0 || cols <= 0 ? 0 : (rows - 1) * ld + cols;
}

// ---- dtype dispatch ----------------------------------------------------------------------

/// f(T{}) for the storage type named by `dtype`.
template <class F>
decltype(auto) dispatch(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::F32:
      return f(float{});
    case DType::F16:
      return f(kernels::fp16{});
    case DType::BF16:
      return f(kernels::bf16{});
    case DType::I32:
      break;
  }
  throw std::logic_error(std::string(op) + ": no " + name_of(dtype) + " version");
}

template <class T>
const T* in(ConstView view) {
  return static_cast<const T*>(view.data);
}
template <class T>
T* out(View view) {
  return static_cast<T*>(view.data);
}

// ---- element-wise engine work ------------------------------------------------------------

// Element-wise loops run over fixed blocks: long enough to amortise a task and to vectorise
// the plain inner loop, and fixed (not per thread) so norm_squared's partial sums, one per
// block, add up in the same order on any number of threads.
constexpr std::int64_t kElementBlock = 8192;

std::int64_t block_count(std::int64_t n) {
  return (n + kElementBlock - 1) / kElementBlock;
}

// Blocks that load fp16 go through fp32 chunks on the stack: kernels::ops::load_n / store_n
// convert 8-16 values per instruction (F16C), where the loops over load(fp16) stayed slow (64M
// elements, 1 thread: fp16 add_scaled 2-3x, norm_squared 1.5x the fp32 time while moving half
// the bytes). The plain loops are kept elsewhere: they run at memory speed there, and a chunk's
// round trip through the stack measured slower (fp32 -> bf16 convert up to 2x, fp16 -> fp32
// add_scaled 1.4x).
// Same values, same order: the same bits.
constexpr int kConvertChunk = 512;
template <class S, class D>
constexpr bool kConvertChunked =  // fp16 -> fp32 ran at memory speed already
    std::is_same<S, kernels::fp16>::value && !std::is_same<D, float>::value;
template <class D>
constexpr bool kAddChunked = std::is_same<D, kernels::fp16>::value;  // fp16 -> fp32 was fine

/// count values from x as fp32: x itself when it is fp32, else widened into `chunk`.
template <class T>
const float* as_float(const T* x, int count, float* chunk) {
  if constexpr (std::is_same<T, float>::value) {
    return x;
  } else {
    load_n(x, count, chunk);
    return chunk;
  }
}

template <class S, class D>
void convert_blocks(const S* src, D* dst, std::int64_t n, float scale) {
  Kokkos::parallel_for(
      "zt::backend::convert", BlockRange(0, block_count(n)), KOKKOS_LAMBDA(std::int64_t block) {
        const std::int64_t begin = block * kElementBlock;
        const std::int64_t end = begin + kElementBlock < n ? begin + kElementBlock : n;
        if constexpr (!kConvertChunked<S, D>) {
          for (std::int64_t i = begin; i < end; ++i) dst[i] = store<D>(scale * load(src[i]));
        } else {
          for (std::int64_t i = begin; i < end; i += kConvertChunk) {
            const int count = static_cast<int>(end - i < kConvertChunk ? end - i : kConvertChunk);
            float chunk[kConvertChunk];
            load_n(src + i, count, chunk);
            for (int k = 0; k < count; ++k) chunk[k] = scale * chunk[k];
            store_n(chunk, count, dst + i);
          }
        }
      });
}

template <class S, class D>
void add_scaled_blocks(const S* src, D* dst, std::int64_t n, float scale) {
  Kokkos::parallel_for(
      "zt::backend::add_scaled", BlockRange(0, block_count(n)), KOKKOS_LAMBDA(std::int64_t block) {
        const std::int64_t begin = block * kElementBlock;
        const std::int64_t end = begin + kElementBlock < n ? begin + kElementBlock : n;
        if constexpr (!kAddChunked<D>) {
          for (std::int64_t i = begin; i < end; ++i)
            dst[i] = store<D>(load(dst[i]) + scale * load(src[i]));
        } else {
          for (std::int64_t i = begin; i < end; i += kConvertChunk) {
            const int count = static_cast<int>(end - i < kConvertChunk ? end - i : kConvertChunk);
            float addend_chunk[kConvertChunk], sum[kConvertChunk];
            const float* addend = as_float(src + i, count, addend_chunk);
            load_n(dst + i, count, sum);
            for (int k = 0; k < count; ++k) sum[k] = sum[k] + scale * addend[k];
            store_n(sum, count, dst + i);
          }
        }
      });
}

// Independent double lanes: the compiler vectorises the squares into them without
// reassociating (no -ffast-math), which a single running sum would forbid. 16 lanes are two
// AVX-512 registers of doubles, enough independent adds to hide the FMA latency.
constexpr int kNormLanes = 16;

template <class T>
double block_sum_of_squares(const T* x, std::int64_t begin, std::int64_t end) {
  double lanes[kNormLanes] = {};
  std::int64_t i = begin;
  if constexpr (!std::is_same<T, kernels::fp16>::value) {
    for (; i + kNormLanes <= end; i += kNormLanes)
      for (int k = 0; k < kNormLanes; ++k) {
        const double v = static_cast<double>(load(x[i + k]));
        lanes[k] += v * v;
      }
  } else {
    // whole lane groups through fp32 chunks (kConvertChunk is a multiple of kNormLanes), so
    // every element lands in the lane it does above
    static_assert(kConvertChunk % kNormLanes == 0, "chunks of whole lane groups");
    float values[kConvertChunk];
    while (i + kNormLanes <= end) {
      const std::int64_t groups = (end - i) / kNormLanes * kNormLanes;
      const int count = static_cast<int>(groups < kConvertChunk ? groups : kConvertChunk);
      load_n(x + i, count, values);
      for (int j = 0; j < count; j += kNormLanes)
        for (int k = 0; k < kNormLanes; ++k) {
          const double v = static_cast<double>(values[j + k]);
          lanes[k] += v * v;
        }
      i += count;
    }
  }
  for (; i < end; ++i) {
    const double v = static_cast<double>(load(x[i]));
    lanes[0] += v * v;
  }
  double sum = 0.0;
  for (int k = 0; k < kNormLanes; ++k) sum += lanes[k];
  return sum;
}

template <class T>
Backend::NormResult norm_blocks(const T* x, std::int64_t n) {
  const std::int64_t blocks = block_count(n);
  std::vector<double> partial(static_cast<std::size_t>(blocks));
  double* partial_sums = partial.data();
  Kokkos::parallel_for(
      "zt::backend::norm_squared", BlockRange(0, blocks), KOKKOS_LAMBDA(std::int64_t block) {
        const std::int64_t begin = block * kElementBlock;
        const std::int64_t end = begin + kElementBlock < n ? begin + kElementBlock : n;
        partial_sums[block] = block_sum_of_squares(x, begin, end);
      });
  Backend::NormResult result;
  for (std::int64_t b = 0; b < blocks; ++b) result.sum_of_squares += partial_sums[b];
  // A square of a finite fp32 value is below 2^256 and no realistic count of them overflows a
  // double, while an inf or NaN element makes the sum inf or NaN: the sum alone tells.
  result.finite = std::isfinite(result.sum_of_squares);
  return result;
}

// Below this a copy is one memcpy on the calling thread; above it chunks go to all threads,
// since one core cannot draw the machine's memory bandwidth.
constexpr std::int64_t kParallelCopyBytes = std::int64_t{4} << 20;
constexpr std::int64_t kCopyChunkBytes = std::int64_t{1} << 20;

void copy_bytes(const void* src, void* dst, std::int64_t bytes) {
  if (bytes < kParallelCopyBytes) {
    if (bytes > 0) std::memcpy(dst, src, static_cast<std::size_t>(bytes));
    return;
  }
  const auto* from = static_cast<const std::byte*>(src);
  auto* to = static_cast<std::byte*>(dst);
  const std::int64_t chunks = (bytes + kCopyChunkBytes - 1) / kCopyChunkBytes;
  Kokkos::parallel_for(
      "zt::backend::copy", BlockRange(0, chunks), KOKKOS_LAMBDA(std::int64_t chunk) {
        const std::int64_t begin = chunk * kCopyChunkBytes;
        const std::int64_t length =
            begin + kCopyChunkBytes < bytes ? kCopyChunkBytes : bytes - begin;
        std::memcpy(to + begin, from + begin, static_cast<std::size_t>(length));
      });
}

// ---- the backend -------------------------------------------------------------------------

class HostBackend final : public Backend {
 public:
  explicit HostBackend(const HostBackendOptions& options) : options_(options) {}

  const char* name() const override { return "host"; }
  Place compute_place() const override { return Place::Device; }
  std::string gemm_path(DType dtype) const override { return kernels::gemm_path(dtype); }

  void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
            ConstView A, std::int64_t lda, ConstView B, std::int64_t ldb, float beta, View C,
            std::int64_t ldc) override {
    OpCheck check = checker("gemm");
    if (check.enabled()) {
      if (M < 0 || N < 0 || K < 0)
        check.fail("negative shape M=" + std::to_string(M) + " N=" + std::to_string(N) +
                   " K=" + std::to_string(K));
      const std::int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
      const std::int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
      if (lda < a_cols || ldb < b_cols || ldc < N)
        check.fail("leading dimension below the row length (lda=" + std::to_string(lda) +
                   " ldb=" + std::to_string(ldb) + " ldc=" + std::to_string(ldc) + ")");
      check.storage("A", A, matrix_span(a_rows, a_cols, lda), "op(A) M x K with lda")
          .storage("B", B, matrix_span(b_rows, b_cols, ldb), "op(B) K x N with ldb")
          .storage("C", C, matrix_span(M, N, ldc), "M x N with ldc");
    }
    kernels::gemm(C.dtype, trans_a, trans_b, M, N, K, alpha, A.data, lda, B.data, ldb, beta, C.data,
                  ldc);
  }

  void set_zero(View view) override {
    OpCheck check = checker("set_zero");
    if (check.enabled() && view.dtype == DType::I32)
      check.fixed("out", view, DType::I32, 0, "");
    else
      check.storage("out", view, 0, "");
    // Zero bits are zero in every dtype, int32 included: clear it as fp32 of the same size.
    if (view.dtype == DType::I32) {
      kh::set_zero(static_cast<float*>(view.data), view.count);
      return;
    }
    dispatch("set_zero", view.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::set_zero(out<T>(view), view.count);
    });
  }

  void embedding_forward(ConstView wte, ConstView wpe, ConstView tokens, int rows, int seq_len,
                         int channels, View result) override {
    OpCheck check = checker("embedding_forward");
    check.positive("rows", rows).positive("seq_len", seq_len).positive("channels", channels);
    check.storage("wte", wte, channels, "channels")
        .storage("wpe", wpe, product(seq_len, channels), "seq_len * channels")
        .storage("out", result, product(rows, channels), "rows * channels")
        .fixed("tokens", tokens, DType::I32, rows, "rows")
        .indices("tokens", tokens, rows, wte.count / channels, "rows of wte");
    dispatch("embedding_forward", wte.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::embedding_forward(in<T>(wte), in<T>(wpe), in<std::int32_t>(tokens), rows, seq_len,
                            channels, out<T>(result));
    });
  }

  void embedding_backward(ConstView dout, ConstView tokens, int rows, int seq_len, int channels,
                          View dwte, View dwpe) override {
    OpCheck check = checker("embedding_backward");
    check.positive("rows", rows).positive("seq_len", seq_len).positive("channels", channels);
    check.storage("dout", dout, product(rows, channels), "rows * channels")
        .storage("dwte", dwte, channels, "channels")
        .storage("dwpe", dwpe, product(seq_len, channels), "seq_len * channels")
        .fixed("tokens", tokens, DType::I32, rows, "rows")
        .indices("tokens", tokens, rows, dwte.count / channels, "rows of dwte");
    dispatch("embedding_backward", dout.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::embedding_backward(in<T>(dout), in<std::int32_t>(tokens), rows, seq_len, channels,
                             out<T>(dwte), out<T>(dwpe));
    });
  }

  void layernorm_forward(ConstView x, ConstView weight, ConstView bias, int rows, int channels,
                         float epsilon, View result, View mean, View rstd) override {
    OpCheck check = checker("layernorm_forward");
    check.positive("rows", rows).positive("channels", channels);
    check.storage("x", x, product(rows, channels), "rows * channels")
        .storage("weight", weight, channels, "channels")
        .storage("bias", bias, channels, "channels")
        .storage("out", result, product(rows, channels), "rows * channels")
        .fixed("mean", mean, DType::F32, rows, "rows")
        .fixed("rstd", rstd, DType::F32, rows, "rows");
    dispatch("layernorm_forward", x.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::layernorm_forward(in<T>(x), in<T>(weight), in<T>(bias), rows, channels, epsilon,
                            out<T>(result), out<float>(mean), out<float>(rstd));
    });
  }

  void layernorm_backward(ConstView dout, ConstView x, ConstView weight, ConstView mean,
                          ConstView rstd, int rows, int channels, View dx, View dweight,
                          View dbias) override {
    OpCheck check = checker("layernorm_backward");
    check.positive("rows", rows).positive("channels", channels);
    check.storage("dout", dout, product(rows, channels), "rows * channels")
        .storage("x", x, product(rows, channels), "rows * channels")
        .storage("weight", weight, channels, "channels")
        .storage("dx", dx, product(rows, channels), "rows * channels")
        .storage("dweight", dweight, channels, "channels")
        .storage("dbias", dbias, channels, "channels")
        .fixed("mean", mean, DType::F32, rows, "rows")
        .fixed("rstd", rstd, DType::F32, rows, "rows");
    dispatch("layernorm_backward", dout.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::layernorm_backward(in<T>(dout), in<T>(x), in<T>(weight), in<float>(mean), in<float>(rstd),
                             rows, channels, out<T>(dx), out<T>(dweight), out<T>(dbias));
    });
  }

  void bias_fill(ConstView bias, int rows, int width, View result) override {
    OpCheck check = checker("bias_fill");
    check.positive("rows", rows).positive("width", width);
    check.storage("bias", bias, width, "width")
        .storage("out", result, product(rows, width), "rows * width");
    dispatch("bias_fill", bias.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::bias_fill(in<T>(bias), rows, width, out<T>(result));
    });
  }

  void residual_bias_fill(ConstView residual, ConstView bias, int rows, int width,
                          View result) override {
    OpCheck check = checker("residual_bias_fill");
    check.positive("rows", rows).positive("width", width);
    check.storage("residual", residual, product(rows, width), "rows * width")
        .storage("bias", bias, width, "width")
        .storage("out", result, product(rows, width), "rows * width");
    dispatch("residual_bias_fill", bias.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::residual_bias_fill(in<T>(residual), in<T>(bias), rows, width, out<T>(result));
    });
  }

  void bias_backward(ConstView dout, int rows, int width, View dbias) override {
    OpCheck check = checker("bias_backward");
    check.positive("rows", rows).positive("width", width);
    check.storage("dout", dout, product(rows, width), "rows * width")
        .storage("dbias", dbias, width, "width");
    dispatch("bias_backward", dout.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::bias_backward(in<T>(dout), rows, width, out<T>(dbias));
    });
  }

  void bias_gelu_forward(ConstView bias, int rows, int width, View pre, View result) override {
    OpCheck check = checker("bias_gelu_forward");
    check.positive("rows", rows).positive("width", width);
    check.storage("bias", bias, width, "width")
        .storage("pre", pre, product(rows, width), "rows * width")
        .storage("out", result, product(rows, width), "rows * width");
    dispatch("bias_gelu_forward", bias.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::bias_gelu_forward(in<T>(bias), rows, width, out<T>(pre), out<T>(result));
    });
  }

  void gelu_backward(ConstView pre, int rows, int width, View grad) override {
    OpCheck check = checker("gelu_backward");
    check.positive("rows", rows).positive("width", width);
    check.storage("pre", pre, product(rows, width), "rows * width")
        .storage("grad", grad, product(rows, width), "rows * width");
    dispatch("gelu_backward", pre.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::gelu_backward(in<T>(pre), rows, width, out<T>(grad));
    });
  }

  void attention_forward(const AttentionShape& shape, ConstView qkv, View prob,
                         View result) override {
    OpCheck check = checker("attention_forward");
    check_shape(check, shape);
    check
        .storage("qkv", qkv, product(shape.batch, shape.seq_len, 3 * std::int64_t{shape.channels}),
                 "batch * seq_len * 3 channels")
        .storage("prob", prob,
                 product(shape.batch, shape.n_head, product(shape.seq_len, shape.seq_len)),
                 "batch * n_head * seq_len^2")
        .storage("out", result, product(shape.batch, shape.seq_len, shape.channels),
                 "batch * seq_len * channels");
    dispatch("attention_forward", qkv.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::attention_forward(host_shape(shape), in<T>(qkv), out<T>(prob), out<T>(result));
    });
  }

  std::int64_t attention_backward_scratch(int seq_len) const override {
    return static_cast<std::int64_t>(kh::attention_backward_scratch_floats(seq_len));
  }

  void attention_backward(const AttentionShape& shape, ConstView dout, ConstView qkv,
                          ConstView prob, View dqkv, View scratch) override {
    OpCheck check = checker("attention_backward");
    check_shape(check, shape);
    const std::int64_t qkv_count =
        product(shape.batch, shape.seq_len, 3 * std::int64_t{shape.channels});
    check
        .storage("dout", dout, product(shape.batch, shape.seq_len, shape.channels),
                 "batch * seq_len * channels")
        .storage("qkv", qkv, qkv_count, "batch * seq_len * 3 channels")
        .storage("prob", prob,
                 product(shape.batch, shape.n_head, product(shape.seq_len, shape.seq_len)),
                 "batch * n_head * seq_len^2")
        .storage("dqkv", dqkv, qkv_count, "batch * seq_len * 3 channels")
        .fixed("scratch", scratch, DType::F32, attention_backward_scratch(shape.seq_len),
               "attention_backward_scratch(seq_len)");
    dispatch("attention_backward", dout.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::attention_backward(host_shape(shape), in<T>(dout), in<T>(qkv), in<T>(prob), out<T>(dqkv),
                             out<float>(scratch));
    });
  }

  double cross_entropy_forward(ConstView logits, ConstView targets, int rows, int vocab_size,
                               View losses, View log_sum_exp) override {
    OpCheck check = checker("cross_entropy_forward");
    check.positive("rows", rows).positive("vocab_size", vocab_size);
    check.storage("logits", logits, product(rows, vocab_size), "rows * vocab_size")
        .fixed("targets", targets, DType::I32, rows, "rows")
        .fixed("losses", losses, DType::F32, rows, "rows")
        .fixed("log_sum_exp", log_sum_exp, DType::F32, rows, "rows")
        .indices("targets", targets, rows, vocab_size, "vocab_size");
    return dispatch("cross_entropy_forward", logits.dtype, [&](auto tag) {
      using T = decltype(tag);
      return kh::cross_entropy_forward(in<T>(logits), in<std::int32_t>(targets), rows, vocab_size,
                                       out<float>(losses), out<float>(log_sum_exp));
    });
  }

  void cross_entropy_backward(ConstView targets, ConstView log_sum_exp, int rows, int vocab_size,
                              float grad_scale, View logits_to_grad) override {
    OpCheck check = checker("cross_entropy_backward");
    check.positive("rows", rows).positive("vocab_size", vocab_size);
    check.storage("logits_to_grad", logits_to_grad, product(rows, vocab_size), "rows * vocab_size")
        .fixed("targets", targets, DType::I32, rows, "rows")
        .fixed("log_sum_exp", log_sum_exp, DType::F32, rows, "rows")
        .indices("targets", targets, rows, vocab_size, "vocab_size");
    dispatch("cross_entropy_backward", logits_to_grad.dtype, [&](auto tag) {
      using T = decltype(tag);
      kh::cross_entropy_backward(in<std::int32_t>(targets), in<float>(log_sum_exp), rows,
                                 vocab_size, grad_scale, out<T>(logits_to_grad));
    });
  }

  void convert(ConstView src, View dst, float scale) override {
    check_pair("convert", src, dst);
    dispatch("convert", src.dtype, [&](auto src_tag) {
      dispatch("convert", dst.dtype, [&](auto dst_tag) {
        convert_blocks(in<decltype(src_tag)>(src), out<decltype(dst_tag)>(dst), src.count, scale);
      });
    });
  }

  void add_scaled(ConstView src, View dst, float scale) override {
    check_pair("add_scaled", src, dst);
    dispatch("add_scaled", src.dtype, [&](auto src_tag) {
      dispatch("add_scaled", dst.dtype, [&](auto dst_tag) {
        add_scaled_blocks(in<decltype(src_tag)>(src), out<decltype(dst_tag)>(dst), src.count,
                          scale);
      });
    });
  }

  NormResult norm_squared(ConstView values) override {
    OpCheck check(options_.check_places, "norm_squared", values.place);
    check_engine_place(check, "values", values.place);
    check.storage("values", values, 0, "");
    return dispatch("norm_squared", values.dtype,
                    [&](auto tag) { return norm_blocks(in<decltype(tag)>(values), values.count); });
  }

  Event copy_async(ConstView src, View dst) override {
    if (options_.check_places) {
      OpCheck check(true, "copy_async", src.place);
      check_engine_place(check, "src", src.place);
      check_engine_place(check, "dst", dst.place);
      if (src.dtype != dst.dtype)
        check.fail("dst is " + name_of(dst.dtype) + ", src is " + name_of(src.dtype));
      if (src.count != dst.count)
        check.fail("dst has " + std::to_string(dst.count) + " elements, src has " +
                   std::to_string(src.count));
      if (src.count > 0 && (src.data == nullptr || dst.data == nullptr))
        check.fail(src.data == nullptr ? "src is null" : "dst is null");
    }
    copy_bytes(src.data, dst.data, src.bytes());
    if (src.place == Place::Device && dst.place == Place::Host)
      device_to_host_.fetch_add(src.bytes(), std::memory_order_relaxed);
    else if (src.place == Place::Host && dst.place == Place::Device)
      host_to_device_.fetch_add(src.bytes(), std::memory_order_relaxed);
    return Event();  // the copy is done: an empty event is complete
  }

  CopyTraffic copy_traffic() const override {
    CopyTraffic traffic;
    traffic.device_to_host = device_to_host_.load(std::memory_order_relaxed);
    traffic.host_to_device = host_to_device_.load(std::memory_order_relaxed);
    return traffic;
  }

  void synchronize() override {}  // every call above has finished when it returns

 private:
  OpCheck checker(const char* op) const {
    return OpCheck(options_.check_places, op, compute_place());
  }

  static kh::AttentionShape host_shape(const AttentionShape& s) {
    return kh::AttentionShape{s.batch, s.seq_len, s.n_head, s.channels};
  }

  static void check_shape(OpCheck& check, const AttentionShape& s) {
    check.positive("batch", s.batch)
        .positive("seq_len", s.seq_len)
        .positive("n_head", s.n_head)
        .positive("channels", s.channels);
    if (check.enabled() && s.channels % s.n_head != 0)
      check.fail("channels = " + std::to_string(s.channels) +
                 " is not a multiple of n_head = " + std::to_string(s.n_head));
  }

  // Engine-side element-wise work and copies also run on host-place buffers (the optimizer's
  // offloaded states): both places are host memory here. NVMe is the swapper's, never a
  // pointer to compute on.
  static void check_engine_place(const OpCheck& check, const char* name, Place place) {
    if (check.enabled() && place != Place::Device && place != Place::Host)
      check.fail(std::string(name) + " is on " + memory::place_name(place) +
                 ", expected device or host");
  }

  // convert and add_scaled: any storage dtypes, one place (either), one count.
  void check_pair(const char* op, ConstView src, View dst) const {
    OpCheck check(options_.check_places, op, src.place);
    if (!check.enabled()) return;
    check_engine_place(check, "src", src.place);
    if (dst.place != src.place)
      check.fail(std::string("dst is on ") + memory::place_name(dst.place) + ", src on " +
                 memory::place_name(src.place));
    if (!is_storage(src.dtype))
      check.fail("src is " + name_of(src.dtype) + ", expected fp32, fp16 or bf16");
    if (!is_storage(dst.dtype))
      check.fail("dst is " + name_of(dst.dtype) + ", expected fp32, fp16 or bf16");
    if (src.count != dst.count)
      check.fail("dst has " + std::to_string(dst.count) + " elements, src has " +
                 std::to_string(src.count));
    if (src.count > 0 && (src.data == nullptr || dst.data == nullptr))
      check.fail(src.data == nullptr ? "src is null" : "dst is null");
  }

  HostBackendOptions options_;
  std::atomic<std::int64_t> device_to_host_{0};
  std::atomic<std::int64_t> host_to_device_{0};
};

}  // namespace

std::unique_ptr<Backend> make_host_backend(const HostBackendOptions& options) {
  return std::make_unique<HostBackend>(options);
}

}  // namespace zt::backend
