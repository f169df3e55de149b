#include "dist/pretrain_command.hpp"

#include <cstdio>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "core/data/jet_files.hpp"
#include "core/model/threads.hpp"
#include "core/train/device.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/pretrain.hpp"
#include "core/train/train_config.hpp"
#include "dist/launch.hpp"

namespace foldfarm::dist {

void pretrainCommand(const PretrainRequest& a) {
  configureThreads(a.threads);
  installStopHandlers();
  // 1. This rank's device (its GPU by local rank), then 2. the data plane that matches it:
  // NCCL for GPU tensors, MPI for host tensors. Before MPI: what every rank of a node finds
  // alike (its GPUs) is said by the node's first rank, an option every rank finds wrong by
  // rank 0.
  const LaunchInfo launch = detectLaunch();
  if (launch.distributed()) setLogRank(launch.rank);  // the device line names its rank
  DeviceChoice dev;
  checkAlikeOnEveryRank(launch.local_rank, [&] { dev = selectDevice(a.device); });
  DistOptions dist_options;
  checkAlikeOnEveryRank(launch.rank, [&] {
    dist_options = resolveForTraining(a.dist_options ? a.dist_options() : distOptionsFromEnv(),
                                      "pretrain", dev.device);
  });
  // Alone: SingleProcessContext; under mpirun/mpiexec/srun: data-parallel.
  std::unique_ptr<ParallelContext> ctx = makeParallelContext(dist_options);
  // 3. An error only this rank meets ends the others at once (leaveOnError).
  leaveOnError(*ctx, [&] {
    checkOnEveryRank(*ctx, [&] {
      if (a.cuda_graphs) requireCudaGraphs(dev.device, ctx->worldSize(), "pretrain --cuda-graphs");
    });
    // A bad config is refused before any data is read (by rank 0 when every rank finds it).
    PretrainOptions o;
    checkOnEveryRank(*ctx, [&] {
      const TrainConfigFile file = readTrainConfigFile(a.config);
      o.files = data::expandDatasetFiles(a.data);
      o.out = a.out;
      o.model = petConfigFrom(a.preset, file);
      o.max_jets = a.max_jets;
      o.val_fraction = a.val_fraction;
      o.test_fraction = a.test_fraction;
      o.shard_data = a.shard_data;
      o.stream = a.stream;
      o.block_rows = a.block_rows;
      o.eval_jets = a.eval_jets;
      o.stream_options.buffer_jets = a.shuffle_buffer;
      o.stream_options.readers = a.readers;
      o.stream_options.read_ahead = a.read_ahead;
      o.data_label = a.data;
      // The recipe: the command's defaults, the file's "train", the options given.
      TrainOptions& t = o.train;
      t.optimizer.kind = a.optimizer;
      t.optimizer.lr = a.lr;
      t.optimizer.lr_factor = a.lr_factor;
      t.warmup_epochs = a.warmup_epochs;
      t.batch_size = a.batch;
      t.max_epochs = a.epochs;
      t.ema = true;
      applyTrainRecipe(recipeUnlessGiven(file, a.given,
                                         {{"epochs", "epochs"},
                                          {"batch", "batch_size"},
                                          {"lr", "lr"},
                                          {"lr-factor", "lr_factor"},
                                          {"optimizer", "optimizer"},
                                          {"warmup-epochs", "warmup_epochs"}}),
                       file.path, t);
    });
    TrainOptions& t = o.train;
    t.seed = a.seed;
    t.resume = a.resume;
    t.save_every_s = 60 * a.save_every_min;
    t.device = dev.device;
    t.precision = a.precision;
    t.fixed_shapes = a.fixed_shapes;
    t.cuda_graphs = a.cuda_graphs;
    // 4.
    const PretrainResult r = runPretraining(o, *ctx);
    if (ctx->isRoot()) std::printf("%s\n", r.toJson().dump(2).c_str());
  });
}

}  // namespace foldfarm::dist
