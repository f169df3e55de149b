#include "slurm/shell_quote.hpp"

#include "core/base/error.hpp"

namespace foldfarm::slurm {

std::string shellQuote(std::string_view s) {
  if (s.find('\0') != std::string_view::npos) {
    throw InputError("a value for the batch script contains a NUL byte");
  }
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  out += "'";
  return out;
}

std::string shellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (i) out += ' ';
    out += shellQuote(argv[i]);
  }
  return out;
}

}  // namespace foldfarm::slurm
