// SPDX-License-Identifier: Apache-2.0
// The schema of a DeepSpeed config as data: one KeySpec per key DeepSpeed 0.19 reads
// (reference/deepspeed-keys.md), with its type, default, range, aliases and what zerotrain
// does with it. The parser walks a config against this table; nothing key-specific is
// hard-coded in the walker.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace zt::config {

// The JSON shape a key accepts.
enum class ValueKind {
  kSection,         // a map whose keys are in the schema (null = absent when nullable)
  kSectionOrBool,   // zero_optimization: a map, or the legacy true/false form
  kListOfSections,  // a list of maps whose keys are in the schema (layer_specs[])
  kBool,            // true/false; also 0/1 and "true"/"false"/"yes"/"no" (pydantic lax mode)
  kInt,             // integer; also integral floats (5e8) and numeric strings
  kFloat,           // number; also numeric strings; bools rejected
  kString,          // string; `choices` restricts it
  kIntList,         // list of integers
  kFloatList,       // list of numbers (betas)
  kStringList,      // list of strings, or one string (becomes a one-element list)
  kAnyList,         // list of anything (free-form)
  kOpaque,          // anything: the inside is free-form (P mode); stored as text
  kIntOrAuto,       // an integer or the string "auto" (zenflow intervals, pipeline.stages)
  kNumberOrString,  // a number or a string (expert_parallel.top_k "auto")
  kNullOnly,        // only null is valid (expert_parallel.load_balance_coeff)
};

// What zerotrain does with a key.
enum class Support {
  kHonoured,     // stored in ResolvedConfig and acted on (maybe only some values: supported_values)
  kDefaultOnly,  // accepted only at its default (disabled); another value is "not supported yet"
  kInert,        // accepted whatever its (valid) value: it only matters when a gate key of its
                 // section is on, and that gate key is kDefaultOnly, so it cannot take effect
  kPresenceUnsupported,  // a section whose mere presence turns a feature on in DeepSpeed; refused
                         // unless it is null or has `enabled: false`
  kNotRead,  // a name that looks valid but DeepSpeed does not read (or rejects); refused, hint
};

struct KeySpec {
  std::string path;  // dotted; "*" is a user-chosen name (curriculum metric, group)
  ValueKind kind = ValueKind::kSection;
  std::string default_text;  // DeepSpeed's code default as text; "" = None (absent)
  std::optional<double> min_value, max_value;  // inclusive range for numbers
  std::vector<std::string> choices;            // allowed strings (or ints for `stage`)
  bool choices_case_sensitive = false;
  std::string alias_of;           // canonical path when this is the other spelling of one setting
  bool deprecated_alias = false;  // DeepSpeed refuses both spellings together, even if equal
  Support support = Support::kInert;
  std::vector<std::string> supported_values;  // kHonoured: the values zerotrain implements now
  std::string hint;             // kNotRead: what to use instead; otherwise an explanation
  std::string why_unsupported;  // kDefaultOnly/supported_values: why other values are refused
  std::vector<std::string> applies_to;  // optimizer/scheduler params: lower-case type names
  bool strict_section = false;  // section is a pydantic model: "auto" in a direct child = default
  bool nullable = false;        // section may be null (= all defaults)
  bool required_when_present = false;  // e.g. amp.enabled (DeepSpeed pops it: KeyError)
  bool hf_auto = false;                // "auto" is resolved like the Hugging Face Trainer does
};

// The whole table, in reference order.
const std::vector<KeySpec>& all_key_specs();

// The spec for a dotted path; "*" segments in the schema match any name, and "name[]" in the
// query is read as "name" (list of sections). Aliases resolve to their own spec (not the
// canonical one). nullptr if the schema does not know the path.
const KeySpec* find_key_spec(const std::string& dotted_path);

// Names of the children the schema allows under a section path ("" = top level).
std::vector<std::string> child_names(const std::string& section_path);

// Levenshtein distance, and the closest of `candidates` to `name` when it is close enough to be
// a plausible typo (distance <= max(2, len/3)); "" when none is.
std::size_t edit_distance(const std::string& a, const std::string& b);
std::string closest_name(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace zt::config
