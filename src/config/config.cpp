// SPDX-License-Identifier: Apache-2.0
// Parse -> walk against the schema -> resolve "auto" (HF Trainer rules) -> support checks ->
// batch triple -> typed ResolvedConfig + entries. Problems are collected in Document and thrown
// together at the end, so a user fixes a config in one round.
#include "config/config.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "config/schema.hpp"
#include "config/value.hpp"
#include "files/files.hpp"
#include "yaml/single_document.hpp"

namespace zt::config {

using detail::Value;

namespace {

std::string join_path(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

bool is_section_kind(ValueKind kind) {
  return kind == ValueKind::kSection || kind == ValueKind::kSectionOrBool ||
         kind == ValueKind::kListOfSections;
}

// A value as the config holds it after walking and resolving.
struct Setting {
  std::string spelled_path;       // as written (alias spelling kept for messages)
  const KeySpec* spec = nullptr;  // spec of the canonical key
  Value value;
  Source source = Source::kFile;
  std::string detail;
  bool pending_auto = false;  // "auto" still to be resolved
};

struct Claim {  // who set a canonical key, for alias-conflict detection
  std::string spelled_path;
  Value value;
  bool is_section = false;
  bool deprecated = false;
};

struct Document {
  std::string source_name;
  std::vector<std::string> problems;
  std::map<std::string, Setting> settings;     // canonical leaf path -> setting
  std::map<std::string, YAML::Node> sections;  // canonical section path -> its node (maybe null)
  std::map<std::string, std::string> section_spelling;
  std::map<std::string, YAML::Node> spelled_sections;  // every map section under each spelling
  std::map<std::string, Claim> claims;
  bool legacy_zero_bool = false;

  void error(const std::string& path, const std::string& message) {
    // Keys come from the file: one holding a terminal escape must not act on the terminal.
    problems.push_back(source_name + ": " + (path.empty() ? "(top level)" : files::escaped(path)) +
                       ": " + message);
  }
  void plain_error(const std::string& message) { problems.push_back(source_name + ": " + message); }
};

// ---------------------------------------------------------------------------------------------
// Walking the parsed file against the schema.

class Walker {
 public:
  explicit Walker(Document* document) : doc_(*document) {}

  void walk_root(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) return;  // an empty file is an empty config
    if (!root.IsMap()) {
      doc_.error("", "expected a map of DeepSpeed settings, got " + detail::describe_node(root));
      return;
    }
    walk_map(root, "", "", false);
  }

 private:
  void walk_map(const YAML::Node& map, const std::string& spelled_prefix,
                const std::string& canonical_prefix, bool strict_parent) {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const YAML::Node key_node = it->first;
      const YAML::Node value = it->second;
      if (!key_node.IsScalar()) {
        doc_.error(spelled_prefix,
                   "a key must be a string, got " + detail::describe_node(key_node));
        continue;
      }
      const std::string key = key_node.Scalar();
      const std::string spelled = join_path(spelled_prefix, key);
      // yaml-cpp keeps both entries of a duplicated key; DeepSpeed refuses the file.
      if (!seen.insert(key).second) {
        doc_.error(spelled,
                   "duplicate key (DeepSpeed fails with \"Duplicate keys in DeepSpeed "
                   "config\")");
        continue;
      }
      const std::string lookup = join_path(canonical_prefix, key);
      const KeySpec* spec = find_key_spec(lookup);
      if (!spec) {
        report_unknown(spelled, canonical_prefix, key);
        continue;
      }
      if (spec->support == Support::kNotRead) {
        doc_.error(spelled, spec->hint);  // hints are whole sentences naming the fix
        continue;
      }
      walk_value(*spec, value, spelled, lookup, strict_parent);
    }
  }

  void report_unknown(const std::string& spelled, const std::string& section,
                      const std::string& key) {
    std::string message = "unknown key " + files::quote(key);
    const std::string best = closest_name(key, child_names(section));
    if (!best.empty()) {
      message += "; did you mean '" + best + "'?";
    } else {
      // The right name in the wrong section (e.g. stage3_max_live_parameters at top level).
      for (const KeySpec& spec : all_key_specs()) {
        const std::size_t dot = spec.path.rfind('.');
        const std::string last = dot == std::string::npos ? spec.path : spec.path.substr(dot + 1);
        if (last == key && spec.support != Support::kNotRead && spec.path != spelled) {
          message += "; '" + key + "' is a key of '" +
                     (dot == std::string::npos ? "(top level)" : spec.path.substr(0, dot)) + "'";
          break;
        }
      }
    }
    if (section.empty()) message += " (DeepSpeed silently ignores unknown top-level keys)";
    doc_.error(spelled, message);
  }

  static bool accepts_auto_literally(const KeySpec& spec) {
    if (spec.kind == ValueKind::kIntOrAuto || spec.kind == ValueKind::kNumberOrString ||
        spec.kind == ValueKind::kOpaque) {
      return true;
    }
    return std::find(spec.choices.begin(), spec.choices.end(), "auto") != spec.choices.end();
  }

  void walk_value(const KeySpec& spec, const YAML::Node& node, const std::string& spelled,
                  const std::string& lookup, bool strict_parent) {
    const std::string canonical = spec.alias_of.empty() ? lookup : spec.alias_of;
    if (is_section_kind(spec.kind)) {
      walk_section(spec, node, spelled, canonical);
      return;
    }
    const KeySpec* canonical_spec = find_key_spec(canonical);
    Setting setting;
    setting.spelled_path = spelled;
    setting.spec = canonical_spec && !canonical_spec->path.empty() ? canonical_spec : &spec;
    const bool is_auto = node.IsScalar() && node.Scalar() == "auto";
    if (is_auto && (spec.hf_auto || (setting.spec && setting.spec->hf_auto))) {
      setting.pending_auto = true;
    } else if (is_auto && !accepts_auto_literally(spec)) {
      if (strict_parent) {
        // DeepSpeed's strict sections drop "auto" keys before validation: default applies.
        setting.source = Source::kAutoDefault;
        setting.detail = "DeepSpeed drops \"auto\" here";
      } else {
        doc_.error(spelled,
                   "\"auto\" cannot be resolved here: only the keys the Hugging Face "
                   "Trainer fills accept it (DeepSpeed does not resolve it here either)");
        return;
      }
    } else {
      std::string why;
      if (!detail::convert_leaf(spec, node, &setting.value, &why)) {
        doc_.error(spelled, why);
        return;
      }
    }
    // cpu_offload / cpu_offload_param stand for a section: stored under their own path.
    const KeySpec* target = find_key_spec(canonical);
    const bool alias_of_section = !spec.alias_of.empty() && target && is_section_kind(target->kind);
    const std::string storage = alias_of_section ? lookup : canonical;
    if (alias_of_section) setting.spec = &spec;
    if (!claim(canonical, spelled, setting.value, false, spec.deprecated_alias)) return;
    doc_.settings.emplace(storage, setting);
  }

  void walk_section(const KeySpec& spec, const YAML::Node& node, const std::string& spelled,
                    const std::string& canonical) {
    if (spec.kind == ValueKind::kSectionOrBool && node.IsScalar()) {
      // Legacy "zero_optimization": true|false -> stage 1|0 (allgather size from top level).
      KeySpec bool_spec;
      bool_spec.kind = ValueKind::kBool;
      bool_spec.default_text = "false";
      Value flag;
      std::string why;
      if (!detail::convert_leaf(bool_spec, node, &flag, &why)) {
        doc_.error(spelled, "expected " + detail::describe_expected(spec) + ", got " +
                                detail::describe_node(node));
        return;
      }
      Setting stage;
      stage.spelled_path = spelled;
      stage.spec = find_key_spec("zero_optimization.stage");
      stage.value = Value::of_int(flag.boolean ? 1 : 0);
      stage.detail =
          "legacy \"zero_optimization\": " + std::string(flag.boolean ? "true" : "false");
      doc_.settings["zero_optimization.stage"] = stage;
      doc_.legacy_zero_bool = true;
      return;
    }
    if (!node.IsDefined() || node.IsNull()) {
      if (!spec.nullable) {
        doc_.error(spelled, "expected " + detail::describe_expected(spec) + ", got null");
        return;
      }
      // A null section is given too: DeepSpeed refuses "offload_optimizer": null next to the
      // deprecated cpu_offload.
      if (!claim(canonical, spelled, Value::null(), true, spec.deprecated_alias)) return;
      doc_.sections.emplace(canonical, node);
      doc_.section_spelling.emplace(canonical, spelled);
      return;
    }
    if (spec.kind == ValueKind::kListOfSections) {
      if (!node.IsSequence()) {
        doc_.error(spelled, "expected a list of sections, got " + detail::describe_node(node));
        return;
      }
      doc_.sections.emplace(canonical, node);
      for (std::size_t i = 0; i < node.size(); ++i) {
        const std::string index = "[" + std::to_string(i) + "]";
        if (!node[i].IsMap()) {
          doc_.error(spelled + index, "expected a section, got " + detail::describe_node(node[i]));
          continue;
        }
        walk_map(node[i], spelled + index, canonical + index, false);
      }
      return;
    }
    if (!node.IsMap()) {
      doc_.error(spelled, "expected " + detail::describe_expected(spec) + ", got " +
                              detail::describe_node(node));
      return;
    }
    if (!claim(canonical, spelled, Value::null(), true, spec.deprecated_alias)) return;
    doc_.sections.emplace(canonical, node);
    doc_.section_spelling.emplace(canonical, spelled);
    doc_.spelled_sections.emplace(spelled, node);
    const KeySpec* target = find_key_spec(canonical);
    walk_map(node, spelled, canonical, target ? target->strict_section : spec.strict_section);
  }

