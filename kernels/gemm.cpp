// SPDX-License-Identifier: Apache-2.0
#include "kernels/gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ZT_GEMM_X86 1
#endif

#if defined(ZT_GEMM_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
#elif defined(ZT_GEMM_CBLAS)
#include <cblas.h>
#else
#error "define ZT_GEMM_ONEDNN or ZT_GEMM_CBLAS (cmake/ZtGemm.cmake does)"
#endif

namespace zt::kernels {

namespace {

// True inside an OpenMP (Kokkos::OpenMP) parallel region: the GEMM must then stay on the calling
// thread. dnnl_sgemm checks this itself; the matmul primitive's work split is fixed when it is
// created, so it is not run from inside a region at all (see gemm(DType, ...)).
bool in_parallel_region() {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

void sgemm_library(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                   float alpha, const float* A, std::int64_t lda, const float* B, std::int64_t ldb,
                   float beta, float* C, std::int64_t ldc) {
#if defined(ZT_GEMM_ONEDNN)
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha,
                                          A, lda, B, ldb, beta, C, ldc);
  if (status != dnnl_success)
    throw std::runtime_error("dnnl_sgemm failed (status " + std::to_string(status) +
                             ") for M=" + std::to_string(M) + " N=" + std::to_string(N) +
                             " K=" + std::to_string(K));
#else
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
#endif
}

#if defined(ZT_GEMM_ONEDNN)

// ---------------------------------------------------------------------------------------------
// oneDNN matmul primitives, cached per problem.
//
// A primitive is compiled (JIT) for one shape, layout, data type and set of attributes, which
// takes 0.1-10 ms: far too slow per call, so primitives are kept per key. alpha and beta are
// baked into the attributes (oneDNN 2.6 has runtime output scales but no runtime sum scale), so
// their values are part of the key; the model uses alpha = 1 and beta in {0, 1}, i.e. a handful
// of entries per layer shape. Operands are described by explicit strides, so transposes and
// padded leading dimensions cost no copies.
// ---------------------------------------------------------------------------------------------

struct MatmulKey {
  DType type;
  bool trans_a, trans_b;
  std::int64_t M, N, K, lda, ldb, ldc;
  std::uint32_t alpha_bits, beta_bits;
  bool packed;  // weights (B) reordered into the primitive's preferred layout on every call
  bool operator==(const MatmulKey& o) const {
    return type == o.type && trans_a == o.trans_a && trans_b == o.trans_b && packed == o.packed &&
           M == o.M && N == o.N && K == o.K && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           alpha_bits == o.alpha_bits && beta_bits == o.beta_bits;
  }
};

struct MatmulKeyHash {
  std::size_t operator()(const MatmulKey& k) const {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(static_cast<std::uint64_t>(k.type) << 3 | (k.packed ? 4u : 0u) | (k.trans_a ? 2u : 0u) |
        (k.trans_b ? 1u : 0u));
    for (std::int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc}) mix(static_cast<std::uint64_t>(v));
    mix(static_cast<std::uint64_t>(k.alpha_bits) << 32 | k.beta_bits);
    return static_cast<std::size_t>(h);
  }
};

struct MatmulEntry {
  bool usable = false;  // false: no primitive, or only a reference one; use the fallback route
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  std::size_t scratchpad_bytes = 0;  // the largest of the matmul's and the reorder's
  // packed entries: the caller's B (strided) -> the layout the primitive chose for it
  dnnl::memory::desc user_b, pack_b_scratchpad;
  dnnl::reorder pack_b;
  std::size_t packed_b_bytes = 0;
  std::string impl;  // impl_info_str(), e.g. "brg:avx512_core_bf16"
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::memory::data_type dnnl_type(DType type) {
  switch (type) {
    case DType::F32:
      return dnnl::memory::data_type::f32;
    case DType::F16:
      return dnnl::memory::data_type::f16;
    case DType::BF16:
      return dnnl::memory::data_type::bf16;
    case DType::I32:
      break;
  }
  throw std::invalid_argument("gemm: no matmul type for " + std::string(dtype_name(type)));
}

std::uint32_t bits_of(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// The CPU's own bf16 instructions (AVX512-BF16 dot products, or AMX tiles). oneDNN 2.6 also
// runs bf16 on plain AVX-512 by emulating the dot product; that is no faster than fp32, so it
// does not count as native.
bool cpu_has_native_bf16() {
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

std::shared_ptr<const MatmulEntry> make_entry(const MatmulKey& key) {
  using dims = dnnl::memory::dims;
  auto entry = std::make_shared<MatmulEntry>();
  const auto dt = dnnl_type(key.type);
  // Row-major storage; a transposed operand is the same storage with its strides swapped.
  const dnnl::memory::desc a({key.M, key.K}, dt, key.trans_a ? dims{1, key.lda} : dims{key.lda, 1});
  const dnnl::memory::desc user_b({key.K, key.N}, dt,
                                  key.trans_b ? dims{1, key.ldb} : dims{key.ldb, 1});
  const dnnl::memory::desc b =
      key.packed ? dnnl::memory::desc({key.K, key.N}, dt, dnnl::memory::format_tag::any) : user_b;
  const dnnl::memory::desc c({key.M, key.N}, dt, dims{key.ldc, 1});
  dnnl::primitive_attr attr;
  // The caller's thread provides the scratchpad (see run_matmul): with the library's default
  // mode one global scratchpad would be shared by concurrent executions.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  float alpha, beta;
  std::memcpy(&alpha, &key.alpha_bits, sizeof(alpha));
  std::memcpy(&beta, &key.beta_bits, sizeof(beta));
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {  // dst = alpha * (A B) + beta * dst, in fp32, rounded once
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  try {
    entry->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
  } catch (const dnnl::error&) {
    return entry;  // unimplemented for this type here (oneDNN 2.6 CPU has no f16 matmul)
  }
  entry->impl = entry->pd.impl_info_str();
  // A reference implementation is a plain loop nest, orders of magnitude slower: never use it.
  if (entry->impl.rfind("ref", 0) == 0) return entry;
  entry->primitive = dnnl::matmul(entry->pd);
  entry->scratchpad_bytes = entry->pd.scratchpad_desc().get_size();
  if (key.packed) {
    dnnl::primitive_attr reorder_attr;
    reorder_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::reorder::primitive_desc reorder_pd(cpu_engine(), user_b, cpu_engine(),
                                                   entry->pd.weights_desc(), reorder_attr);
    entry->user_b = user_b;
    entry->pack_b = dnnl::reorder(reorder_pd);
    entry->pack_b_scratchpad = reorder_pd.scratchpad_desc();
    entry->packed_b_bytes = entry->pd.weights_desc().get_size();
    entry->scratchpad_bytes =
        std::max(entry->scratchpad_bytes, reorder_pd.scratchpad_desc().get_size());
  }
  entry->usable = true;
  return entry;
}

class MatmulCache {
 public:
  std::shared_ptr<const MatmulEntry> get(const MatmulKey& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it != entries_.end()) return it->second;
    // A bound, so a caller sweeping many shapes cannot grow the cache without limit; entries in
    // use elsewhere stay alive through their shared_ptr.
    if (entries_.size() >= kMaxEntries) entries_.clear();
    auto entry = make_entry(key);
    entries_.emplace(key, entry);
    return entry;
  }

 private:
  static constexpr std::size_t kMaxEntries = 512;
  std::mutex mutex_;
  std::unordered_map<MatmulKey, std::shared_ptr<const MatmulEntry>, MatmulKeyHash> entries_;
};

MatmulCache& matmul_cache() {
  static MatmulCache cache;
  return cache;
}

std::shared_ptr<const MatmulEntry> find_matmul(bool packed, DType type, bool trans_a, bool trans_b,
                                               std::int64_t M, std::int64_t N, std::int64_t K,
                                               float alpha, std::int64_t lda, std::int64_t ldb,
                                               float beta, std::int64_t ldc) {
  // beta == -0.0f is beta == 0 (no sum post-op): normalise so both share one entry.
  const float key_beta = beta == 0.0f ? 0.0f : beta;
  return matmul_cache().get(MatmulKey{type, trans_a, trans_b, M, N, K, lda, ldb, ldc,
                                      bits_of(alpha), bits_of(key_beta), packed});
}

// Grow-only, 64-byte aligned, per thread: no allocation once the largest problem has been seen.
struct ScratchBuffer {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data;
  std::size_t bytes = 0;
  void* reserve(std::size_t need) {
    if (need > bytes) {
      const std::size_t rounded = (need + 63) / 64 * 64;
      data.reset(std::aligned_alloc(64, rounded));
      if (!data) throw std::bad_alloc();
      bytes = rounded;
    }
    return data.get();
  }
};

void run_matmul(const MatmulEntry& entry, const void* A, const void* B, void* C) {
  thread_local dnnl::stream stream(cpu_engine());
  thread_local ScratchBuffer scratchpad, packed_b;
  dnnl::engine& engine = cpu_engine();
  // Memory objects only wrap the caller's pointers (no copies, no large allocations).
  dnnl::memory a(entry.pd.src_desc(), engine, const_cast<void*>(A));
  dnnl::memory c(entry.pd.dst_desc(), engine, C);
  // One buffer serves the reorder and then the matmul (they run in order on the stream).
  void* scratch = entry.scratchpad_bytes ? scratchpad.reserve(entry.scratchpad_bytes) : nullptr;
  dnnl::memory pad(entry.pd.scratchpad_desc(), engine, scratch);
  dnnl::memory b;
  if (entry.packed_b_bytes > 0) {
    b = dnnl::memory(entry.pd.weights_desc(), engine, packed_b.reserve(entry.packed_b_bytes));
    dnnl::memory user_b(entry.user_b, engine, const_cast<void*>(B));
    dnnl::memory pack_pad(entry.pack_b_scratchpad, engine, scratch);
    entry.pack_b.execute(
        stream, {{DNNL_ARG_FROM, user_b}, {DNNL_ARG_TO, b}, {DNNL_ARG_SCRATCHPAD, pack_pad}});
  } else {
    b = dnnl::memory(entry.pd.weights_desc(), engine, const_cast<void*>(B));
  }
  entry.primitive.execute(
      stream,
      {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}, {DNNL_ARG_SCRATCHPAD, pad}});
  stream.wait();
}

#endif  // ZT_GEMM_ONEDNN

// ---------------------------------------------------------------------------------------------
// The converted route: 16-bit operands widened to fp32 in per-thread scratch, the fp32 GEMM,
// C rounded once. Used for fp16 (oneDNN 2.6 has no CPU f16 matmul, and this CPU has no fp16
// arithmetic anyway), for bf16 where the CPU has no bf16 instructions, and for any 16-bit call
// made inside a parallel region. 16-bit values are exact in fp32, so the result equals the fp32
// GEMM of the rounded inputs, rounded once.
// ---------------------------------------------------------------------------------------------

// Widening and rounding are memory-bound loops; split them over the threads only when there is
// enough work to pay for waking the team (and never inside a region: stay on the caller).
constexpr std::int64_t kParallelElements = 1 << 15;

#if defined(ZT_GEMM_X86)
// F16C (x86-64-v3, every AVX2 CPU): 8 conversions per instruction, exact when widening and
// round-to-nearest-even when narrowing: the same bits as to_float / from_float<fp16> for every
// value but NaN (which stays a NaN, with the payload's top bits rather than 0x7e00).
__attribute__((target("avx,f16c"))) void widen_row_f16c(const fp16* source, std::int64_t n,
                                                        float* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(
        out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(source + i))));
  for (; i < n; ++i) out[i] = to_float(source[i]);
}
__attribute__((target("avx,f16c"))) void narrow_row_f16c(const float* source, std::int64_t n,
                                                         fp16* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(source + i),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) out[i] = from_float<fp16>(source[i]);
}
bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}
#endif

