// SPDX-License-Identifier: Apache-2.0
#include "config/value.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "files/files.hpp"

namespace zt::config::detail {
namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

bool parse_integer(const std::string& text, std::int64_t* out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size()) return false;
  *out = value;
  return true;
}

bool parse_double(const std::string& text, double* out) {
  if (text.empty()) return false;
  // strtod would take "nan", "inf" and hex; DeepSpeed configs never mean those.
  for (char c : text) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == 'E' ||
          c == '+' || c == '-')) {
      return false;
    }
  }
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(value)) return false;
  *out = value;
  return true;
}

bool is_quoted(const YAML::Node& node) {
  return node.Tag() == "!";
}

bool looks_like_bool(const std::string& text) {
  const std::string l = lower(text);
  return l == "true" || l == "false" || l == "yes" || l == "no" || l == "on" || l == "off";
}

bool looks_like_null(const std::string& text) {
  return text == "null" || text == "~" || text == "Null" || text == "NULL" || text.empty();
}

// pydantic's lax bool: true/false, 0/1, and the strings it knows.
bool parse_bool(const YAML::Node& node, bool* out) {
  const std::string l = lower(node.Scalar());
  if (l == "true" || l == "1" || l == "yes" || l == "on" || l == "t" || l == "y") {
    *out = true;
    return true;
  }
  if (l == "false" || l == "0" || l == "no" || l == "off" || l == "f" || l == "n") {
    *out = false;
    return true;
  }
  return false;
}

// Integers accept integral floats (5e8) and numeric strings, as pydantic's lax mode does.
bool parse_int_node(const YAML::Node& node, std::int64_t* out) {
  const std::string& text = node.Scalar();
  if (parse_integer(text, out)) return true;
  double d = 0;
  if (!parse_double(text, &d)) return false;
  if (d != std::floor(d) || std::fabs(d) > 9.2e18) return false;
  *out = static_cast<std::int64_t>(d);
  return true;
}

bool parse_float_node(const YAML::Node& node, double* out) {
  return parse_double(node.Scalar(), out);
}

bool convert_scalar_as(ValueKind kind, const YAML::Node& node, Value* out) {
  if (!node.IsScalar()) return false;
  switch (kind) {
    case ValueKind::kBool: {
      bool b = false;
      if (!parse_bool(node, &b)) return false;
      *out = Value::of_bool(b);
      return true;
    }
    case ValueKind::kInt: {
      std::int64_t i = 0;
      if (!parse_int_node(node, &i)) return false;
      *out = Value::of_int(i);
      return true;
    }
    case ValueKind::kFloat: {
      double d = 0;
      if (!parse_float_node(node, &d)) return false;
      *out = Value::of_float(d);
      return true;
    }
    case ValueKind::kString: {
      const std::string& text = node.Scalar();
      // An unquoted true/5/null is not a string (JSON would not have quoted it either).
      if (!is_quoted(node)) {
        double d = 0;
        if (looks_like_bool(text) || looks_like_null(text) || parse_double(text, &d)) return false;
      }
      *out = Value::of_string(text);
      return true;
    }
    default:
      return false;
  }
}

ValueKind element_kind(ValueKind list_kind) {
  switch (list_kind) {
    case ValueKind::kIntList:
      return ValueKind::kInt;
    case ValueKind::kFloatList:
      return ValueKind::kFloat;
    default:
      return ValueKind::kString;
  }
}

std::string dump_flow(const YAML::Node& node) {
  YAML::Emitter emitter;
  emitter << YAML::Flow << YAML::DoubleQuoted << node;
  return emitter.c_str();
}

std::string range_text(const KeySpec& spec) {
  const bool integral = spec.kind == ValueKind::kInt || spec.kind == ValueKind::kIntList;
  auto number = [&](double v) {
    return integral || v == std::floor(v) ? std::to_string(static_cast<long long>(v))
                                          : format_number(v);
  };
  if (spec.min_value && spec.max_value) {
    if (*spec.min_value == *spec.max_value) return "= " + number(*spec.min_value);
    return (integral ? "" : "in [") + number(*spec.min_value) + (integral ? ".." : ", ") +
           number(*spec.max_value) + (integral ? "" : "]");
  }
  if (spec.min_value) return ">= " + number(*spec.min_value);
  if (spec.max_value) return "<= " + number(*spec.max_value);
  return "";
}

