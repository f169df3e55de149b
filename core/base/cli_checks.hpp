#pragma once
// Range checks for numeric command-line options (header-only: CLI11 stays in the app). CLI11's
// own PositiveNumber and NonNegativeNumber print the largest double as the upper bound; these
// say what is wanted:  foldfarm: error: --spread: must be a number >= 0, not -0.5
#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

namespace foldfarm::cli {

namespace detail {
inline CLI::Validator numberCheck(bool strict, const std::string& wanted, const std::string& name) {
  return CLI::Validator(
      [strict, wanted](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || std::isnan(v) || (strict ? !(v > 0) : !(v >= 0)))
          return "must be " + wanted + ", not " + in;
        return {};
      },
      name);
}
inline CLI::Validator rangeCheck(double lo, double hi, bool hi_open) {
  const std::string wanted = "a number from " + CLI::detail::to_string(lo) +
                             (hi_open ? " to below " : " to ") + CLI::detail::to_string(hi);
  return CLI::Validator(
      [lo, hi, hi_open, wanted](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || !(v >= lo && (hi_open ? v < hi : v <= hi)))
          return "must be " + wanted + ", not " + in;
        return {};
      },
      "[" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + (hi_open ? ")" : "]"));
}
}  // namespace detail

// > 0 (NaN refused).
inline const CLI::Validator kPositive = detail::numberCheck(true, "a positive number", "POSITIVE");
// >= 0 (NaN refused).
inline const CLI::Validator kNonNegative =
    detail::numberCheck(false, "a number >= 0", "NONNEGATIVE");

// lo <= v <= hi, and lo <= v < hi (NaN refused, unlike CLI::Range).
inline CLI::Validator between(double lo, double hi) {
  return detail::rangeCheck(lo, hi, false);
}
inline CLI::Validator fromToBelow(double lo, double hi) {
  return detail::rangeCheck(lo, hi, true);
}

}  // namespace foldfarm::cli