  // Records who set a canonical key; both spellings of one setting must agree, and DeepSpeed's
  // deprecated spellings may not appear next to their replacement at all.
  bool claim(const std::string& canonical, const std::string& spelled, const Value& value,
             bool is_section, bool deprecated) {
    auto found = doc_.claims.find(canonical);
    if (found == doc_.claims.end()) {
      doc_.claims.emplace(canonical, Claim{spelled, value, is_section, deprecated});
      return true;
    }
    const Claim& first = found->second;
    if (first.deprecated || deprecated) {
      const std::string& old_name = deprecated ? spelled : first.spelled_path;
      const std::string& new_name = deprecated ? first.spelled_path : spelled;
      const auto last = [](const std::string& path) { return path.substr(path.rfind('.') + 1); };
      // DeepSpeed's assertion, word for word, then what to do.
      const std::string deepspeed = "Cannot provide deprecated parameter '" + last(old_name) +
                                    "' and replacing parameter '" + last(new_name) + "' together";
      doc_.error(spelled, deepspeed + " (DeepSpeed asserts this whatever the values); keep only '" +
                              new_name + "'");
      return false;
    }
    if (first.is_section && is_section) return true;  // bf16 + bfloat16: compared key by key
    if (!detail::same_value(first.value, value)) {
      doc_.error(spelled, "'" + first.spelled_path + "' = " + detail::to_text(first.value) +
                              " and '" + spelled + "' = " + detail::to_text(value) +
                              " are two spellings of one setting with different values");
      return false;
    }
    return false;  // same value twice: keep the first
  }

  Document& doc_;
};

// ---------------------------------------------------------------------------------------------
// Resolution.

struct TrainerDefaults {  // transformers TrainingArguments defaults
  static constexpr double kLearningRate = 5e-5;
  static constexpr double kBeta1 = 0.9;
  static constexpr double kBeta2 = 0.999;
  static constexpr double kEpsilon = 1e-8;
  static constexpr double kWeightDecay = 0.0;
  static constexpr double kMaxGradNorm = 1.0;
  static constexpr std::int64_t kWarmupSteps = 0;
  static constexpr std::int64_t kPerDeviceBatch = 8;
  static constexpr std::int64_t kGradientAccumulation = 1;
};

constexpr std::int64_t kDefaultStepsPerPrint = 10;
// O_DIRECT's alignment of NVMe swap transfers (offload::kDirectAlignment; the config library
// does not depend on the offload one).
constexpr std::int64_t kDirectAlignment = 4096;

class Resolver {
 public:
  Resolver(Document* document, const CommandLineOverrides& flags, const ModelFacts& model,
           int world_size, std::int64_t run_steps, ResolvedConfig* out)
      : doc_(*document),
        flags_(flags),
        model_(model),
        world_(world_size),
        run_steps_(run_steps),
        out_(*out) {}

  void run() {
    choose_optimizer_type();
    resolve_auto();
    check_required_keys();
    check_params_belong_to_type();
    check_support();
    derive_batch_triple();
    fill_typed();
    check_cross_rules();
    build_entries();
  }

 private:
  // ---- access ----
  const Setting* find(const std::string& path) const {
    auto it = doc_.settings.find(path);
    return it == doc_.settings.end() ? nullptr : &it->second;
  }
  bool is_set(const std::string& path) const {
    const Setting* s = find(path);
    return s && !s->pending_auto && !s->value.is_null();
  }
  Value effective(const std::string& path) const {
    const Setting* s = find(path);
    if (s && !s->pending_auto && !s->value.is_null()) return s->value;
    const KeySpec* spec = find_key_spec(path);
    return spec ? detail::default_value(*spec) : Value::null();
  }
  bool get_bool(const std::string& path) const { return effective(path).boolean; }
  std::int64_t get_int(const std::string& path) const {
    const Value v = effective(path);
    return v.kind == Value::Kind::kInt ? v.integer : static_cast<std::int64_t>(v.number);
  }
  double get_float(const std::string& path) const { return effective(path).number; }
  std::string get_string(const std::string& path) const { return effective(path).text; }

  void put(const std::string& path, const Value& value, Source source, const std::string& why) {
    Setting& s = doc_.settings[path];
    if (s.spelled_path.empty()) s.spelled_path = path;
    s.spec = find_key_spec(path);
    s.value = value;
    s.source = source;
    s.detail = why;
    s.pending_auto = false;
  }

  std::string optimizer_type() const { return lower(get_string("optimizer.type")); }
  std::string scheduler_type() const { return lower(get_string("scheduler.type")); }
  int zero_stage() const { return static_cast<int>(get_int("zero_optimization.stage")); }

  bool key_applies(const std::string& path) const {
    const KeySpec* spec = find_key_spec(path);
    if (!spec || spec->applies_to.empty()) return true;
    const std::string type = starts_with(path, "scheduler.") ? scheduler_type() : optimizer_type();
    return std::find(spec->applies_to.begin(), spec->applies_to.end(), type) !=
           spec->applies_to.end();
  }

  // No optimizer section: zerotrain has no client optimizer, so it builds AdamW from the HF
  // flags, as the HF Trainer does when the DeepSpeed config names none.
  void choose_optimizer_type() {
    optimizer_from_trainer_ = !is_set("optimizer.type");
    if (!optimizer_from_trainer_) return;
    put("optimizer.type", Value::of_string("AdamW"), Source::kDefault,
        "no optimizer in the config: AdamW from the flags, as the HF Trainer does");
    for (const char* key : {"lr", "betas", "eps", "weight_decay"}) {
      const std::string path = std::string("optimizer.params.") + key;
      if (!find(path)) {
        Setting& s = doc_.settings[path];
        s.spelled_path = path;
        s.spec = find_key_spec(path);
        s.pending_auto = true;
      }
    }
  }

  // ---- "auto" (transformers integrations/deepspeed.py trainer_config_process/_finalize) ----
  // fill_match: "auto" takes the flag (or the Trainer default); a given flag that contradicts a
  // concrete config value is an error; a given flag for an absent key fills it.
  void fill_match(const std::string& path, const Value& hf_value, bool flag_given,
                  const std::string& flag_text, bool fill_when_absent = true) {
    auto it = doc_.settings.find(path);
    if (it != doc_.settings.end() && it->second.pending_auto) {
      resolve_pending(it->second, hf_value,
                      flag_given ? Source::kAutoFromFlag : Source::kAutoTrainerDefault, flag_text);
      return;
    }
    if (!flag_given) return;
    if (it != doc_.settings.end() && !it->second.value.is_null()) {
      if (!detail::same_value(it->second.value, hf_value)) {
        doc_.error(it->second.spelled_path,
                   "the config says " + detail::to_text(it->second.value) + " but " + flag_text +
                       " says " + detail::to_text(hf_value) +
                       "; set it to \"auto\" to take the flag (the HF Trainer refuses this "
                       "mismatch too)");
      }
      return;
    }
    if (fill_when_absent && key_applies(path)) {
      put(path, hf_value, Source::kFlag, flag_text);
      // A flag's value is checked as the key's would be (--per_device_train_batch_size 0).
      Setting& setting = doc_.settings[path];
      std::string problem;
      if (setting.spec && !detail::check_limits(*setting.spec, &setting.value, &problem))
        doc_.error(path, problem + " (from " + flag_text + ")");
    }
  }

  void resolve_pending(Setting& setting, const Value& value, Source source,
                       const std::string& why) {
    setting.value = value;
    setting.source = source;
    setting.detail = why;
    setting.pending_auto = false;
    std::string problem;
    if (setting.spec && !detail::check_limits(*setting.spec, &setting.value, &problem)) {
      doc_.error(setting.spelled_path,
                 problem + " (\"auto\" resolved as " + source_name(source) + ": " + why + ")");
    }
  }

  void fill_only(const std::string& path, const Value& value, Source source,
                 const std::string& why) {
    auto it = doc_.settings.find(path);
    if (it != doc_.settings.end() && it->second.pending_auto) {
      resolve_pending(it->second, value, source, why);
    }
  }