// NaN compares false with every bound, and the file parser never yields NaN or inf, but a
// Trainer flag can (--learning_rate nan): no DeepSpeed setting means either.
bool number_in_range(const KeySpec& spec, double v) {
  if (!std::isfinite(v)) return false;
  return !(spec.min_value && v < *spec.min_value) && !(spec.max_value && v > *spec.max_value);
}

}  // namespace

Value Value::of_bool(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.boolean = b;
  return v;
}
Value Value::of_int(std::int64_t i) {
  Value v;
  v.kind = Kind::kInt;
  v.integer = i;
  v.number = static_cast<double>(i);
  return v;
}
Value Value::of_float(double d) {
  Value v;
  v.kind = Kind::kFloat;
  v.number = d;
  return v;
}
Value Value::of_string(std::string s) {
  Value v;
  v.kind = Kind::kString;
  v.text = std::move(s);
  return v;
}

std::string format_number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.1f", value);
    return buffer;
  }
  // The shortest %g form that reads back to the same double.
  char buffer[40];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

std::string to_text(const Value& value) {
  switch (value.kind) {
    case Value::Kind::kNull:
      return "None";
    case Value::Kind::kBool:
      return value.boolean ? "true" : "false";
    case Value::Kind::kInt:
      return std::to_string(value.integer);
    case Value::Kind::kFloat:
      return format_number(value.number);
    case Value::Kind::kString:
      return "\"" + value.text + "\"";
    case Value::Kind::kOpaque:
      return value.text;
    case Value::Kind::kList: {
      std::string text = "[";
      for (std::size_t i = 0; i < value.items.size(); ++i) {
        if (i) text += ", ";
        text += to_text(value.items[i]);
      }
      return text + "]";
    }
  }
  return "";
}

bool same_value(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.number == b.number;
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kNull:
      return true;
    case Value::Kind::kBool:
      return a.boolean == b.boolean;
    case Value::Kind::kString:
      return lower(a.text) == lower(b.text);
    case Value::Kind::kOpaque:
      return a.text == b.text;
    case Value::Kind::kList:
      if (a.items.size() != b.items.size()) return false;
      for (std::size_t i = 0; i < a.items.size(); ++i) {
        if (!same_value(a.items[i], b.items[i])) return false;
      }
      return true;
    default:
      return false;
  }
}

std::string describe_node(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "null";
  if (node.IsSequence()) return "a list " + files::escaped(dump_flow(node));
  if (node.IsMap()) return "a section " + files::escaped(dump_flow(node));
  if (is_quoted(node)) return "\"" + files::escaped(node.Scalar()) + "\"";
  return files::escaped(node.Scalar());
}

std::string describe_expected(const KeySpec& spec) {
  const std::string range = range_text(spec);  // "0..3", ">= 0", "in [0, 1]"
  const std::string suffix = range.empty() ? "" : " " + range;
  std::string choices;
  for (const std::string& choice : spec.choices) choices += (choices.empty() ? "" : "|") + choice;
  switch (spec.kind) {
    case ValueKind::kBool:
      return "a bool (true/false)";
    case ValueKind::kInt:
      return "an integer" + suffix;
    case ValueKind::kFloat:
      return "a number" + suffix;
    case ValueKind::kString:
      return choices.empty() ? "a string" : "one of " + choices;
    case ValueKind::kIntList:
      return "a list of integers" + suffix;
    case ValueKind::kFloatList:
      return "a list of numbers" + suffix;
    case ValueKind::kStringList:
      return choices.empty() ? "a list of strings" : "a list of " + choices;
    case ValueKind::kAnyList:
      return "a list";
    case ValueKind::kIntOrAuto:
      return "an integer or \"auto\"";
    case ValueKind::kNumberOrString:
      return "a number or a string";
    case ValueKind::kNullOnly:
      return "null (no other value is accepted)";
    case ValueKind::kSection:
    case ValueKind::kListOfSections:
      return "a section";
    case ValueKind::kSectionOrBool:
      return "a section (or the legacy true/false)";
    case ValueKind::kOpaque:
      return "any value";
  }
  return "a value";
}

