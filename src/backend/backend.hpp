// SPDX-License-Identifier: Apache-2.0
// The compute backend: where the model's ops, GEMMs and the engine's copies run (DESIGN §6).
// Buffers carry a dtype and a place; every op takes typed views, checks them and dispatches on
// the dtype. The host backend (Kokkos launchers + oneDNN) implements it now; a CUDA backend
// (launchers in kernels/cuda, cuBLASLt, streams) implements the same interface, so neither the
// model nor the engine changes when the GPU path is switched on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/ops/dtype.hpp"
#include "memory/tracker.hpp"

namespace zt::backend {

using kernels::bf16;
using kernels::DType;
using kernels::fp16;
using memory::Kind;
using memory::Place;

/// A typed, placed range of elements that somebody else owns.
struct View {
  void* data = nullptr;
  std::int64_t count = 0;
  DType dtype = DType::F32;
  Place place = Place::Device;

  /// Elements [offset, offset + length) (bounds-checked; throws std::out_of_range).
  View slice(std::int64_t offset, std::int64_t length) const;
  std::int64_t bytes() const { return count * kernels::size_of(dtype); }
  /// The data as T; throws std::logic_error when T is not the view's dtype.
  template <class T>
  T* as() const;
};

/// A read-only view; every View converts to one.
struct ConstView {
  const void* data = nullptr;
  std::int64_t count = 0;
  DType dtype = DType::F32;
  Place place = Place::Device;

  ConstView() = default;
  ConstView(const void* data_, std::int64_t count_, DType dtype_, Place place_)
      : data(data_), count(count_), dtype(dtype_), place(place_) {}
  ConstView(const View& view)  // NOLINT(google-explicit-constructor): views narrow to const
      : data(view.data), count(view.count), dtype(view.dtype), place(view.place) {}
  ConstView slice(std::int64_t offset, std::int64_t length) const;
  std::int64_t bytes() const { return count * kernels::size_of(dtype); }
  template <class T>
  const T* as() const;
};

/// Owns `count` zero-initialised elements of `dtype` at `place`, counted in the memory tracker
/// under `kind` (throws memory::OutOfMemory past the device cap, before allocating).
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType dtype, std::int64_t count, Place place, Kind kind);
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    storage_ = std::move(other.storage_);
    count_ = other.count_;
    dtype_ = other.dtype_;
    place_ = other.place_;
    other.count_ = 0;
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  View view() { return View{storage_.data(), count_, dtype_, place_}; }
  ConstView view() const { return ConstView{storage_.data(), count_, dtype_, place_}; }
  View slice(std::int64_t offset, std::int64_t length) { return view().slice(offset, length); }
  ConstView slice(std::int64_t offset, std::int64_t length) const {
    return view().slice(offset, length);
  }
  std::int64_t count() const { return count_; }
  std::int64_t bytes() const { return count_ * kernels::size_of(dtype_); }
  DType dtype() const { return dtype_; }
  Place place() const { return place_; }
  bool empty() const { return count_ == 0; }
  template <class T>
  T* as() {
    return view().as<T>();
  }
  template <class T>
  const T* as() const {
    return view().as<T>();
  }

 private:
  memory::TrackedBuffer<std::byte> storage_;
  std::int64_t count_ = 0;
  DType dtype_ = DType::F32;
  Place place_ = Place::Device;
};

/// Completion of an asynchronous copy. Host copies complete before the call returns (the event
/// is born complete); a device backend records a stream event. Waits in its destructor.
class Event {
 public:
  struct Impl {
    virtual ~Impl() = default;
    virtual void wait() = 0;
    virtual bool ready() = 0;
  };
  Event() = default;
  explicit Event(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Event(Event&&) noexcept = default;
  Event& operator=(Event&& other) noexcept;
  ~Event();
  void wait();
  bool ready();

 private:
  std::unique_ptr<Impl> impl_;
};

/// Causal attention shapes: qkv (B, T, 3C) rows [Q | K | V], prob (B, n_head, T, T), out (B, T, C).
struct AttentionShape {
  int batch;
  int seq_len;
  int n_head;
  int channels;
};

/// Every op of the GPT layers, the GEMM, and the copies. Activations, parameters and gradients
/// are views of the model's dtype (fp32, fp16 or bf16) at the compute place; LayerNorm
/// statistics, losses and log-sum-exps are fp32; tokens int32. Arithmetic is fp32 whatever the
/// storage (16-bit values are loaded to float and rounded once on store); see
/// kernels/ops/layer_ops.hpp for the math and the += / = conventions of each op.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  /// Where this backend's ops read and write: Place::Device (on a CPU-only run the "device" is
  /// the separately tracked host arena, DESIGN §5).
  virtual Place compute_place() const = 0;
  /// How each dtype's GEMMs run on this machine, for the banner: "bf16 GEMM: oneDNN matmul,
  /// AVX512-BF16" or "fp16 GEMM: converted to fp32 (no fp16 instructions)".
  virtual std::string gemm_path(DType dtype) const = 0;