template <class T>
void widen_row(const T* source, std::int64_t n, float* out) {
#if defined(ZT_GEMM_X86)
  if constexpr (std::is_same_v<T, fp16>)
    if (cpu_has_f16c()) return widen_row_f16c(source, n, out);
#endif
  for (std::int64_t i = 0; i < n; ++i) out[i] = to_float(source[i]);  // bf16: a shift, vectorised
}

template <class T>
void narrow_row(const float* source, std::int64_t n, T* out) {
#if defined(ZT_GEMM_X86)
  if constexpr (std::is_same_v<T, fp16>)
    if (cpu_has_f16c()) return narrow_row_f16c(source, n, out);
#endif
  for (std::int64_t i = 0; i < n; ++i) out[i] = from_float<T>(source[i]);
}

// A rows x cols block of a row-major array with row stride ld, to be copied into dense fp32.
struct WidenJob {
  const void* source;
  std::int64_t rows, cols, ld;
  float* out;
};

// Widens several blocks in one parallel region: each region costs a wake-up and a barrier,
// which on a shared 2-core machine is paid whenever the other thread is descheduled.
template <class T>
void widen(const WidenJob* jobs, int count) {
  std::int64_t elements = 0;
  for (int j = 0; j < count; ++j) elements += jobs[j].rows * jobs[j].cols;
  const bool parallel = elements >= kParallelElements && !in_parallel_region();
#pragma omp parallel if (parallel)
  for (int j = 0; j < count; ++j) {
    const WidenJob& job = jobs[j];
    const T* source = static_cast<const T*>(job.source);
#pragma omp for schedule(static) nowait
    for (std::int64_t r = 0; r < job.rows; ++r)
      widen_row(source + r * job.ld, job.cols, job.out + r * job.cols);
  }
}