bool check_limits(const KeySpec& spec, Value* value, std::string* why) {
  auto fail = [&](const std::string& got) {
    *why = "expected " + describe_expected(spec) + ", got " + got;
    return false;
  };
  if (value->is_number() && !number_in_range(spec, value->number)) return fail(to_text(*value));
  if (value->kind == Value::Kind::kList) {
    for (const Value& item : value->items) {
      if (item.is_number() && !number_in_range(spec, item.number)) return fail(to_text(*value));
    }
  }
  if (!spec.choices.empty()) {
    auto canonical_choice = [&](Value* item) {
      if (item->kind != Value::Kind::kString) return true;
      for (const std::string& choice : spec.choices) {
        const bool match =
            spec.choices_case_sensitive ? item->text == choice : lower(item->text) == lower(choice);
        if (match) {
          item->text = choice;  // "FAIL" -> "Fail", "FP32" -> "fp32"
          return true;
        }
      }
      return false;
    };
    if (value->kind == Value::Kind::kList) {
      for (Value& item : value->items) {
        if (!canonical_choice(&item)) return fail(to_text(*value));
      }
    } else if (!canonical_choice(value)) {
      return fail(to_text(*value));
    }
  }
  return true;
}

bool convert_leaf(const KeySpec& spec, const YAML::Node& node, Value* out, std::string* why) {
  auto fail = [&]() {
    *why = "expected " + describe_expected(spec) + ", got " + describe_node(node);
    return false;
  };
  if (!node.IsDefined() || node.IsNull()) {
    // null = None; fine where DeepSpeed's default is None, a type error elsewhere.
    if (spec.kind == ValueKind::kNullOnly || spec.kind == ValueKind::kOpaque ||
        spec.default_text.empty()) {
      *out = Value::null();
      return true;
    }
    return fail();
  }
  switch (spec.kind) {
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kString:
      if (!convert_scalar_as(spec.kind, node, out)) return fail();
      break;
    case ValueKind::kIntList:
    case ValueKind::kFloatList:
    case ValueKind::kStringList: {
      Value list;
      list.kind = Value::Kind::kList;
      if (spec.kind == ValueKind::kStringList && node.IsScalar()) {
        // leaf_module.classes and friends: one string becomes a one-element list.
        Value item;
        if (!convert_scalar_as(ValueKind::kString, node, &item)) return fail();
        list.items.push_back(item);
      } else {
        if (!node.IsSequence()) return fail();
        for (const YAML::Node& element : node) {
          Value item;
          if (!convert_scalar_as(element_kind(spec.kind), element, &item)) return fail();
          list.items.push_back(item);
        }
      }
      if (spec.path == "optimizer.params.betas" && list.items.size() != 2) {
        *why = "expected a list of two numbers [beta1, beta2], got " + describe_node(node);
        return false;
      }
      *out = list;
      break;
    }
    case ValueKind::kAnyList:
      if (!node.IsSequence()) return fail();
      out->kind = Value::Kind::kOpaque;
      out->text = dump_flow(node);
      break;
    case ValueKind::kIntOrAuto:
      if (node.IsScalar() && node.Scalar() == "auto") {
        *out = Value::of_string("auto");
      } else if (!convert_scalar_as(ValueKind::kInt, node, out)) {
        return fail();
      }
      break;
    case ValueKind::kNumberOrString:
      if (!node.IsScalar()) return fail();
      if (!convert_scalar_as(ValueKind::kFloat, node, out)) *out = Value::of_string(node.Scalar());
      break;
    case ValueKind::kNullOnly:
      return fail();  // null was handled above
    case ValueKind::kOpaque:
      out->kind = Value::Kind::kOpaque;
      out->text = node.IsScalar() ? node.Scalar() : dump_flow(node);
      break;
    default:
      return fail();
  }
  return check_limits(spec, out, why);
}

Value default_value(const KeySpec& spec) {
  if (spec.default_text.empty()) return Value::null();
  Value value;
  std::string why;
  YAML::Node node;
  try {
    node = YAML::Load(spec.default_text);
  } catch (const YAML::Exception&) {
    return Value::of_string(spec.default_text);
  }
  if (spec.kind == ValueKind::kString) {
    // A default like "none" or "" is a string even unquoted.
    return Value::of_string(spec.default_text);
  }
  if (!convert_leaf(spec, node, &value, &why)) return Value::of_string(spec.default_text);
  return value;
}

}  // namespace zt::config::detail
