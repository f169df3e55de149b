#pragma once
// jsonValue<T>(v, what): a JSON value as T, checked, for configs and specs a person writes.
// nlohmann's get<int>() truncates 2.5 to 2 and wraps 4294967297 to 1 without a word; here an
// integer must be a JSON integer within T's range, a floating-point value a finite number, a
// bool a boolean, a string a string, and std::vector<T> an array of such. Anything else is an
// InputError that starts with `what` (say "cfg.json: 'epochs'"):
//
//   cfg.json: 'epochs' must be an integer, got 2.5
//   cfg.json: 'dim' = 4294967360 is beyond the 32-bit integer range (-2147483648 to 2147483647)
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"

namespace foldfarm {
namespace json_value_detail {

template <class T>
struct IsVector : std::false_type {};
template <class T, class A>
struct IsVector<std::vector<T, A>> : std::true_type {};

inline std::string shown(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

}  // namespace json_value_detail

template <class T>
T jsonValue(const nlohmann::json& v, const std::string& what) {
  using json_value_detail::shown;
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) throw InputError(what + " must be true or false, got " + shown(v));
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer())  // unsigned JSON integers count as integers too
      throw InputError(what + " must be an integer, got " + shown(v));
    const bool fits =
        v.is_number_unsigned()
            ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
            : v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                  (std::is_unsigned_v<T> ||
                   v.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<T>::max()));
    if (!fits)
      throw InputError(what + " = " + shown(v) + " is beyond the " +
                       (std::is_unsigned_v<T> ? "unsigned " : "") + std::to_string(8 * sizeof(T)) +
                       "-bit integer range (" + std::to_string(std::numeric_limits<T>::min()) +
                       " to " + std::to_string(std::numeric_limits<T>::max()) + ")");
    return v.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) throw InputError(what + " must be a number, got " + shown(v));
    const double d = v.get<double>();
    // Checked on the double: a conversion to float of a value beyond its range is undefined.
    if (!std::isfinite(d) || std::fabs(d) > static_cast<double>(std::numeric_limits<T>::max()))
      throw InputError(what + " = " + shown(v) + " is not a finite number");
    return static_cast<T>(d);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) throw InputError(what + " must be a string, got " + shown(v));
    return v.get<std::string>();
  } else if constexpr (json_value_detail::IsVector<T>::value) {
    if (!v.is_array()) throw InputError(what + " must be an array, got " + shown(v));
    T out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      out.push_back(jsonValue<typename T::value_type>(v[i], what + "[" + std::to_string(i) + "]"));
    return out;
  } else {
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw InputError(what + " has the wrong type: " + shown(v));
    }
  }
}

}  // namespace foldfarm
