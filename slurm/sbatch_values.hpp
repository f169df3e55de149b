#pragma once
// Validation of every value that goes into an #SBATCH line. Slurm reads #SBATCH lines
// itself (the shell treats them as comments), so names and paths are written there in
// sbatch's own double-quoted form; identifiers Slurm interprets (partition, account, qos,
// time, constraint, memory) must match a strict pattern or are rejected with InputError
// naming the option. Nothing here ever runs a shell.
#include <string>
#include <string_view>

namespace foldfarm::slurm {

// Partition list "a,b", account, qos: letters, digits, '_', '-', '.' (and neither
// "hetjob" nor "packjob", see sbatchQuote); throws InputError
// "--<option>: '<value>' is not a valid Slurm <what> name (...)".
std::string validateSlurmName(std::string_view option, std::string_view value, bool allowList);
// Slurm time limits: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED/INFINITE.
std::string validateTimeLimit(std::string_view value);
// Seconds in a validated time limit; -1 for UNLIMITED/INFINITE.
long long timeLimitSeconds(std::string_view value);
// Node feature expressions: letters, digits, _ - . and & | , [ ] * ( ) ! :
std::string validateConstraint(std::string_view value);
// Memory: digits with an optional K/M/G/T suffix.
std::string validateMemory(std::string_view value);

// sbatch's own quoting inside an #SBATCH line: "..." with \ and " escaped. Rejects NUL,
// newline and carriage return (an #SBATCH value is one line) and the words "hetjob" and
// "packjob" (any case: an #SBATCH line containing one is read as the start of a second,
// heterogeneous job, quoted or not) with InputError naming `what`. The result is read
// back by sbatch byte for byte.
std::string sbatchQuote(std::string_view what, std::string_view value);

// Output/error file patterns: any path (quoted), but a '%' must start one of Slurm's
// replacement symbols (%%, %A, %a, %j, %J, %N, %n, %s, %t, %u, %x, optionally with a
// width like %4a), and a backslash is refused (Slurm would then drop the backslashes and
// expand no symbol at all). Throws InputError otherwise.
std::string validateOutputPattern(std::string_view option, std::string_view value);

// A literal path (a campaign directory) for use inside an output/error pattern: each '%'
// doubled, so that a directory named "run_%j" is not expanded to "run_1234":
//   outputPatternLiteral(dir) + "/slurm-%A_%a.out"
// --chdir is not a pattern (sbatch(1), Slurm 22.05): it takes the directory as it is.
std::string outputPatternLiteral(std::string_view literal);

}  // namespace foldfarm::slurm
