#include "core/train/observable_classifier.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/model/pet_config.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"
#include "core/train/optim.hpp"

namespace foldfarm {

using torch::Tensor;

namespace {

constexpr const char* kKind = "observable_mlp";
constexpr uint64_t kPurposeOrder = 0x6d6c706fULL;  // "mlpo": data order of an epoch

}  // namespace

struct ObservableClassifier::Net {
  torch::nn::Sequential seq;
};

void validateMlpShape(const std::vector<int64_t>& hidden, int64_t inputs, const std::string& who) {
  if (hidden.empty()) throw InputError(who + ": needs at least one hidden layer");
  double parameters = 0;
  double in = static_cast<double>(inputs);
  for (int64_t h : hidden) {
    if (h < 1) throw InputError(who + ": hidden layer widths must be >= 1");
    parameters += (in + 1) * static_cast<double>(h);
    in = static_cast<double>(h);
  }
  parameters += in + 1;
  if (parameters > kMaxModelParameters) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", parameters);
    throw InputError(who + ": hidden layers of " + text +
                     " parameters, more than the 2^31 foldfarm trains; check the widths");
  }
}

ObservableClassifier::ObservableClassifier(std::vector<std::string> columns,
                                           std::vector<int64_t> hidden, uint64_t init_seed,
                                           torch::Device device)
    : columns_(std::move(columns)),
      hidden_(std::move(hidden)),
      device_(device),
      net_(std::make_unique<Net>()) {
  if (columns_.empty()) throw InputError("observable MLP: needs at least one input column");
  validateMlpShape(hidden_, static_cast<int64_t>(columns_.size()), "observable MLP");
  int64_t in = static_cast<int64_t>(columns_.size());
  for (int64_t h : hidden_) {
    net_->seq->push_back(torch::nn::Linear(in, h));
    net_->seq->push_back(torch::nn::Functional(torch::gelu, "none"));
    in = h;
  }
  net_->seq->push_back(torch::nn::Linear(in, 1));
  // Glorot-uniform kernels and zero biases from the seed alone (not the global generator),
  // drawn on the host: the same network on every device.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(init_seed);
  torch::NoGradGuard no_grad;
  for (auto& item : net_->seq->named_parameters()) {
    Tensor& p = item.value();
    if (p.dim() == 2) {
      const double limit = std::sqrt(6.0 / static_cast<double>(p.size(0) + p.size(1)));
      p.copy_(torch::empty(p.sizes(), torch::kFloat32).uniform_(-limit, limit, gen));
    } else {
      p.zero_();
    }
  }
  net_->seq->to(device_);  // nothing to move on the CPU
}

ObservableClassifier::~ObservableClassifier() = default;
ObservableClassifier::ObservableClassifier(ObservableClassifier&&) noexcept = default;
ObservableClassifier& ObservableClassifier::operator=(ObservableClassifier&&) noexcept = default;

int64_t ObservableClassifier::parameterCount() const {
  int64_t n = 0;
  for (const auto& p : net_->seq->parameters()) n += p.numel();
  return n;
}

