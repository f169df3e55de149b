#pragma once
// Every value placed in a rendered batch script goes through one of these: a value is
// either validated against a strict pattern (partition, account, time, ...) or quoted so
// that the shell reads it back byte for byte (paths, job names, arguments).
#include <string>
#include <string_view>
#include <vector>

namespace foldfarm::slurm {

// POSIX single-quote quoting: 'it'\''s' — safe for any byte string without NUL.
// Throws InputError for strings containing NUL or newline where a #SBATCH line is meant.
std::string shellQuote(std::string_view s);
std::string shellJoin(const std::vector<std::string>& argv);

}  // namespace foldfarm::slurm
