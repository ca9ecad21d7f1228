// A small JSON reader, enough for manifest.json (objects, arrays, strings with escapes, numbers,
// true/false/null). Throws std::runtime_error with the byte offset on malformed input.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace samfast::json {

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_object() const { return type == Type::Object; }
  bool is_string() const { return type == Type::String; }
  bool is_number() const { return type == Type::Number; }
  bool is_array() const { return type == Type::Array; }
  // The member `key` of an object, or nullptr when absent (or this is not an object).
  const Value* find(const std::string& key) const;
};

Value parse(const std::string& text);

}  // namespace samfast::json
