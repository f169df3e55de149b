#pragma once
// A classifier-only PET with one logit, as OmniFold steps use it:
//
//   PetClassifier clf(petPreset("tiny"), /*init_seed=*/seed);        // (a) build
//   WarmStartReport rep = clf.warmStart("foundation/");               // (b) warm start
//   ClassifierFitOptions o; o.lr = 3e-5; o.lr_factor = 5; o.patience = 3;
//   o.state_dir = "task/state"; o.resume = true;                      // interruption/resume
//   FitResult fit = clf.fit(train, /*val=*/nullptr, o);               // (c) fit (10% split)
//   std::vector<float> f = clf.predict(events);                       // (d) P(label 1 | x)
//
// Data are raw (unstandardised) JetArrays (core/data/jet_arrays.hpp): particles (N,P,13),
// jets (N,4), labels (N) 0/1, weights (N) per-event weights (empty = 1). The mask comes from
// the raw feature 2; features are standardised with stats() (JetClass statistics unless
// setStats() is called; they are stored in saved checkpoints).
//
// Loss: mean over the batch of w_i * BCE(y_i, logit_i) (weighted, Keras convention).
// Optimiser: Lion (default) or AdamW; body at lr / lr_factor with weight decay * lr_factor,
// head at lr; optional linear warm-up then cosine decay to 0 over max_epochs.
// Early stopping: after `patience` epochs without a lower validation loss training stops and
// the best epoch's weights are restored.
// Interruption: when stopRequested() (core/base/stop_signal.hpp) turns true, fit() saves its
// state to options.state_dir and throws InterruptedError (exit code 75); calling fit() again
// with the same data, options and resume = true continues exactly where it stopped and ends
// with the same parameters as an uninterrupted run (CPU, same threads).
//
// Thread-safety: one PetClassifier per thread. Errors: InputError for bad data/options and
// unusable checkpoints (one line naming the path and what to do).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/data/features.hpp"
#include "core/data/jet_arrays.hpp"
#include "core/model/pet.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/parallel.hpp"
#include "core/train/trainer.hpp"

namespace foldfarm {

struct ClassifierFitOptions {
  std::string optimizer = "lion";  // "lion" or "adamw"
  double lr = 3e-5;
  double lr_factor = 5.0;  // body learns at lr / lr_factor (OmniLearn's unfolding: 5)
  double weight_decay = 1e-5;
  double warmup_epochs = 0;
  double clip_norm = 1.0;  // 0 = off
  int64_t batch_size = 512;
  int64_t max_epochs = 20;
  int64_t patience = 3;       // 0 = no early stopping
  double val_fraction = 0.1;  // used when fit() gets no explicit validation set
  uint64_t seed = 0;          // data order, validation split, feature dropout
  std::string state_dir;      // where to save state on stop/each epoch ("" = nowhere)
  double save_every_s = 0;    // and within an epoch this often (TrainOptions; 0: never)
  bool resume = false;        // continue from state_dir when it holds a state
  bool show_progress = false;
  std::string label = "classifier";
  int64_t stop_at_step = -1;      // preemption drill: act as if stopped after this many steps
  bool validate_initial = false;  // the starting weights compete for the best epoch (trainer.hpp)
  // Device, flat buffers, fixed batch shapes and precision: TrainOptions (trainer.hpp).
  torch::Device device{torch::kCPU};
  bool flat = true;
  bool fixed_shapes = false;
  std::string precision = "fp32";
  bool cuda_graphs = false;
  nlohmann::json data_options = nlohmann::json::object();    // TrainOptions::data_options
  nlohmann::json resume_options = nlohmann::json::object();  // TrainOptions::resume_options
};

// The Trainer's options of a fit on `ranks` data-parallel ranks: o.batch_size is per rank, and
// the learning rate's warm-up target scales with sqrt(ranks), as pretraining's (and OmniLearn's;
// before: a chain's steps under mpirun trained a global batch `ranks` times larger at the
// one-rank rate). checkFitOptions refuses (InputError naming o.label) what no fit can use,
// with the Trainer's own check (validateTrainOptions) and at least 1 epoch: callers check
// before they read their data; fit() checks again.
TrainOptions fitTrainOptions(const ClassifierFitOptions& o, int ranks = 1);
void checkFitOptions(const ClassifierFitOptions& o);
// InputError("<what>: ...") unless `a` has jets, each with a label 0 or 1 (what fit() takes).
void requireBinary(const data::JetArrays& a, const std::string& what);

class PetClassifier {
 public:
  // Forces cfg.num_classes = 1 and cfg.generator = false; initialises from init_seed.
  PetClassifier(PetConfig cfg, uint64_t init_seed,
                data::FeatureStats stats = data::FeatureStats::jetClass());
  // Loads a checkpoint written by save() (checksums and shapes verified).
  static PetClassifier load(const std::string& dir);

  // Copies every parameter whose name and shape match from the checkpoint's "model."
  // tensors; reports the skipped ones (e.g. a 10-class output layer). Throws InputError if
  // the checkpoint is unreadable or corrupt.
  WarmStartReport warmStart(const std::string& checkpoint_dir);

  // Trains on `train`; validates on `val`, or on a val_fraction split of `train` when null.
  // Logit offsets (empty: none; else one per row of train / val): the model learns the
  // correction to a fixed per-jet logit (boosting on another classifier's output).
  FitResult fit(const data::JetArrays& train, const data::JetArrays* val,
                const ClassifierFitOptions& options, ParallelContext* ctx = nullptr,
                const std::vector<float>& train_offset = {},
                const std::vector<float>& val_offset = {});
  // P(label 1 | x) for every jet, in row order (eval mode, no dropout); with offsets (one per
  // row) the probability is sigmoid(offset + logit).
  std::vector<float> predict(const data::JetArrays& set, int64_t batch_size = 1024,
                             const std::vector<float>& offset = {});
  // The same on jets already standardised with this classifier's statistics (on any device;
  // a set on the training GPU is batched there): labels 0/1 as labelledSet makes them.
  FitResult fitStandardised(JetTensors train, const JetTensors* val,
                            const ClassifierFitOptions& options, ParallelContext* ctx = nullptr,
                            const std::vector<float>& train_offset = {},
                            const std::vector<float>& val_offset = {});
  std::vector<float> predictStandardised(JetTensors set, int64_t batch_size = 1024,
                                         const std::vector<float>& offset = {});
  // Zeroes the output layer: the classifier's logit is 0 for every jet until it trains (with
  // offsets: it starts exactly at the offset model).
  void zeroOutputLayer();

  // Writes a checkpoint directory (model, config, feature statistics); atomic.
  void save(const std::string& dir) const;

  Pet& model() { return model_; }
  const PetConfig& config() const { return model_->config(); }
  const data::FeatureStats& stats() const { return stats_; }
  void setStats(const data::FeatureStats& s) { stats_ = s; }

 private:
  Pet model_;
  data::FeatureStats stats_;
};

}  // namespace foldfarm