FitResult ObservableClassifier::fit(const std::vector<float>& x, const std::vector<int64_t>& labels,
                                    const std::vector<float>& weights, const MlpFitOptions& o) {
  const auto k = static_cast<int64_t>(columns_.size());
  const auto n = static_cast<int64_t>(labels.size());
  if (n == 0) throw InputError(o.label + ": no training rows");
  if (static_cast<int64_t>(x.size()) != n * k)
    throw InputError(o.label + ": " + std::to_string(x.size()) + " input values for " +
                     std::to_string(n) + " rows of " + std::to_string(k) + " columns");
  if (!weights.empty() && static_cast<int64_t>(weights.size()) != n)
    throw InputError(o.label + ": " + std::to_string(weights.size()) + " weights for " +
                     std::to_string(n) + " rows");
  for (int64_t y : labels)
    if (y != 0 && y != 1) throw InputError(o.label + ": labels must be 0 or 1");
  if (o.epochs < 1 || o.batch_size < 1 || o.patience < 0)
    throw InputError(o.label + ": epochs and batch_size must be positive, patience >= 0");
  if (const std::string bad = learningRateProblem(o.lr, 1.0); !bad.empty())
    throw InputError(o.label + ": " + bad);
  if (const std::string bad = weightDecayProblem(o.weight_decay, o.lr); !bad.empty())
    throw InputError(o.label + ": " + bad);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < k; ++c)
      if (!std::isfinite(x[static_cast<size_t>(i * k + c)]))
        throw InputError(o.label + ": column '" + columns_[static_cast<size_t>(c)] + "' of row " +
                         std::to_string(i) + " is not finite; clean the input observables");
  if (mean_.empty()) {
    mean_.assign(static_cast<size_t>(k), 0.0f);
    std_.assign(static_cast<size_t>(k), 1.0f);
    for (int64_t c = 0; c < k; ++c) {
      double s = 0, s2 = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[static_cast<size_t>(i * k + c)];
        s += v;
        s2 += v * v;
      }
      const double m = s / static_cast<double>(n);
      const double var = std::max(0.0, s2 / static_cast<double>(n) - m * m);
      mean_[static_cast<size_t>(c)] = static_cast<float>(m);
      std_[static_cast<size_t>(c)] = var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f;
    }
  }
  // Inputs, labels and weights copied to the device once; standardised there.
  const Tensor X = standardised(x, n);
  const Tensor Y = torch::tensor(labels, torch::kInt64).to(device_);
  const Tensor W = weights.empty()
                       ? torch::ones({n}, torch::TensorOptions(torch::kFloat32).device(device_))
                       : torch::from_blob(const_cast<float*>(weights.data()), {n}, torch::kFloat32)
                             .to(device_, /*non_blocking=*/false, /*copy=*/true);
  auto [train_rows, val_rows] =
      o.val_fraction > 0 ? splitRows(n, o.val_fraction, o.seed)
                         : std::make_pair(std::vector<int64_t>(), std::vector<int64_t>());
  if (o.val_fraction <= 0) {
    train_rows.resize(static_cast<size_t>(n));
    std::iota(train_rows.begin(), train_rows.end(), 0);
  }
  if (train_rows.empty() || (o.val_fraction > 0 && val_rows.empty()))
    throw InputError(fmt::format(
        "{}: {} events are too few to hold out a validation fraction of {} (it would leave no "
        "training or no validation event); use more events",
        o.label, n, o.val_fraction));
  // Both classes among the rows trained on, as PetClassifier::fit asks (a few rows of one class
  // can all land in the validation set: the model would learn one class without a word).
  {
    size_t ones = 0;
    for (int64_t i : train_rows) ones += labels[static_cast<size_t>(i)] == 1 ? 1 : 0;
    if (ones == 0 || ones == train_rows.size())
      throw InputError(fmt::format(
          "{}: the {} events trained on (after {} held out for validation) are all of class {}; "
          "a classifier needs both classes: use more events of class {}",
          o.label, train_rows.size(), val_rows.size(), ones == 0 ? 0 : 1, ones == 0 ? 1 : 0));
  }
  const Tensor vi = torch::tensor(val_rows, torch::kInt64).to(device_);
  const Tensor Xv = val_rows.empty() ? Tensor() : X.index_select(0, vi);
  const Tensor Yv = val_rows.empty() ? Tensor() : Y.index_select(0, vi);
  const Tensor Wv = val_rows.empty() ? Tensor() : W.index_select(0, vi);

  auto& seq = net_->seq;
  // LibTorch's AdamW, element for element, over one flat buffer of the parameters and one of
  // their gradients (flat_params.hpp): a handful of operations per step instead of a loop
  // over the parameter tensors, the same results.
  const auto flat = std::make_shared<FlatParameters>(seq->parameters());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(seq->parameters(),
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  FlatOptimizer opt(flat, std::move(groups), FlatOptimizer::Kind::kAdamW);
  FitResult result;
  Tensor best;  // the best epoch's parameters (a copy of the flat buffer)
  int64_t bad = 0;
  const auto rows = static_cast<int64_t>(train_rows.size());
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    // The epoch's row order, drawn on the host (the same on every device), copied once;
    // each batch is a slice of it.
    std::vector<int64_t> order = train_rows;
    std::mt19937_64 g(deriveSeed({o.seed, kPurposeOrder, static_cast<uint64_t>(epoch)}));
    std::shuffle(order.begin(), order.end(), g);
    const Tensor perm = rowIndex(order, device_);
    seq->train();
    // The summed batch losses stay on the device (in double: the sum of the per-step values
    // a host loop would add) and are read once, at the end of the epoch.
    Tensor loss_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device_));
    int64_t steps = 0;
    for (int64_t b = 0; b < rows; b += o.batch_size) {
      // A stop (a time limit's warning, a scancel, Ctrl-C) ends the fit at the next batch
      // (before: the fit ran all its epochs first, past a Slurm job's grace). The fit keeps
      // no state: its caller's saved state is from before it, and it is fitted again, to the
      // same weights, on resume.
      if (stopRequested())
        throw InterruptedError(
            fmt::format("{}: stopped at epoch {} (signal {}); this fit runs "
                        "again from its start on resume",
                        o.label, epoch, stopSignal()));
      const Tensor idx = perm.narrow(0, b, std::min(o.batch_size, rows - b));
      zeroGradients(opt);
      const Tensor loss = weightedClassifierLoss(seq->forward(X.index_select(0, idx)),
                                                 Y.index_select(0, idx), W.index_select(0, idx));
      loss.backward();
      opt.step();
      loss_sum.add_(loss.detach().to(torch::kFloat64));
      ++steps;
      ++result.steps;
    }
    EpochRecord rec;
    rec.epoch = epoch;
    rec.train_loss = loss_sum.item<double>() / static_cast<double>(std::max<int64_t>(1, steps));
    rec.lr = o.lr;
    rec.val_loss = std::numeric_limits<double>::quiet_NaN();
    if (Xv.defined()) {
      torch::NoGradGuard no_grad;
      seq->eval();
      rec.val_loss = weightedClassifierLoss(seq->forward(Xv), Yv, Wv).item<double>();
      if (result.best_epoch < 0 || rec.val_loss < result.best_val_loss) {
        result.best_epoch = epoch;
        result.best_val_loss = rec.val_loss;
        best = flat->values().clone();
        bad = 0;
      } else {
        ++bad;
      }
    }
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    requireFiniteEpoch(o.label, rec, Xv.defined());
    result.history.push_back(rec);
    if (o.patience > 0 && bad >= o.patience) {
      result.early_stopped = true;
      break;
    }
  }
  if (best.defined()) {
    torch::NoGradGuard no_grad;
    flat->values().copy_(best);
  }
  seq->eval();
  logInfo("{}: {} epochs, {}", o.label, result.history.size(), bestEpochText(result));
  return result;
}

