// ff_jobs_tool: a torch-free front end to the jobs library for its tests. It speaks the
// same commands as `foldfarm campaign …` (init, run, resume, retry --failed/--cancelled, cancel,
// status, repair, accept-inputs, extend, work) and `foldfarm worker`, and knows the built-in task
// kinds plus the test kinds of test_kinds.hpp, so fault tests run real processes without LibTorch.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "jobs/campaign_commands.hpp"
#include "tests/jobs/test_kinds.hpp"

namespace {

const char* kUsage =
    "usage: ff_jobs_tool worker\n"
    "       ff_jobs_tool init SPEC --dir D\n"
    "       ff_jobs_tool run|resume D [--executor local|mpi] [--slots N] [--lost-after S]\n"
    "                             [--heartbeat S]\n"
    "       ff_jobs_tool retry D [--failed] [--cancelled] [--task ID …] [--tasks-file F]\n"
    "                          [--dry-run]\n"
    "       ff_jobs_tool cancel D [--wait S] | status D [--json] [--tasks]\n"
    "       ff_jobs_tool accept-inputs D [--dry-run] [--json]\n"
    "       ff_jobs_tool extend D [--spec NEW] [--variation V] [--replicas R] [--members M]\n"
    "                          [--dry-run] [--json]\n"
    "       ff_jobs_tool work D --task ID [--task ID ...] [--attempt N]\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace foldfarm;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  jobs::testing::registerTestTaskKinds();
  try {
    initLogging("info");
    const std::string& cmd = args[0];
    if (cmd == "worker") return jobs::workerMain();
    if (args.size() < 2) throw InputError(std::string("missing argument\n") + kUsage);
    std::string target = args[1];
    std::string dir, executor;
    std::vector<std::string> tasks;
    int attempt = 0, replicas = 0, members = 0;
    double wait_s = 600;
    std::string spec, variation, tasks_file;
    bool json = false, failed = false, cancelled = false, dry_run = false, list_tasks = false;
    jobs::RunOptions opt;
    opt.show_progress = false;
    for (size_t k = 2; k < args.size(); ++k) {
      auto value = [&]() -> std::string {
        if (k + 1 >= args.size()) throw InputError(args[k] + " needs a value");
        return args[++k];
      };
      if (args[k] == "--dir")
        dir = value();
      else if (args[k] == "--executor")
        executor = value();
      else if (args[k] == "--slots")
        opt.slots = std::stoi(value());
      else if (args[k] == "--lost-after")
        opt.lost_after_s = std::stod(value());
      else if (args[k] == "--heartbeat")
        opt.heartbeat_s = std::stod(value());
      else if (args[k] == "--task")
        tasks.push_back(value());
      else if (args[k] == "--tasks-file")
        tasks_file = value();
      else if (args[k] == "--attempt")
        attempt = std::stoi(value());
      else if (args[k] == "--spec")
        spec = value();
      else if (args[k] == "--replicas")
        replicas = std::stoi(value());
      else if (args[k] == "--members")
        members = std::stoi(value());
      else if (args[k] == "--variation")
        variation = value();
      else if (args[k] == "--wait")
        wait_s = std::stod(value());
      else if (args[k] == "--json")
        json = true;
      else if (args[k] == "--tasks")
        list_tasks = true;
      else if (args[k] == "--failed")
        failed = true;
      else if (args[k] == "--cancelled")
        cancelled = true;
      else if (args[k] == "--dry-run")
        dry_run = true;
      else
        throw InputError("unknown option " + args[k]);
    }
    opt.worker_argv = {jobs::selfExecutable(), "worker"};
    if (cmd == "init") {
      if (dir.empty()) throw InputError("init needs --dir D");
      jobs::initCommand(target, dir);
      return 0;
    }
    if (cmd == "run" || cmd == "resume") return jobs::runCommand(target, executor, opt);
    if (cmd == "retry") {
      if (dry_run) {
        jobs::dryRunRetry(target, failed, cancelled, tasks, tasks_file);
        return 0;
      }
      return jobs::retryCommand(target, executor, opt, failed, cancelled, tasks, tasks_file);
    }
    if (cmd == "cancel") return jobs::cancelCommand(target, wait_s);
    if (cmd == "status") {
      jobs::statusCommand(target, json, list_tasks);
      return 0;
    }
    if (cmd == "repair") {
      jobs::repairCommand(target, /*force=*/false, json);
      return 0;
    }
    if (cmd == "accept-inputs") {
      jobs::acceptInputsCommand(target, dry_run, json);
      return 0;
    }
    if (cmd == "extend") {
      jobs::extendCommand(target, {spec, replicas, members, variation}, dry_run, json);
      return 0;
    }
    if (cmd == "work") return jobs::workTasks(target, tasks, attempt);
    throw InputError("unknown command " + cmd);
  } catch (const Error& e) {
    std::fprintf(stderr, "ff_jobs_tool: error: %s\n", e.what());
    return e.exitCode();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ff_jobs_tool: internal error: %s\n", e.what());
    return 1;
  }
}
