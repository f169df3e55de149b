#pragma once
// Range checks for numeric command-line options (header-only: CLI11 stays in the app). CLI11's
// own PositiveNumber and NonNegativeNumber print the largest double as the upper bound; these
// say what is wanted:  foldfarm: error: --spread: must be a number >= 0, not -0.5
#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/text.hpp"

namespace foldfarm::cli {

namespace detail {
inline CLI::Validator numberCheck(bool strict, const std::string& wanted, const std::string& name) {
  return CLI::Validator(
      [strict, wanted](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || !std::isfinite(v) ||
            (strict ? !(v > 0) : !(v >= 0)))
          return "must be " + wanted + ", not " + in;
        return {};
      },
      name);
}
inline CLI::Validator rangeCheck(double lo, double hi, bool hi_open) {
  const std::string wanted =
      "a number from " + numberText(lo) + (hi_open ? " to below " : " to ") + numberText(hi);
  return CLI::Validator(
      [lo, hi, hi_open, wanted](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || !(v >= lo && (hi_open ? v < hi : v <= hi)))
          return "must be " + wanted + ", not " + in;
        return {};
      },
      "[" + numberText(lo) + ", " + numberText(hi) + (hi_open ? ")" : "]"));
}
// Whole numbers as the user wrote them: CLI11 2.1 converts with strtoll/strtoull in base 0,
// so a number beyond 64 bits became the largest one without a word, "-1" for an unsigned
// option became 2^64 - 1, and "010" was octal 8. Refuses the first two and rewrites
// leading zeros away (decimal). Anything else that is not plain digits is left to CLI11's
// own conversion (which refuses "abc" and reads "0x10" as hexadecimal).
inline std::string wholeNumberProblem(std::string& in, bool is_unsigned) {
  std::string_view s = in;
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return {};
  const size_t first = s.find_first_not_of('0');
  const std::string_view digits = first == std::string_view::npos ? "0" : s.substr(first);
  std::uint64_t v = 0;
  const bool fits =
      std::from_chars(digits.data(), digits.data() + digits.size(), v).ec == std::errc{};
  constexpr auto kMaxSigned = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (is_unsigned) {
    if (negative && v != 0) return "must be a whole number >= 0, not " + in;
    if (!fits) return "must be a whole number below 2^64, not " + in;
  } else if (!fits || v > kMaxSigned + (negative ? 1 : 0)) {
    return "must be a whole number within the 64-bit range, not " + in;
  }
  in = (negative && v != 0 ? "-" : "") + std::string(digits);
  return {};
}

}  // namespace detail

// Adds the whole-number check (detail::wholeNumberProblem) to every option of `app` and of
// its subcommands, at any depth, that takes integers (CLI11 type INT or UINT). Call once,
// after every option is declared.
inline void checkIntegerOptions(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_type_size_max() == 0) continue;  // a flag
    const std::string type = opt->get_type_name();
    const std::string base = type.substr(0, type.find(':'));
    if (base != "INT" && base != "UINT") continue;
    const bool is_unsigned = base == "UINT";
    // First of the option's checks, and allowed to rewrite the value (transform); an empty
    // description keeps the option's type as --help shows it.
    opt->transform(CLI::Validator(
        [is_unsigned](std::string& in) { return detail::wholeNumberProblem(in, is_unsigned); },
        ""));
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    checkIntegerOptions(*sub);
}

// > 0 and finite (NaN, inf and 1e309 refused: a time, a count or a rate of that is none).
inline const CLI::Validator kPositive = detail::numberCheck(true, "a positive number", "POSITIVE");
// > 0, infinity included ("inf": never, for a timeout whose clock arithmetic is in double).
inline const CLI::Validator kPositiveOrInfinite = CLI::Validator(
    [](std::string& in) -> std::string {
      double v = 0;
      if (!CLI::detail::lexical_cast(in, v) || !(v > 0))
        return "must be a positive number (inf: never), not " + in;
      return {};
    },
    "POSITIVE");
// >= 0 and finite.
inline const CLI::Validator kNonNegative =
    detail::numberCheck(false, "a number >= 0", "NONNEGATIVE");

// lo <= v <= hi, and lo <= v < hi (NaN refused, unlike CLI::Range).
inline CLI::Validator between(double lo, double hi) {
  return detail::rangeCheck(lo, hi, false);
}
inline CLI::Validator fromToBelow(double lo, double hi) {
  return detail::rangeCheck(lo, hi, true);
}

// The name in `names` that `typed` most likely misspells: within an edit distance
// (insertions, deletions, substitutions, swaps of neighbours) of a third of its length, at
// least 1 and at most 3, or one it begins; "" when none is that close. `watch` -> `status`
// is no suggestion; `sttaus` -> `status` and `--jsn` -> `--json` are.
inline std::string closestName(std::string_view typed, const std::vector<std::string>& names) {
  const auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i)
      for (size_t j = 1; j <= b.size(); ++j) {
        d[i][j] = std::min(
            {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[a.size()][b.size()];
  };
  const size_t limit = std::clamp<size_t>(typed.size() / 3, 1, 3);
  std::string best;
  size_t best_d = limit + 1;
  for (const std::string& n : names) {
    const size_t dd = n.rfind(typed, 0) == 0 && typed.size() >= 3 ? 1 : distance(typed, n);
    if (dd < best_d) {
      best_d = dd;
      best = n;
    }
  }
  return best;
}

}  // namespace foldfarm::cli
