// SPDX-License-Identifier: Apache-2.0
// The CUDA optimizer launchers against the host (Kokkos) launchers of the same element bodies
// (the layer ops are compared in tests/kernels/test_cuda_layers.cpp). Needs a GPU: skipped
// (not failed) where none is visible; the GPU script runs it.
#include <Kokkos_Core.hpp>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/optimizer_launch.hpp"
#include "optim/gradient_clipping.hpp"
#include "optim/host_kernels.hpp"

namespace {

bool have_gpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible"

std::vector<float> random_floats(std::size_t n, unsigned seed, float low = -1, float high = 1) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> values(n);
  for (auto& v : values) v = uniform(generator);
  return values;
}

/// A device copy of a host vector; copies back on request; frees itself.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : size_(host.size()) {
    EXPECT_EQ(cudaMalloc(&data_, size_ * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, host.data(), size_ * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  explicit DeviceArray(std::size_t size) : DeviceArray(std::vector<T>(size)) {}
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return data_; }
  std::vector<T> to_host() const {
    std::vector<T> host(size_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }

 private:
  T* data_ = nullptr;
  std::size_t size_;
};

void expect_close(const std::vector<float>& device, const std::vector<float>& host, double tolerance,
                  const char* what) {
  ASSERT_EQ(device.size(), host.size()) << what;
  double scale = 1e-30, worst = 0;
  for (std::size_t i = 0; i < host.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(host[i])));
    worst = std::max(worst, static_cast<double>(std::fabs(device[i] - host[i])));
  }
  EXPECT_LE(worst / scale, tolerance) << what << ": max |device - host| = " << worst;
}

TEST(CudaOptimizer, AdamUpdateMatchesTheHost) {
  SKIP_WITHOUT_GPU();
  const std::int64_t n = 10007;
  auto params = random_floats(n, 13), grads = random_floats(n, 14);
  std::vector<float> m(n, 0.0f), v(n, 0.0f), host_params = params;
  const auto constants =
      zt::kernels::make_adam_constants(1e-3, 0.9, 0.999, 1e-8, 0.01, true, true, 1);
  zt::optim::host::adam_update(host_params.data(), grads.data(), m.data(), v.data(), n, constants);
  DeviceArray<float> d_p(params), d_g(grads), d_m(n), d_v(n);
  zt::kernels::cuda::launch_adam_update(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, constants,
                                        nullptr);
  expect_close(d_p.to_host(), host_params, 1e-6, "adam params");
  expect_close(d_v.to_host(), v, 1e-6, "adam exp_avg_sq");
}

TEST(CudaOptimizer, SumOfSquaresAndScaleMatchTheHost) {
  SKIP_WITHOUT_GPU();
  const std::int64_t n = 100003;
  auto values = random_floats(n, 15);
  const double host_sum = zt::optim::sum_of_squares(values.data(), n);
  DeviceArray<float> d_values(values);
  DeviceArray<double> d_workspace(static_cast<std::size_t>(zt::kernels::cuda::reduction_workspace_doubles()));
  DeviceArray<double> d_result(1);
  zt::kernels::cuda::launch_sum_of_squares(d_values.get(), n, d_workspace.get(), d_result.get(),
                                           nullptr);
  EXPECT_NEAR(d_result.to_host()[0], host_sum, 1e-9 * host_sum);
  zt::kernels::cuda::launch_scale(d_values.get(), n, 0.25f, nullptr);
  zt::optim::scale(values.data(), n, 0.25f);
  expect_close(d_values.to_host(), values, 0, "scale");
}

}  // namespace
