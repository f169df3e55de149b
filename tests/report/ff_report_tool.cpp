// ff_report_tool: a torch-free front end for the report tests. It runs the same library
// code as `foldfarm campaign init|run`, `foldfarm worker` (built-in task kinds) and
// `foldfarm report`, so the report is tested on a campaign run by real processes in a
// build without LibTorch.
#include <cstdio>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/task_kind.hpp"
#include "report/campaign_report.hpp"

int main(int argc, char** argv) {
  using namespace foldfarm;
  const char* usage =
      "usage: ff_report_tool worker | init SPEC --dir D | run D [--slots N] | report D [--out F]\n";
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fputs(usage, stderr);
    return 2;
  }
  jobs::registerBuiltinTaskKinds();
  try {
    initLogging("warn");
    if (args[0] == "worker") return jobs::workerMain();
    if (args.size() < 2) throw InputError(std::string("missing argument; ") + usage);
    std::string dir, out;
    jobs::RunOptions run;
    run.show_progress = false;
    run.worker_argv = {jobs::selfExecutable(), "worker"};
    for (size_t k = 2; k < args.size(); ++k) {
      if (k + 1 >= args.size()) throw InputError(args[k] + " needs a value");
      if (args[k] == "--dir")
        dir = args[++k];
      else if (args[k] == "--out")
        out = args[++k];
      else if (args[k] == "--slots")
        run.slots = std::stoi(args[++k]);
      else
        throw InputError("unknown option " + args[k]);
    }
    if (args[0] == "init") {
      jobs::initCommand(args[1], dir);
      return 0;
    }
    if (args[0] == "run") return jobs::runCommand(args[1], "local", run);
    if (args[0] == "report") {
      report::ReportOptions ro;
      ro.out = out;
      report::ReportResult r = report::writeCampaignReport(args[1], ro);
      std::printf("%s\n", r.path.c_str());
      return 0;
    }
    throw InputError("unknown command " + args[0]);
  } catch (const Error& e) {
    std::fprintf(stderr, "ff_report_tool: error: %s\n", e.what());
    return e.exitCode();
  }
}
