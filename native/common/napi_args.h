// Argument conversion for the bindings: JS values -> plain C++ values, or an ArgError that the
// entry point turns into a TypeError naming where the bad value sits ("ops[3].rules[12].dst must
// be a string"). The path is built only when an error is thrown: a full sync converts tens of
// thousands of rules, and composing a path string for each field of each one cost more than the
// conversion itself.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace edgemesh {
namespace args {

struct ArgError {
  std::string message;
};

// Longer strings are refused before they are copied; the real limits are checked in the cores.
constexpr size_t kMaxString = 4096;
// Longest PEM text (a certificate chain, a CA bundle) a binding takes.
constexpr size_t kMaxPem = 1u << 20;

// Where a value sits in the arguments: a root name, a field of a parent, or an element of one.
struct Where {
  const char* name = nullptr;
  const Where* parent = nullptr;
  int64_t index = -1;
  std::string str() const {
    std::string base = parent ? parent->str() : std::string();
    if (index >= 0) return base + "[" + std::to_string(index) + "]";
    if (!name) return base;
    return parent ? base + "." + name : std::string(name);
  }
  Where field(const char* f) const { return Where{f, this, -1}; }
  Where at(int64_t i) const { return Where{nullptr, this, i}; }
};

inline std::string Str(Napi::Value v, const Where& w, size_t max = kMaxString) {
  if (!v.IsString()) throw ArgError{w.str() + " must be a string"};
  napi_env env = v.Env();
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) throw ArgError{w.str() + " must be a string"};
  if (len > max) throw ArgError{w.str() + " is too long"};
  std::string out(len, '\0');
  if (len > 0 && napi_get_value_string_utf8(env, v, &out[0], len + 1, &len) != napi_ok) throw ArgError{w.str() + " must be a string"};
  return out;
}

// An optional string field: absent (undefined, or null when `nullIsAbsent`) -> false.
inline bool OptStr(Napi::Object o, const char* key, const Where& w, std::string& out, bool nullIsAbsent = false) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || (nullIsAbsent && v.IsNull())) return false;
  out = Str(v, w.field(key));
  return true;
}

inline int64_t Int(Napi::Value v, const Where& w, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) throw ArgError{w.str() + " must be a number"};
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    throw ArgError{w.str() + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]"};
  return static_cast<int64_t>(d);
}

inline Napi::Object Obj(Napi::Value v, const Where& w) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) throw ArgError{w.str() + " must be an object"};
  return v.As<Napi::Object>();
}

inline Napi::Array Arr(Napi::Value v, const Where& w, uint32_t max) {
  if (!v.IsArray()) throw ArgError{w.str() + " must be an array"};
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > max) throw ArgError{w.str() + " is too long"};
  return a;
}

}  // namespace args
}  // namespace edgemesh