  void resolve_auto() {
    using TD = TrainerDefaults;
    const auto int_flag = [](const std::optional<std::int64_t>& flag, std::int64_t fallback) {
      return Value::of_int(flag.value_or(fallback));
    };
    const auto float_flag = [](const std::optional<double>& flag, double fallback) {
      return Value::of_float(flag.value_or(fallback));
    };
    fill_match("train_micro_batch_size_per_gpu",
               int_flag(flags_.per_device_train_batch_size, TD::kPerDeviceBatch),
               flags_.per_device_train_batch_size.has_value(), "--per_device_train_batch_size");
    fill_match("gradient_accumulation_steps",
               int_flag(flags_.gradient_accumulation_steps, TD::kGradientAccumulation),
               flags_.gradient_accumulation_steps.has_value(), "--gradient_accumulation_steps");
    {
      // HF: train_batch_size = world * per_device * gas. Here micro and gas are the effective
      // ones (config value, else flag, else Trainer default), so a concrete micro is respected.
      auto it = doc_.settings.find("train_batch_size");
      if (it != doc_.settings.end() && it->second.pending_auto) {
        const std::int64_t micro =
            is_set("train_micro_batch_size_per_gpu")
                ? get_int("train_micro_batch_size_per_gpu")
                : flags_.per_device_train_batch_size.value_or(TD::kPerDeviceBatch);
        const std::int64_t gas =
            is_set("gradient_accumulation_steps")
                ? get_int("gradient_accumulation_steps")
                : flags_.gradient_accumulation_steps.value_or(TD::kGradientAccumulation);
        const bool any_flag = flags_.per_device_train_batch_size.has_value() ||
                              flags_.gradient_accumulation_steps.has_value();
        std::int64_t train = 0;
        if (!product(world_, micro, gas, &train)) train = -1;  // refused by the limits below
        resolve_pending(it->second, Value::of_int(train),
                        any_flag ? Source::kAutoFromFlag : Source::kAutoTrainerDefault,
                        "world " + std::to_string(world_) + " x micro " + std::to_string(micro) +
                            " x gas " + std::to_string(gas) +
                            (train < 0 ? ", more than 64 bits hold" : ""));
      }
    }
    fill_match("gradient_clipping", float_flag(flags_.max_grad_norm, TD::kMaxGradNorm),
               flags_.max_grad_norm.has_value(), "--max_grad_norm");
    fill_match("optimizer.params.lr", float_flag(flags_.learning_rate, TD::kLearningRate),
               flags_.learning_rate.has_value(), "--learning_rate");
    {
      const std::string path = "optimizer.params.betas";
      const bool given = flags_.adam_beta1.has_value() || flags_.adam_beta2.has_value();
      const std::string flag_text = flags_.adam_beta1 && flags_.adam_beta2 ? "--adam_beta1/2"
                                    : flags_.adam_beta1                    ? "--adam_beta1"
                                                                           : "--adam_beta2";
      Value betas;
      betas.kind = Value::Kind::kList;
      auto it = doc_.settings.find(path);
      const bool concrete = it != doc_.settings.end() && !it->second.pending_auto &&
                            it->second.value.kind == Value::Kind::kList;
      // A flag for one beta is compared with (or replaces) that beta only.
      const double beta1 = flags_.adam_beta1.value_or(
          concrete && !flags_.adam_beta1 ? it->second.value.items[0].number : TD::kBeta1);
      const double beta2 = flags_.adam_beta2.value_or(
          concrete && !flags_.adam_beta2 ? it->second.value.items[1].number : TD::kBeta2);
      betas.items = {Value::of_float(beta1), Value::of_float(beta2)};
      fill_match(path, betas, given, given ? flag_text : "--adam_beta1/2");
    }
    fill_match("optimizer.params.eps", float_flag(flags_.adam_epsilon, TD::kEpsilon),
               flags_.adam_epsilon.has_value(), "--adam_epsilon");
    fill_match("optimizer.params.weight_decay", float_flag(flags_.weight_decay, TD::kWeightDecay),
               flags_.weight_decay.has_value(), "--weight_decay");

    const bool has_scheduler = is_set("scheduler.type");
    fill_only("scheduler.params.warmup_min_lr", Value::of_float(0.0), Source::kAutoTrainerDefault,
              "the HF Trainer sets 0");
    fill_match("scheduler.params.warmup_max_lr",
               float_flag(flags_.learning_rate, TD::kLearningRate),
               flags_.learning_rate.has_value(), "--learning_rate", has_scheduler);
    fill_match("scheduler.params.warmup_num_steps", int_flag(flags_.warmup_steps, TD::kWarmupSteps),
               flags_.warmup_steps.has_value(), "--warmup_steps", has_scheduler);
    {
      auto it = doc_.settings.find("scheduler.params.total_num_steps");
      if (it != doc_.settings.end() && it->second.pending_auto && !flags_.max_steps) {
        if (run_steps_ > 0) {
          resolve_pending(it->second, Value::of_int(run_steps_), Source::kDerived,
                          "the run length");
        } else {
          doc_.error(it->second.spelled_path,
                     "\"auto\" needs --max_steps (or a known run length); the HF Trainer "
                     "computes it from the number of training steps");
          it->second.pending_auto = false;
        }
      } else if (flags_.max_steps) {
        fill_match("scheduler.params.total_num_steps", Value::of_int(*flags_.max_steps), true,
                   "--max_steps", has_scheduler);
      }
    }
    fill_match("fp16.enabled", Value::of_bool(flags_.fp16), flags_.fp16, "--fp16");
    fill_match("bf16.enabled", Value::of_bool(flags_.bf16), flags_.bf16, "--bf16");
    fill_only("amp.enabled", Value::of_bool(false), Source::kAutoTrainerDefault,
              "fp16_backend amp (apex off)");
    fill_only("amp.opt_level", Value::of_string("O1"), Source::kAutoTrainerDefault,
              "--fp16_opt_level");

    // Model-based sizes (trainer_config_finalize).
    const std::int64_t h = model_.hidden_size;
    const std::string model_text = "hidden_size " + std::to_string(h);
    const bool stage3 = zero_stage() == 3;
    const struct {
      const char* path;
      std::int64_t value;
      bool needs_stage3;
    } model_keys[] = {
        {"zero_optimization.reduce_bucket_size", h * h, false},
        {"zero_optimization.stage3_prefetch_bucket_size",
         static_cast<std::int64_t>(0.9 * static_cast<double>(h * h)), true},
        {"zero_optimization.stage3_param_persistence_threshold", 10 * h, true},
    };
    for (const auto& key : model_keys) {
      auto it = doc_.settings.find(key.path);
      if (it == doc_.settings.end() || !it->second.pending_auto) continue;
      if (key.needs_stage3 && !stage3) {
        // The Trainer leaves it "auto" and DeepSpeed drops it: default.
        it->second.pending_auto = false;
        it->second.value = Value::null();
        it->second.source = Source::kAutoDefault;
        it->second.detail = "not stage 3";
      } else if (h <= 0) {
        doc_.error(it->second.spelled_path,
                   "\"auto\" needs the model's hidden_size, which is unknown (the HF Trainer "
                   "fails the same way)");
        it->second.pending_auto = false;
      } else {
        resolve_pending(it->second, Value::of_int(key.value), Source::kAutoModel, model_text);
      }
    }
    // Anything still "auto" is an HF key of a section the Trainer does not fill here.
    for (auto& [path, setting] : doc_.settings) {
      if (setting.pending_auto) {
        setting.pending_auto = false;
        setting.value = Value::null();
        setting.source = Source::kAutoDefault;
        setting.detail = "no HF rule applies";
      }
    }
  }

  // ---- checks ----
  void not_supported(const Setting& s, const std::string& extra) {
    std::string message = "not supported yet: " + s.spelled_path + " = " + detail::to_text(s.value);
    if (s.source != Source::kFile)
      message += " (" + std::string(source_name(s.source)) + " " + s.detail + ")";
    if (s.spec && !s.spec->why_unsupported.empty())
      message += extra + " (" + s.spec->why_unsupported + ")";
    else
      message += extra;
    doc_.plain_error(message);
  }

  void check_required_keys() {
    for (const KeySpec& spec : all_key_specs()) {
      if (!spec.required_when_present) continue;
      const std::size_t dot = spec.path.rfind('.');
      const std::string section = spec.path.substr(0, dot);
      auto it = doc_.sections.find(section);
      if (it == doc_.sections.end() || !it->second.IsMap()) continue;
      if (!find(spec.path)) {
        doc_.error(spec.path,
                   "required when '" + section + "' is present (DeepSpeed pops it: KeyError)");
      }
    }
  }

  void check_params_belong_to_type() {
    const std::string opt = optimizer_type();
    const std::string sched = scheduler_type();
    // Only built-in optimizer names have a known parameter list (others are torch classes).
    const KeySpec* opt_spec = find_key_spec("optimizer.type");
    const bool opt_known =
        std::any_of(opt_spec->choices.begin(), opt_spec->choices.end(),
                    [&](const std::string& choice) { return lower(choice) == opt; });
    for (const auto& [path, s] : doc_.settings) {
      if (!s.spec || s.spec->applies_to.empty()) continue;
      const bool is_sched = starts_with(path, "scheduler.params.");
      const std::string& type = is_sched ? sched : opt;
      if (type.empty() || (!is_sched && !opt_known)) continue;
      if (std::find(s.spec->applies_to.begin(), s.spec->applies_to.end(), type) !=
          s.spec->applies_to.end()) {
        continue;
      }
      std::string owners;
      for (const std::string& owner : s.spec->applies_to)
        owners += (owners.empty() ? "" : ", ") + owner;
      doc_.error(s.spelled_path,
                 "not a parameter of " +
                     get_string(is_sched ? "scheduler.type" : "optimizer.type") +
                     " (DeepSpeed: TypeError when it builds it); it belongs to: " + owners);
    }
    if (is_set("scheduler.type") && doc_.sections.count("scheduler.params") == 0) {
      doc_.error("scheduler.params",
                 "required when scheduler.type is set (DeepSpeed calls the "
                 "scheduler with **params)");
    }
    auto require = [&](const char* path, const char* type_name) {
      if (!is_set(path)) doc_.error(path, std::string("required by ") + type_name);
    };
    if (sched == "onecycle") {
      require("scheduler.params.cycle_min_lr", "OneCycle");
      require("scheduler.params.cycle_max_lr", "OneCycle");
    }
    if (sched == "warmupdecaylr") require("scheduler.params.total_num_steps", "WarmupDecayLR");
    if (sched == "warmupcosinelr") require("scheduler.params.total_num_steps", "WarmupCosineLR");
  }

