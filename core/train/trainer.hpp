#pragma once
// The PET trainer: epochs over in-memory jets, validation, early stopping with best-weight
// restore, warm-up + cosine schedule, gradient clipping, EMA, periodic state and exact
// resume. Written against ParallelContext (core/train/parallel.hpp) so that data-parallel
// training only swaps the context:
//   1. ctx.prepare(model) once, before the optimiser is created;
//   2. each rank trains on its shard of every epoch (epochBatches: same step count per rank);
//   3. per step: ctx.anyOf(stop requested | periodic save due) (collective), forward, backward,
//      ctx.finishGradientSync() (collective), clip, schedule, optimiser step, EMA;
//   4. per epoch: ctx.allreduceMean on the train loss (collective); every rank evaluates the
//      whole validation set (identical results, no collective needed);
//   5. only rank 0 writes state/checkpoints; ranks meet at ctx.barrier() after a stop save.
// Exact resume: the state holds the model, optimiser state, EMA, best weights, epoch, step
// within the epoch, global step and history; data order is a pure function of (seed,
// epoch), and a step's random draws (feature dropout, diffusion time and noise) of (seed,
// global step, rank). On CPU with the same thread count a stopped and resumed run ends with
// bit-identical parameters, on one rank or several. Resuming on another number of ranks
// (or batch size) keeps the epoch and the fraction of it done, and moves the learning-rate
// schedule to the matching step of the new steps per epoch.
//
// Errors: InterruptedError after saving state when a stop was requested (exit 75);
// InputError when resuming from a state written for another model config or data set.
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/jet_stream.hpp"
#include "core/model/pet.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"
#include "core/train/optim.hpp"
#include "core/train/parallel.hpp"

namespace foldfarm {

struct TrainOptions {
  OptimizerSettings optimizer;
  double warmup_epochs = 0;   // linear warm-up length (epochs, fractional allowed)
  double warmup_scale = 1.0;  // warm-up target = lr * warmup_scale (e.g. sqrt(ranks))
  double clip_norm = 1.0;     // global gradient-norm clip; 0 = off
  bool ema = false;
  double ema_decay = 0.999;
  int64_t batch_size = 256;  // per rank
  int64_t max_epochs = 10;
  int64_t patience = 0;      // early stopping: epochs without validation improvement; 0 = off
  bool restore_best = true;  // end with the weights of the best validation epoch
  // Validate the starting weights before the first epoch and count them as a candidate for
  // the best weights: an epoch is kept only if it beats them (fine-tuning that cannot end
  // worse on validation than where it started; the boosted "pet+mlp" chain steps).
  bool validate_initial = false;
  uint64_t seed = 0;      // data order and training noise (not the initialisation)
  bool bucket = true;     // bucket by multiplicity + drop padding columns (false: padded)
  std::string state_dir;  // training state written each epoch and on stop; "" = none
  // Within an epoch, the state is also written once this many seconds passed since the last
  // write (0: at epoch ends and stops only): a process killed outright (SIGKILL, a lost
  // node) loses at most this much training. The written state is the one a stop writes, so
  // a resume from it is as exact.
  double save_every_s = 0;
  bool resume = false;  // continue from state_dir when it holds a state
  bool show_progress = true;
  std::string label = "train";
  // Sharded data (pretrain --shard-data): `train` and `val` passed to fit() hold only this
  // rank's rows. Each rank shuffles its own rows every epoch and takes as many as the
  // smallest shard holds; validation (and evaluate()) sums losses and counts over ranks.
  // Multi-class and pretraining objectives only (AUC needs every score in one place). A
  // sharded state resumes sharded, on any number of ranks (the rows are dealt anew).
  bool sharded = false;
  // Preemption drills: behave as if a stop was requested once this many steps ran (-1: off).
  int64_t stop_at_step = -1;
  // Where the model, optimiser state, EMA and batches live (core/train/device.hpp). States
  // and checkpoints are written from host copies and load on either device.
  torch::Device device{torch::kCPU};
  // Parameters and gradients in one buffer each; Lion/AdamW/EMA as a few operations over
  // them (core/train/flat_params.hpp). Bit-identical to the per-parameter form.
  bool flat = true;
  // Fixed batch shapes: every training batch is padded to batch_size rows (weight 0, no
  // particles) and its width to the next bucket edge (fixedBatchWidth), so that a GPU sees
  // a few shapes only. The loss and gradients equal those of the unpadded batch.
  bool fixed_shapes = false;
  // "fp32", or "bf16": the forward pass and the loss under bfloat16 autocast on CUDA, with
  // float32 master weights, gradients and optimiser state (LibTorch 2.x).
  std::string precision = "fp32";
  // Steps between reads of the running loss (a device-to-host copy on a GPU).
  int64_t log_every = 50;
  // Capture each batch shape's forward + backward in a CUDA graph and replay it
  // (core/train/gradient_step.hpp): a GPU, one rank; implies fixed_shapes.
  bool cuda_graphs = false;
  // Random draws of training steps on the CPU generator even on a GPU (the CPU run's noise;
  // tests). Default: on the device.
  bool host_draws = false;
  // A helper thread gathers (and on a GPU pins) the next batch while the step runs. kAuto:
  // on a GPU whose batches come from the host (on a CPU the step's kernels use every core);
  // kOn, kOff: always, never. A stream's batches are drawn in order, never by the helper.
  enum class Prefetch { kAuto, kOn, kOff };
  Prefetch prefetch = Prefetch::kAuto;
  // On a GPU, fit() moves the training and validation sets to the device once when together
  // they take at most this many MiB: batches are then gathered there, with no host gather,
  // pinning or copy per step. 0: never (batches gathered on the host by a helper thread).
  int64_t resident_data_mb = 4096;
  // The options that chose the training rows, as the user types them (e.g. {"--seed": 1,
  // "--val-fraction": 0.1}). Kept in the state: a resume on other data names the first
  // option that differs instead of only saying that the data differ.
  nlohmann::json data_options = nlohmann::json::object();
  // Options a resume must repeat, as the user types them (e.g. finetune's {"--init": DIR}):
  // kept in the state; a resume with another value is refused naming the option.
  nlohmann::json resume_options = nlohmann::json::object();
};

// Throws InputError (naming opts.label) for a value no training can use: lr, lr_factor or
// the warm-up scale not positive, a negative weight decay, warm-up, clip norm, patience or
// epoch count or save interval, betas or EMA decay outside [0, 1), a batch size below 1, NaN
// anywhere.
// The Trainer calls it first.
void validateTrainOptions(const TrainOptions& opts);

struct EpochRecord {
  int64_t epoch = 0;
  double train_loss = 0;
  double val_loss = 0;  // NaN without a validation set
  double lr = 0;        // head learning rate at the end of the epoch
  double seconds = 0;
  nlohmann::json metrics;  // validation metrics (accuracy, auc, ...)
};

// After each epoch: a loss that is not finite means the run diverged (too high a learning
// rate or weight decay, no gradient clipping): Error naming `label`, the epoch and what to
// change, instead of a model of NaN weights written as a result. `validated`: val_loss is
// the epoch's validation loss (else it is NaN by design and not checked).
void requireFiniteEpoch(const std::string& label, const EpochRecord& rec, bool validated);

struct FitResult {
  std::vector<EpochRecord> history;
  int64_t best_epoch = -1;  // -1: no epoch beat the starting weights (or no validation)
  double best_val_loss = 0;
  double initial_val_loss = std::numeric_limits<double>::quiet_NaN();  // validate_initial
  bool early_stopped = false;
  int64_t steps = 0;
  bool resumed = false;
  // The builds that ran earlier parts of a resumed fit, when not this one (their states'
  // "build"), oldest first: meta.json's "build" names only the build that wrote the model.
  std::vector<nlohmann::json> earlier_builds;
};

nlohmann::json toJson(const FitResult& r);
// "best epoch 3 val loss 0.41234"; "no epoch beat the starting weights (val loss 0.40001): they
// are kept"; "no validation: the last epoch is kept".
std::string bestEpochText(const FitResult& r);

struct EvalResult {
  double loss = 0;
  nlohmann::json metrics;
  torch::Tensor probabilities;  // (N) for one logit, (N, C) otherwise; rows of the set
};

class Trainer {
 public:
  // `meta` describes the model for the states it writes (config, statistics, class names).
  Trainer(Pet model, CheckpointMeta meta, TrainOptions opts, ParallelContext& ctx);
  ~Trainer();

