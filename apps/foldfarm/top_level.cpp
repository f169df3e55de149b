#include "apps/foldfarm/top_level.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <thread>

#include "core/base/cli_checks.hpp"
#include "core/base/error.hpp"
#include "core/base/full_disk.hpp"
#include "core/base/log.hpp"
#include "core/base/utf8.hpp"
#include "core/build_info/build_info.hpp"
#include "dist/launch.hpp"

namespace foldfarm::app {
namespace {

// An error that rank 0 says for every rank, on another rank: mpirun ends the whole job as soon
// as one rank exits with an error, so this one waits 5 s for rank 0, which found the same at
// about the same moment, to say it and exit (mpirun then ends this one sooner). Before: 1 s,
// and not at all after a command-line error; on a loaded node rank 0, still loading LibTorch,
// was killed before it said anything, and the job ended without a word. Where the launcher
// waits for every rank (srun without --kill-on-bad-exit), the job ends these seconds later.
void waitForRankZeroToSayIt() {
  std::this_thread::sleep_for(std::chrono::seconds(5));
}

// This process's rank under mpirun/mpiexec/srun: 0 alone, and 0 when the launcher's
// variables do not agree (then every rank speaks).
int launchRank() {
  try {
    return dist::detectLaunch().rank;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

void markHandOverBuild() {
  ::setenv(kFrontEndBuildVariable, buildInfoJson().dump().c_str(), /*overwrite=*/1);
}

void warnOfAnotherFrontEndBuild() {
  const char* value = std::getenv(kFrontEndBuildVariable);
  if (value == nullptr) return;
  const nlohmann::json front = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  ::unsetenv(kFrontEndBuildVariable);
  const nlohmann::json mine = buildInfoJson();
  if (front == mine || launchRank() != 0) return;
  // What differs ("commit", "build_type"): two builds of one commit read alike by their line.
  std::string differs;
  if (front.is_object()) {
    for (const auto& [key, v] : mine.items()) {
      if (front.value(key, nlohmann::json()) != v) differs += (differs.empty() ? "" : ", ") + key;
    }
  }
  const std::string theirs = front.is_object() ? buildLine(front) : "an unreadable build";
  std::fprintf(stderr,
               "foldfarm: warning: foldfarm-torch (%s) is not the build of the foldfarm that "
               "started it (%s; they differ in %s): outputs name foldfarm-torch's; rebuild both "
               "(cmake --build BUILD) or install them together\n",
               buildLine(mine).c_str(), theirs.c_str(),
               differs.empty() ? "what it names" : differs.c_str());
}

TopLevel::TopLevel()
    : app_("foldfarm: data-parallel PET pretraining and OmniFold uncertainty campaigns",
           "foldfarm") {
  // "foldfarm X.Y.Z" first (what scripts read), then the commit and how it was built.
  app_.set_version_flag("--version", buildVersionText());
  app_.require_subcommand(1);
  app_.fallthrough();
  app_.add_option("--log-level", log_level_, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app_.parse_complete_callback([this] { initLogging(log_level_); });
  bench_ = app_.add_subcommand("bench", "Benchmarks that print figures (--json)");
  bench_->require_subcommand(1);
  study_ = app_.add_subcommand(
      "study", "Studies: warm start, scaling, compare unfoldings, quark/gluon reweighting");
  study_->require_subcommand(1);
}

namespace {

// CLI11's message, but for an option given more often than it takes ("--patience: At Most 1
// required but received 2" read as a value too large): "given 2 times; give it once".
std::string parseErrorText(const CLI::ParseError& e) {
  const std::string what = e.what();
  static const std::string kAtMost = ": At Most 1 required but received ";
  const size_t at = what.find(kAtMost);
  if (at == std::string::npos) return what;
  const std::string option = what.substr(0, at), times = what.substr(at + kAtMost.size());
  return option + ": given " + times + " times; give it once" +
         (option == "--data" ? " (several files: one --data with a comma-separated list, a glob "
                               "or @LIST)"
                             : "");
}

// The commands of a group, as `--help` lists them (hidden ones left out).
std::vector<std::string> commandNames(CLI::App& group) {
  std::vector<std::string> names;
  for (CLI::App* c : group.get_subcommands([](CLI::App* c) { return !c->get_group().empty(); }))
    names.push_back(c->get_name());
  return names;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Where argv leads in the command tree: the deepest command it names and the first word that
// names none ("" when every word named one, or options followed).
struct CommandPath {
  CLI::App* app;
  std::string path = "foldfarm";
  std::string unknown;
};

CommandPath walk(CLI::App& root, int argc, char** argv) {
  CommandPath at{&root, "foldfarm", ""};
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--log-level") {
      ++k;
      continue;
    }
    if (a.rfind('-', 0) == 0) continue;
    const auto found = at.app->get_subcommands([&](CLI::App* c) { return c->check_name(a); });
    if (found.empty()) {
      if (at.app->get_require_subcommand_min() > 0) at.unknown = a;
      break;
    }
    at.app = found.front();
    at.path += " " + at.app->get_name();
  }
  return at;
}

// CLI11's "A subcommand is required" where a command was mistyped or left out, and "The
// following argument was not expected: --jsn": which command or option, what there is, and
// the nearest one (before: "A subcommand is required" for `foldfarm campain` and for
// `foldfarm slurm watch D` alike).
std::string commandErrorText(const CLI::ParseError& e, CLI::App& root, int argc, char** argv) {
  const std::string what = e.what();
  const CommandPath at = walk(root, argc, argv);
  // The command named, but for the top level, which the "foldfarm: error: " before it names
  // (before: "foldfarm: error: foldfarm: no command ...").
  const std::string named = at.app == &root ? std::string() : at.path + ": ";
  if (what.find("subcommand is required") != std::string::npos) {
    const std::vector<std::string> names = commandNames(*at.app);
    if (at.unknown.empty()) return named + "give one of its commands: " + joined(names);
    const std::string near = cli::closestName(at.unknown, names);
    return named + "no command '" + at.unknown + "'" +
           (near.empty() ? "; its" : "; did you mean '" + near + "'? Its") +
           " commands: " + joined(names);
  }
  std::vector<std::string> options;
  for (const CLI::App* a = at.app; a != nullptr; a = a->get_parent())
    for (const CLI::Option* o : a->get_options())
      for (const std::string& n : o->get_lnames()) options.push_back("--" + n);
  const auto noOption = [&](const std::string& typed) {
    const std::string near = cli::closestName(typed, options);
    return named + "no option " + typed + (near.empty() ? "" : "; did you mean " + near + "?");
  };
  // The first option of the command line that the command does not have (`--dta`, `--slot 2`).
  const auto misspelt = [&]() -> std::string {
    for (int k = 1; k < argc; ++k) {
      const std::string a = argv[k];
      if (a == "--") break;
      if (a.rfind("--", 0) != 0 || a == "--log-level") continue;
      const std::string name = a.substr(0, a.find('='));
      if (std::find(options.begin(), options.end(), name) == options.end()) return name;
    }
    return {};
  };
  // "The following argument was not expected: --jsn", or "...arguments were not expected: 2
  // --slot" (an unknown option with its value, or words too many; CLI11 lists them last
  // first): the unknown option with the nearest one, else the words in their order.
  static const std::string kUnexpected = "The following argument was not expected: ",
                           kUnexpectedMany = "The following arguments were not expected: ";
  const bool one = what.rfind(kUnexpected, 0) == 0, many = what.rfind(kUnexpectedMany, 0) == 0;
  if (one || many) {
    if (const std::string name = misspelt(); !name.empty()) return noOption(name);
    // The words as given (a word may hold spaces), in their order: the last ones of the command
    // line whose reversed join is CLI11's list; else its list as it is.
    const std::string listed = what.substr((one ? kUnexpected : kUnexpectedMany).size());
    std::vector<std::string> words;
    for (int k = argc - 1; k >= 1 && words.empty(); --k) {
      std::string reversed;
      for (int i = argc - 1; i >= k; --i)
        reversed += (i == argc - 1 ? "" : " ") + std::string(argv[i]);
      if (reversed == listed) words.assign(argv + k, argv + argc);
      if (reversed.size() > listed.size()) break;
    }
    if (words.empty()) words = {listed};
    std::string list;
    for (const std::string& w : words) list += (list.empty() ? "'" : " '") + w + "'";
    return named + "unexpected argument" + (words.size() == 1 ? " " : "s ") + list;
  }
  // "--data is required" where the command line holds a misspelt option (`--dta`): the
  // misspelling is the error to name. A missing positional ("dir is required") is named with
  // its command.
  if (what.find(" is required") != std::string::npos) {
    if (const std::string name = misspelt(); !name.empty()) return noOption(name);
    return named + parseErrorText(e);
  }
  return parseErrorText(e);
}

// What to do about a full disk or quota, after an error that says so (the system's words,
// SQLite's, HDF5's): every foldfarm command leaves its earlier outputs whole and can be run
// again (before: the message named only the file, or an HDF5 call).
std::string fullDiskAdvice(const std::string& what) {
  return foldfarm::fullDiskAdvice(what,
                                  "run the command again (what it wrote before is whole; a "
                                  "campaign resumes, a pretraining takes --resume)");
}

}  // namespace

int TopLevel::run(int argc, char** argv, const ErrorText& text) {
  const int code = runCommandLine(argc, argv, text);
  // What the command printed reached its standard output, or the exit status says it did
  // not (a full disk, /dev/full): `foldfarm ... --json > x.json && use x.json` must not go
  // on with an empty file. A reader that went away (EPIPE) is no error, nor a standard output
  // closed by the caller (EBADF: `>&-` asks for no output).
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if (flushed && std::ferror(stdout) == 0) return code;
  if (err == EPIPE || err == EBADF) return code;
  // A write that failed before (a large output) left ferror set but not its errno.
  const std::string msg =
      err != 0 ? "writing the standard output: " + std::string(std::strerror(err))
               : "writing the standard output failed: what it holds is incomplete (a full disk "
                 "or quota, `df -h`; or the file size limit, `ulimit -f`)";
  std::fprintf(stderr, "foldfarm: error: %s%s\n", msg.c_str(), fullDiskAdvice(msg).c_str());
  return code == kExitOk ? kExitFailure : code;
}

int TopLevel::runCommandLine(int argc, char** argv, const ErrorText& text) {
  cli::checkIntegerOptions(app_);
  // Paths and names go into JSON (journals, summaries, --json) and HDF5 attributes, which hold
  // UTF-8 only: an argument of other bytes is refused before anything is written (before: a
  // pretrain --out of such a name wrote its model, then failed printing its summary).
  for (int k = 1; k < argc; ++k) {
    const std::string_view arg(argv[k]);
    if (const size_t at = invalidUtf8At(arg); at != std::string_view::npos) {
      if (launchRank() == 0)
        std::fprintf(stderr,
                     "foldfarm: error: argument %d, '%s', is not valid UTF-8 (its byte %zu): "
                     "foldfarm records paths and names in JSON and HDF5, which hold UTF-8 only; "
                     "rename the file or directory to a name in UTF-8\n",
                     k, escapeInvalidUtf8(arg).c_str(), at + 1);
      return kExitBadInput;
    }
  }
  try {
    initLogging(log_level_);
    app_.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app_.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app_.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app_.exit(e);
  } catch (const CLI::ParseError& e) {
    // Every rank of mpirun/srun parses the same command line: rank 0 says what is wrong.
    if (launchRank() != 0) {
      waitForRankZeroToSayIt();
      return kExitBadInput;
    }
    std::fprintf(stderr, "foldfarm: error: %s (see --help)\n",
                 commandErrorText(e, app_, argc, argv).c_str());
    return kExitBadInput;
  } catch (const ReportedByAnotherRank& e) {
    waitForRankZeroToSayIt();
    return e.exitCode();
  } catch (const InterruptedError& e) {
    // Stopped as asked (a signal), its state saved: no error.
    std::fprintf(stderr, "foldfarm: %s\n", e.what());
    return e.exitCode();
  } catch (const Error& e) {
    // A run ended by `campaign cancel` ended as asked: no error either (exit 79 says it).
    std::fprintf(stderr,
                 e.exitCode() == kExitCancelled ? "foldfarm: %s\n" : "foldfarm: error: %s\n",
                 (e.what() + fullDiskAdvice(e.what())).c_str());
    return e.exitCode();
  } catch (const std::filesystem::filesystem_error& e) {
    // A file system call refused (a name too long, no permission, a full disk): an error on
    // its path (before: "internal error: filesystem error: status: File name too long").
    std::string msg = e.path1().empty() ? std::string() : e.path1().string() + ": ";
    msg += e.code().message();
    if (e.code() == std::errc::filename_too_long)
      msg += " (at most 255 bytes per name and 4095 per path: choose a shorter one)";
    std::fprintf(stderr, "foldfarm: error: %s%s\n", msg.c_str(), fullDiskAdvice(msg).c_str());
    return kExitFailure;
  } catch (const std::exception& e) {
    if (text.out_of_memory(e)) {
      std::fprintf(stderr,
                   "foldfarm: error: out of memory: %s; lower the sizes given (jets, events, "
                   "batch, model) or use a node with more memory\n",
                   text.message(e).c_str());
      return kExitFailure;
    }
    std::fprintf(stderr, "foldfarm: internal error: %s\n", text.message(e).c_str());
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace foldfarm::app