  static bool in_list(const std::vector<std::string>& list, const Value& value) {
    const std::string text =
        value.kind == Value::Kind::kBool ? (value.boolean ? "true" : "false") : lower(value.text);
    for (const std::string& item : list) {
      if (lower(item) == text) return true;
    }
    return false;
  }

  void check_support() {
    for (const auto& [path, s] : doc_.settings) {
      const KeySpec* spec = s.spec;
      if (!spec || s.value.is_null()) continue;
      // cpu_offload / cpu_offload_param: applied in fill_zero, checked in check_offload.
      if (spec->deprecated_alias && spec->kind == ValueKind::kBool) continue;
      switch (spec->support) {
        case Support::kDefaultOnly:
          if (!detail::same_value(s.value, detail::default_value(*spec))) {
            not_supported(s, spec->default_text.empty()
                                 ? std::string()
                                 : "; zerotrain accepts only DeepSpeed's default " +
                                       detail::to_text(detail::default_value(*spec)));
          }
          break;
        case Support::kHonoured:
          if (!spec->supported_values.empty() && !in_list(spec->supported_values, s.value)) {
            std::string supported;
            for (const std::string& v : spec->supported_values) {
              supported += (supported.empty() ? "" : ", ") + v;
            }
            not_supported(s, "; zerotrain supports: " + supported);
          }
          break;
        case Support::kPresenceUnsupported:  // datastates_ckpt (a leaf)
          if (!(s.value.kind == Value::Kind::kOpaque && lower(s.value.text) == "false")) {
            not_supported(s, spec->hint.empty() ? "" : " (" + spec->hint + ")");
          }
          break;
        default:
          break;
      }
    }
    for (const auto& [path, node] : doc_.sections) {
      const KeySpec* spec = find_key_spec(path);
      if (!spec || spec->support != Support::kPresenceUnsupported) continue;
      if (!node.IsDefined() || node.IsNull()) continue;
      const Setting* enabled = find(path + ".enabled");
      if (enabled && enabled->value.kind == Value::Kind::kBool && !enabled->value.boolean) continue;
      doc_.plain_error("not supported yet: " + doc_.section_spelling[path] +
                       " (present: DeepSpeed turns the feature on when the section is given" +
                       (spec->hint.empty() ? "" : "; " + spec->hint) + ")");
    }
    // ZeRO with an optimizer outside DeepSpeed's tested list (engine._do_optimizer_sanity_check).
    if (optimizer_type() == "lamb" && zero_stage() >= 1 &&
        !get_bool("zero_allow_untested_optimizer")) {
      doc_.plain_error(
          "optimizer.type: You are using an untested ZeRO Optimizer. Please add "
          "<\"zero_allow_untested_optimizer\": true> in the configuration file to use it.");
    }
  }

  // ---- batch triple (DeepSpeed config.py _set_batch_related_parameters / _batch_assertion) ----
  void derive_batch_triple() {
    const bool has_train = is_set("train_batch_size");
    const bool has_micro = is_set("train_micro_batch_size_per_gpu");
    const bool has_gas = is_set("gradient_accumulation_steps");
    std::int64_t train = has_train ? get_int("train_batch_size") : 0;
    std::int64_t micro = has_micro ? get_int("train_micro_batch_size_per_gpu") : 0;
    std::int64_t gas = has_gas ? get_int("gradient_accumulation_steps") : 0;
    const std::int64_t w = world_;
    // Values already refused (0, negative) were reported; nothing is derived from them, so
    // neither a division by zero nor a second message follows.
    if ((has_train && train <= 0) || (has_micro && micro <= 0) || (has_gas && gas <= 0)) return;
    bool fits = true;  // products beyond 64 bits
    if (has_train && has_micro && has_gas) {
      // nothing to derive
    } else if (has_train && has_micro) {
      gas = (train / micro) / w;
      put("gradient_accumulation_steps", Value::of_int(gas), Source::kDerived,
          "(train_batch_size // micro) // world");
    } else if (has_train && has_gas) {
      micro = (train / w) / gas;
      put("train_micro_batch_size_per_gpu", Value::of_int(micro), Source::kDerived,
          "(train_batch_size // world) // gas");
    } else if (has_micro && has_gas) {
      fits = product(micro, gas, w, &train);
      put("train_batch_size", Value::of_int(train), Source::kDerived, "micro * gas * world");
    } else if (has_train) {
      gas = 1;
      micro = train / w;
      put("gradient_accumulation_steps", Value::of_int(gas), Source::kDerived,
          "only train_batch_size given");
      put("train_micro_batch_size_per_gpu", Value::of_int(micro), Source::kDerived,
          "train_batch_size // world");
    } else if (has_micro) {
      fits = product(micro, w, 1, &train);
      gas = 1;
      put("train_batch_size", Value::of_int(train), Source::kDerived, "micro * world");
      put("gradient_accumulation_steps", Value::of_int(gas), Source::kDerived,
          "only train_micro_batch_size_per_gpu given");
    } else {
      doc_.plain_error(
          "Either train_batch_size or train_micro_batch_size_per_gpu needs to be "
          "provided");
      return;
    }
    out_.train_batch_size = train;
    out_.train_micro_batch_size_per_gpu = micro;
    out_.gradient_accumulation_steps = gas;
    std::int64_t expected = 0;
    if (!fits || !product(micro, gas, w, &expected)) {
      doc_.plain_error("train_micro_batch_size_per_gpu " + std::to_string(micro) +
                       " x gradient_accumulation_steps " + std::to_string(gas) + " x world size " +
                       std::to_string(w) + " is more than a 64-bit train_batch_size holds");
      return;
    }
    if (train <= 0 || micro <= 0 || gas <= 0 || train != expected) {
      doc_.plain_error(
          "Check batch related parameters. train_batch_size is not equal to "
          "micro_batch_per_gpu * gradient_acc_step * world_size " +
          std::to_string(train) + " != " + std::to_string(micro) + " * " + std::to_string(gas) +
          " * " + std::to_string(w));
    }
  }

  // a * b * c, false when it does not fit in 64 bits (out then holds a wrapped value).
  static bool product(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t* out) {
    std::int64_t ab = 0;
    return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, out);
  }

