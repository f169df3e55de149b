#pragma once
// `foldfarm unfold`: one OmniFold chain (chain_task.hpp) composed with the device and
// data-parallel context it trains with, so that the command line only parses options into
// an UnfoldRequest. The steps:
//   1. the config file read and checked, naming it, before MPI exists: a file that cannot be
//      read is said by each node's first rank, a bad content every rank finds alike by rank 0;
//      the command line's device options override the file's (`apply_device_options`);
//   2. this rank's device from the checked config; the chain's inputs made absolute (chains
//      of one unfolding started from different directories aggregate together);
//   3. threads, stop handlers, the data-parallel options for that device and the context:
//      alone a SingleProcessContext, under mpirun/mpiexec/srun the step classifiers train
//      data-parallel over the ranks;
//   4. under leaveOnError (an error that only this rank meets ends the others at once): rank
//      0 holds --out (what a run killed while writing left there is removed), the chain runs,
//      rank 0 prints its result.json.
// Throws InputError (exit 2, nothing written), InterruptedError (75: "rerun the same command
// to resume"), Error.
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/make_context.hpp"

namespace foldfarm::ensembles {

struct UnfoldRequest {
  std::string mc, data, init, out;  // init: a foundation checkpoint, or "none"
  std::string config;               // the chain config file ("": none)
  int replica = 0, member = 0, iterations = 4, threads = 0;
  uint64_t seed = 1;  // the campaign seed
  // The command line's device, precision and shapes over the config's (unset: the config's).
  std::function<void(nlohmann::json&)> apply_device_options;
  // The data-parallel options (dist/pretrain_command.hpp's PretrainRequest::dist_options).
  std::function<dist::DistOptions()> dist_options;
};

void unfoldCommand(const UnfoldRequest& request);

}  // namespace foldfarm::ensembles
