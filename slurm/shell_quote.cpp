#include "slurm/shell_quote.hpp"

#include "core/base/error.hpp"
#include "core/base/text.hpp"

namespace foldfarm::slurm {

std::string shellQuote(std::string_view s) {
  if (s.find('\0') != std::string_view::npos) {
    throw InputError("a value for the batch script contains a NUL byte");
  }
  return foldfarm::shellQuote(s);
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
