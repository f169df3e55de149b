#pragma once
// The pretraining pipeline of `foldfarm pretrain` (the command line only parses options and
// makes the ParallelContext):
//   1. the jets of `files` are split into test rows, then validation and training rows out
//      of the rest — the same split on every rank (from `train.seed`);
//   2. every rank reads them all, or with `shard_data` only its 1/W of each part
//      (entries r, r + W, … of each part), so that memory per rank falls with the ranks;
//   3. the number of classes comes from the labels (agreed over ranks when sharded);
//   4. PET with the generator head is trained with the multi-objective loss (classification
//      + diffusion + classification of noised jets), data-parallel over `ctx`;
//   (with `stream`, steps 1–3 become: whole blocks are held out for validation and test,
//   the rest is streamed, every rank its own part of each epoch; the generator's per-class
//   conditioning is estimated on the validation jets)
//   5. the test jets are evaluated; the root rank writes <out>/model (checkpoint with the
//      per-class jet conditioning of the generator) and every rank waits for it.
// Throws InputError for bad input (nothing written), InterruptedError when stopped (the
// training state under <out>/state resumes it), Error otherwise.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model/pet_config.hpp"
#include "core/train/parallel.hpp"
#include "core/train/trainer.hpp"

namespace foldfarm {

struct PretrainOptions {
  std::vector<std::string> files;  // jets-layout HDF5 files, read as one sequence
  std::string out;                 // <out>/model, <out>/state
  PetConfig model;                 // num_classes and generator are set from the data
  TrainOptions train;              // state_dir, label, sharded and warm-up scale are set here
  int64_t max_jets = 0;            // 0: all
  double val_fraction = 0.1, test_fraction = 0.1;
  bool shard_data = false;
  // Stream the training jets (core/data/jet_stream.hpp) instead of holding them: memory is
  // set by the shuffle buffer and the read-ahead. Validation and test are whole blocks held
  // out (about the fractions), of which at most `eval_jets` each are read into memory.
  bool stream = false;
  data::JetStreamOptions stream_options;  // batch_size and seed come from `train`
  int64_t block_rows = 1024;
  int64_t eval_jets = 10000;
  std::string data_label;  // recorded as meta.training.data (the files as given)
};

struct PretrainResult {
  std::string model_dir;
  int64_t train_jets = 0, val_jets = 0, test_jets = 0;  // over all ranks
  FitResult fit;
  EvalResult test;
  double peak_rss_mb = 0;  // of this process (rank 0 in the printed result)
  // {"out", "train_jets", "val_jets", "test_jets", "test_accuracy", "test_loss",
  // "peak_rss_MB", "fit"};
  // the test figures are null without test jets.
  nlohmann::json toJson() const;
};

PretrainResult runPretraining(const PretrainOptions& options, ParallelContext& ctx);

// Per class: mean and standard deviation of the standardised jet features of `t` (the
// generator's conditioning). Sharded: sums over every rank's shard (collective).
nlohmann::json jetConditioning(const JetTensors& t, int64_t classes, ParallelContext* sharded);

}  // namespace foldfarm