// Rounds a dense fp32 block into a row-major 16-bit array with row stride ld.
template <class T>
void narrow(const float* source, std::int64_t rows, std::int64_t cols, T* out, std::int64_t ld) {
  const bool parallel = rows * cols >= kParallelElements && !in_parallel_region();
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t r = 0; r < rows; ++r) narrow_row(source + r * cols, cols, out + r * ld);
}

// Block edge for the converted route: a dimension up to kMaxBlock is one block, a longer one is
// cut into equal blocks no longer than that. It bounds the scratch (each fp32 block is at most
// 64 MiB; GPT-2's 50257-wide lm_head would otherwise need 0.8 GB per operand) while keeping
// every fp32 GEMM large enough to run at full rate; re-widening an operand once per block of the
// other dimension costs 1/(2*block) conversions per FLOP, under 0.1%.
constexpr std::int64_t kMaxBlock = 4096;
std::int64_t block_of(std::int64_t n) {
  const std::int64_t blocks = (n + kMaxBlock - 1) / kMaxBlock;
  return (n + blocks - 1) / blocks;
}

template <class T>
void gemm_converted(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                    float alpha, const T* A, std::int64_t lda, const T* B, std::int64_t ldb,
                    float beta, T* C, std::int64_t ldc) {
  thread_local std::vector<float> a_block, b_block, c_block;
  const std::int64_t mb = block_of(M), nb = block_of(N),
                     kb = block_of(std::max<std::int64_t>(K, 1));
  // resize() on a grow-only vector: allocates the first time a larger problem is seen only.
  auto reserve = [](std::vector<float>& v, std::int64_t n) {
    if (v.size() < static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
    return v.data();
  };
  float* a = reserve(a_block, mb * kb);
  float* b = reserve(b_block, kb * nb);
  float* c = reserve(c_block, mb * nb);
  for (std::int64_t m0 = 0; m0 < M; m0 += mb) {
    const std::int64_t m = std::min(mb, M - m0);
    for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
      const std::int64_t n = std::min(nb, N - n0);
      if (beta != 0.0f) {
        const WidenJob job{C + m0 * ldc + n0, m, n, ldc, c};
        widen<T>(&job, 1);
      }
      if (K == 0) {
        for (std::int64_t i = 0; i < m * n; ++i) c[i] = beta != 0.0f ? beta * c[i] : 0.0f;
      }
      for (std::int64_t k0 = 0; k0 < K; k0 += kb) {
        const std::int64_t k = std::min(kb, K - k0);
        WidenJob jobs[2];
        int count = 0;
        // With K in one block, the A block of this row panel is the same for every column
        // panel (GPT-2's lm_head: 13 of them): widen it once.
        if (n0 == 0 || kb < K)
          // Stored A is M x K (or K x M when transposed); take the block in its stored layout.
          jobs[count++] = trans_a ? WidenJob{A + k0 * lda + m0, k, m, lda, a}
                                  : WidenJob{A + m0 * lda + k0, m, k, lda, a};
        jobs[count++] = trans_b ? WidenJob{B + n0 * ldb + k0, n, k, ldb, b}
                                : WidenJob{B + k0 * ldb + n0, k, n, ldb, b};
        widen<T>(jobs, count);
        // The first K block applies beta to C; later ones accumulate into the fp32 panel.
        const float block_beta = k0 == 0 ? beta : 1.0f;
        sgemm_library(trans_a, trans_b, m, n, k, alpha, a, trans_a ? m : k, b, trans_b ? k : n,
                      block_beta, c, n);
      }
      narrow(c, m, n, C + m0 * ldc + n0, ldc);
    }
  }
}

