// foldfarm: pretrain PET data-parallel, fan out OmniFold campaigns, aggregate the bands.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "apps/foldfarm/commands.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/cli_checks.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/train/torch_error.hpp"
#include "dist/launch.hpp"

namespace {

// LibTorch's element-wise kernels run on OpenMP threads and its matrix products on
// OpenBLAS's own threads. With OpenMP's default policy its idle threads spin after every
// parallel region and take the cores the OpenBLAS threads need: a 2-thread PET step ran
// 2x slower than with OMP_WAIT_POLICY=PASSIVE on a quiet machine and 6x slower on a busy
// one (bench pet). The OpenMP runtime reads the variable when it is loaded, before main,
// so set it and start this program again, once; a value the user set is kept.
void ensurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): carry on with the policy the runtime already has.
}

// This process's rank under mpirun/mpiexec/srun: 0 alone, and 0 when the launcher's
// variables do not agree (then every rank speaks).
int launchRank() {
  try {
    return foldfarm::dist::detectLaunch().rank;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace foldfarm;
  ensurePassiveOpenMpWait(argv);
  installTemporaryFileCleanup();  // Ctrl-C or scancel leaves no half-written file behind
  CLI::App app{"foldfarm: data-parallel PET pretraining and OmniFold uncertainty campaigns",
               "foldfarm"};
  app.set_version_flag("--version", std::string("foldfarm ") + FOLDFARM_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.parse_complete_callback([&] { initLogging(log_level); });

  CLI::App* bench = app.add_subcommand("bench", "Benchmarks that print figures (--json)");
  bench->require_subcommand(1);
  CLI::App* study = app.add_subcommand("study", "Studies: warm start, scaling");
  study->require_subcommand(1);
  app::CommandGroups groups{app, *bench, *study};
  app::registerDataCommands(groups);
  app::registerModelCommands(groups);
  app::registerDistCommands(groups);
  app::registerEnsembleCommands(groups);
  app::registerCampaignCommands(groups);
  app::registerSlurmCommands(groups);
  app::registerReportCommands(groups);
  cli::checkIntegerOptions(app);

  try {
    initLogging(log_level);
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Every rank of mpirun/srun parses the same command line: rank 0 says what is wrong.
    if (launchRank() == 0) std::fprintf(stderr, "foldfarm: error: %s (see --help)\n", e.what());
    return kExitBadInput;
  } catch (const ReportedByAnotherRank& e) {
    return e.exitCode();  // another rank printed it
  } catch (const Error& e) {
    std::fprintf(stderr, "foldfarm: error: %s\n", e.what());
    return e.exitCode();
  } catch (const std::exception& e) {
    if (isOutOfMemory(e)) {
      std::fprintf(stderr,
                   "foldfarm: error: out of memory: %s; lower the sizes given (jets, events, "
                   "batch, model) or use a node with more memory\n",
                   exceptionMessage(e).c_str());
      return kExitFailure;
    }
    std::fprintf(stderr, "foldfarm: internal error: %s\n", exceptionMessage(e).c_str());
    return kExitFailure;
  }
  return kExitOk;
}
