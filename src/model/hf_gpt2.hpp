// SPDX-License-Identifier: Apache-2.0
// zerotrain's parameters as Hugging Face transformers' GPT-2 (GPT2LMHeadModel) stores them:
// the one place that knows the names, the shapes, which weights transformers transposes and
// what its config.json says, for every export (--save-weights, consolidate) and import
// (--init-weights).
//
// transformers keeps the four projection weights of a block (attn.c_attn, attn.c_proj,
// mlp.c_fc, mlp.c_proj) as Conv1D, shape (in, out); zerotrain keeps them (out, in) like
// nn.Linear. Every other tensor has the same shape and layout in both. attn.c_proj is square,
// so a file written without the transpose would load into transformers without complaint and
// compute something else: the layout is converted here, and nowhere else.
//
// Nothing here reads or writes files except write_hf_config_json: a file's tensors come in as
// names and shapes, their values through a reader callback, so any tensor file (safetensors,
// HDF5) can be imported without this file knowing its format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/gpt_config.hpp"
#include "model/parameters.hpp"

namespace zt::model {

/// Weights that do not fit the model: a missing, unexpected or misshapen tensor, an untied
/// head. The message names the file, the tensor and both shapes.
struct WeightsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The prefix GPT2LMHeadModel.save_pretrained gives every tensor of its model.safetensors
/// (the tensors of its `transformer` submodule, a GPT2Model, whose names zerotrain's are).
inline constexpr std::string_view kHfPrefix = "transformer.";

/// The parameter's name as GPT2LMHeadModel.save_pretrained writes it: kHfPrefix + its name.
/// Every export (--save-weights, the 16-bit model beside a checkpoint, consolidate) writes
/// these names and leaves out the tied lm_head.weight, as save_pretrained does (transformers
/// re-ties it on load and reports nothing missing).
std::string hf_saved_name(const ParamInfo& info);

/// The safetensors metadata save_pretrained writes, {"format": "pt"}, and the only metadata an
/// export writes: the file then depends on the weights alone, so --save-weights and
/// consolidate of the same run's checkpoint give the same bytes.
std::vector<std::pair<std::string, std::string>> hf_safetensors_metadata();

/// True for the weights transformers stores as Conv1D, transposed against zerotrain.
inline bool is_conv1d_weight(const ParamInfo& info) {
  return info.transposed_vs_hf;
}

/// The parameter's shape in transformers: reversed for Conv1D weights, else zerotrain's.
std::vector<std::int64_t> hf_shape(const ParamInfo& info);

/// "[768, 2304]", as messages show shapes.
std::string shape_text(const std::vector<std::int64_t>& shape);

/// The whole tensor in transformers' layout: transposes Conv1D weights, copies the others.
/// `zerotrain_values` and `hf_values` hold info.numel elements and must not overlap.
void to_hf_layout(const ParamInfo& info, const float* zerotrain_values, float* hf_values);
/// The inverse of to_hf_layout.
void from_hf_layout(const ParamInfo& info, const float* hf_values, float* zerotrain_values);

/// Reads elements [hf_begin, hf_end) of one tensor in transformers' layout (row-major, flat),
/// as fp32, into out[0 .. hf_end - hf_begin).
using HfRangeReader = std::function<void(std::int64_t hf_begin, std::int64_t hf_end, float* out)>;

/// Fills out[0 .. end-begin) with elements [begin, end) of `info` in zerotrain's layout from
/// the tensor in transformers' layout that `read` reads. Any piece of a tensor (a rank's
/// slice) is filled without the whole transposed tensor: other tensors are read straight into
/// `out`; for a Conv1D weight only the columns the piece needs are read, in blocks of at most
/// kHfReadPiece elements staged here.
void fill_from_hf(const ParamInfo& info, std::int64_t begin, std::int64_t end,
                  const HfRangeReader& read, float* out);
/// The same from the whole tensor in memory.
void fill_from_hf(const ParamInfo& info, std::int64_t begin, std::int64_t end,
                  const float* hf_values, float* out);

/// The most elements fill_from_hf stages for a Conv1D weight.
inline constexpr std::int64_t kHfReadPiece = std::int64_t{1} << 20;

/// What config.json states beyond the GptConfig.
struct HfConfigOptions {
  /// The dtype of the weights the config goes with: "float32", "float16", "bfloat16". Written
  /// as "dtype", transformers' name for it since 4.56 (it warns that "torch_dtype", the older
  /// name, is deprecated; older versions only read it for from_pretrained(torch_dtype="auto")).
  std::string dtype = "float32";
  /// Written when given. Without them GPT2Config would assume 50256 (GPT-2's <|endoftext|>),
  /// so a vocabulary too small to hold that id gets null instead.
  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;
};

/// transformers' config.json for GPT2LMHeadModel of this architecture (GPT2Config's field
/// names; dropout 0, since zerotrain trains without it; tied embeddings; GELU tanh). Floats are
/// written as the shortest decimal that reads back as the same fp32 (1e-05, not
/// 9.99999974737875e-06). parse_gpt_config reads it back to the same GptConfig.
std::string hf_config_json(const GptConfig& config, const HfConfigOptions& options = {});

/// Writes hf_config_json to `path` atomically (files::AtomicFile; `what` names it in errors).
void write_hf_config_json(const std::string& path, const GptConfig& config,
                          const HfConfigOptions& options = {},
                          const std::string& what = "config.json");

/// How an import treats one name found in a file.
enum class HfTensorRole {
  kParameter,  // one of zerotrain's parameters (after normalise_hf_name)
  kBuffer,     // transformers' attention-mask buffers h.N.attn.bias / h.N.attn.masked_bias
  kTiedHead,   // lm_head.weight: must equal wte.weight
  kUnknown,    // anything else: an error
};

/// The name without transformers' "transformer." prefix (a GPT2LMHeadModel's state dict has
/// it, a GPT2Model's has not); other names unchanged.
std::string normalise_hf_name(std::string_view name);
/// The role of a normalised name for a model with these parameters.
HfTensorRole hf_tensor_role(std::string_view normalised, const std::vector<ParamInfo>& params);

/// One tensor of a file, as an import sees it before reading it.
struct HfFileTensor {
  std::string name;  // as in the file
  std::vector<std::int64_t> shape;
  /// The file's dtype name ("F32", "BF16"); the tensors an import reads must be F32, F16,
  /// BF16 or F64.
  std::string dtype;
};

/// Reads elements [begin, end) of tensors[tensor] of the file (its own layout) as fp32.
using HfTensorReader =
    std::function<void(std::size_t tensor, std::int64_t begin, std::int64_t end, float* out)>;

/// A transformers GPT-2 state dict (model.safetensors of GPT2LMHeadModel or GPT2Model) matched
/// against zerotrain's parameters. The model decides the shapes; the file must hold exactly its
/// tensors, with or without the "transformer." prefix, in transformers' shapes. Attention-mask
/// buffers are ignored. An lm_head.weight must equal wte.weight element for element: zerotrain
/// ties the head to the embedding, and loading a file whose head differs would silently train
/// another model than the file's.
class HfImport {
 public:
  /// Checks every name, shape and dtype, and reads lm_head.weight and wte.weight to compare
  /// them when the file has a head. Throws WeightsError naming `source` (the file, as
  /// messages show it) and every problem (each offending tensor with the shape expected in
  /// transformers' layout and the one found).
  HfImport(const std::vector<ParamInfo>& params, const std::vector<HfFileTensor>& tensors,
           HfTensorReader read, std::string source);

  /// Fills out[0 .. end-begin) with elements [begin, end) of parameter `param` in zerotrain's
  /// layout: what EngineSettings::initial_values asks.
  void fill(int param, std::int64_t begin, std::int64_t end, float* out) const;

  /// The file tensor of each parameter (an index into the constructor's `tensors`).
  const std::vector<std::size_t>& tensor_of_param() const { return tensor_of_param_; }
  /// The ignored buffers and the checked head, by their names in the file.
  const std::vector<std::string>& ignored() const { return ignored_; }

 private:
  std::vector<ParamInfo> params_;
  std::vector<std::size_t> tensor_of_param_;
  std::vector<std::string> ignored_;
  HfTensorReader read_;
};

}  // namespace zt::model
