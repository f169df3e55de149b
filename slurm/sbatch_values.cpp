#include "slurm/sbatch_values.hpp"

#include <cctype>
#include <regex>

#include "core/base/error.hpp"

namespace foldfarm::slurm {
namespace {

std::string show(std::string_view v) {
  std::string s;
  for (char c : v) {
    if (c == '\n')
      s += "\\n";
    else if (c == '\r')
      s += "\\r";
    else if (c == '\0')
      s += "\\0";
    else
      s += c;
  }
  return "'" + s + "'";
}

// Slurm's burst-buffer plugins take an #SBATCH line that merely contains "hetjob" or
// "packjob" for the separator of a heterogeneous job, so such a value, quoted or not,
// would split the job in two. Case is ignored to be safe across versions.
void rejectJobSplitWords(std::string_view what, std::string_view value) {
  std::string lower(value);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"hetjob", "packjob"}) {
    if (lower.find(word) != std::string::npos) {
      throw InputError(std::string(what) + ": " + show(value) + " contains '" + word +
                       "', which Slurm reads in an #SBATCH line as the start of a second "
                       "(heterogeneous) job; rename it");
    }
  }
}

}  // namespace

std::string validateSlurmName(std::string_view option, std::string_view value, bool allowList) {
  static const std::regex one("[A-Za-z0-9_.-]+");
  static const std::regex list("[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*");
  std::string v(value);
  if (!std::regex_match(v, allowList ? list : one)) {
    throw InputError("--" + std::string(option) + ": " + show(value) +
                     " is not a valid Slurm name (letters, digits, '_', '-', '.'" +
                     (allowList ? ", comma-separated" : "") + ")");
  }
  rejectJobSplitWords("--" + std::string(option), v);
  return v;
}

std::string validateTimeLimit(std::string_view value) {
  // At most 8 digits before the first separator (190 years of minutes): a longer number is a
  // typo, and would overflow the seconds that --signal-grace is checked against.
  static const std::regex re(
      "(UNLIMITED|INFINITE|[0-9]{1,8}-[0-9]{1,2}(:[0-9]{1,2}(:[0-9]{1,2})?)?|"
      "[0-9]{1,8}(:[0-9]{1,2}(:[0-9]{1,2})?)?)");
  std::string v(value);
  if (!std::regex_match(v, re) || v == "0") {
    throw InputError(
        "--time: " + show(value) +
        " is not a Slurm time limit (use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or "
        "UNLIMITED)");
  }
  return v;
}

long long timeLimitSeconds(std::string_view value) {
  std::string v = validateTimeLimit(value);
  if (v == "UNLIMITED" || v == "INFINITE") return -1;
  long long days = 0;
  auto dash = v.find('-');
  std::string rest = v;
  if (dash != std::string::npos) {
    days = std::stoll(v.substr(0, dash));
    rest = v.substr(dash + 1);
  }
  std::vector<long long> parts;
  size_t start = 0;
  while (true) {
    auto colon = rest.find(':', start);
    parts.push_back(std::stoll(rest.substr(start, colon - start)));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  long long s = 0;
  if (dash != std::string::npos) {
    // D-H, D-H:M, D-H:M:S
    s = parts[0] * 3600 + (parts.size() > 1 ? parts[1] * 60 : 0) +
        (parts.size() > 2 ? parts[2] : 0);
  } else if (parts.size() == 1) {
    s = parts[0] * 60;  // minutes
  } else if (parts.size() == 2) {
    s = parts[0] * 60 + parts[1];  // M:S
  } else {
    s = parts[0] * 3600 + parts[1] * 60 + parts[2];
  }
  return days * 86400 + s;
}

std::string validateConstraint(std::string_view value) {
  static const std::regex re("[A-Za-z0-9_.&|,\\[\\]*()!:-]+");
  std::string v(value);
  if (!std::regex_match(v, re)) {
    throw InputError(
        "--constraint: " + show(value) +
        " is not a Slurm feature expression (letters, digits, _ - . & | , [ ] * ( ) ! :)");
  }
  rejectJobSplitWords("--constraint", v);
  return v;
}

std::string validateMemory(std::string_view value) {
  static const std::regex re("[0-9]+[KMGT]?");
  std::string v(value);
  if (!std::regex_match(v, re)) {
    throw InputError("--mem: " + show(value) + " is not a Slurm memory size (e.g. 8G, 4000M)");
  }
  return v;
}

std::string sbatchQuote(std::string_view what, std::string_view value) {
  rejectJobSplitWords(what, value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '\0' || c == '\n' || c == '\r') {
      throw InputError(std::string(what) + ": " + show(value) +
                       " contains a line break or NUL byte; it cannot go into a batch script");
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

std::string validateOutputPattern(std::string_view option, std::string_view value) {
  if (value.empty()) throw InputError("--" + std::string(option) + ": empty path");
  if (value.find('\\') != std::string_view::npos) {
    // slurmstepd drops every backslash of such a pattern and then expands nothing, so
    // %A_%a would be taken literally and all elements would write one file.
    throw InputError("--" + std::string(option) + ": " + show(value) +
                     " contains a backslash, which makes Slurm ignore every % symbol of the "
                     "pattern; use a directory without backslashes");
  }
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '%') continue;
    size_t j = i + 1;
    while (j < value.size() && std::isdigit(static_cast<unsigned char>(value[j]))) ++j;
    static const std::string kSymbols = "%AajJNnstux";
    if (j >= value.size() || kSymbols.find(value[j]) == std::string::npos) {
      throw InputError("--" + std::string(option) + ": " + show(value) +
                       " has a '%' that is not a Slurm file pattern (%A %a %j %x %%, ...)");
    }
    i = j;
  }
  return sbatchQuote("--" + std::string(option), value);
}

std::string outputPatternLiteral(std::string_view literal) {
  std::string out;
  out.reserve(literal.size());
  for (char c : literal) {
    if (c == '%') out += '%';
    out += c;
  }
  return out;
}

}  // namespace foldfarm::slurm