  // ---- typed result ----
  void fill_typed() {
    ResolvedConfig& c = out_;
    c.world_size = world_;
    c.source_name = doc_.source_name;
    if (is_set("steps_per_print")) {
      c.steps_per_print = get_int("steps_per_print");
    } else {
      c.steps_per_print = kDefaultStepsPerPrint;
      put("steps_per_print", Value::of_int(kDefaultStepsPerPrint), Source::kDefault,
          "DeepSpeed: None (no progress lines); zerotrain prints every 10 steps");
    }
    c.wall_clock_breakdown = get_bool("wall_clock_breakdown");
    c.memory_breakdown = get_bool("memory_breakdown");
    c.gradient_clipping = get_float("gradient_clipping");
    // communication_data_type is resolved with the precision (fill_precision).
    c.gradient_allreduce_op = get_string("gradient_allreduce_op");
    c.prescale_gradients = get_bool("prescale_gradients");
    c.gradient_predivide_factor = get_float("gradient_predivide_factor");
    c.dataloader_drop_last = get_bool("dataloader_drop_last");
    c.log_level = get_string("log_level");
    c.zero_allow_untested_optimizer = get_bool("zero_allow_untested_optimizer");
    c.zero_force_ds_cpu_optimizer = get_bool("zero_force_ds_cpu_optimizer");
    c.optimizer_from_trainer = optimizer_from_trainer_;

    // Optimizer.
    OptimizerConfig& o = c.optimizer;
    o.type_name = get_string("optimizer.type");
    const std::string type = optimizer_type();
    o.type = type == "adam"   ? OptimizerType::kAdam
             : type == "lamb" ? OptimizerType::kLamb
                              : OptimizerType::kAdamW;
    o.lr = get_float("optimizer.params.lr");
    const Value betas = effective("optimizer.params.betas");
    if (betas.items.size() == 2) {
      o.beta1 = betas.items[0].number;
      o.beta2 = betas.items[1].number;
    }
    o.eps = get_float("optimizer.params.eps");
    o.weight_decay = get_float("optimizer.params.weight_decay");
    o.bias_correction = get_bool("optimizer.params.bias_correction");
    o.torch_adam = get_bool("optimizer.params.torch_adam");
    const bool adam_family = type == "adam" || type == "adamw";
    o.adam_w_mode = adam_family && (type == "adamw" || get_bool("optimizer.params.adam_w_mode"));
    o.max_coeff = get_float("optimizer.params.max_coeff");
    o.min_coeff = get_float("optimizer.params.min_coeff");
    o.eps_inside_sqrt = get_bool("optimizer.params.eps_inside_sqrt");

    fill_scheduler();
    fill_zero();

    Fp16Config& f = c.fp16;
    f.enabled = get_bool("fp16.enabled");
    f.loss_scale = get_float("fp16.loss_scale");
    f.initial_scale_power = static_cast<int>(get_int("fp16.initial_scale_power"));
    f.loss_scale_window = get_int("fp16.loss_scale_window");
    f.hysteresis = static_cast<int>(get_int("fp16.hysteresis"));
    f.consecutive_hysteresis = get_bool("fp16.consecutive_hysteresis");
    f.min_loss_scale = get_float("fp16.min_loss_scale");
    f.dynamic_scaler_args_given = false;
    for (const char* key : {"initial_scale_power", "loss_scale_window", "min_loss_scale",
                            "hysteresis", "consecutive_hysteresis"}) {
      if (is_set(std::string("fp16.") + key)) f.dynamic_scaler_args_given = true;
    }
    c.bf16.enabled = get_bool("bf16.enabled");
    c.bf16.immediate_grad_update = get_bool("bf16.immediate_grad_update");
    c.bf16.check_grad_overflow = get_bool("bf16.check_grad_overflow");
    fill_precision();

    AioConfig& a = c.aio;
    a.block_size = get_int("aio.block_size");
    a.queue_depth = get_int("aio.queue_depth");
    a.intra_op_parallelism = get_int("aio.intra_op_parallelism");
    a.single_submit = get_bool("aio.single_submit");
    a.overlap_events = get_bool("aio.overlap_events");

    CheckpointConfig& k = c.checkpoint;
    k.tag_validation = get_string("checkpoint.tag_validation");
    k.load_universal = get_bool("checkpoint.load_universal");
    k.use_node_local_storage = get_bool("checkpoint.use_node_local_storage");
    k.parallel_write_pipeline_stage = get_bool("checkpoint.parallel_write.pipeline_stage");
    k.checkpoint_serialization = get_bool("checkpoint.checkpoint_serialization");

    ActivationCheckpointingConfig& ac = c.activation_checkpointing;
    ac.partition_activations = get_bool("activation_checkpointing.partition_activations");
    ac.cpu_checkpointing = get_bool("activation_checkpointing.cpu_checkpointing");
    ac.contiguous_memory_optimization =
        get_bool("activation_checkpointing.contiguous_memory_optimization");
    if (is_set("activation_checkpointing.number_checkpoints")) {
      ac.number_checkpoints = get_int("activation_checkpointing.number_checkpoints");
    }
    ac.synchronize_checkpoint_boundary =
        get_bool("activation_checkpointing.synchronize_checkpoint_boundary");
    ac.profile = get_bool("activation_checkpointing.profile");

    c.csv_monitor.enabled = get_bool("csv_monitor.enabled");
    c.csv_monitor.output_path = get_string("csv_monitor.output_path");
    c.csv_monitor.job_name = get_string("csv_monitor.job_name");
  }

  static DataType dtype_of(const std::string& spelling) {
    const std::string text = lower(spelling);
    if (text == "fp16" || text == "float16" || text == "half" || text == "torch.float16")
      return DataType::kFp16;
    if (text == "bf16" || text == "bfloat16" || text == "torch.bfloat16") return DataType::kBf16;
    return DataType::kFp32;
  }
  static const char* dtype_name(DataType type) {
    return type == DataType::kFp16 ? "fp16" : type == DataType::kBf16 ? "bf16" : "fp32";
  }

  // Adds an explanation to a key's entry without changing its value or source.
  void annotate(const std::string& path, const std::string& text) {
    Setting& s = doc_.settings[path];
    if (s.spelled_path.empty()) {
      s.spelled_path = path;
      s.spec = find_key_spec(path);
      s.source = Source::kDefault;
    }
    s.detail = s.detail.empty() ? text : s.detail + "; " + text;
  }

  // What the engine needs: training dtype, loss scaler, overflow check, reduction and
  // accumulation dtypes (deepspeed.md §1.2, §1.6, §2; deepspeed-keys.md §4).
  void fill_precision() {
    ResolvedConfig& c = out_;
    PrecisionConfig& p = c.precision;
    p.training_dtype = c.fp16.enabled   ? DataType::kFp16
                       : c.bf16.enabled ? DataType::kBf16
                                        : DataType::kFp32;
    const char* model_dtype = dtype_name(p.training_dtype);
    if (is_set("communication_data_type")) {
      c.communication_data_type = dtype_of(get_string("communication_data_type"));
    } else {
      c.communication_data_type = p.training_dtype;
      put("communication_data_type", Value::of_string(model_dtype), Source::kDerived,
          "None: follows the training dtype");
    }
    if (is_set("data_types.grad_accum_dtype")) {
      p.grad_accum_dtype = dtype_of(get_string("data_types.grad_accum_dtype"));
    } else {
      const bool bf16_without_zero = p.training_dtype == DataType::kBf16 && zero_stage() == 0;
      p.grad_accum_dtype = bf16_without_zero ? DataType::kFp32 : p.training_dtype;
      if (p.training_dtype != DataType::kFp32) {
        put("data_types.grad_accum_dtype", Value::of_string(dtype_name(p.grad_accum_dtype)),
            Source::kDerived,
            bf16_without_zero ? "None: fp32 for bf16 without ZeRO" : "None: the model dtype");
      }
    }
    p.check_grad_overflow = p.training_dtype == DataType::kFp16 ||
                            (p.training_dtype == DataType::kBf16 && c.bf16.check_grad_overflow);
    p.loss_scaler = loss_scaler_values(c.fp16);

    if (c.fp16.enabled && c.fp16.loss_scale == 0.0 && !c.fp16.dynamic_scaler_args_given) {
      // The printout shows the scaler ZeRO really builds (the quirk of §1.6).
      const std::string why =
          "no dynamic-scaler key given: DeepSpeed's ZeRO uses DynamicLossScaler's defaults";
      put("fp16.initial_scale_power", Value::of_int(32), Source::kDerived, why);
      put("fp16.hysteresis", Value::of_int(1), Source::kDerived, why);
    } else if (c.fp16.enabled && c.fp16.loss_scale > 0.0) {
      annotate("fp16.loss_scale", "static loss scale: the dynamic-scaler keys are unused");
    }
    annotate("bf16.immediate_grad_update",
             "no effect: DeepSpeed's ZeRO optimizers do not read it (its BF16_Optimizer "
             "only times the fold of bf16 grads into fp32 by it)");
  }

  void fill_scheduler() {
    SchedulerConfig& s = out_.scheduler;
    const std::string type = scheduler_type();
    s.type = type == "warmuplr"         ? SchedulerType::kWarmupLR
             : type == "warmupdecaylr"  ? SchedulerType::kWarmupDecayLR
             : type == "warmupcosinelr" ? SchedulerType::kWarmupCosineLR
             : type == "onecycle"       ? SchedulerType::kOneCycle
             : type == "lrrangetest"    ? SchedulerType::kLRRangeTest
                                        : SchedulerType::kNone;
    const std::string p = "scheduler.params.";
    s.warmup_min_lr = get_float(p + "warmup_min_lr");
    if (is_set(p + "warmup_max_lr")) {
      s.warmup_max_lr = get_float(p + "warmup_max_lr");
    } else if (s.type == SchedulerType::kWarmupLR) {
      s.warmup_max_lr = out_.optimizer.lr;  // keys.md: None -> the optimizer's lr
      put(p + "warmup_max_lr", Value::of_float(s.warmup_max_lr), Source::kDerived,
          "None: the optimizer lr");
    } else {
      s.warmup_max_lr = 0.001;
      if (s.type == SchedulerType::kWarmupDecayLR) {
        put(p + "warmup_max_lr", Value::of_float(0.001), Source::kDefault, "WarmupDecayLR default");
      }
    }
    s.warmup_num_steps = get_int(p + "warmup_num_steps");
    s.warmup_type = get_string(p + "warmup_type");
    s.total_num_steps = get_int(p + "total_num_steps");
    s.warmup_min_ratio = get_float(p + "warmup_min_ratio");
    s.cos_min_ratio = get_float(p + "cos_min_ratio");
    s.cycle_min_lr = get_float(p + "cycle_min_lr");
    s.cycle_max_lr = get_float(p + "cycle_max_lr");
    s.decay_lr_rate = get_float(p + "decay_lr_rate");
    s.cycle_first_step_size = get_int(p + "cycle_first_step_size");
    s.cycle_first_stair_count = get_int(p + "cycle_first_stair_count");
    s.cycle_second_step_size = is_set(p + "cycle_second_step_size")
                                   ? get_int(p + "cycle_second_step_size")
                                   : s.cycle_first_step_size;
    s.cycle_second_stair_count = is_set(p + "cycle_second_stair_count")
                                     ? get_int(p + "cycle_second_stair_count")
                                     : s.cycle_first_stair_count;
    if (s.type == SchedulerType::kOneCycle) {
      if (!is_set(p + "cycle_second_step_size")) {
        put(p + "cycle_second_step_size", Value::of_int(s.cycle_second_step_size), Source::kDerived,
            "None: cycle_first_step_size");
      }
      if (!is_set(p + "cycle_second_stair_count")) {
        put(p + "cycle_second_stair_count", Value::of_int(s.cycle_second_stair_count),
            Source::kDerived, "None: cycle_first_stair_count");
      }
    }
    s.decay_step_size = get_int(p + "decay_step_size");
    s.cycle_momentum = get_bool(p + "cycle_momentum");
    s.cycle_min_mom = get_float(p + "cycle_min_mom");
    s.cycle_max_mom = get_float(p + "cycle_max_mom");
    s.decay_mom_rate = get_float(p + "decay_mom_rate");
    s.lr_range_test_min_lr = get_float(p + "lr_range_test_min_lr");
    s.lr_range_test_step_size = get_int(p + "lr_range_test_step_size");
    s.lr_range_test_step_rate = get_float(p + "lr_range_test_step_rate");
    s.lr_range_test_staircase = get_bool(p + "lr_range_test_staircase");
  }

