// foldfarm: the command users run.
//
// The commands a login node runs (cmd_login.cpp: campaign status, cancel, repair and
// aggregate, slurm status, aggregate, study compare, report; the data commands; --version)
// run in this process, which does not load LibTorch: loading it and registering its
// operators takes most of a second on a local disk, more from a parallel file system and
// more again for a CUDA build, where `campaign status` needs a few milliseconds of work.
//
// Every other command is handed to foldfarm-torch, built and installed beside this
// executable, by exec: the same process (mpirun, srun and Slurm's signals keep reaching it),
// the same arguments, with OMP_WAIT_POLICY=PASSIVE set unless the user set it, which
// foldfarm-torch would otherwise restart itself to set (main.cpp says why).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "apps/foldfarm/top_level.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "jobs/executor.hpp"
#include "jobs/task_kind.hpp"

namespace {

using namespace foldfarm;

// The subcommand of `app` called `name`, or nullptr.
CLI::App* subcommandNamed(CLI::App& app, const char* name) {
  const auto found = app.get_subcommands([&](CLI::App* c) { return c->check_name(name); });
  return found.empty() ? nullptr : found.front();
}

// Whether `app` is a group (`campaign`, `bench`): it needs a command of its own.
bool isGroup(const CLI::App& app) {
  return app.get_require_subcommand_min() > 0;
}

// Whether argv asks for a command registered on `root` here (`report D`, `campaign status D`,
// after the top-level --log-level), or only for the version.
bool runsHere(CLI::App& root, int argc, char** argv) {
  int k = 1;
  while (k < argc && std::string_view(argv[k]).rfind("--log-level", 0) == 0)
    k += std::string_view(argv[k]) == "--log-level" ? 2 : 1;
  if (k == argc - 1 && std::string_view(argv[k]) == "--version") return true;
  if (k >= argc) return false;
  CLI::App* command = subcommandNamed(root, argv[k]);
  if (command == nullptr) return false;
  if (!isGroup(*command)) return true;
  return k + 1 < argc && subcommandNamed(*command, argv[k + 1]) != nullptr;
}

#ifdef FOLDFARM_TORCH_EXECUTABLE
// exec's foldfarm-torch with argv; returns only when that failed, with the error to print.
std::string handOver(char** argv) {
  std::string self;
  try {
    self = jobs::selfExecutable();
  } catch (const std::exception& e) {
    return std::string("cannot find this executable to start ") + FOLDFARM_TORCH_EXECUTABLE +
           " beside it: " + e.what();
  }
  const std::string full = self.substr(0, self.rfind('/') + 1) + FOLDFARM_TORCH_EXECUTABLE;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
  app::markHandOverBuild();
  sigset_t before;
  holdSignalsAcrossExec(&before);  // released by foldfarm-torch's main, handlers installed
  ::execv(full.c_str(), argv);
  const int err = errno;
  restoreSignalMask(before);
  return "cannot start " + full + ": " + std::strerror(err) +
         "; every command but a login node's runs in that executable, built and installed beside " +
         self + ": rebuild foldfarm (or install both)";
}
#else
// "data synth, …, campaign status, …, report": what runs here.
std::string commandsHere(CLI::App& root) {
  const auto all = [](CLI::App*) { return true; };
  std::string list;
  const auto add = [&](const std::string& name) { list += (list.empty() ? "" : ", ") + name; };
  for (CLI::App* command : root.get_subcommands(all)) {
    if (!isGroup(*command)) add(command->get_name());
    for (CLI::App* c : command->get_subcommands(all))
      add(command->get_name() + " " + c->get_name());
  }
  return list;
}
#endif

}  // namespace

namespace foldfarm::app {

// The task kinds reading a campaign needs. A chain campaign's frozen spec names the chain
// kind, which is known here by its name only: foldfarm-torch runs its tasks and checks their
// params (at `campaign init`, and when it opens the campaign to run it).
void registerCampaignTaskKinds() {
  static bool done = false;
  if (done) return;
  done = true;
  jobs::registerBuiltinTaskKinds();
  jobs::registerTaskKind(
      "chain", jobs::TaskRunner([](const nlohmann::json&, const std::string&) {
        return jobs::TaskOutcome{jobs::kTaskBadInput,
                                 "chain tasks run in foldfarm-torch, not in the foldfarm front end",
                                 nullptr};
      }),
      jobs::TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {"truth"}});
}

}  // namespace foldfarm::app

int main(int argc, char** argv) {
  // From the start: a signal before a command is under way is said too (and, from here to the
  // handed-over command's own handlers, held across the exec).
  installTemporaryFileCleanup();
  app::TopLevel top;
  CLI::App& root = top.root();
  app::CommandGroups groups = top.groups();
  app::registerDataCommands(groups);
  app::registerLoginCommands(groups);
  if (!runsHere(root, argc, argv)) {
#ifdef FOLDFARM_TORCH_EXECUTABLE
    const std::string why = handOver(argv);
    std::fprintf(stderr, "foldfarm: error: %s\n", why.c_str());
    return kExitFailure;
#else
    // Built without LibTorch (-DFOLDFARM_WITH_TORCH=OFF): the help lists what there is.
    const bool help = argc == 1 || std::string_view(argv[argc - 1]) == "--help" ||
                      std::string_view(argv[argc - 1]) == "-h";
    if (!help) {
      std::fprintf(stderr,
                   "foldfarm: error: this foldfarm was built without LibTorch "
                   "(-DFOLDFARM_WITH_TORCH=OFF) and runs only %s; build it with LibTorch for "
                   "the other commands\n",
                   commandsHere(root).c_str());
      return kExitBadInput;
    }
#endif
  }
  return top.run(argc, argv,
                 app::ErrorText{[](const std::exception& e) { return std::string(e.what()); },
                                [](const std::exception& e) {
                                  return dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
                                }});
}
