#include "core/train/classifier_trainer.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"

namespace foldfarm {

namespace {

PetConfig classifierOnly(PetConfig cfg) {
  cfg.num_classes = 1;
  cfg.generator = false;
  return cfg;
}

}  // namespace

void requireBinary(const data::JetArrays& a, const std::string& what) {
  if (a.n == 0) throw InputError(what + ": no jets");
  if (a.labels.size() != static_cast<size_t>(a.n))
    throw InputError(what + ": labels are required (one 0/1 label per jet)");
  for (size_t i = 0; i < a.labels.size(); ++i)
    if (a.labels[i] != 0 && a.labels[i] != 1)
      throw InputError(what + ": labels must be 0 or 1 for a one-logit classifier (jet " +
                       std::to_string(i) + " of those read has label " +
                       std::to_string(a.labels[i]) + ")");
}

PetClassifier::PetClassifier(PetConfig cfg, uint64_t init_seed, data::FeatureStats stats)
    : model_(classifierOnly(std::move(cfg))), stats_(stats) {
  model_->resetParameters(init_seed);
}

PetClassifier PetClassifier::load(const std::string& dir) {
  const Checkpoint ck = readCheckpoint(dir);
  if (ck.meta.config.num_classes != 1 || ck.meta.config.generator)
    throw InputError(dir +
                     ": not a one-logit classifier checkpoint; use warmStart() to start "
                     "a classifier from it");
  PetClassifier c(ck.meta.config, 0, ck.meta.stats);
  loadModelTensors(c.model_, ck.tensors, "model.", dir);
  return c;
}

WarmStartReport PetClassifier::warmStart(const std::string& checkpoint_dir) {
  return foldfarm::warmStart(model_, readCheckpoint(checkpoint_dir));
}

FitResult PetClassifier::fit(const data::JetArrays& train, const data::JetArrays* val,
                             const ClassifierFitOptions& o, ParallelContext* ctx,
                             const std::vector<float>& train_offset,
                             const std::vector<float>& val_offset) {
  requireBinary(train, o.label + " training set");
  if (val) requireBinary(*val, o.label + " validation set");
  JetTensors all = JetTensors::fromArrays(train, stats_);
  JetTensors va;
  if (val) va = JetTensors::fromArrays(*val, stats_);
  return fitStandardised(std::move(all), val ? &va : nullptr, o, ctx, train_offset, val_offset);
}

TrainOptions fitTrainOptions(const ClassifierFitOptions& o, int ranks) {
  TrainOptions t;
  t.warmup_scale = std::sqrt(static_cast<double>(std::max(1, ranks)));
  t.optimizer.kind = o.optimizer;
  t.optimizer.lr = o.lr;
  t.optimizer.lr_factor = o.lr_factor;
  t.optimizer.weight_decay = o.weight_decay;
  t.warmup_epochs = o.warmup_epochs;
  t.clip_norm = o.clip_norm;
  t.batch_size = o.batch_size;
  t.max_epochs = o.max_epochs;
  t.patience = o.patience;
  t.seed = o.seed;
  t.state_dir = o.state_dir;
  t.save_every_s = o.save_every_s;
  t.resume = o.resume;
  t.show_progress = o.show_progress;
  t.label = o.label;
  t.stop_at_step = o.stop_at_step;
  t.validate_initial = o.validate_initial;
  t.device = o.device;
  t.flat = o.flat;
  t.fixed_shapes = o.fixed_shapes;
  t.precision = o.precision;
  t.data_options = o.data_options;
  t.resume_options = o.resume_options;
  t.cuda_graphs = o.cuda_graphs;
  return t;
}

void checkFitOptions(const ClassifierFitOptions& o) {
  validateTrainOptions(fitTrainOptions(o));  // the Trainer's own check
  if (o.max_epochs < 1) throw InputError(o.label + ": max epochs must be >= 1");
}

FitResult PetClassifier::fitStandardised(JetTensors all, const JetTensors* val,
                                         const ClassifierFitOptions& o, ParallelContext* ctx,
                                         const std::vector<float>& train_offset,
                                         const std::vector<float>& val_offset) {
  if (all.size() == 0) throw InputError(o.label + " training set: no jets");
  checkFitOptions(o);  // before the split
  const TrainOptions t = fitTrainOptions(o, ctx ? ctx->worldSize() : 1);
  if (!train_offset.empty()) all.setOffset(train_offset);
  JetTensors tr, va;
  if (val) {
    tr = std::move(all);
    va = *val;
    if (!val_offset.empty()) va.setOffset(val_offset);
    if (tr.offset.defined() != va.offset.defined())
      throw InputError(o.label +
                       ": logit offsets are needed for both the training and the "
                       "validation set, or for neither");
  } else if (o.val_fraction > 0) {
    auto [in, out] = splitRows(all.size(), o.val_fraction, o.seed);
    if (in.empty() || out.empty())
      throw InputError(fmt::format(
          "{}: {} jets are too few to hold out a validation fraction of {} (it would leave no "
          "training or no validation jet); use more jets",
          o.label, all.size(), o.val_fraction));
    tr = all.subset(in);
    va = all.subset(out);
  } else {
    tr = std::move(all);
  }
  // Both classes among the jets trained on (a few jets of one class can all land in the
  // validation set: the model trained on one class without a word).
  if (tr.labels.defined() && tr.size() > 0) {
    const auto ones = static_cast<int64_t>(tr.labels.to(torch::kFloat64).sum().item<double>());
    if (ones == 0 || ones == tr.size())
      throw InputError(fmt::format(
          "{}: the {} jets trained on (after {} held out for validation) are all of class {}; "
          "a classifier needs both classes: use more jets of class {}",
          o.label, tr.size(), va.size(), ones == 0 ? 0 : 1, ones == 0 ? 1 : 0));
  }
  CheckpointMeta meta;
  meta.stats = stats_;
  meta.class_names = {"0", "1"};
  SingleProcessContext single;
  Trainer trainer(model_, meta, t, ctx ? *ctx : single);
  return trainer.fit(tr, va.size() > 0 ? &va : nullptr, Objective::kClassifier);
}

std::vector<float> PetClassifier::predict(const data::JetArrays& set, int64_t batch_size,
                                          const std::vector<float>& offset) {
  return predictStandardised(JetTensors::fromArrays(set, stats_), batch_size, offset);
}

std::vector<float> PetClassifier::predictStandardised(JetTensors t, int64_t batch_size,
                                                      const std::vector<float>& offset) {
  if (!offset.empty()) t.setOffset(offset);
  const torch::Tensor p = predictProbabilities(model_, t, batch_size).contiguous();
  return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
}

void PetClassifier::zeroOutputLayer() {
  torch::NoGradGuard no_grad;
  for (auto& item : model_->named_parameters())
    if (item.key().rfind("classifier.logits.", 0) == 0) item.value().zero_();
}

void PetClassifier::save(const std::string& dir) const {
  CheckpointMeta meta;
  meta.config = model_->config();
  meta.stats = stats_;
  meta.class_names = {"0", "1"};
  std::map<std::string, torch::Tensor> t;
  Pet m = model_;
  addModelTensors(m, "model.", t);
  writeCheckpoint(dir, meta, t);
}

}  // namespace foldfarm