  static OffloadDevice device_of(const std::string& text) {
    return text == "cpu"    ? OffloadDevice::kCpu
           : text == "nvme" ? OffloadDevice::kNvme
                            : OffloadDevice::kNone;
  }

  void fill_zero() {
    ZeroConfig& z = out_.zero;
    const std::string p = "zero_optimization.";
    z.stage = zero_stage();
    z.contiguous_gradients = get_bool(p + "contiguous_gradients");
    z.reduce_scatter = get_bool(p + "reduce_scatter");
    z.reduce_bucket_size = get_int(p + "reduce_bucket_size");
    z.use_multi_rank_bucket_allreduce = get_bool(p + "use_multi_rank_bucket_allreduce");
    z.allgather_partitions = get_bool(p + "allgather_partitions");
    if (doc_.legacy_zero_bool && !is_set(p + "allgather_bucket_size")) {
      z.allgather_bucket_size = get_int("allgather_size");
      put(p + "allgather_bucket_size", Value::of_int(z.allgather_bucket_size), Source::kDerived,
          "legacy form: top-level allgather_size");
    } else {
      z.allgather_bucket_size = get_int(p + "allgather_bucket_size");
    }
    if (is_set(p + "overlap_comm")) {
      z.overlap_comm = get_bool(p + "overlap_comm");
    } else {
      z.overlap_comm = z.stage == 3;
      put(p + "overlap_comm", Value::of_bool(z.overlap_comm), Source::kDerived,
          "None: true only at stage 3");
    }
    z.load_from_fp32_weights = get_bool(p + "load_from_fp32_weights");
    z.sub_group_size = get_int(p + "sub_group_size");
    z.prefetch_bucket_size = get_int(p + "stage3_prefetch_bucket_size");
    z.param_persistence_threshold = get_int(p + "stage3_param_persistence_threshold");
    z.model_persistence_threshold = get_int(p + "stage3_model_persistence_threshold");
    z.max_live_parameters = get_int(p + "stage3_max_live_parameters");
    z.max_reuse_distance = get_int(p + "stage3_max_reuse_distance");
    z.gather_16bit_weights_on_model_save =
        get_bool(p + "stage3_gather_16bit_weights_on_model_save");
    z.ignore_unused_parameters = get_bool(p + "ignore_unused_parameters");
    z.round_robin_gradients = get_bool(p + "round_robin_gradients");

    // DeepSpeed's deprecated booleans: true means a section {device: "cpu"} (false: None).
    // Both with their section is refused when walking, so the section's keys are defaults here.
    const auto apply_deprecated = [&](const std::string& alias, const std::string& section) {
      const Setting* s = find(alias);
      if (!s || s->value.is_null() || !s->value.boolean) return;
      const std::string spelled = s->spelled_path;  // messages about the device name it
      put(section + "device", Value::of_string("cpu"), Source::kDerived,
          "deprecated " + spelled + ": true");
      doc_.settings[section + "device"].spelled_path = spelled;
    };
    const std::string op = p + "offload_param.";
    apply_deprecated(p + "cpu_offload_param", op);
    z.offload_param.device = device_of(get_string(op + "device"));
    z.offload_param.nvme_path = get_string(op + "nvme_path");
    z.offload_param.buffer_count = get_int(op + "buffer_count");
    z.offload_param.buffer_size = get_int(op + "buffer_size");
    z.offload_param.max_in_cpu = get_int(op + "max_in_cpu");
    z.offload_param.pin_memory = get_bool(op + "pin_memory");
    const std::string oo = p + "offload_optimizer.";
    apply_deprecated(p + "cpu_offload", oo);
    z.offload_optimizer.device = device_of(get_string(oo + "device"));
    z.offload_optimizer.nvme_path = get_string(oo + "nvme_path");
    z.offload_optimizer.buffer_count = get_int(oo + "buffer_count");
    z.offload_optimizer.pin_memory = get_bool(oo + "pin_memory");
    z.offload_optimizer.pipeline_read = get_bool(oo + "pipeline_read");
    z.offload_optimizer.pipeline_write = get_bool(oo + "pipeline_write");
    z.offload_optimizer.fast_init = get_bool(oo + "fast_init");
    z.offload_optimizer.ratio = get_float(oo + "ratio");
    if (is_set(p + "cpu_offload_use_pin_memory")) {
      // DeepSpeed logs a deprecation warning and does not apply the value; neither does
      // zerotrain, and the start-up print says so.
      annotate(p + "cpu_offload_use_pin_memory",
               "deprecated, not applied (DeepSpeed only warns): offload_optimizer.pin_memory and "
               "offload_param.pin_memory decide");
    }
  }

  // Rules DeepSpeed asserts that span several keys.
  void check_cross_rules() {
    const ResolvedConfig& c = out_;
    if (c.fp16.enabled && c.bf16.enabled) {
      doc_.plain_error(
          "fp16.enabled and bf16.enabled: bfloat16 and fp16 modes cannot be "
          "simultaneously enabled");
    }
    if (c.fp16.enabled && c.fp16.loss_scale == 0.0) {
      // DeepSpeed's fp16 model validator (enabled and dynamic); hysteresis is zerotrain's
      // addition: DeepSpeed accepts <= 0, and its scaler then never lowers the scale.
      const struct {
        const char* key;
        std::int64_t value;
        std::int64_t least;
      } rules[] = {{"loss_scale_window", c.fp16.loss_scale_window, 1},
                   {"min_loss_scale", static_cast<std::int64_t>(c.fp16.min_loss_scale), 1},
                   {"hysteresis", c.fp16.hysteresis, 1}};
      for (const auto& rule : rules) {
        if (rule.value >= rule.least) continue;
        const Setting* s = find(std::string("fp16.") + rule.key);
        doc_.error(s ? s->spelled_path : std::string("fp16.") + rule.key,
                   "must be > 0 when fp16 is enabled with dynamic loss scaling (loss_scale 0), "
                   "got " +
                       std::to_string(rule.value));
      }
      if (c.fp16.initial_scale_power > 1023) {
        doc_.error("fp16.initial_scale_power",
                   "2^" + std::to_string(c.fp16.initial_scale_power) +
                       " is beyond the largest finite loss scale (2^1023)");
      }
    }
    check_bfloat16_alias();
    if (c.zero.stage == 3 && lower(c.gradient_allreduce_op) == "sum") {
      doc_.error("gradient_allreduce_op",
                 "\"sum\" is rejected with ZeRO stage 3 (DeepSpeed "
                 "averages there)");
    }
    if (c.zero.stage >= 1 && c.zero.reduce_scatter &&
        (c.prescale_gradients || c.gradient_predivide_factor != 1.0)) {
      doc_.error("zero_optimization.reduce_scatter",
                 "ZeRO with reduce_scatter requires prescale_gradients false and "
                 "gradient_predivide_factor 1.0 (DeepSpeed asserts this); set reduce_scatter "
                 "false or drop them");
    }
    if (c.zero.offload_optimizer.ratio < 1.0 && c.zero.stage != 3) {
      doc_.error("zero_optimization.offload_optimizer.ratio",
                 "Partial offloading only supported for ZeRO Stage 3.");
    }
    check_offload();
    if ((c.zero.stage == 1 || c.zero.stage == 2) && c.zero.allgather_bucket_size % 2 != 0) {
      doc_.error("zero_optimization.allgather_bucket_size",
                 "must be a multiple of 2 at stage 1/2 (DeepSpeed asserts this), got " +
                     std::to_string(c.zero.allgather_bucket_size));
    }
    if (is_set("data_parallel_size") && get_int("data_parallel_size") != world_) {
      doc_.error("data_parallel_size", std::to_string(get_int("data_parallel_size")) +
                                           " but the world size is " + std::to_string(world_) +
                                           " (zerotrain is data-parallel only)");
    }
  }

  static const char* device_text(OffloadDevice device) {
    return device == OffloadDevice::kCpu ? "cpu" : device == OffloadDevice::kNvme ? "nvme" : "none";
  }

  // How a key is written in the file, for messages (the path itself when it is not written).
  std::string spelled(const std::string& path) const {
    const Setting* s = find(path);
    return s && !s->spelled_path.empty() ? s->spelled_path : path;
  }