  // ---- GEMM: C = alpha op(A) op(B) + beta C, row-major, A/B/C of one dtype, fp32 accumulation.
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                    float alpha, ConstView A, std::int64_t lda, ConstView B, std::int64_t ldb,
                    float beta, View C, std::int64_t ldc) = 0;

  // ---- layer ops (shapes as kernels/host/layer_kernels.hpp)
  virtual void set_zero(View out) = 0;
  virtual void embedding_forward(ConstView wte, ConstView wpe, ConstView tokens, int rows,
                                 int seq_len, int channels, View out) = 0;
  virtual void embedding_backward(ConstView dout, ConstView tokens, int rows, int seq_len,
                                  int channels, View dwte, View dwpe) = 0;
  virtual void layernorm_forward(ConstView x, ConstView weight, ConstView bias, int rows,
                                 int channels, float epsilon, View out, View mean, View rstd) = 0;
  virtual void layernorm_backward(ConstView dout, ConstView x, ConstView weight, ConstView mean,
                                  ConstView rstd, int rows, int channels, View dx, View dweight,
                                  View dbias) = 0;
  virtual void bias_fill(ConstView bias, int rows, int width, View out) = 0;
  virtual void residual_bias_fill(ConstView residual, ConstView bias, int rows, int width,
                                  View out) = 0;
  virtual void bias_backward(ConstView dout, int rows, int width, View dbias) = 0;
  virtual void bias_gelu_forward(ConstView bias, int rows, int width, View pre, View out) = 0;
  virtual void gelu_backward(ConstView pre, int rows, int width, View grad) = 0;
  virtual void attention_forward(const AttentionShape& shape, ConstView qkv, View prob,
                                 View out) = 0;
  /// Scratch elements attention_backward needs (fp32) for this sequence length.
  virtual std::int64_t attention_backward_scratch(int seq_len) const = 0;
  virtual void attention_backward(const AttentionShape& shape, ConstView dout, ConstView qkv,
                                  ConstView prob, View dqkv, View scratch) = 0;
  /// Returns the mean loss (double accumulation); logits of the model dtype, losses and
  /// log_sum_exp fp32.
  virtual double cross_entropy_forward(ConstView logits, ConstView targets, int rows,
                                       int vocab_size, View losses, View log_sum_exp) = 0;
  virtual void cross_entropy_backward(ConstView targets, ConstView log_sum_exp, int rows,
                                      int vocab_size, float grad_scale, View logits_to_grad) = 0;

  // ---- engine-side element-wise work (any dtype, fp32 arithmetic)
  /// dst = scale * src, converting src's dtype to dst's (same count; same place).
  virtual void convert(ConstView src, View dst, float scale = 1.0f) = 0;
  /// dst += scale * src, src and dst of any dtypes (same count; same place); one rounding of
  /// dst per element.
  virtual void add_scaled(ConstView src, View dst, float scale) = 0;
  /// Sum of squares in double, and whether every element is finite.
  struct NormResult {
    double sum_of_squares = 0;
    bool finite = true;
  };
  virtual NormResult norm_squared(ConstView values) = 0;

  // ---- copies between places (same dtype, same count), asynchronous
  virtual Event copy_async(ConstView src, View dst) = 0;
  /// Bytes copy_async moved between the device and host memory since the backend was made:
  /// offload's traffic, which the engine reports per step.
  struct CopyTraffic {
    std::int64_t device_to_host = 0;
    std::int64_t host_to_device = 0;
  };
  virtual CopyTraffic copy_traffic() const = 0;
  /// Waits for everything this backend started.
  virtual void synchronize() = 0;
};

struct HostBackendOptions {
  /// Check that every op gets views at the compute place and of consistent dtypes, and that
  /// copies name their places truthfully: on a CPU this catches what a GPU would crash on.
  bool check_places = true;
};
std::unique_ptr<Backend> make_host_backend(const HostBackendOptions& options = {});

/// The process's host backend (created on first use, with place checks): what the model and
/// the engine use when no other backend is given. Its lifetime ends with the process, after
/// Kokkos finalises, so it holds no Kokkos objects.
Backend& host_backend();

}  // namespace zt::backend
