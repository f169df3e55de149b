#pragma once
// The fine-tuning pipeline of `foldfarm finetune` (the command line only parses options):
//   1. the options are checked, `init` is found (a checkpoint directory), and an --out that
//      holds an earlier run is refused unless resuming, before anything is read;
//   2. the jets of `train` (refused, naming the file, unless every label is 0 or 1) are split
//      into held-out test rows and the rest (from `fit.seed`);
//   3. a one-logit PET classifier starts from `init` (a checkpoint directory or the output
//      directory of `foldfarm pretrain`: every parameter whose name and shape match) or,
//      with "none", from `model` freshly initialised;
//   4. it trains on the rest (a `fit.val_fraction` split validates it, with early stopping),
//      its state in <out>/state each epoch, and is written to <out>/model;
//   5. it is evaluated on the test rows: accuracy, AUC, background rejection.
// Throws InputError for bad input (nothing written), InterruptedError when stopped (rerun
// with `fit.resume` to continue), Error otherwise.
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model/pet_config.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/device.hpp"
#include "core/train/metrics.hpp"
#include "core/train/trainer.hpp"

namespace foldfarm {

struct FinetuneOptions {
  std::string train;          // jets HDF5 file with 0/1 labels
  std::string out;            // <out>/model, <out>/state
  std::string init = "none";  // checkpoint or pretraining output directory, or "none"
  PetConfig model;            // with init "none" (num_classes and generator are set here)
  double test_fraction = 0.2;
  ClassifierFitOptions fit;  // state_dir and label are set here
};

struct FinetuneResult {
  std::string init;
  // Jets trained on, held out for validation (best epoch, early stop) and for the test.
  int64_t train_jets = 0, val_jets = 0, test_jets = 0;
  BinaryMetrics test;
  std::vector<std::string> warm_start_skipped;  // parameters the checkpoint could not give
  FitResult fit;
  // {"init", "train_jets", "val_jets", "test_jets", "test": {accuracy, auc, rejection_at_eps_s_0.5,
  // rejection_at_eps_s_0.3}, "warm_start_skipped", "fit"}
  nlohmann::json toJson() const;
};

FinetuneResult runFinetuning(const FinetuneOptions& options);

// `foldfarm finetune`'s options as given (the command line parses them).
struct FinetuneRequest {
  std::string init = "none", preset = "tiny", config, train, out, optimizer = "lion";
  double val_fraction = 0.1, test_fraction = 0.2, lr = 3e-4, lr_factor = 5.0;
  double warmup_epochs = 0, save_every_min = 30;
  int64_t epochs = 10, batch = 64, patience = 3;
  int threads = 0;  // 0: all cores
  uint64_t seed = 1;
  bool json = false, resume = false;
  std::string device = "auto", precision = "fp32";
  bool fixed_shapes = false, cuda_graphs = false;
  // The long names (without dashes) of the options given on the command line: those of the
  // recipe win over the config file's "train"; --preset beside --init CKPT is refused.
  std::set<std::string> given;
};

// `foldfarm finetune`: refused under mpirun/srun with more than one rank (fine-tuning is not
// data-parallel: every rank would train the same model into the same --out); threads, stop
// handlers and the device; the config file read (its "model" and --preset refused beside a
// checkpoint) and the recipe resolved as `pretrain`'s; runFinetuning; then the result printed
// (JSON with the device, or one line of test figures). Throws as runFinetuning does.
void finetuneCommand(const FinetuneRequest& request);

}  // namespace foldfarm
