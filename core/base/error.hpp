#pragma once
// Errors inside one process are exceptions. Every user-facing failure is one line:
// what went wrong, which file or task, what to do. `Error::exitCode()` says which process
// exit code (core/base/exit_codes.hpp) a command should end with.
#include <stdexcept>
#include <string>

#include "core/base/exit_codes.hpp"

namespace foldfarm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitFailure)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exitCode() const noexcept { return exit_code_; }

 private:
  int exit_code_;
};

// The user's input is at fault (file, config, arguments): exit code 2.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(what, kExitBadInput) {}

 protected:
  InputError(const std::string& what, int exit_code) : Error(what, exit_code) {}
};

// An input made by another task (the models of the chain a chain warm-starts from) is missing
// or damaged: exit code 66. Bad input to this task, which rerunning that one mends.
class NeedLostError : public InputError {
 public:
  explicit NeedLostError(const std::string& what) : InputError(what, kExitNeedLost) {}
};

// Stopped on request after saving state: exit code 75.
class InterruptedError : public Error {
 public:
  explicit InterruptedError(const std::string& what) : Error(what, kExitInterrupted) {}
};

// A collective timed out or a peer was lost: exit code 3.
class PeerLostError : public Error {
 public:
  explicit PeerLostError(const std::string& what) : Error(what, kExitPeerLost) {}
};

// Ends a rank of a data-parallel run without a line of its own: another rank prints the
// error (rank 0, for one that every rank finds alike such as a bad option or config), so
// that N ranks print it once. main() ends the process with exitCode() and prints nothing.
class ReportedByAnotherRank : public Error {
 public:
  explicit ReportedByAnotherRank(int exit_code) : Error("reported by another rank", exit_code) {}
};

// For a check that runs before the ranks can talk (before MPI is initialised) and that a
// group of ranks finds alike by construction: its Error propagates on the group's first rank
// (`rank` 0) and becomes ReportedByAnotherRank, with the same exit code, on the others. With
// the global rank, for what every rank finds alike (the content of a config every rank has
// read). With the node-local rank, for what every rank of a node finds alike (reading a file:
// one node may lack it, which that node's first rank then says). Once MPI is up,
// core/train/parallel.hpp's checkOnEveryRank agrees over the ranks instead.
template <class F>
void checkAlikeOnEveryRank(int rank, F&& check) {
  try {
    check();
  } catch (const Error& e) {
    if (rank == 0) throw;
    throw ReportedByAnotherRank(e.exitCode());
  }
}

// "host:rank" prefix for messages from distributed code; rank -1 means not distributed.
std::string hostName();
std::string errnoMessage(int err);

// Throws Error("<call> failed at <file>:<line>: <strerror(errno)> (<context>)").
[[noreturn]] void throwSystemError(const char* call, const char* file, int line,
                                   const std::string& context);

}  // namespace foldfarm

// Check a POSIX call that returns -1 on failure and sets errno.
#define FF_CHECK_SYS(expr, context)                                                       \
  do {                                                                                    \
    if ((expr) == -1) ::foldfarm::throwSystemError(#expr, __FILE__, __LINE__, (context)); \
  } while (0)

// Throw InputError when a user-input condition fails.
#define FF_REQUIRE_INPUT(cond, msg)                 \
  do {                                              \
    if (!(cond)) throw ::foldfarm::InputError(msg); \
  } while (0)
