// SPDX-License-Identifier: Apache-2.0
#include "zero/layer_map.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace zt::zero {

LayerMap build_layer_map(const FlatLayout& layout,
                         const std::vector<std::vector<int>>& layer_parameters) {
  const auto& entries = layout.entries();
  const int count = static_cast<int>(entries.size());
  LayerMap map;
  map.parameters = layer_parameters;
  map.parameter_range.resize(static_cast<std::size_t>(count));
  for (int p = 0; p < count; ++p) {
    const std::int64_t end =
        p + 1 < count ? entries[static_cast<std::size_t>(p + 1)].offset : layout.padded_elements();
    map.parameter_range[static_cast<std::size_t>(p)] = {entries[static_cast<std::size_t>(p)].offset,
                                                        end};
  }

  std::vector<int> users(static_cast<std::size_t>(count), 0);
  std::vector<int> lowest_user(static_cast<std::size_t>(count), -1);
  for (int layer = 0; layer < map.num_layers(); ++layer) {
    for (const int p : layer_parameters[static_cast<std::size_t>(layer)]) {
      if (p < 0 || p >= count) throw std::logic_error("layer map: parameter index out of range");
      ++users[static_cast<std::size_t>(p)];
      if (lowest_user[static_cast<std::size_t>(p)] < 0)
        lowest_user[static_cast<std::size_t>(p)] = layer;
    }
  }
  for (int p = 0; p < count; ++p) {
    if (users[static_cast<std::size_t>(p)] == 0)
      throw std::logic_error("layer map: parameter " + entries[static_cast<std::size_t>(p)].name +
                             " is used by no layer");
    if (users[static_cast<std::size_t>(p)] > 1)
      map.shared.push_back({p, map.parameter_range[static_cast<std::size_t>(p)],
                            lowest_user[static_cast<std::size_t>(p)]});
  }

  map.own_parameters.resize(layer_parameters.size());
  map.own_range.resize(layer_parameters.size());
  for (int layer = 0; layer < map.num_layers(); ++layer) {
    auto& own = map.own_parameters[static_cast<std::size_t>(layer)];
    for (const int p : layer_parameters[static_cast<std::size_t>(layer)])
      if (users[static_cast<std::size_t>(p)] == 1) own.push_back(p);
    std::sort(own.begin(), own.end());
    if (own.empty()) continue;
    for (std::size_t i = 1; i < own.size(); ++i)
      if (own[i] != own[i - 1] + 1) {
        // A shared parameter between two own ones would break the layer's range in two.
        throw std::logic_error("layer map: the parameters of layer " + std::to_string(layer) +
                               " are not registered contiguously");
      }
    map.own_range[static_cast<std::size_t>(layer)] = {
        map.parameter_range[static_cast<std::size_t>(own.front())].begin,
        map.parameter_range[static_cast<std::size_t>(own.back())].end};
  }
  // Backward runs from the last layer down: each layer's range must lie below the next one's.
  std::int64_t above = layout.padded_elements() + 1;
  for (int layer = map.num_layers() - 1; layer >= 0; --layer) {
    const auto& range = map.own_range[static_cast<std::size_t>(layer)];
    if (range.empty()) continue;
    if (range.end > above)
      throw std::logic_error("layer map: layer " + std::to_string(layer) +
                             " is registered after a later layer");
    above = range.begin;
  }
  return map;
}

}  // namespace zt::zero