using detail::GemmRoute;

// The route per type and shape class, from measurements on the development machine (AMD EPYC
// Zen 4 guest, 2 cores, AVX-512 + AVX512-BF16, no AMX / AVX512-FP16; oneDNN 2.6.3; the host is
// shared, so each figure is the median over >= 5 interleaved rounds of the same-round ratio
// t(dnnl_sgemm) / t(route), at GPT-2 small's layer shapes; bench/gemm_bench has the rates).
//
// fp32, matmul (brg:avx512_core, plain strided layouts) against dnnl_sgemm:
//   forward NT, 256 rows, 2 threads: qkv 1.05, attproj 1.12, fc 1.06, fcproj 1.47, lm_head 1.15
//     (1 thread: 0.97, 1.00, 0.98, 1.11, 0.90); 4096 rows, 2 threads: 0.95-1.02, a tie
//   backward dX NN: 0.82-0.97 at 256 rows, 0.79-0.97 at 4096
//   backward dW TN: 0.74-1.17 (median 0.93) at 256 rows, 0.83-1.02 at 4096
// so the matmul takes the forward NT products with few rows (sgemm splits M = 256 over the
// threads less well), and dnnl_sgemm all else. The attention's small per-head products (K = 64,
// mostly called inside a parallel region anyway) stay on sgemm, which needs no primitive per
// shape.
//
// "packed" (B reordered into the primitive's preferred blocked layout on every call; the
// optimizer changes the weights every step and each reordered copy serves one GEMM, so the
// reorder is paid per call) against dnnl_sgemm: 0.84-1.23 at 256 rows on 2 threads, 0.79-1.04 on
// 1 thread, 0.89-1.07 at 4096 rows: never better than the best of the other two; not chosen.
//
// bf16 against the converted route (the fp32 GEMM of widened operands), 256 rows, 2 threads:
// matmul (brg:avx512_core_bf16) 2.0-3.4x, packed 1.4-2.4x: the plain matmul, where the CPU has
// bf16 instructions. fp16: oneDNN 2.6 has no f16 matmul on CPUs (and this one has no fp16
// arithmetic): converted.
GemmRoute choose_route(DType type, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N,
                       std::int64_t K) {
  switch (type) {
    case DType::F32:
      return !trans_a && trans_b && M <= 1024 && N >= 256 && K >= 256 ? GemmRoute::matmul
                                                                      : GemmRoute::sgemm;
    case DType::BF16:
      return GemmRoute::matmul;  // falls back to converted without bf16 instructions
    default:
      return GemmRoute::converted;
  }
}

