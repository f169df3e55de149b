// foldfarm-torch: every foldfarm command (pretrain PET data-parallel, fan out OmniFold
// campaigns, aggregate the bands). Users run `foldfarm` (front.cpp), which runs the commands
// a login node polls itself and hands the rest to this executable.
#include <unistd.h>

#include <cstdlib>
#include <exception>

#include "apps/foldfarm/commands.hpp"
#include "apps/foldfarm/top_level.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/stop_signal.hpp"
#include "core/train/torch_error.hpp"

namespace {

// LibTorch's element-wise kernels run on OpenMP threads and its matrix products on
// OpenBLAS's own threads. With OpenMP's default policy its idle threads spin after every
// parallel region and take the cores the OpenBLAS threads need: a 2-thread PET step ran
// 2x slower than with OMP_WAIT_POLICY=PASSIVE on a quiet machine and 6x slower on a busy
// one (bench pet). The OpenMP runtime reads the variable when it is loaded, before main,
// so set it and start this program again, once; a value the user set is kept. (`foldfarm`
// sets it before it hands a command over: only a direct start of this executable restarts.)
void ensurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  sigset_t before;
  foldfarm::holdSignalsAcrossExec(&before);  // released by main of the new image
  execv("/proc/self/exe", argv);
  foldfarm::restoreSignalMask(before);
  // exec failed (no /proc): carry on with the policy the runtime already has.
}

}  // namespace

int main(int argc, char** argv) {
  using namespace foldfarm;
  ensurePassiveOpenMpWait(argv);
  installTemporaryFileCleanup();  // Ctrl-C or scancel leaves no half-written file behind
  recordStopOnUsr1();             // Slurm's warning before a command's handlers: not fatal
  // A stop that came while `foldfarm` handed over, said now; a campaign's worker releases
  // them itself once its stop handlers are in place (started by its parent with them held).
  takeSignalsHeldForParent();
  app::warnOfAnotherFrontEndBuild();
  app::TopLevel top;
  app::CommandGroups groups = top.groups();
  app::registerDataCommands(groups);
  app::registerModelCommands(groups);
  app::registerDistCommands(groups);
  app::registerEnsembleCommands(groups);
  app::registerCampaignCommands(groups);
  app::registerSlurmCommands(groups);
  app::registerReportCommands(groups);
  return top.run(argc, argv, app::ErrorText{exceptionMessage, isOutOfMemory});
}
