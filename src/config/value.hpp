// SPDX-License-Identifier: Apache-2.0
// A config value after type checking (internal to zt_config).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "config/schema.hpp"

namespace zt::config::detail {

struct Value {
  enum class Kind { kNull, kBool, kInt, kFloat, kString, kList, kOpaque };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::int64_t integer = 0;
  double number = 0.0;       // kFloat (also set for kInt so numeric comparisons are simple)
  std::string text;          // kString value, or kOpaque's flow-style dump
  std::vector<Value> items;  // kList

  static Value null() { return {}; }
  static Value of_bool(bool b);
  static Value of_int(std::int64_t i);
  static Value of_float(double d);
  static Value of_string(std::string s);
  bool is_null() const { return kind == Kind::kNull; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
};

// JSON-ish text: strings quoted, floats in their shortest round-trip form.
std::string to_text(const Value& value);
std::string format_number(double value);
bool same_value(const Value& a, const Value& b);

// How a raw YAML node reads (for messages): "four" quoted, 5 bare, "a list", "a map".
std::string describe_node(const YAML::Node& node);
// What a spec expects, for messages: "an integer 0..3", "a bool", "one of none|cpu|nvme".
std::string describe_expected(const KeySpec& spec);

// Converts a scalar/list node by the spec's kind with DeepSpeed's lax coercions. On a type or
// range error returns false and sets *why to "expected ..., got ...". Sections are not handled.
bool convert_leaf(const KeySpec& spec, const YAML::Node& node, Value* out, std::string* why);
// Range and choice check of an already typed value (used again after "auto" resolution).
bool check_limits(const KeySpec& spec, Value* value, std::string* why);
// The spec's default as a Value (null when DeepSpeed's default is None).
Value default_value(const KeySpec& spec);

}  // namespace zt::config::detail