  // ZeRO-Offload (deepspeed-keys.md §5.1, deepspeed.md §1.4, §1.7): where each device may be
  // used, the keys DeepSpeed reads only with another device, and the optimizer it needs.
  void check_offload() {
    const ZeroConfig& z = out_.zero;
    const std::string p = "zero_optimization.";
    const std::string op = p + "offload_param.", oo = p + "offload_optimizer.";
    const OffloadDevice opt_device = z.offload_optimizer.device;
    const OffloadDevice param_device = z.offload_param.device;
    const std::string stage_text = std::to_string(z.stage);
    if (opt_device != OffloadDevice::kNone && z.stage == 0) {
      doc_.error(spelled(oo + "device"),
                 std::string("offload to \"") + device_text(opt_device) +
                     "\" needs ZeRO: DeepSpeed has no offload without ZeRO and "
                     "zero_optimization.stage is 0; set the stage to 1, 2 or 3, or the device "
                     "to \"none\"");
    }
    if (param_device != OffloadDevice::kNone && z.stage != 3) {
      doc_.error(spelled(op + "device"),
                 std::string("offload to \"") + device_text(param_device) +
                     "\" needs ZeRO stage 3 and zero_optimization.stage is " + stage_text +
                     ": DeepSpeed silently ignores offload_param below stage 3; set the stage "
                     "to 3, or offload only the optimizer (offload_optimizer) at stage 1 or 2");
    }
    if (param_device != OffloadDevice::kNone && z.offload_param.buffer_count == 0) {
      doc_.error(spelled(op + "buffer_count"),
                 std::string("0 with offload_param.device \"") + device_text(param_device) +
                     "\": parameter offload needs at least one staging buffer");
    }
    // A key given in the file with a value other than DeepSpeed's default, where DeepSpeed does
    // not read it: NVMe-only keys unless the device is nvme, every key while it is "none".
    const auto refuse_unread = [&](const std::string& section, OffloadDevice device,
                                   std::initializer_list<const char*> nvme_only,
                                   std::initializer_list<const char*> others) {
      const std::string name = section.substr(p.size(), section.size() - p.size() - 1);
      const auto check = [&](const char* key, bool only_nvme) {
        const Setting* s = find(section + key);
        if (!s || s->source != Source::kFile || s->value.is_null() || !s->spec) return;
        if (detail::same_value(s->value, detail::default_value(*s->spec))) return;
        const std::string value = detail::to_text(s->value);
        const std::string current = name + ".device is \"" + device_text(device) + "\"";
        if (only_nvme) {
          doc_.error(s->spelled_path, value + " has no effect: " + current +
                                          " and DeepSpeed ignores " + key + " unless " + name +
                                          ".device is \"nvme\"; drop it");
        } else {
          doc_.error(s->spelled_path, value + " has no effect: " + current +
                                          " (DeepSpeed ignores it then); set the device to "
                                          "\"cpu\" or drop it");
        }
      };
      if (device != OffloadDevice::kNvme)
        for (const char* key : nvme_only) check(key, true);
      if (device == OffloadDevice::kNone)
        for (const char* key : others) check(key, false);
    };
    refuse_unread(op, param_device, {"nvme_path"},
                  {"buffer_count", "buffer_size", "max_in_cpu", "pin_memory"});
    refuse_unread(oo, opt_device,
                  {"nvme_path", "buffer_count", "pipeline_read", "pipeline_write", "fast_init"},
                  {"pin_memory", "ratio"});
    check_nvme();
    // DeepSpeed forces contiguous gradients with CPU offload at stage 1/2 (stage_1_and_2.py).
    if (opt_device != OffloadDevice::kNone && (z.stage == 1 || z.stage == 2) &&
        !z.contiguous_gradients && is_set(p + "contiguous_gradients")) {
      doc_.error(spelled(p + "contiguous_gradients"),
                 "false with offload_optimizer at stage " + stage_text +
                     ": DeepSpeed silently forces contiguous_gradients true with optimizer "
                     "offload at stage 1/2; drop it or set it true");
    }
    // engine.py _configure_optimizer: ZeRO-Offload with a client optimizer that is not
    // DeepSpeedCPUAdam raises unless zero_force_ds_cpu_optimizer is false. Without an
    // "optimizer" section the HF Trainer supplies its own AdamW (a client optimizer); with
    // Adam/AdamW in the config DeepSpeed builds DeepSpeedCPUAdam itself.
    if (opt_device != OffloadDevice::kNone && optimizer_from_trainer_ &&
        out_.zero_force_ds_cpu_optimizer) {
      doc_.error(spelled("zero_force_ds_cpu_optimizer"),
                 "You are using ZeRO-Offload with a client provided optimizer (the HF "
                 "Trainer's AdamW: the config has no \"optimizer\" section) which in most cases "
                 "will yield poor performance. Please either set an optimizer in your ds-config "
                 "(\"optimizer\": {\"type\": \"AdamW\", ...}, which DeepSpeed runs as "
                 "DeepSpeedCPUAdam) or set <\"zero_force_ds_cpu_optimizer\": false> in your "
                 "configuration file (DeepSpeed raises ZeRORuntimeException here; with false "
                 "zerotrain steps the same AdamW on the CPU)");
    }
  }

  // NVMe offload (ZeRO-Infinity; deepspeed-keys.md §5.1, §6, deepspeed.md §1.4, §1.5, §5.4).
  // Where each device may be used is check_offload's; here what NVMe itself needs. The swap
  // folder's existence and permissions are checked when training starts, on every node (a
  // check-config on a login node cannot see node-local disks).
  void check_nvme() {
    const ZeroConfig& z = out_.zero;
    const std::string p = "zero_optimization.";
    const std::string op = p + "offload_param.", oo = p + "offload_optimizer.";
    const auto require_path = [&](const std::string& section, const OffloadConfig& offload) {
      if (offload.device != OffloadDevice::kNvme) return;
      const std::string key = section + "nvme_path";
      const std::string name = section.substr(p.size(), section.size() - p.size() - 1);
      const Setting* s = find(key);
      if (s && !s->value.is_null() && offload.nvme_path.empty()) {
        doc_.error(s->spelled_path, "\"\" names no folder; with " + name +
                                        ".device \"nvme\" give the folder on the node-local "
                                        "NVMe disk to swap to");
      } else if (offload.nvme_path.empty()) {
        doc_.error(key, "required with " + name +
                            ".device \"nvme\": the folder on the node-local NVMe disk to swap "
                            "to (DeepSpeed's default is None, with which its swapper fails)");
      } else {
        annotate(key,
                 "checked when training starts: a writable folder on every node; each rank "
                 "swaps to zerotrain-<job>/rank<R> inside it");
      }
    };
    require_path(oo, z.offload_optimizer);
    require_path(op, z.offload_param);
    if (z.offload_param.device == OffloadDevice::kNvme && z.offload_param.buffer_size == 0) {
      doc_.error(spelled(op + "buffer_size"),
                 "0 with offload_param.device \"nvme\": parameters are read from NVMe through "
                 "buffers of buffer_size elements, and one of 0 holds nothing");
    }
    const OffloadConfig& o = z.offload_optimizer;
    if (o.device == OffloadDevice::kNvme) {
      // The engine keeps three arrays of a sub-group in host buffers at once (fp32 master
      // weights, exp_avg, exp_avg_sq; Lamb has the same three): one buffer set. Reading the
      // next sub-group ahead and writing the previous one back each need a set more.
      const std::int64_t sets = o.buffer_count / 3;
      const int needed = o.pipeline_read && o.pipeline_write   ? 3
                         : o.pipeline_read || o.pipeline_write ? 2
                                                               : 1;
      if (sets < needed) {
        const std::string set_text =
            " (a set is 3 buffers: the fp32 master weights, exp_avg and exp_avg_sq of one "
            "sub-group)";
        const std::string count = std::to_string(o.buffer_count);
        if (needed == 1) {
          doc_.error(spelled(oo + "buffer_count"),
                     count + " is less than one buffer set" + set_text +
                         ", which NVMe optimizer offload needs; set it to at least 3");
        } else {
          const std::string pipeline =
              needed == 3       ? "offload_optimizer.pipeline_read and pipeline_write true need 3 "
                                  "(reading sub-group k+1 and writing k-1 back while k updates)"
              : o.pipeline_read ? "offload_optimizer.pipeline_read true needs 2 (reading "
                                  "sub-group k+1 while k updates)"
                                : "offload_optimizer.pipeline_write true needs 2 (writing "
                                  "sub-group k-1 back while k updates)";
          doc_.error(spelled(oo + "buffer_count"),
                     count + " makes " + std::to_string(sets) + " buffer set" +
                         (sets == 1 ? "" : "s") + set_text + ", and " + pipeline +
                         "; set offload_optimizer.buffer_count to at least " +
                         std::to_string(3 * needed));
        }
      }
      if (o.fast_init) {
        annotate(oo + "fast_init",
                 "accepted, changes nothing: zerotrain always builds the fp32 master weights "
                 "from the parameters (DeepSpeed's fast_init reads them from NVMe fp16 "
                 "parameters); results are identical");
      }
    }
    check_aio(o.device == OffloadDevice::kNvme || z.offload_param.device == OffloadDevice::kNvme);
  }

