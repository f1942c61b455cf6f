// SPDX-License-Identifier: Apache-2.0
// Which parts of the flat buffer each hooked layer of the model owns. Backward produces the
// gradients of layer n_layer+1 first and layer 0 last; parameters are registered layer by
// layer, so each layer's own parameters form one contiguous range and a finished backward
// completes the flat buffer from its end towards its start. A parameter used by several layers
// (GPT-2's tied wte) is "shared": its gradient is complete only after the last of them.
#pragma once

#include <cstdint>
#include <vector>

#include "zero/flat_layout.hpp"

namespace zt::zero {

struct FlatRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
};

struct LayerMap {
  /// Per layer: every parameter the layer reads (registry indices).
  std::vector<std::vector<int>> parameters;
  /// Per layer: the parameters only this layer uses, and their flat range extended over the
  /// alignment gap up to the next parameter (the last one up to the padded end), so the ranges
  /// of all layers and of the shared parameters cover [0, padded) exactly once.
  std::vector<std::vector<int>> own_parameters;
  std::vector<FlatRange> own_range;
  /// Parameters used by more than one layer, with their extended ranges and the layer whose
  /// backward (which runs from the last layer to layer 0) completes their gradient.
  struct Shared {
    int parameter = 0;
    FlatRange range;
    int completing_layer = 0;
  };
  std::vector<Shared> shared;
  /// Extended range of each parameter (registry index).
  std::vector<FlatRange> parameter_range;

  int num_layers() const { return static_cast<int>(parameters.size()); }
};

/// `layer_parameters[l]` lists what layer l reads. Throws std::logic_error when a layer's own
/// parameters are not contiguous, or when layers do not own descending ranges (backward order).
LayerMap build_layer_map(const FlatLayout& layout,
                         const std::vector<std::vector<int>>& layer_parameters);

}  // namespace zt::zero
