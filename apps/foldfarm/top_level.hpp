#pragma once
// The top level that both foldfarm executables share (no LibTorch): the root command with
// --log-level and --version, the `bench` and `study` groups, and how a command ends the
// process: its error as one line on stderr and Error::exitCode() as the exit status.
//
//   foldfarm        (front.cpp) runs the commands a login node polls, loading no LibTorch,
//                   and hands every other command to
//   foldfarm-torch  (main.cpp), which has them all.
#include <CLI/CLI.hpp>

#include <exception>
#include <functional>
#include <string>

#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

// What an executable knows of its errors: LibTorch's need more than what() (their first
// line only) and have allocation failures of their own.
struct ErrorText {
  std::function<std::string(const std::exception&)> message;
  std::function<bool(const std::exception&)> out_of_memory;
};

// The hand-over names the front end's build (core/build_info/build_info.hpp) in the
// environment of the foldfarm-torch it starts: markHandOverBuild() before the exec, and
// foldfarm-torch's warnOfAnotherFrontEndBuild() at its start, which takes the variable out of
// the environment (the workers it starts do not see it) and, when the two are not one build
// (one rebuilt or copied without the other: `cmake --build --target foldfarm-torch`), says so
// in one line on stderr: the outputs name foldfarm-torch's build. Nothing is refused.
inline constexpr const char* kFrontEndBuildVariable = "FOLDFARM_FRONT_END_BUILD";
void markHandOverBuild();
void warnOfAnotherFrontEndBuild();

class TopLevel {
 public:
  TopLevel();
  TopLevel(const TopLevel&) = delete;
  TopLevel& operator=(const TopLevel&) = delete;

  CommandGroups groups() { return CommandGroups{app_, *bench_, *study_}; }
  CLI::App& root() { return app_; }

  // Parses argv and runs the command it names; returns the process's exit status. Call once,
  // after every command is registered. Under mpirun/srun every rank parses the same command
  // line: rank 0 alone reports a bad one.
  // The standard output is flushed at the end: a write to it that failed (a full disk) is
  // an error (exit 1) naming it.
  int run(int argc, char** argv, const ErrorText& text);

 private:
  int runCommandLine(int argc, char** argv, const ErrorText& text);
  CLI::App app_;
  CLI::App* bench_ = nullptr;
  CLI::App* study_ = nullptr;
  std::string log_level_ = "info";
};

}  // namespace foldfarm::app