  // The aio block: values the engine cannot use are refused whether or not NVMe offload reads
  // them; without NVMe offload the keys written are accepted and marked unused.
  void check_aio(bool used) {
    const std::int64_t block = out_.aio.block_size;
    if (block % kDirectAlignment != 0) {
      doc_.error(spelled("aio.block_size"),
                 std::to_string(block) +
                     " is not a multiple of 4096: swap files are read and written with "
                     "O_DIRECT, which needs requests aligned to 4096 bytes; use a multiple "
                     "(DeepSpeed's default 1048576, or 262144)");
    }
    if (used) return;
    const std::string unused =
        "unused: no offload device is \"nvme\" (DeepSpeed reads aio only for NVMe swapping)";
    for (auto& [path, s] : doc_.settings) {
      if (!starts_with(path, "aio.") || s.source != Source::kFile) continue;
      const std::string written =
          s.spelled_path != path && s.detail.empty() ? "written as " + s.spelled_path + "; " : "";
      s.detail = s.detail.empty() ? written + unused : s.detail + "; " + unused;
    }
  }

  // DeepSpeed ignores the whole deprecated bfloat16 section when bf16 is given. Keys written in
  // both were compared when walking; a key only under bfloat16 must not change anything either.
  void check_bfloat16_alias() {
    const auto current = doc_.spelled_sections.find("bf16");
    const auto old = doc_.spelled_sections.find("bfloat16");
    if (current == doc_.spelled_sections.end() || old == doc_.spelled_sections.end()) return;
    const YAML::Node& bf16 = current->second;
    for (auto it = old->second.begin(); it != old->second.end(); ++it) {
      if (!it->first.IsScalar()) continue;
      const std::string key = it->first.Scalar();
      if (bf16[key].IsDefined()) continue;  // compared by claim()
      const Setting* s = find("bf16." + key);
      if (!s || s->spelled_path != "bfloat16." + key || !s->spec || s->value.is_null()) continue;
      const Value fallback = detail::default_value(*s->spec);
      if (detail::same_value(s->value, fallback)) continue;
      doc_.error(s->spelled_path, detail::to_text(s->value) +
                                      " is ignored by DeepSpeed, which reads only 'bf16' "
                                      "when both are given (bf16." +
                                      key + " stays " + detail::to_text(fallback) +
                                      "); write it under 'bf16' and drop 'bfloat16'");
    }
  }

  // ---- effective-value list ----
  void build_entries() {
    std::set<std::string> done;
    auto emit = [&](const std::string& path, const Setting* s, const KeySpec& spec) {
      Entry entry;
      entry.path = path;
      if (s && !s->value.is_null()) {
        entry.value_text = detail::to_text(s->value);
        entry.source = s->source;
        entry.detail = s->detail;
      } else {
        entry.value_text = detail::to_text(detail::default_value(spec));
        entry.source = s ? s->source : Source::kDefault;
        entry.detail = s ? s->detail : "";
      }
      if (s && s->source == Source::kFile && s->spelled_path != path && s->detail.empty()) {
        entry.detail = "written as " + s->spelled_path;
      }
      out_.entries.push_back(entry);
      done.insert(path);
    };
    const bool has_scheduler = out_.scheduler.type != SchedulerType::kNone;
    for (const KeySpec& spec : all_key_specs()) {
      if (is_section_kind(spec.kind) || !spec.alias_of.empty() ||
          spec.path.find('*') != std::string::npos || spec.support == Support::kNotRead) {
        continue;
      }
      const Setting* s = find(spec.path);
      if (!s && spec.support != Support::kHonoured) continue;
      if (!s) {
        if (starts_with(spec.path, "scheduler.") && !has_scheduler) continue;
        if (!key_applies(spec.path)) continue;
      }
      emit(spec.path, s, spec);
    }
    for (const auto& [path, s] : doc_.settings) {  // user-named keys (curriculum metrics ...)
      if (done.count(path) || !s.spec) continue;
      emit(path, &s, *s.spec);
    }
  }

  Document& doc_;
  const CommandLineOverrides& flags_;
  const ModelFacts& model_;
  const std::int64_t world_;
  const std::int64_t run_steps_;
  ResolvedConfig& out_;
  bool optimizer_from_trainer_ = false;
};

// DeepSpeed reads files with hjson, so JSON configs may carry // and /* */ comments, which
// YAML does not know. They are blanked out (outside strings) before parsing when the text is
// JSON, i.e. its first character after comments is '{'; '#' comments and unquoted keys are
// YAML already.
std::size_t skip_comments_and_space(const std::string& text, std::size_t i) {
  while (i < text.size()) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) {
      ++i;
    } else if (text.compare(i, 2, "//") == 0) {
      i = text.find('\n', i);
      if (i == std::string::npos) return text.size();
    } else if (text.compare(i, 2, "/*") == 0) {
      const std::size_t end = text.find("*/", i + 2);
      if (end == std::string::npos) return text.size();
      i = end + 2;
    } else {
      break;
    }
  }
  return i;
}

std::string strip_json_comments(const std::string& text) {
  const std::size_t first = skip_comments_and_space(text, 0);
  if (first >= text.size() || text[first] != '{') return text;
  std::string out = text;
  bool in_string = false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '/' && i + 1 < out.size() && out[i + 1] == '/') {
      while (i < out.size() && out[i] != '\n') out[i++] = ' ';
    } else if (c == '/' && i + 1 < out.size() && out[i + 1] == '*') {
      const std::size_t end = out.find("*/", i + 2);
      const std::size_t stop = end == std::string::npos ? out.size() : end + 2;
      for (; i < stop; ++i) {
        if (out[i] != '\n') out[i] = ' ';  // keep line numbers for messages
      }
      --i;
    }
  }
  return out;
}

std::string join_problems(const std::vector<std::string>& problems) {
  std::string text;
  for (const std::string& problem : problems) text += (text.empty() ? "" : "\n") + problem;
  return text;
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> problem_list)
    : std::runtime_error(join_problems(problem_list)), problems(std::move(problem_list)) {}

LossScalerValues loss_scaler_values(const Fp16Config& fp16) {
  LossScalerValues v;  // DynamicLossScaler's class defaults; static 1.0 unless fp16 dynamic
  if (!fp16.enabled) return v;
  if (fp16.loss_scale > 0.0) {
    v.static_scale = fp16.loss_scale;
    return v;
  }
  v.dynamic = true;
  if (fp16.dynamic_scaler_args_given) {
    v.init_scale = std::ldexp(1.0, fp16.initial_scale_power);
    v.window = fp16.loss_scale_window;
    v.min_scale = fp16.min_loss_scale;
    v.delayed_shift = fp16.hysteresis;
    v.consecutive_hysteresis = fp16.consecutive_hysteresis;
  }
  return v;
}

const char* source_name(Source source) {
  switch (source) {
    case Source::kFile:
      return "file";
    case Source::kFlag:
      return "flag";
    case Source::kAutoFromFlag:
      return "auto\u2192flag";
    case Source::kAutoTrainerDefault:
      return "auto\u2192Trainer default";
    case Source::kAutoModel:
      return "auto\u2192model";
    case Source::kAutoDefault:
      return "auto\u2192default";
    case Source::kDerived:
      return "derived";
    case Source::kDefault:
      return "default";
  }
  return "";
}

ResolvedConfig parse_config_text(const std::string& text, const std::string& source_name_text,
                                 const CommandLineOverrides& flags, const ModelFacts& model,
                                 int world_size, std::int64_t run_steps) {
  if (world_size < 1) {
    throw ConfigError(
        {source_name_text + ": world size must be >= 1, got " + std::to_string(world_size)});
  }
  YAML::Node root;
  try {
    // Load reads the first document only: a second one would be dropped without a word.
    const std::string stripped = strip_json_comments(text);
    root = YAML::Load(stripped);
    if (const int line = yaml::second_document_line(stripped))
      throw ConfigError({source_name_text +
                         ": holds 2 YAML documents or more (the second starts "
                         "at line " +
                         std::to_string(line) +
                         ", after '---' or stray text); a DeepSpeed config is one"});
  } catch (const YAML::Exception& e) {
    throw ConfigError({source_name_text + ":" + std::to_string(e.mark.line + 1) + ":" +
                       std::to_string(e.mark.column + 1) +
                       ": not valid JSON/YAML: " + files::escaped(e.msg)});
  }
  Document document;
  document.source_name = source_name_text;
  Walker(&document).walk_root(root);
  ResolvedConfig config;
  Resolver(&document, flags, model, world_size, run_steps, &config).run();
  if (!document.problems.empty()) throw ConfigError(document.problems);
  return config;
}

std::string config_display_name(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return files::escaped(slash == std::string::npos ? path : path.substr(slash + 1));
}

ResolvedConfig load_config(const std::string& path, const CommandLineOverrides& flags,
                           const ModelFacts& model, int world_size, std::int64_t run_steps) {
  const std::string text = files::read_input_file(path, "DeepSpeed config");
  return parse_config_text(text, config_display_name(path), flags, model, world_size, run_steps);
}

}  // namespace zt::config