// Runs the problem by `route`; false (having done nothing) where that route cannot run it.
bool run_route(GemmRoute route, DType type, bool trans_a, bool trans_b, std::int64_t M,
               std::int64_t N, std::int64_t K, float alpha, const void* A, std::int64_t lda,
               const void* B, std::int64_t ldb, float beta, void* C, std::int64_t ldc) {
  switch (route) {
    case GemmRoute::sgemm:
      if (type != DType::F32) return false;
      sgemm_library(trans_a, trans_b, M, N, K, alpha, static_cast<const float*>(A), lda,
                    static_cast<const float*>(B), ldb, beta, static_cast<float*>(C), ldc);
      return true;
    case GemmRoute::matmul:
    case GemmRoute::packed: {
#if defined(ZT_GEMM_ONEDNN)
      // K = 0 has no matmul (C = beta C is left to the other routes); inside a parallel region
      // the primitive would split its work for a team that is not there.
      if (K == 0 || in_parallel_region()) return false;
      if (type == DType::BF16 && !cpu_has_native_bf16()) return false;
      const auto entry = find_matmul(route == GemmRoute::packed, type, trans_a, trans_b, M, N, K,
                                     alpha, lda, ldb, beta, ldc);
      if (!entry->usable) return false;
      run_matmul(*entry, A, B, C);
      return true;
#else
      return false;
#endif
    }
    case GemmRoute::converted:
      if (type == DType::F16) {
        gemm_converted(trans_a, trans_b, M, N, K, alpha, static_cast<const fp16*>(A), lda,
                       static_cast<const fp16*>(B), ldb, beta, static_cast<fp16*>(C), ldc);
        return true;
      }
      if (type == DType::BF16) {
        gemm_converted(trans_a, trans_b, M, N, K, alpha, static_cast<const bf16*>(A), lda,
                       static_cast<const bf16*>(B), ldb, beta, static_cast<bf16*>(C), ldc);
        return true;
      }
      return false;
  }
  return false;
}

