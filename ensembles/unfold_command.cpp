#include "ensembles/unfold_command.hpp"

#include <filesystem>
#include <iostream>
#include <memory>
#include <system_error>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "core/model/threads.hpp"
#include "core/train/device.hpp"
#include "core/train/parallel.hpp"
#include "dist/launch.hpp"
#include "ensembles/chain.hpp"
#include "ensembles/chain_task.hpp"

namespace foldfarm::ensembles {

void unfoldCommand(const UnfoldRequest& o) {
  // 1. Read and checked here, naming its file, before the device is read from it (the chain
  // checks it again), and before MPI exists. A file that cannot be read is so for every rank
  // of a node (one file system): the node's first rank says so. A bad content every rank
  // finds alike: rank 0 says so. Its text and its parse apart: a file one node cannot read
  // differs from node to node, while its content is alike on every rank.
  const dist::LaunchInfo launch = dist::detectLaunch();
  std::string text;
  checkAlikeOnEveryRank(launch.local_rank,
                        [&] { text = o.config.empty() ? std::string("{}") : readFile(o.config); });
  nlohmann::json config;
  ChainConfig checked;
  checkAlikeOnEveryRank(launch.rank, [&] {
    config = parseJsonText(text, o.config, "fix the config");
    // The command line's device, precision and shapes override the config file's.
    if (o.apply_device_options) o.apply_device_options(config);
    checked = chainConfigFromJson(config, o.config.empty() ? "config" : o.config);
  });
  // 2.
  if (launch.distributed()) setLogRank(launch.rank);  // the device line names its rank
  DeviceChoice dev;
  checkAlikeOnEveryRank(launch.local_rank, [&] {
    dev = resolveDevice(parseDeviceRequest(checked.device, "--device"), probeDeviceFacts());
  });
  // The chain records its files by absolute path: chains of one unfolding started from
  // different directories (or with a relative and an absolute path) aggregate together, and
  // an aggregation from another directory finds the simulation (before: as typed).
  const auto absolute = [](const std::string& option, const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      throw InputError(option + " " + path + ": no such file; check the path");
    return std::filesystem::absolute(path).lexically_normal().string();
  };
  // A path missing for one rank is missing for every rank of its node (one file system): the
  // node's first rank says so (before: every rank printed it).
  nlohmann::json params;
  checkAlikeOnEveryRank(launch.local_rank, [&] {
    const std::string init = o.init == "none" ? o.init : absolute("--init", o.init);
    params = {{"mc", absolute("--mc", o.mc)},
              {"data", absolute("--data", o.data)},
              {"init", init},
              {"replica", o.replica},
              {"member", o.member},
              {"campaign_seed", o.seed},
              {"iterations", o.iterations},
              {"config", config}};
  });
  // 3. Alone: SingleProcessContext; under mpirun/mpiexec/srun: data-parallel (dist/).
  configureThreads(o.threads);
  installStopHandlers();
  dist::DistOptions dist_options;
  checkAlikeOnEveryRank(launch.rank, [&] {
    dist_options = dist::resolveForTraining(
        o.dist_options ? o.dist_options() : dist::distOptionsFromEnv(), "unfold", dev.device);
  });
  std::unique_ptr<ParallelContext> ctx = dist::makeParallelContext(dist_options);
  // 4. An error only this rank meets ends the others at once (leaveOnError).
  leaveOnError(*ctx, [&] {
    // One run writes --out (rank 0); what a run killed while writing left there is removed.
    const auto lock = lockOutputOnRoot(*ctx, o.out, "--out", {"state", "models"});
    try {
      runChainTaskOrThrow(params, o.out, ctx.get());
    } catch (const InterruptedError&) {
      throw InterruptedError(o.out +
                             ": interrupted; state saved, rerun the same command to resume");
    }
    if (ctx->isRoot()) std::cout << readFile(o.out + "/result.json");
  });
}

}  // namespace foldfarm::ensembles