  FitResult fit(const JetTensors& train, const JetTensors* val, Objective objective);
  // The same over a stream (pretrain --stream): each rank draws its own part of every
  // epoch from `stream` (core/data/jet_stream.hpp); `val` is held whole by every rank. The
  // state records the stream's position, so a resume continues the epoch exactly, on any
  // number of ranks. `data_fingerprint` identifies the streamed files.
  FitResult fitStream(data::JetStream& stream, const JetTensors* val, Objective objective,
                      const std::string& data_fingerprint);
  EvalResult evaluate(const JetTensors& set, Objective objective);

  Pet& model() { return model_; }
  Ema* ema() { return ema_.get(); }
  // Tensors of a final model checkpoint: "model." (+ "ema." when EMA is on).
  std::map<std::string, torch::Tensor> modelTensors();

 private:
  // Where a fit's batches come from: an in-memory set or a stream.
  struct BatchSource {
    std::string fingerprint;
    std::string values;           // of in-memory data when a state is kept ("": not recorded)
    int64_t steps_per_epoch = 0;  // of a fresh epoch (the schedule's unit)
    bool exact = false;           // resume through `position`, not by the fraction of an epoch
    bool on_device = false;       // batches come on the training device (no pinning, no helper)
    int64_t slots = 0;            // the data's particle slots (fixed shapes' widest; 0: unknown)
    // Starts an epoch; with `position` (the resumed state's, for its epoch) sets `step` to
    // the steps already taken. Returns the epoch's steps (taken ones included).
    std::function<int64_t(int64_t epoch, const nlohmann::json* position, int64_t& step)>
        begin_epoch;
    std::function<JetBatch(int64_t step)> batch;
    std::function<nlohmann::json()> position;  // unset: none recorded
  };
  // The run of fit and fitStream over a BatchSource: resume, epochs of steps, validation,
  // early stopping, the state saved (trainer.cpp).
  class FitLoop;
  // opt_ (over `flat` when given, else per parameter) and ema_.
  void makeOptimizer(std::shared_ptr<FlatParameters> flat);
  void saveState(const nlohmann::json& training);
  bool loadState(nlohmann::json& training, const std::string& fingerprint,
                 const std::string& values);
  // The options a resumed training must keep ("--lr": 3e-5, …): its learning rates and
  // optimiser (--epochs may change, with a warning).
  nlohmann::json scheduleOptions() const;

  Pet model_;
  CheckpointMeta meta_;
  TrainOptions opts_;
  ParallelContext& ctx_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::unique_ptr<Ema> ema_;
  std::vector<torch::Tensor> best_;
};

// Predictions of `model` (eval mode) for every row of `set`: P(class 1) (N) for one logit
// (with set.offset added to the logit when defined), softmax (N, C) otherwise.
torch::Tensor predictProbabilities(Pet& model, const JetTensors& set, int64_t batch_size,
                                   bool bucket = true);

}  // namespace foldfarm