std::vector<float> ObservableClassifier::logits(const std::vector<float>& x) const {
  const auto k = static_cast<int64_t>(columns_.size());
  if (mean_.empty()) throw Error("observable MLP: logits() before fit() or load()");
  if (x.size() % static_cast<size_t>(k) != 0)
    throw InputError("observable MLP: input size " + std::to_string(x.size()) +
                     " is not a multiple of " + std::to_string(k) + " columns");
  const auto n = static_cast<int64_t>(x.size()) / k;
  torch::NoGradGuard no_grad;
  net_->seq->eval();
  const Tensor out =
      net_->seq->forward(standardised(x, n)).reshape({n}).to(torch::kCPU).contiguous();
  return std::vector<float>(out.data_ptr<float>(), out.data_ptr<float>() + n);
}

Tensor ObservableClassifier::standardised(const std::vector<float>& x, int64_t n) const {
  const auto k = static_cast<int64_t>(columns_.size());
  const Tensor host = torch::from_blob(const_cast<float*>(x.data()), {n, k}, torch::kFloat32);
  // to() returns the tensor itself when it is already there (the CPU): no copy.
  return (host.to(device_) - torch::tensor(mean_).to(device_)) / torch::tensor(std_).to(device_);
}

void ObservableClassifier::save(const std::string& dir) const {
  CheckpointMeta meta;
  meta.class_names = {"0", "1"};
  meta.extra = {
      {"kind", kKind}, {"columns", columns_}, {"hidden", hidden_}, {"mean", mean_}, {"std", std_}};
  std::map<std::string, Tensor> t;
  for (const auto& item : net_->seq->named_parameters())
    t["mlp." + item.key()] = item.value().detach().clone();
  writeCheckpoint(dir, meta, t);
}

ObservableClassifier ObservableClassifier::load(const std::string& dir,
                                                const std::vector<std::string>& expect_columns,
                                                torch::Device device) {
  const Checkpoint ck = readCheckpoint(dir);
  const nlohmann::json& e = ck.meta.extra;
  if (!e.is_object() || e.value("kind", "") != kKind)
    throw InputError(dir + ": not an observable-MLP checkpoint (meta.json extra.kind != '" +
                     std::string(kKind) + "')");
  std::vector<std::string> columns;
  std::vector<int64_t> hidden;
  std::vector<float> mean, sd;
  try {
    columns = e.at("columns").get<std::vector<std::string>>();
    hidden = e.at("hidden").get<std::vector<int64_t>>();
    mean = e.at("mean").get<std::vector<float>>();
    sd = e.at("std").get<std::vector<float>>();
  } catch (const nlohmann::json::exception& ex) {
    throw InputError(dir + "/meta.json: malformed observable-MLP metadata (" + jsonErrorReason(ex) +
                     "); retrain");
  }
  if (!expect_columns.empty() && columns != expect_columns)
    throw InputError(dir +
                     ": observable MLP was trained on other input columns; use the same "
                     "'observables' or a new output directory");
  if (mean.size() != columns.size() || sd.size() != columns.size())
    throw InputError(dir + "/meta.json: statistics do not match the " +
                     std::to_string(columns.size()) + " columns");
  ObservableClassifier c(columns, hidden, 0, device);
  c.mean_ = mean;
  c.std_ = sd;
  torch::NoGradGuard no_grad;
  for (auto& item : c.net_->seq->named_parameters()) {
    const auto it = ck.tensors.find("mlp." + item.key());
    if (it == ck.tensors.end() || !it->second.sizes().equals(item.value().sizes()))
      throw InputError(dir + ": tensor mlp." + item.key() + " is missing or has another shape");
    item.value().copy_(it->second);  // host to device when the network is on a GPU
  }
  return c;
}

}  // namespace foldfarm
