#pragma once
// Small text helpers shared by messages and parsers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace foldfarm {

// `s` without leading and trailing blanks (space, tab, CR, LF).
inline std::string trim(std::string_view s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string_view::npos) return "";
  return std::string(s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1));
}

// Non-empty and only the digits 0-9 (a pid, a job id).
inline bool allDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A number as a user would write it, for messages: whole numbers in full (1000000, not
// 1e+06), others with up to 12 significant digits (0.00390625), "NaN", "Inf", "-Inf".
inline std::string numberText(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  std::ostringstream out;
  out << std::setprecision(12) << v;
  return out.str();
}

// `s` in POSIX single quotes, read back by any shell byte for byte: 'it'\''s'.
inline std::string shellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// `s` as one word of a command a message suggests, to be copied into a shell: as it is when
// every character is one no shell treats specially (letters, digits and _@%+=:,./-), else
// shellQuote(s). "/scratch/run 1" -> "'/scratch/run 1'", "/scratch/run1" -> "/scratch/run1".
inline std::string shellWord(std::string_view s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
  });
  return plain ? std::string(s) : shellQuote(s);
}

// The first `shown` of `items` joined by ", ", then " and N more" for the rest: a list a
// message names without flooding the terminal ("r0000m0, r0001m0 and 4998 more").
inline std::string listWithMore(const std::vector<std::string>& items, size_t shown) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < shown; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > shown)
    out += (out.empty() ? "" : " and ") + std::to_string(items.size() - shown) + " more";
  return out;
}

}  // namespace foldfarm
