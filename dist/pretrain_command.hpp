#pragma once
// `foldfarm pretrain`: core/train's pretraining composed with this layer's data-parallel
// context, so that the command line only parses options into a PretrainRequest. The steps:
//   1. threads and stop handlers; this rank's device (its GPU by local rank; said by each
//      node's first rank when every rank finds it alike);
//   2. the data-parallel options for that device (NCCL for GPU tensors, MPI for host tensors;
//      a bad one said by rank 0 when every rank finds it bad) and the context: alone a
//      SingleProcessContext, under mpirun/mpiexec/srun data-parallel (make_context.hpp);
//   3. under leaveOnError (an error that only this rank meets ends the others at once):
//      --cuda-graphs checked, the config file read and the recipe resolved (an option given
//      on the command line wins over the file's "train", the file over the default), by
//      rank 0 when every rank finds it bad;
//   4. core/train's runPretraining (core/train/pretrain.hpp); rank 0 prints its result as JSON.
// Throws as runPretraining does: InputError (exit 2, nothing written), InterruptedError (75:
// the state is saved), Error.
#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "dist/make_context.hpp"

namespace foldfarm::dist {

struct PretrainRequest {
  std::string data;  // files, glob patterns or @LIST, comma-separated
  std::string out, config, preset = "tiny", optimizer = "lion";
  int64_t epochs = 10, batch = 250, max_jets = 0;
  int threads = 0;  // 0: all cores
  bool resume = false, shard_data = false, stream = false;
  int64_t block_rows = 1024, shuffle_buffer = 16384, eval_jets = 10000;
  int readers = 2, read_ahead = 8;
  double lr = 3e-4, lr_factor = 1.0, val_fraction = 0.1, test_fraction = 0.1, warmup_epochs = 1;
  double save_every_min = 30;
  uint64_t seed = 1;
  std::string device = "auto", precision = "fp32";
  bool fixed_shapes = false, cuda_graphs = false;
  // The long names (without dashes) of the options given on the command line: those of the
  // recipe (epochs, batch, lr, lr-factor, optimizer, warmup-epochs) win over the config file.
  std::set<std::string> given;
  // The data-parallel options: the command line's over the environment's, checked
  // (dist/cli_options.hpp's DistCli::resolve; InputError for a bad one). Unset: the
  // environment's. Then resolved for this rank's device (resolveForTraining).
  std::function<DistOptions()> dist_options;
};

void pretrainCommand(const PretrainRequest& request);

}  // namespace foldfarm::dist