// The route that runs every problem of its type.
GemmRoute fallback_route(DType type) {
  return type == DType::F32 ? GemmRoute::sgemm : GemmRoute::converted;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
          std::int64_t ldc) {
  gemm(DType::F32, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(DType type, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
          float alpha, const void* A, std::int64_t lda, const void* B, std::int64_t ldb, float beta,
          void* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (type != DType::F32 && type != DType::F16 && type != DType::BF16)
    throw std::invalid_argument(std::string("gemm: no GEMM for ") + dtype_name(type));
  const GemmRoute route = choose_route(type, trans_a, trans_b, M, N, K);
  if (run_route(route, type, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
    return;
  run_route(fallback_route(type), type, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C,
            ldc);
}

namespace detail {

bool gemm_by_route(GemmRoute route, DType type, bool trans_a, bool trans_b, std::int64_t M,
                   std::int64_t N, std::int64_t K, float alpha, const void* A, std::int64_t lda,
                   const void* B, std::int64_t ldb, float beta, void* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return true;
  return run_route(route, type, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

std::string gemm_impl(DType type, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N,
                      std::int64_t K, std::int64_t lda, std::int64_t ldb, std::int64_t ldc,
                      float beta) {
  GemmRoute route = choose_route(type, trans_a, trans_b, M, N, K);
#if defined(ZT_GEMM_ONEDNN)
  if (route == GemmRoute::matmul || route == GemmRoute::packed) {
    if (K > 0 && (type != DType::BF16 || cpu_has_native_bf16())) {
      const auto entry = find_matmul(route == GemmRoute::packed, type, trans_a, trans_b, M, N, K,
                                     1.0f, lda, ldb, beta, ldc);
      if (entry->usable)
        return std::string(route == GemmRoute::packed ? "packed " : "matmul ") + entry->impl;
    }
    route = fallback_route(type);
  }
  if (route == GemmRoute::sgemm) return "dnnl_sgemm";
#else
  (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)lda, (void)ldb, (void)ldc;
  (void)beta;
  if (route != GemmRoute::converted) return "cblas_sgemm";
#endif
  return "converted";
}

}  // namespace detail

std::string gemm_path(DType type) {
  // Described at GPT-2 small's shapes with 256 rows (B*T = 4*64): forward NT and backward NN.
  const std::string library = gemm_library();
  auto impl_of = [&](DType t, bool ta, bool tb, int M, int N, int K) {
    return detail::gemm_impl(t, ta, tb, M, N, K, ta ? M : K, tb ? K : N, N, 0.0f);
  };
  auto describe = [&](const std::string& impl) {
    if (impl.rfind("matmul ", 0) == 0) return library + " matmul " + impl.substr(7);
    if (impl.rfind("packed ", 0) == 0)
      return library + " matmul (B packed per call) " + impl.substr(7);
    if (impl == "converted") return std::string("converted");
    return library + " " + impl.substr(impl.find('_') + 1) + " (" + gemm_instruction_set() + ")";
  };
  const std::string forward = impl_of(type, false, true, 256, 2304, 768);
  const std::string backward = impl_of(type, false, false, 256, 768, 2304);
  if (forward == "converted" && backward == "converted") {
    if (type == DType::F16)
      return "converted to fp32 around the fp32 GEMM: " + library +
             " has no fp16 matmul for this CPU (no AVX512-FP16 / AMX-FP16 arithmetic)";
    return "converted to fp32 around the fp32 GEMM: no bf16 instructions (AVX512-BF16 / AMX) here";
  }
  if (forward == backward) return describe(forward);
  return describe(forward) + " for forward NT products with <= 1024 rows; " + describe(backward) +
         " otherwise";
}

#if defined(ZT_GEMM_CBLAS)
// OpenBLAS exports these; other CBLAS libraries (BLIS, MKL) do not, so they are weak.
extern "C" char* openblas_get_corename(void) __attribute__((weak));
extern "C" char* openblas_get_config(void) __attribute__((weak));
#endif

std::string gemm_library() {
#if defined(ZT_GEMM_ONEDNN)
  const dnnl_version_t* version = dnnl_version();
  return "oneDNN " + std::to_string(version->major) + "." + std::to_string(version->minor) + "." +
         std::to_string(version->patch);
#else
  if (openblas_get_config != nullptr)
    return std::string("OpenBLAS (") + openblas_get_config() + ")";
  return "CBLAS";
#endif
}

std::string gemm_instruction_set() {
#if defined(ZT_GEMM_ONEDNN)
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
      return "SSE4.1";
    case dnnl_cpu_isa_avx:
      return "AVX";
    case dnnl_cpu_isa_avx2:
      return "AVX2";
    case dnnl_cpu_isa_avx2_vnni:
      return "AVX2 + VNNI";
    case dnnl_cpu_isa_avx512_mic:
      return "AVX-512 (Xeon Phi)";
    case dnnl_cpu_isa_avx512_mic_4ops:
      return "AVX-512 (Xeon Phi, 4FMAPS)";
    case dnnl_cpu_isa_avx512_core:
      return "AVX-512 core";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "AVX-512 core + VNNI";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "AVX-512 core + BF16";
    case dnnl_cpu_isa_avx512_core_amx:
      return "AVX-512 core + AMX";
    default:
      return "unknown (oneDNN ISA code " + std::to_string(dnnl_get_effective_cpu_isa()) + ")";
  }
#else
  if (openblas_get_corename != nullptr)
    return std::string("OpenBLAS core ") + openblas_get_corename();
  return "unknown (not OpenBLAS)";
#endif
}

namespace {

// One self-check problem in `type`: inputs drawn in fp32, rounded to `type` (so the double
// reference of the rounded inputs is what the GEMM must reproduce), C compared after the GEMM.
// Returns max|C - C_ref| / max|C_ref|.
template <class T>
double check_problem(std::uint32_t& state, bool ta, bool tb, int M, int N, int K, float alpha,
                     float beta) {
  auto next_value = [&state]() {  // small LCG: the check must not depend on <random> details
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int>(state >> 9) % 2001 - 1000) / 1000.0f;
  };
  // Padded leading dimensions, so a library that ignores ld would fail.
  const int lda = (ta ? M : K) + 3;
  const int ldb = (tb ? K : N) + 2;
  const int ldc = N + 1;
  std::vector<T> A(static_cast<std::size_t>(ta ? K : M) * lda);
  std::vector<T> B(static_cast<std::size_t>(tb ? N : K) * ldb);
  std::vector<T> C(static_cast<std::size_t>(M) * ldc);
  for (T& v : A) v = from_float<T>(next_value());
  for (T& v : B) v = from_float<T>(next_value());
  for (T& v : C) v = from_float<T>(next_value());
  std::vector<double> C_ref(C.size());
  for (std::size_t i = 0; i < C.size(); ++i) C_ref[i] = to_float(C[i]);
  gemm(dtype_of<T>::value, ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(),
       ldc);
  double max_error = 0.0, max_reference = 0.0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double sum = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = to_float(ta ? A[static_cast<std::size_t>(k) * lda + i]
                                     : A[static_cast<std::size_t>(i) * lda + k]);
        const double b = to_float(tb ? B[static_cast<std::size_t>(j) * ldb + k]
                                     : B[static_cast<std::size_t>(k) * ldb + j]);
        sum += a * b;
      }
      const std::size_t idx = static_cast<std::size_t>(i) * ldc + j;
      const double expected = alpha * sum + beta * C_ref[idx];
      max_error = std::max(max_error, std::abs(to_float(C[idx]) - expected));
      max_reference = std::max(max_reference, std::abs(expected));
    }
  return max_error / std::max(max_reference, 1e-30);
}

// Unit roundoff of each type's output rounding: half an ulp at 1.
double output_roundoff(DType type) {
  switch (type) {
    case DType::F16:
      return 0x1p-11;
    case DType::BF16:
      return 0x1p-8;
    default:
      return 0x1p-24;
  }
}

template <class T>
double self_check_type() {
  struct Shape {
    int M, N, K;
  };
  // Odd sizes exercise the kernels' edge handling; the larger ones their blocked main path, and
  // the last one (NT) the fp32 matmul route that the forward products take.
  const Shape shapes[] = {{1, 1, 1},      {7, 13, 5},    {33, 17, 65},
                          {129, 67, 255}, {64, 300, 97}, {40, 260, 257}};
  double worst = 0.0;
  std::uint32_t state = 12345u;
  for (const Shape& s : shapes)
    for (int combo = 0; combo < 4; ++combo) {
      const bool ta = (combo & 1) != 0;
      const bool tb = (combo & 2) != 0;
      const float beta = (combo % 2 == 0) ? 0.5f : 0.0f;
      worst = std::max(worst, check_problem<T>(state, ta, tb, s.M, s.N, s.K, 0.75f, beta));
    }
  return worst;
}

}  // namespace

double gemm_self_check() {
  // fp32 as measured. A 16-bit type's error is put on the same scale: its inputs are exact in
  // fp32, so a correct GEMM errs by one rounding of C (at most u * max|C|, u its unit roundoff)
  // plus fp32 accumulation (about K * 2^-24, far smaller); error / u * 1e-5 is then at most
  // about 1e-5, the application's 1e-4 limit leaves the usual margin, and a wrong kernel (bad
  // ld, transpose or beta; relative error of order 1) maps to 1e-2 or more.
  double worst = self_check_type<float>();
  worst = std::max(worst, self_check_type<fp16>() / output_roundoff(DType::F16) * 1e-5);
  worst = std::max(worst, self_check_type<bf16>() / output_roundoff(DType::BF16) * 1e-5);
  return worst;
}

}  // namespace zt::kernels
