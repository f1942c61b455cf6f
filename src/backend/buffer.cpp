// SPDX-License-Identifier: Apache-2.0
#include <stdexcept>
#include <string>

#include "backend/backend.hpp"

namespace zt::backend {
namespace {

void check_slice(std::int64_t count, std::int64_t offset, std::int64_t length) {
  if (offset < 0 || length < 0 || offset > count || length > count - offset)
    throw std::out_of_range("backend view: elements [" + std::to_string(offset) + ", " +
                            std::to_string(offset) + " + " + std::to_string(length) +
                            ") outside a view of " + std::to_string(count));
}

void check_dtype(DType have, DType want) {
  if (have != want)
    throw std::logic_error(std::string("backend view of ") + kernels::dtype_name(have) +
                           " used as " + kernels::dtype_name(want));
}

}  // namespace

View View::slice(std::int64_t offset, std::int64_t length) const {
  check_slice(count, offset, length);
  return View{static_cast<std::byte*>(data) + offset * kernels::size_of(dtype), length, dtype,
              place};
}

ConstView ConstView::slice(std::int64_t offset, std::int64_t length) const {
  check_slice(count, offset, length);
  return ConstView{static_cast<const std::byte*>(data) + offset * kernels::size_of(dtype), length,
                   dtype, place};
}

template <class T>
T* View::as() const {
  check_dtype(dtype, kernels::dtype_of<T>::value);
  return static_cast<T*>(data);
}

template <class T>
const T* ConstView::as() const {
  check_dtype(dtype, kernels::dtype_of<T>::value);
  return static_cast<const T*>(data);
}

template float* View::as<float>() const;
template fp16* View::as<fp16>() const;
template bf16* View::as<bf16>() const;
template std::int32_t* View::as<std::int32_t>() const;
template const float* ConstView::as<float>() const;
template const fp16* ConstView::as<fp16>() const;
template const bf16* ConstView::as<bf16>() const;
template const std::int32_t* ConstView::as<std::int32_t>() const;

Buffer::Buffer(DType dtype, std::int64_t count, Place place, Kind kind)
    : storage_(static_cast<std::size_t>(count < 0 ? 0 : count) *
                   static_cast<std::size_t>(kernels::size_of(dtype)),
               place, kind),
      count_(count < 0 ? 0 : count),
      dtype_(dtype),
      place_(place) {
  if (count < 0) throw std::invalid_argument("backend::Buffer: negative element count");
}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (impl_) {
      try {
        impl_->wait();
      } catch (...) {
      }
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Event::~Event() {
  if (impl_) {
    try {
      impl_->wait();
    } catch (...) {
    }
  }
}

void Event::wait() {
  if (!impl_) return;
  auto impl = std::move(impl_);
  impl->wait();
}

bool Event::ready() {
  return !impl_ || impl_->ready();
}

Backend& host_backend() {
  static const std::unique_ptr<Backend> backend = make_host_backend();
  return *backend;
}

}  // namespace zt::backend
