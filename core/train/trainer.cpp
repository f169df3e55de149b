#include "core/train/trainer.hpp"

#include <ATen/Context.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <mutex>
#include <numeric>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/hash.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/build_info/build_info.hpp"
#include "core/train/device.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/losses.hpp"
#include "core/train/metrics.hpp"

namespace foldfarm {

using torch::Tensor;

namespace {

// deriveSeed purpose of a training step's random draws ("step").
constexpr uint64_t kStepRandomPurpose = 0x73746570ULL;

double nan() {
  return std::numeric_limits<double>::quiet_NaN();
}

std::vector<Tensor> modelState(Pet& model) {
  std::vector<Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

void restoreState(Pet& model, const std::vector<Tensor>& values) {
  torch::NoGradGuard no_grad;
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(values[i]);
}

// Every rank of a data-parallel fit that holds the whole set (not sharded) must hold the same
// one, with the same seed: its batches are its slice of one shuffled epoch. Ranks given other
// files (a node's stale copy, an MPMD launch of other arguments) trained together silently
// before, each on its own slices, and only rank 0's data was recorded for a resume; sets of
// other sizes failed in a later collective (MPI_ERR_TRUNCATE) whose message blamed the
// transport. (collective)
void requireSameDataOnEveryRank(ParallelContext& ctx, const std::string& label, int64_t jets,
                                const std::string& key) {
  const int n = ctx.worldSize();
  if (n == 1) return;
  const uint64_t h = fnv1a(key.data(), key.size());
  std::vector<double> v(static_cast<size_t>(4 * n), 0.0);
  const size_t at = static_cast<size_t>(4 * ctx.rank());
  v[at] = static_cast<double>(jets);
  for (int k = 0; k < 3; ++k) v[at + 1 + k] = static_cast<double>((h >> (16 * k)) & 0xffff);
  ctx.allreduceSum(v);
  std::string other_size, other_values;
  for (int r = 1; r < n; ++r) {
    const size_t b = static_cast<size_t>(4 * r);
    if (v[b] != v[0])
      other_size += fmt::format("{}rank {} {}", other_size.empty() ? "" : ", ", r,
                                static_cast<int64_t>(v[b]));
    else if (v[b + 1] != v[1] || v[b + 2] != v[2] || v[b + 3] != v[3])
      other_values += fmt::format("{}{}", other_values.empty() ? "" : ", ", r);
  }
  if (other_size.empty() && other_values.empty()) return;
  std::string why;
  if (!other_size.empty())
    why = fmt::format("rank 0 holds {} training jets, {}", static_cast<int64_t>(v[0]), other_size);
  if (!other_values.empty())
    why += fmt::format("{}rank(s) {} hold as many as rank 0 with other values or another --seed",
                       why.empty() ? "" : "; ", other_values);
  checkOnEveryRank(ctx, [&] {
    if (ctx.isRoot())
      throw InputError(label + ": the ranks were given other training data: " + why +
                       "; every rank of a data-parallel run reads the same --data with the same "
                       "options (a node's copy of the files that differs?); nothing was trained");
  });
}

// Identifies the training data so a resume on other data is refused.
std::string fingerprint(const JetTensors& train, const JetTensors* val) {
  // Summed on the host whatever the set's device: the same fingerprint on a GPU and a CPU,
  // so that a state resumes on the other.
  auto one = [](const JetTensors& s) {
    std::string fp = std::to_string(s.size()) + ":" +
                     std::to_string(s.labels.cpu().sum().item<int64_t>()) + ":" +
                     std::to_string(s.weights.cpu().sum().item<double>()) + ":" +
                     std::to_string(s.mask.cpu().sum().item<double>());
    if (s.offset.defined()) fp += ":offset" + std::to_string(s.offset.cpu().sum().item<double>());
    return fp;
  };
  return one(train) + "|" + (val ? one(*val) : std::string("-"));
}

// The exact fields of a fingerprint: per set, its size and the sum of its labels (integers),
// without the float sums that follow them.
std::string fingerprintCounts(const std::string& fp) {
  std::string out;
  size_t start = 0;
  while (start <= fp.size()) {
    const size_t bar = std::min(fp.find('|', start), fp.size());
    const std::string part = fp.substr(start, bar - start);
    const size_t second = part.find(':', part.find(':') + 1);
    out += part.substr(0, second) + "|";
    start = bar + 1;
  }
  return out;
}

// Separates the values' bit sums from the order of their rows in a state's "data_values".
constexpr const char* kOrderMark = "|order:";

// Exact integer sums of the bit patterns of a float32 tensor's values, their low and high 16
// bits apart: the same on any device and in any order of summation, and changed by any change
// of a value (but for changes that cancel). Read in pieces of 16 M values, on the tensor's device.
void addBitSums(const Tensor& t, std::vector<int64_t>& out) {
  int64_t lo = 0, hi = 0;
  if (t.defined() && t.numel() > 0 && t.device().is_cpu() && t.element_size() == 4) {
    // The same integers in one pass over the values (the tensor operations below made two
    // temporaries of the whole set per sum).
    const Tensor c = t.contiguous();
    const int32_t* bits = static_cast<const int32_t*>(c.data_ptr());
    for (int64_t i = 0, n = c.numel(); i < n; ++i) {
      lo += bits[i] & 0xFFFF;
      hi += bits[i] >> 16;  // arithmetic, as bitwise_right_shift of an int32
    }
  } else if (t.defined() && t.numel() > 0) {
    const Tensor bits = t.contiguous().view({-1}).view(torch::kInt32);
    constexpr int64_t kPiece = int64_t{1} << 24;
    for (int64_t b = 0; b < bits.numel(); b += kPiece) {
      const Tensor c = bits.narrow(0, b, std::min(kPiece, bits.numel() - b));
      lo += torch::bitwise_and(c, 0xFFFF).sum(torch::kInt64).item<int64_t>();
      hi += torch::bitwise_right_shift(c, 16).sum(torch::kInt64).item<int64_t>();
    }
  }
  out.push_back(lo);
  out.push_back(hi);
}

// The order of a float32 tensor's rows (its first dimension): the sum over rows i of
// ((i mod 65521) + 1) times the sum of row i's low 16 bits, modulo 2^61 - 1. Exact on any
// device (each piece of at most 16 M values sums below 2^57 in int64) and changed by rows
// that move (but for moves that cancel).
int64_t orderSum(const Tensor& t) {
  if (!t.defined() || t.numel() == 0 || t.dim() == 0) return 0;
  constexpr int64_t kMod = (int64_t{1} << 61) - 1;
  const int64_t rows = t.size(0), width = t.numel() / rows;
  const int64_t step = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(width, 1));
  const Tensor bits = t.contiguous().view({rows, width}).view(torch::kInt32);
  int64_t acc = 0;
  if (bits.device().is_cpu()) {
    // The same pieces and sums in one pass over the values, without temporaries.
    const int32_t* p = bits.data_ptr<int32_t>();
    for (int64_t b = 0; b < rows; b += step) {
      const int64_t k = std::min(step, rows - b);
      int64_t piece = 0;
      for (int64_t i = b; i < b + k; ++i) {
        int64_t low = 0;
        for (const int32_t* v = p + i * width; v < p + (i + 1) * width; ++v) low += *v & 0xFFFF;
        piece += low * (i % 65521 + 1);
      }
      acc = static_cast<int64_t>((static_cast<__int128>(acc) + piece % kMod) % kMod);
    }
    return acc;
  }
  for (int64_t b = 0; b < rows; b += step) {
    const int64_t k = std::min(step, rows - b);
    const Tensor low =
        torch::bitwise_and(bits.narrow(0, b, k), 0xFFFF).sum(1, false, torch::kInt64);
    const Tensor w = torch::arange(b, b + k, low.options()).remainder(65521).add(1);
    const int64_t piece = low.mul(w).sum().item<int64_t>();
    acc = static_cast<int64_t>((static_cast<__int128>(acc) + piece % kMod) % kMod);
  }
  return acc;
}

// The values of in-memory training data beside their fingerprint (counts and sums): the bit
// sums of the particles, the jets, the weights and the logit offsets of each set, then the
// order of their rows. A resume on the same jets with values changed in place (a
// recalibration of the file) or rows reordered (a file sorted or shuffled anew: other
// batches) is refused by them.
std::string valueSums(const JetTensors& train, const JetTensors* val) {
  std::vector<int64_t> v, order;
  for (const JetTensors* s : {&train, val}) {
    if (s == nullptr) continue;
    for (const Tensor* t : {&s->particles, &s->jets, &s->weights, &s->offset}) {
      addBitSums(*t, v);
      order.push_back(orderSum(*t));
    }
  }
  std::string out = "bits";
  for (int64_t x : v) out += ":" + std::to_string(x);
  out += kOrderMark;
  for (size_t i = 0; i < order.size(); ++i) out += (i ? ":" : "") + std::to_string(order[i]);
  return out;
}

// (collective) Sharded data: a fingerprint of the union of the shards that does not depend
// on how the rows are dealt. Per part: rows, the sum of labels, real particles, and the sums
// of four 16-bit pieces of each row's FNV-1a hash (features, jet, label, weight), summed
// over ranks. Every term is an integer below 2^53, so the sums are exact in any order.
std::string shardedFingerprint(ParallelContext& ctx, const JetTensors& train,
                               const JetTensors* val) {
  auto sums = [](const JetTensors& s, std::vector<double>& out) {
    const int64_t n = s.size();
    std::vector<double> v(7, 0.0);
    if (n > 0) {
      const Tensor x = s.particles.contiguous(), j = s.jets.contiguous();
      const Tensor y = s.labels.contiguous(), w = s.weights.contiguous();
      const auto row_x = static_cast<size_t>(x.numel() / n) * sizeof(float);
      const auto row_j = static_cast<size_t>(j.numel() / n) * sizeof(float);
      const auto* px = static_cast<const unsigned char*>(x.data_ptr());
      const auto* pj = static_cast<const unsigned char*>(j.data_ptr());
      const int64_t* py = y.data_ptr<int64_t>();
      const float* pw = w.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i) {
        uint64_t h = fnv1a(px + static_cast<size_t>(i) * row_x, row_x);
        h = fnv1a(pj + static_cast<size_t>(i) * row_j, row_j, h);
        h = fnv1a(py + i, sizeof(int64_t), h);
        h = fnv1a(pw + i, sizeof(float), h);
        for (int k = 0; k < 4; ++k)
          v[3 + static_cast<size_t>(k)] += static_cast<double>((h >> (16 * k)) & 0xFFFFULL);
        v[1] += static_cast<double>(py[i]);
      }
      v[0] = static_cast<double>(n);
      v[2] = s.mask.sum().item<double>();
    }
    out.insert(out.end(), v.begin(), v.end());
  };
  std::vector<double> all;
  sums(train, all);
  if (val != nullptr) sums(*val, all);
  ctx.allreduceSum(all);
  std::string out = "sharded";
  for (double x : all) out += ":" + std::to_string(static_cast<int64_t>(x));
  return out;
}

// Whether scoring `set` (validation, prediction) on `device` can skip the forward passes: a
// one-logit classifier whose output layer is exactly zero gives the logit +0 for every jet
// whose encoding is finite (the layer's products are +-0 and its sums start from +0), so
// classifierLogits is 0 plus the jet's offset, bit for bit. The boosted "pet+mlp" steps start
// there (their starting weights are validated first), and a step whose epochs never beat them
// ends there and scores with them: 3 of the 4 steps of a demo chain, whose predictions on the
// MC were a third of its time. On the CPU only (a GPU run is not re-checked here), and only when
// every parameter and every input value is finite: a non-finite one could make an encoding
// NaN, and NaN times 0 is NaN (which the full pass would give). Finite weights and inputs
// could still overflow float32 on the way in principle, with weights of order 1e18; a PET
// trained with gradient clipping and weight decay is nowhere near.
bool scoresZeroLogits(Pet& model, const JetTensors& set, torch::Device device) {
  if (!device.is_cpu() || !set.particles.device().is_cpu() || set.size() == 0 ||
      model->config().num_classes != 1 || !model->classifierOutputIsZero())
    return false;
  for (const Tensor& p : model->parameters())
    if (!torch::isfinite(p).all().item<bool>()) return false;
  for (const Tensor* t : {&set.particles, &set.mask, &set.jets, &set.offset})
    if (t->defined() && !torch::isfinite(*t).all().item<bool>()) return false;
  return true;
}

// What classifierLogits gives for the jets `rows` of `set` when scoresZeroLogits holds: 0 plus
// their offsets (the same addition), (rows, 1) on `device`.
Tensor zeroLogits(const JetTensors& set, const std::vector<int64_t>& rows, torch::Device device) {
  Tensor logits = torch::zeros({static_cast<int64_t>(rows.size()), 1},
                               torch::TensorOptions(torch::kFloat32).device(device));
  if (set.offset.defined())
    logits =
        logits +
        set.offset.index_select(0, rowIndex(rows, set.offset.device())).to(device).unsqueeze(1);
  return logits;
}

}  // namespace

std::string bestEpochText(const FitResult& r) {
  if (r.best_epoch >= 0)
    return fmt::format("best epoch {} val loss {:.5f}", r.best_epoch, r.best_val_loss);
  if (std::isfinite(r.initial_val_loss))
    return fmt::format("no epoch beat the starting weights (val loss {:.5f}): they are kept",
                       r.initial_val_loss);
  return "no validation: the last epoch is kept";
}

nlohmann::json toJson(const FitResult& r) {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& e : r.history) {
    nlohmann::json rec = {{"epoch", e.epoch},
                          {"train_loss", e.train_loss},
                          {"lr", e.lr},
                          {"seconds", e.seconds},
                          {"metrics", e.metrics}};
    rec["val_loss"] = std::isnan(e.val_loss) ? nlohmann::json() : nlohmann::json(e.val_loss);
    h.push_back(rec);
  }
  nlohmann::json j = {
      {"history", h},
      {"initial_val_loss",
       std::isnan(r.initial_val_loss) ? nlohmann::json() : nlohmann::json(r.initial_val_loss)},
      {"best_epoch", r.best_epoch},
      // The best so far: an epoch's, else the validated starting weights' (validate_initial).
      {"best_val_loss", r.best_epoch >= 0 || !std::isnan(r.initial_val_loss)
                            ? nlohmann::json(r.best_val_loss)
                            : nlohmann::json()},
      {"early_stopped", r.early_stopped},
      {"steps", r.steps},
      {"resumed", r.resumed}};
  if (!r.earlier_builds.empty()) j["earlier_builds"] = r.earlier_builds;
  return j;
}

namespace {

FitResult fitResultFromJson(const nlohmann::json& j) {
  FitResult r;
  for (const auto& rec : j.at("history")) {
    EpochRecord e;
    e.epoch = rec.at("epoch").get<int64_t>();
    e.train_loss = rec.at("train_loss").get<double>();
    e.val_loss = rec.at("val_loss").is_null() ? nan() : rec.at("val_loss").get<double>();
    e.lr = rec.at("lr").get<double>();
    e.seconds = rec.at("seconds").get<double>();
    e.metrics = rec.at("metrics");
    r.history.push_back(e);
  }
  r.best_epoch = j.at("best_epoch").get<int64_t>();
  if (j.contains("initial_val_loss") && !j.at("initial_val_loss").is_null())
    r.initial_val_loss = j.at("initial_val_loss").get<double>();
  r.best_val_loss = j.at("best_val_loss").is_null() ? 0.0 : j.at("best_val_loss").get<double>();
  r.early_stopped = j.at("early_stopped").get<bool>();
  r.steps = j.at("steps").get<int64_t>();
  if (j.contains("earlier_builds"))
    r.earlier_builds = j.at("earlier_builds").get<std::vector<nlohmann::json>>();
  return r;
}

}  // namespace

void validateTrainOptions(const TrainOptions& o) {
  // Written so that NaN fails every test too.
  const OptimizerSettings& s = o.optimizer;
  const auto refuse = [&](const std::string& what) {
    throw InputError(o.label + ": " + what + " (a config's \"train\" or the matching option)");
  };
  if (s.kind != "lion" && s.kind != "adamw")
    refuse("optimizer must be lion or adamw, not '" + s.kind + "'");
  if (const std::string bad = learningRateProblem(s.lr, s.lr_factor); !bad.empty()) refuse(bad);
  if (!(o.warmup_scale > 0 && std::isfinite(o.warmup_scale)))
    refuse("the warm-up scale must be positive");
  // Both parameter groups decay by lr * weight_decay per step (the body's lr and decay are
  // scaled by lr_factor in opposite directions); the schedule peaks at lr * warmup_scale.
  if (const std::string bad = weightDecayProblem(s.weight_decay, s.lr * o.warmup_scale);
      !bad.empty())
    refuse(bad);
  if (!(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1))
    refuse("the optimiser's betas must be in [0, 1)");
  // A million epochs is beyond any run; above it the schedule's step counts overflow.
  if (!(o.warmup_epochs >= 0 && o.warmup_epochs <= 1e6))
    refuse("warmup_epochs must be from 0 to 1000000");
  // The norm is a float on the device: 1e308 overflowed it ("internal error").
  if (!(o.clip_norm >= 0 && o.clip_norm <= 1e6))
    refuse("clip_norm must be from 0 (off) to 1000000");
  if (!(o.ema_decay >= 0 && o.ema_decay < 1)) refuse("ema_decay must be in [0, 1)");
  if (o.batch_size < 1) refuse("the batch size must be >= 1");
  if (o.max_epochs < 0) refuse("epochs must be >= 0");
  if (o.patience < 0) refuse("patience must be >= 0 (0: off)");
  if (!(o.save_every_s >= 0 && o.save_every_s <= 1e9))
    refuse("the interval between state saves must be >= 0 (0: at epoch ends only)");
}

Trainer::Trainer(Pet model, CheckpointMeta meta, TrainOptions opts, ParallelContext& ctx)
    : model_(std::move(model)), meta_(std::move(meta)), opts_(std::move(opts)), ctx_(ctx) {
  meta_.config = model_->config();
  validateTrainOptions(opts_);
  requirePrecision(opts_.precision, opts_.device, opts_.label);
  if (opts_.cuda_graphs) {
    opts_.fixed_shapes = true;
    requireCudaGraphs(opts_.device, ctx_.worldSize(), opts_.label);
    if (opts_.host_draws)
      throw InputError(opts_.label + ": CUDA graphs need the random draws made on the device");
  }
  model_->to(opts_.device);
}

void Trainer::makeOptimizer(std::shared_ptr<FlatParameters> flat) {
  opt_ = flat ? makeFlatOptimizer(model_, opts_.optimizer, std::move(flat))
              : foldfarm::makeOptimizer(model_, opts_.optimizer);
  if (opts_.ema) ema_ = std::make_unique<Ema>(model_, opts_.ema_decay, flatParametersOf(*opt_));
}

Trainer::~Trainer() = default;

std::map<std::string, Tensor> Trainer::modelTensors() {
  std::map<std::string, Tensor> t;
  addModelTensors(model_, "model.", t);
  if (ema_) {
    const auto live = modelState(model_);
    ema_->copyTo(model_);
    addModelTensors(model_, "ema.", t);
    restoreState(model_, live);
  }
  return t;
}

void Trainer::saveState(const nlohmann::json& training) {
  if (!ctx_.isRoot() || opts_.state_dir.empty()) return;
  std::map<std::string, Tensor> t = modelTensors();
  nlohmann::json opt_meta;
  exportOptimizerState(*opt_, "opt.", t, opt_meta);
  if (!best_.empty()) {
    const auto live = modelState(model_);
    restoreState(model_, best_);
    addModelTensors(model_, "best.", t);
    restoreState(model_, live);
  }
  t["rng.model"] = model_->generator().get_state();
  CheckpointMeta meta = meta_;
  meta.training = training;
  meta.training["optimizer_state"] = opt_meta;
  writeCheckpoint(opts_.state_dir, meta, t);
}

namespace {

// InputError naming the first option (of `now`) that the state in `state_dir` was written with
// another value of (`kept`: option -> value, as the user types them). A value may be
// {"shown": as typed, "identity": what must match} (a checkpoint moved or copied elsewhere is
// the same --init; another one at the same path is not); one of a state written before
// identities compares as shown.
void refuseOtherOptions(const nlohmann::json& kept, const nlohmann::json& now,
                        const std::string& state_dir) {
  const auto identified = [](const nlohmann::json& v) {
    return v.is_object() && v.contains("shown") && v.contains("identity");
  };
  const auto shown = [&](const nlohmann::json& v) { return identified(v) ? v.at("shown") : v; };
  for (const auto& [option, value] : now.items()) {
    if (!kept.contains(option)) continue;
    const nlohmann::json& was = kept[option];
    const bool both = identified(was) && identified(value);
    if (both ? was.at("identity") == value.at("identity") : shown(was) == shown(value)) continue;
    if (both && shown(was) == shown(value))
      throw InputError(state_dir + ": training state was written from " + option + " " +
                       shown(was).dump() + " as it was then; it holds another one now (" +
                       value.at("identity").dump() + ", not " + was.at("identity").dump() +
                       "); resume from the one it started from or use a new output directory");
    // Files (a path, a list of them) may be copies; a number is the number.
    const bool files = shown(was).is_string() || shown(was).is_array();
    throw InputError(state_dir + ": training state was written with " + option + " " +
                     shown(was).dump() + ", not " + shown(value).dump() + "; resume with " +
                     option + " " + shown(was).dump() + (files ? " (or a copy of it)" : "") +
                     " or use a new output directory");
  }
}

}  // namespace

nlohmann::json Trainer::scheduleOptions() const {
  nlohmann::json j = {{"--lr", opts_.optimizer.lr},
                      {"--lr-factor", opts_.optimizer.lr_factor},
                      {"--warmup-epochs", opts_.warmup_epochs},
                      {"--optimizer", opts_.optimizer.kind},
                      {"weight_decay", opts_.optimizer.weight_decay},
                      {"clip_norm", opts_.clip_norm}};
  if (opts_.ema) j["ema_decay"] = opts_.ema_decay;
  return j;
}

bool Trainer::loadState(nlohmann::json& training, const std::string& fp,
                        const std::string& values) {
  if (opts_.state_dir.empty() || !opts_.resume || !checkpointExists(opts_.state_dir)) return false;
  const Checkpoint ck = readCheckpoint(opts_.state_dir);
  requireSameConfig(ck, model_->config(),
                    "resume with the same --preset/--config or use a new output directory");
  if (ck.meta.training.is_null() || !ck.meta.training.contains("global_step"))
    throw InputError(opts_.state_dir +
                     ": holds a final model, not a training state; use a new "
                     "output directory or drop --resume");
  training = ck.meta.training;
  // The build that wrote the state ran the fit so far: the result names it among the earlier
  // builds when it is not this one (and this one never: it writes the model).
  if (training.contains("result") && !ck.build.is_null()) {
    const nlohmann::json me = buildInfoJson();
    nlohmann::json& earlier = training["result"]["earlier_builds"];
    if (!earlier.is_array()) earlier = nlohmann::json::array();
    if (std::find(earlier.begin(), earlier.end(), ck.build) == earlier.end())
      earlier.push_back(ck.build);
    earlier.erase(std::remove(earlier.begin(), earlier.end(), me), earlier.end());
  }
  refuseOtherOptions(training.value("resume_options", nlohmann::json::object()),
                     opts_.resume_options, opts_.state_dir);
  // The learning rates and the optimiser: another value would continue a training no single
  // run gives. More (or fewer) epochs are a way to train on, said in a line: from here the
  // schedule is that of the new length (before: without a word).
  refuseOtherOptions(training.value("schedule_options", nlohmann::json::object()),
                     scheduleOptions(), opts_.state_dir);
  const int64_t patience_then = training.value("patience", opts_.patience);
  if (patience_then != opts_.patience && ctx_.isRoot())
    logWarn(
        "{}: the state was written with patience {}, resumed with {}: early stopping from "
        "here counts by the new value",
        opts_.label, patience_then, opts_.patience);
  const int64_t epochs_then = training.value("max_epochs", opts_.max_epochs);
  const int64_t epoch_now = training.value("epoch", int64_t{0});
  if (epochs_then != opts_.max_epochs && epoch_now > opts_.max_epochs)
    throw InputError(opts_.state_dir + ": training state is at epoch " + std::to_string(epoch_now) +
                     ", past the " + std::to_string(opts_.max_epochs) +
                     " epochs asked for; resume with more epochs than " +
                     std::to_string(epoch_now) + " to train on (it was written by a run of " +
                     std::to_string(epochs_then) + ")");
  if (epochs_then != opts_.max_epochs && ctx_.isRoot())
    logWarn(
        "{}: the state was written by a run of {} epochs, resumed for {}: the learning-rate "
        "schedule from here is that of a {}-epoch run, so the result is that of no single "
        "uninterrupted run",
        opts_.label, epochs_then, opts_.max_epochs, opts_.max_epochs);
  // Sharded and whole-set states do not mix (their data fingerprints differ by design);
  // a sharded state resumes on any number of ranks, its rows dealt anew.
  const int64_t was = training.value("sharded_ranks", int64_t{0});
  const int64_t now = opts_.sharded ? ctx_.worldSize() : 0;
  if ((was > 0) != (now > 0))
    throw InputError(opts_.state_dir + ": training state was written " +
                     (was > 0 ? std::string("with sharded data (--shard-data)")
                              : std::string("without sharded data")) +
                     "; resume " + (was > 0 ? "with" : "without") +
                     " --shard-data, or use a new output directory");
  if (was != now && ctx_.isRoot())
    logInfo(
        "{}: the state was written with sharded data on {} ranks; the rows are dealt anew over {}",
        opts_.label, was, now);
  // The fingerprint's sums of weights, mask and offsets are float sums, whose last printed
  // digits a reduction over another thread count can change (LibTorch splits sums of 32,768
  // values and more by thread): where the state kept the values' exact bit sums, those decide
  // beside the fingerprint's counts and label sums, which are exact.
  const std::string was_fp = training.value("data_fingerprint", "");
  const bool exact_values = training.contains("data_values") && !values.empty();
  if (was_fp != fp && !(exact_values && fingerprintCounts(was_fp) == fingerprintCounts(fp))) {
    // Streamed states keep --block-rows, in-memory ones --max-jets: the one mode resumed as the
    // other reads the data otherwise, said so (it was "different training data").
    const nlohmann::json kept = training.value("data_options", nlohmann::json::object());
    const bool was_streamed = kept.contains("--block-rows"),
               is_streamed = opts_.data_options.contains("--block-rows");
    if ((kept.contains("--max-jets") || was_streamed) && was_streamed != is_streamed)
      throw InputError(
          opts_.state_dir + ": training state was written " +
          (was_streamed ? "streaming the data (--stream)" : "with the data in memory") +
          "; resume " + (was_streamed ? "with" : "without") +
          " --stream, or use a new output directory");
    // Name the option that chose other rows when the state knows it.
    refuseOtherOptions(training.value("data_options", nlohmann::json::object()), opts_.data_options,
                       opts_.state_dir);
    throw InputError(opts_.state_dir +
                     ": training state was written for different training data; "
                     "resume with the same data or use a new output directory");
  }
  // The same jets, labels and weights in count and sum: their values too, when the state
  // recorded them (states written before it resume by counts and sums).
  // States written before the order of rows was kept compare the values alone.
  if (training.contains("data_values") && !values.empty()) {
    const std::string was = training["data_values"].get<std::string>();
    const size_t cut = values.find(kOrderMark);
    const bool had_order = was.find(kOrderMark) != std::string::npos;
    if (was.substr(0, was.find(kOrderMark)) != values.substr(0, cut))
      throw InputError(opts_.state_dir +
                       ": training state was written for other values of the training data (the "
                       "same jets in number and labels, their values changed: a recalibrated or "
                       "edited file); resume with the data it was written with, or use a new "
                       "output directory");
    if (had_order && was != values)
      throw InputError(opts_.state_dir +
                       ": training state was written for the same training data in another "
                       "order of rows (a file sorted or shuffled anew: the resumed epochs would "
                       "take other batches); resume with the file as it was, or use a new "
                       "output directory");
  }
  loadModelTensors(model_, ck.tensors, "model.", ck.dir);
  importOptimizerState(*opt_, "opt.", ck.tensors, training.at("optimizer_state"), ck.dir);
  if (ema_) {
    const auto live = modelState(model_);
    loadModelTensors(model_, ck.tensors, "ema.", ck.dir);
    ema_->load(modelState(model_));
    restoreState(model_, live);
  }
  if (ck.tensors.count("best.body.in1.weight")) {
    const auto live = modelState(model_);
    loadModelTensors(model_, ck.tensors, "best.", ck.dir);
    best_ = modelState(model_);
    restoreState(model_, live);
  }
  model_->generator().set_state(ck.tensors.at("rng.model"));
  return true;
}

// A fit's run over a BatchSource. The position (epoch, step in the epoch, schedule step, the
// epoch's loss sum, epochs without improvement) and the result so far come from the state an
// earlier run saved (resume); then, after the starting weights' validation
// (validate_initial), each epoch is
//   beginEpoch  the source's epoch (a resumed stream's steps already taken), the schedule
//               placed for a stream resumed with another number of steps per epoch;
//   trainEpoch  its steps: a stop request saves the state and throws (stopAndSave); a batch
//               (gathered by a helper thread on a GPU), the gradient step, the gradients'
//               synchronisation, clipping, the learning rate, the optimiser, EMA;
//   endEpoch    the mean train loss over the ranks, validation, the best epoch, early
//               stopping, the state saved;
// until the last epoch or an early stop. The best epoch's weights are restored at the end.
class Trainer::FitLoop {
 public:
  FitLoop(Trainer& t, BatchSource& src, const JetTensors* val, bool validate, Objective objective)
      : t_(t),
        opts_(t.opts_),
        ctx_(t.ctx_),
        src_(src),
        val_(val),
        validate_(validate),
        objective_(objective),
        steps_per_epoch_(src.steps_per_epoch) {
    schedule_.lr = opts_.optimizer.lr;
    schedule_.warmup_scale = opts_.warmup_scale;
    schedule_.warmup_steps =
        static_cast<int64_t>(std::llround(opts_.warmup_epochs * steps_per_epoch_));
    schedule_.total_steps = std::max<int64_t>(1, opts_.max_epochs * steps_per_epoch_);
  }
  FitResult run();

 private:
  void resume();
  nlohmann::json stateJson() const;
  void validateInitial();
  int64_t beginEpoch();
  void trainEpoch(GradientStep& step, int64_t epoch_steps, Progress& progress);
  [[noreturn]] void stopAndSave(const Tensor& loss_acc, std::future<JetBatch>& next);
  // Writes the state of the step about to run (the one a stop writes), every rank's partial
  // loss sum with it. (collective)
  void saveMidEpoch(const Tensor& loss_acc);
  void saved() { last_save_ = std::chrono::steady_clock::now(); }
  void endEpoch(int64_t epoch_steps, std::chrono::steady_clock::time_point t0);
  // The loss an epoch must beat: the best epoch's, else the starting weights' (if validated).
  bool hasBest() const { return result_.best_epoch >= 0 || !std::isnan(result_.initial_val_loss); }

  Trainer& t_;
  const TrainOptions& opts_;
  ParallelContext& ctx_;
  BatchSource& src_;
  const JetTensors* const val_;
  const bool validate_;
  const Objective objective_;
  const int64_t steps_per_epoch_;  // of a fresh epoch: the schedule's unit
  WarmupCosine schedule_;
  FitResult result_;
  int64_t epoch_ = 0, step_in_epoch_ = 0, global_step_ = 0, bad_epochs_ = 0;
  double loss_sum_ = 0;
  double lr_ = 0;
  // A stream resumed with another number of steps per epoch: its schedule step is put where
  // the epoch's remaining steps end it, once begin_epoch has counted them.
  bool place_schedule_ = false;
  nlohmann::json state_;  // the state resumed from (null: none)
  // The stream position of the state resumed from, for its epoch only.
  nlohmann::json resume_position_;
  std::chrono::steady_clock::time_point last_save_ = std::chrono::steady_clock::now();
};

FitResult Trainer::fit(const JetTensors& train, const JetTensors* val, Objective objective) {
  if (objective == Objective::kPretrain && !model_->config().generator)
    throw InputError("pretraining needs the generator head (config generator=true)");
  // Flat buffers first: the data-parallel buckets become slices of their gradient buffer.
  auto flat = opts_.flat ? std::make_shared<FlatParameters>(model_->parameters()) : nullptr;
  ctx_.prepare(*model_, flat.get());
  makeOptimizer(flat);

  // Sharded: every rank takes as many rows per epoch as the smallest shard holds, and
  // validates when any rank holds validation rows (evaluate() is then collective).
  int64_t shard_rows = 0;
  bool validate = val != nullptr && val->size() > 0;
  if (opts_.sharded) {
    if (objective != Objective::kPretrain && model_->config().num_classes == 1)
      throw InputError(opts_.label + ": sharded data needs a multi-class or pretraining objective");
    const std::vector<double> sizes = allGather(ctx_, static_cast<double>(train.size()));
    shard_rows = static_cast<int64_t>(*std::min_element(sizes.begin(), sizes.end()));
    if (shard_rows < 1)
      throw InputError(opts_.label +
                       ": a rank holds no training rows; use fewer ranks or more data");
    validate = allGather(ctx_, val != nullptr ? static_cast<double>(val->size()) : 0.0) !=
               std::vector<double>(static_cast<size_t>(ctx_.worldSize()), 0.0);
    if (ctx_.isRoot())
      logInfo("{}: sharded data, {} rows per rank per epoch", opts_.label, shard_rows);
  }
  auto batchesOf = [&](int64_t e, bool bucket) {
    return opts_.sharded ? shardEpochBatches(train, opts_.batch_size, opts_.seed, e, ctx_.rank(),
                                             shard_rows, bucket)
                         : epochBatches(train, opts_.batch_size, opts_.seed, e, ctx_.rank(),
                                        ctx_.worldSize(), bucket);
  };
  std::vector<std::vector<int64_t>> batches;
  BatchSource src;
  src.slots = train.particles.size(1);
  src.steps_per_epoch = static_cast<int64_t>(batchesOf(0, false).size());
  src.fingerprint = opts_.sharded ? shardedFingerprint(ctx_, train, val) : fingerprint(train, val);
  // A pass over the values, made only where a state is written or resumed (the sharded
  // fingerprint hashes every row already).
  if (!opts_.sharded && !opts_.state_dir.empty()) src.values = valueSums(train, val);
  // Compared by the values' exact bit sums (not the fingerprint's float sums, which a reduction
  // over another number of threads can change in their last digits).
  if (!opts_.sharded && ctx_.worldSize() > 1)
    requireSameDataOnEveryRank(ctx_, opts_.label, train.size(),
                               (src.values.empty() ? valueSums(train, val) : src.values) + "|" +
                                   std::to_string(val != nullptr ? val->size() : -1) + "|" +
                                   std::to_string(src.steps_per_epoch) + "|" +
                                   std::to_string(opts_.seed));
  src.begin_epoch = [&](int64_t e, const nlohmann::json*, int64_t&) {
    batches = batchesOf(e, opts_.bucket);
    return static_cast<int64_t>(batches.size());
  };
  // On a GPU the sets move there once when they fit (resident_data_mb).
  const JetTensors* tr = &train;
  const JetTensors* va = val;
  JetTensors train_on, val_on;
  const int64_t set_bytes = train.bytes() + (val != nullptr ? val->bytes() : 0);
  if (opts_.device.is_cuda() && !train.particles.is_cuda() &&
      set_bytes <= opts_.resident_data_mb * (int64_t{1} << 20)) {
    train_on = train.to(opts_.device);
    tr = &train_on;
    if (val != nullptr) {
      val_on = val->to(opts_.device);
      va = &val_on;
    }
    src.on_device = true;
    if (ctx_.isRoot())
      logInfo("{}: {:.1f} MiB of jets on {} for the fit", opts_.label,
              static_cast<double>(set_bytes) / 1048576.0, opts_.device.str());
  }
  src.on_device = src.on_device || train.particles.is_cuda();
  src.batch = [&](int64_t step) {
    return makeBatch(*tr, batches[static_cast<size_t>(step)], opts_.bucket);
  };
  return FitLoop(*this, src, va, validate, objective).run();
}

FitResult Trainer::fitStream(data::JetStream& stream, const JetTensors* val, Objective objective,
                             const std::string& data_fingerprint) {
  if (objective == Objective::kPretrain && !model_->config().generator)
    throw InputError("pretraining needs the generator head (config generator=true)");
  if (opts_.sharded) throw InputError(opts_.label + ": a stream is not combined with sharded data");
  // Flat buffers first: the data-parallel buckets become slices of their gradient buffer.
  auto flat = opts_.flat ? std::make_shared<FlatParameters>(model_->parameters()) : nullptr;
  ctx_.prepare(*model_, flat.get());
  makeOptimizer(flat);
  BatchSource src;
  src.exact = true;
  src.slots = stream.numParticles();
  src.steps_per_epoch = stream.stepsPerEpoch(ctx_.worldSize());
  src.fingerprint = "stream:" + data_fingerprint + "|" + (val ? fingerprint(*val, nullptr) : "-");
  if (val != nullptr && !opts_.state_dir.empty()) src.values = valueSums(*val, nullptr);
  bool position_checked = false;
  src.begin_epoch = [&](int64_t e, const nlohmann::json* position, int64_t& step) {
    if (position != nullptr && !position_checked) {
      // Another batch size or buffer draws other rows: the steps taken would not tell which
      // jets the epoch has left (some would be trained twice, others never). Every rank
      // finds it alike: rank 0 says so.
      position_checked = true;
      checkOnEveryRank(ctx_, [&] {
        const nlohmann::json now = stream.position();
        for (const auto& [key, option] :
             {std::pair<const char*, const char*>{"batch_size", "--batch"},
              {"buffer_jets", "--shuffle-buffer"}})
          if (position->contains(key) && (*position)[key] != now[key])
            throw InputError(opts_.state_dir + ": the training state's stream was drawn with " +
                             option + " " + (*position)[key].dump() + ", not " + now[key].dump() +
                             "; resume with " + option + " " + (*position)[key].dump() +
                             " or use a new output directory");
      });
    }
    std::vector<data::StreamSegment> history;
    if (position != nullptr && position->value("epoch", int64_t{-1}) == e) {
      for (const auto& seg : position->at("segments"))
        history.push_back({seg.at(0).get<int>(), seg.at(1).get<int64_t>()});
    }
    // Steps of the epoch taken in segments that this run does not continue.
    int64_t before = 0;
    for (size_t k = 0; k < history.size(); ++k)
      if (k + 1 < history.size() || history[k].world != ctx_.worldSize())
        before += history[k].steps;
    const int64_t left = stream.startEpoch(e, history, ctx_.worldSize(), ctx_.rank());
    int64_t continued = 0;
    if (!history.empty() && history.back().world == ctx_.worldSize())
      continued = history.back().steps;
    step = before + continued;
    if (before > 0 && ctx_.isRoot())
      logInfo(
          "{}: epoch {} ran {} step(s) on another number of ranks; {} rank(s) now draw the "
          "jets not yet drawn: this run continues epoch {} with {} step(s)",
          opts_.label, e, before, ctx_.worldSize(), e, left);
    return before + continued + left;
  };
  src.batch = [&](int64_t) {
    JetTensors t = JetTensors::fromArrays(stream.next(), meta_.stats);
    std::vector<int64_t> rows(static_cast<size_t>(t.size()));
    std::iota(rows.begin(), rows.end(), int64_t{0});
    return makeBatch(t, rows, opts_.bucket);
  };
  src.position = [&] { return stream.position(); };
  const bool validate = val != nullptr && val->size() > 0;
  return FitLoop(*this, src, val, validate, objective).run();
}

FitResult Trainer::FitLoop::run() {
  resume();
  if (opts_.validate_initial && validate_ && !result_.resumed) validateInitial();
  Progress progress(opts_.label, opts_.max_epochs * steps_per_epoch_, "step");
  progress.setSilent(!opts_.show_progress || !ctx_.isRoot());
  if (result_.resumed) progress.resumedAt(global_step_);
  lr_ = schedule_.at(global_step_);
  if (result_.resumed && state_.contains("stream")) resume_position_ = state_.at("stream");
  // Outside the epochs: CUDA graphs captured once serve every epoch.
  GradientStepOptions so;
  so.objective = objective_;
  so.precision = opts_.precision;
  so.cuda_graphs = opts_.cuda_graphs;
  so.host_draws = opts_.host_draws;
  so.world_size = ctx_.worldSize();
  so.fixed_shapes = opts_.fixed_shapes;
  GradientStep step(t_.model_, *t_.opt_, so);
  bool stop_training = result_.early_stopped || epoch_ >= opts_.max_epochs;
  while (!stop_training) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t epoch_steps = beginEpoch();
    trainEpoch(step, epoch_steps, progress);
    endEpoch(epoch_steps, t0);
    stop_training = result_.early_stopped || epoch_ >= opts_.max_epochs;
    result_.steps = global_step_;
    // Rank 0 writes; a write that fails there (a full disk, a quota) ends every rank now
    // rather than rank 0 alone while the others wait out the collective timeout.
    checkOnEveryRank(ctx_, [&] { t_.saveState(stateJson()); });
    saved();
  }
  progress.finish();
  result_.steps = global_step_;
  if (opts_.restore_best && !t_.best_.empty()) restoreState(t_.model_, t_.best_);
  t_.model_->eval();
  return result_;
}

// A state that cannot resume (other data, options or model) every rank finds alike: one line,
// from rank 0.
void Trainer::FitLoop::resume() {
  bool loaded = false;
  checkOnEveryRank(ctx_, [&] { loaded = t_.loadState(state_, src_.fingerprint, src_.values); });
  if (!loaded) return;
  result_ = fitResultFromJson(state_.at("result"));
  result_.resumed = true;
  epoch_ = state_.at("epoch").get<int64_t>();
  step_in_epoch_ = state_.at("step_in_epoch").get<int64_t>();
  global_step_ = state_.at("global_step").get<int64_t>();
  bad_epochs_ = state_.at("bad_epochs").get<int64_t>();
  loss_sum_ = state_.at("loss_sum").get<double>();
  if (state_.contains("loss_sums")) {  // written at a stop: one per rank
    const auto sums = state_.at("loss_sums").get<std::vector<double>>();
    if (static_cast<int>(sums.size()) == ctx_.worldSize()) {
      loss_sum_ = sums[static_cast<size_t>(ctx_.rank())];
    } else if (!sums.empty()) {
      loss_sum_ = 0;
      for (double v : sums) loss_sum_ += v;
      loss_sum_ /= static_cast<double>(sums.size());
    }
  }
  // Another number of ranks (or batch size) changes the steps per epoch: keep the epoch and
  // the fraction of it already done, and put the learning-rate schedule at the matching step
  // of the new count.
  const int64_t saved_spe = state_.value("steps_per_epoch", steps_per_epoch_);
  place_schedule_ = src_.exact && saved_spe != steps_per_epoch_;
  if (!src_.exact && saved_spe != steps_per_epoch_ && saved_spe > 0) {
    const int64_t old_step = step_in_epoch_;
    step_in_epoch_ =
        std::min<int64_t>(steps_per_epoch_, std::llround(static_cast<double>(old_step) *
                                                         static_cast<double>(steps_per_epoch_) /
                                                         static_cast<double>(saved_spe)));
    if (old_step > 0)
      loss_sum_ *= static_cast<double>(step_in_epoch_) / static_cast<double>(old_step);
    global_step_ = epoch_ * steps_per_epoch_ + step_in_epoch_;
    if (ctx_.isRoot())
      logWarn(
          "{}: the state has {} steps per epoch, this run {} (another number of ranks or "
          "batch size): epoch {} continues at step {}{}, the schedule at step {}",
          opts_.label, saved_spe, steps_per_epoch_, epoch_, step_in_epoch_,
          old_step == step_in_epoch_ ? std::string() : " instead of " + std::to_string(old_step),
          global_step_);
  }
  // The peak learning rate scales with the ranks (sqrt, warmup_scale): another count changes
  // the recipe from here on, said with the figures (a state of older builds records none).
  const double saved_scale = state_.value("warmup_scale", opts_.warmup_scale);
  if (saved_scale != opts_.warmup_scale && ctx_.isRoot())
    logWarn(
        "{}: the peak learning rate is {:.4g} on this run's ranks ({:.4g} x {:.4g}), {:.4g} when "
        "the state was saved: the schedule goes on at the new peak (resume on as many ranks as "
        "before to keep the recipe)",
        opts_.label, opts_.optimizer.lr * opts_.warmup_scale, opts_.optimizer.lr,
        opts_.warmup_scale, opts_.optimizer.lr * saved_scale);
  logInfo("{}: resuming from {} at epoch {} step {}", opts_.label, opts_.state_dir, epoch_,
          step_in_epoch_);
}

nlohmann::json Trainer::FitLoop::stateJson() const {
  nlohmann::json j;
  j["epoch"] = epoch_;
  j["step_in_epoch"] = step_in_epoch_;
  j["global_step"] = global_step_;
  j["bad_epochs"] = bad_epochs_;
  j["loss_sum"] = loss_sum_;
  j["result"] = toJson(result_);
  j["data_fingerprint"] = src_.fingerprint;
  if (!src_.values.empty()) j["data_values"] = src_.values;
  j["data_options"] = opts_.data_options;
  j["resume_options"] = opts_.resume_options;
  j["schedule_options"] = t_.scheduleOptions();
  j["seed"] = opts_.seed;
  j["batch_size"] = opts_.batch_size;
  j["max_epochs"] = opts_.max_epochs;
  j["patience"] = opts_.patience;
  j["sharded_ranks"] = opts_.sharded ? ctx_.worldSize() : 0;
  j["steps_per_epoch"] = steps_per_epoch_;
  j["warmup_scale"] = opts_.warmup_scale;
  if (src_.position) j["stream"] = src_.position();
  return j;
}

void Trainer::FitLoop::validateInitial() {
  const EvalResult ev = t_.evaluate(val_ != nullptr ? *val_ : JetTensors{}, objective_);
  result_.initial_val_loss = ev.loss;
  result_.best_val_loss = ev.loss;
  if (opts_.restore_best) t_.best_ = modelState(t_.model_);
  if (ctx_.isRoot()) logInfo("{}: starting weights: val loss {:.5f}", opts_.label, ev.loss);
}

int64_t Trainer::FitLoop::beginEpoch() {
  const int64_t epoch_steps = src_.begin_epoch(
      epoch_, resume_position_.is_null() ? nullptr : &resume_position_, step_in_epoch_);
  if (place_schedule_) {
    // The saved schedule step counts steps of another size (ranks x batch): the epoch's
    // remaining steps end it at the end of this epoch on the schedule of this run's count.
    place_schedule_ = false;
    const int64_t was = global_step_;
    global_step_ =
        epoch_ * steps_per_epoch_ +
        std::max<int64_t>(0, steps_per_epoch_ - std::max<int64_t>(0, epoch_steps - step_in_epoch_));
    if (ctx_.isRoot())
      logInfo(
          "{}: the state counted {} steps per epoch, this run {}: the schedule continues at "
          "step {} instead of {}",
          opts_.label, state_.value("steps_per_epoch", steps_per_epoch_), steps_per_epoch_,
          global_step_, was);
  }
  return epoch_steps;
}

void Trainer::FitLoop::trainEpoch(GradientStep& step, int64_t epoch_steps, Progress& progress) {
  t_.model_->train();
  // The epoch's loss sum stays on the device (double: the same sum as adding each step's loss
  // on the host) and is read every log_every steps.
  Tensor loss_acc =
      torch::full({}, loss_sum_, torch::TensorOptions(torch::kFloat64).device(opts_.device));
  std::string loss_text;
  // A batch as the step takes it, on the host: gathered, padded to a fixed shape, pinned.
  auto hostBatch = [this](int64_t step_index) {
    JetBatch hb = src_.batch(step_index);
    if (opts_.fixed_shapes)
      hb = padBatch(hb, std::max(opts_.batch_size, hb.size()),
                    fixedBatchWidth(hb.particles.size(1), src_.slots));
    if (opts_.device.is_cuda() && !src_.on_device) hb = pinned(std::move(hb));
    return hb;
  };
  const bool prefetch = !src_.exact && (opts_.prefetch == TrainOptions::Prefetch::kOn ||
                                        (opts_.prefetch == TrainOptions::Prefetch::kAuto &&
                                         opts_.device.is_cuda() && !src_.on_device));
  std::future<JetBatch> next;
  int64_t next_step = -1;
  constexpr unsigned kStop = 1, kSave = 2;
  for (; step_in_epoch_ < epoch_steps; ++step_in_epoch_) {
    // One collective agrees on both: a stop anywhere, a save due on any rank's clock.
    const bool stop =
        stopRequested() || (opts_.stop_at_step >= 0 && global_step_ >= opts_.stop_at_step);
    const bool save_due =
        opts_.save_every_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save_).count() >=
            opts_.save_every_s;
    const unsigned agreed = ctx_.anyOf((stop ? kStop : 0u) | (save_due ? kSave : 0u));
    if ((agreed & kStop) != 0) stopAndSave(loss_acc, next);
    if ((agreed & kSave) != 0) saveMidEpoch(loss_acc);
    JetBatch b;
    if (next.valid() && next_step == step_in_epoch_) {
      b = next.get();
    } else {
      if (next.valid()) next.wait();
      b = hostBatch(step_in_epoch_);
    }
    // The next batch is gathered (and on a GPU pinned) by a helper thread while this step
    // runs (opts_.prefetch); a stream's batches are drawn in order here (its position is
    // saved with a stop). Not while the step captures a CUDA graph: the helper's page-locked
    // allocation would invalidate the capture; it starts once the step returned.
    const bool capture = step.wouldCapture(b);
    auto fetchNext = [&] {
      if (!prefetch || step_in_epoch_ + 1 >= epoch_steps) return;
      next_step = step_in_epoch_ + 1;
      next = std::async(std::launch::async, hostBatch, next_step);
    };
    if (!capture) fetchNext();
    b = batchToDevice(b, opts_.device);
    // The step's random draws (feature dropout, diffusion time and noise) come from a seed of
    // (run seed, step, rank): independent across ranks, and the same after a resume on any
    // number of ranks without carrying every rank's generator state.
    const Tensor loss =
        step.run(b, deriveSeed({opts_.seed, kStepRandomPurpose, static_cast<uint64_t>(global_step_),
                                static_cast<uint64_t>(ctx_.rank())}));
    if (capture) fetchNext();
    ctx_.finishGradientSync();
    if (opts_.clip_norm > 0)
      clipGradientNorm(t_.model_->parameters(), opts_.clip_norm, flatParametersOf(*t_.opt_));
    lr_ = schedule_.at(global_step_);
    setLearningRate(*t_.opt_, lr_, opts_.optimizer.lr_factor);
    t_.opt_->step();
    if (t_.ema_) t_.ema_->update(t_.model_, global_step_);
    loss_acc.add_(loss);
    ++global_step_;
    if (!opts_.device.is_cuda() ||
        (step_in_epoch_ + 1) % std::max<int64_t>(1, opts_.log_every) == 0)
      loss_text = "epoch " + std::to_string(epoch_) + " loss " +
                  std::to_string(loss_acc.item<double>() / static_cast<double>(step_in_epoch_ + 1));
    progress.update(global_step_, loss_text);
  }
  loss_sum_ = loss_acc.item<double>();
}

// Every rank's partial loss sum is saved, so that a resume on as many ranks ends the epoch
// with the same mean as an uninterrupted run.
void Trainer::FitLoop::saveMidEpoch(const Tensor& loss_acc) {
  loss_sum_ = loss_acc.item<double>();
  nlohmann::json j = stateJson();
  j["loss_sums"] = allGather(ctx_, loss_sum_);
  checkOnEveryRank(ctx_, [&] { t_.saveState(j); });  // as at an epoch's end
  saved();
  if (ctx_.isRoot() && !opts_.state_dir.empty())
    logDebug("{}: state saved at epoch {} step {}", opts_.label, epoch_, step_in_epoch_);
}

void Trainer::FitLoop::stopAndSave(const Tensor& loss_acc, std::future<JetBatch>& next) {
  if (next.valid()) next.wait();
  saveMidEpoch(loss_acc);
  // Every rank stops here (the stop is agreed): rank 0 says so, once.
  if (ctx_.rank() != 0) throw ReportedByAnotherRank(kExitInterrupted);
  throw InterruptedError(opts_.label + ": stopped at epoch " + std::to_string(epoch_) + " step " +
                         std::to_string(step_in_epoch_) +
                         (opts_.state_dir.empty() ? std::string(" (no state directory)")
                                                  : "; state saved to " + opts_.state_dir));
}

void Trainer::FitLoop::endEpoch(int64_t epoch_steps, std::chrono::steady_clock::time_point t0) {
  EpochRecord rec;
  rec.epoch = epoch_;
  std::vector<double> reduced{loss_sum_ / static_cast<double>(std::max<int64_t>(1, epoch_steps))};
  ctx_.allreduceMean(reduced);
  rec.train_loss = reduced[0];
  rec.lr = lr_;
  rec.val_loss = nan();
  if (validate_) {
    const EvalResult ev = t_.evaluate(val_ != nullptr ? *val_ : JetTensors{}, objective_);
    rec.val_loss = ev.loss;
    rec.metrics = ev.metrics;
    if (!hasBest() || ev.loss < result_.best_val_loss) {
      result_.best_epoch = epoch_;
      result_.best_val_loss = ev.loss;
      bad_epochs_ = 0;
      if (opts_.restore_best) t_.best_ = modelState(t_.model_);
    } else {
      ++bad_epochs_;
    }
  }
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Before the epoch's state is saved: a resume starts from the last finite one. Every rank
  // sees the same reduced losses, so all of them stop here.
  requireFiniteEpoch(opts_.label, rec, validate_);
  result_.history.push_back(rec);
  if (ctx_.isRoot())  // without validation: no "val loss nan" that reads as a divergence
    logInfo("{}: epoch {} train loss {:.5f}{} lr {:.3g} ({:.1f} s)", opts_.label, epoch_,
            rec.train_loss, validate_ ? fmt::format(" val loss {:.5f}", rec.val_loss) : "", rec.lr,
            rec.seconds);
  ++epoch_;
  step_in_epoch_ = 0;
  loss_sum_ = 0;
  if (opts_.patience > 0 && bad_epochs_ >= opts_.patience) {
    result_.early_stopped = true;
    logInfo("{}: early stop after epoch {} ({})", opts_.label, epoch_ - 1, bestEpochText(result_));
  }
}

void requireFiniteEpoch(const std::string& label, const EpochRecord& rec, bool validated) {
  if (std::isfinite(rec.train_loss) && (!validated || std::isfinite(rec.val_loss))) return;
  auto show = [](double v) { return std::isnan(v) ? std::string("NaN") : fmt::format("{:g}", v); };
  throw Error(fmt::format(
      "{}: training diverged at epoch {} (train loss {}{}): lower the learning rate (lr), clip "
      "the gradients (clip_norm), or look for extreme values among the inputs and weights; "
      "nothing of this epoch was saved",
      label, rec.epoch, show(rec.train_loss),
      validated ? ", val loss " + show(rec.val_loss) : std::string()));
}

EvalResult Trainer::evaluate(const JetTensors& set, Objective objective) {
  torch::NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  EvalResult r;
  const auto batches = evalBatches(set, std::max<int64_t>(opts_.batch_size, 256), opts_.bucket);
  const int64_t c = model_->config().num_classes;
  // Probabilities and loss sums stay on the device until the end (double sums: the same
  // as adding each batch's figures on the host).
  const auto on = torch::TensorOptions().device(opts_.device);
  Tensor probs = c == 1 ? torch::zeros({set.size()}, on) : torch::zeros({set.size(), c}, on);
  Tensor loss_acc = torch::zeros({}, on.dtype(torch::kFloat64));
  Tensor ce_acc = torch::zeros({}, on.dtype(torch::kFloat64));
  auto rowsOf = [&](const std::vector<int64_t>& rows) { return rowIndex(rows, opts_.device); };
  if (objective == Objective::kPretrain) {
    // Fixed noise so validation losses of different epochs compare; on a GPU drawn there
    // (its generator is reseeded by every training step anyway), unless draws stay on the host.
    const uint64_t val_seed = deriveSeed({opts_.seed, 0x76616cULL});
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(val_seed);
    if (opts_.device.is_cuda() && !opts_.host_draws) {
      gen = at::globalContext().defaultGenerator(opts_.device);
      const std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(val_seed);
    }
    for (const auto& rows : batches) {
      const JetBatch b = batchToDevice(makeBatch(set, rows, opts_.bucket), opts_.device);
      const Bf16Autocast autocast(opts_.precision == "bf16", opts_.device.type());
      const PretrainLoss l = pretrainLoss(model_, b, gen);
      loss_acc.add_(l.total.detach().to(torch::kFloat64) * static_cast<double>(b.size()));
      ce_acc.add_(l.ce.to(torch::kFloat64) * static_cast<double>(b.size()));
      const Tensor p = classProbabilities(model_->classify(b.particles, b.mask, b.jets).logits);
      probs.index_copy_(0, rowsOf(rows), p.to(probs.dtype()));
    }
  } else {
    const bool zero = opts_.precision == "fp32" && scoresZeroLogits(model_, set, opts_.device);
    for (const auto& rows : batches) {
      Tensor logits, labels, weights;
      if (zero) {
        const Tensor idx = rowIndex(rows, set.labels.device());
        logits = zeroLogits(set, rows, opts_.device);
        labels = set.labels.index_select(0, idx).to(opts_.device);
        weights = set.weights.index_select(0, idx).to(opts_.device);
      } else {
        const JetBatch b = batchToDevice(makeBatch(set, rows, opts_.bucket), opts_.device);
        const Bf16Autocast autocast(opts_.precision == "bf16", opts_.device.type());
        logits = classifierLogits(model_, b);
        labels = b.labels;
        weights = b.weights;
      }
      loss_acc.add_(weightedClassifierLoss(logits, labels, weights).detach().to(torch::kFloat64) *
                    static_cast<double>(rows.size()));
      probs.index_copy_(0, rowsOf(rows), classProbabilities(logits).to(probs.dtype()));
    }
  }
  const double loss_sum = loss_acc.item<double>(), ce_sum = ce_acc.item<double>();
  if (objective == Objective::kPretrain) r.metrics["ce"] = ce_sum / static_cast<double>(set.size());
  probs = probs.cpu();
  r.probabilities = probs;
  if (opts_.sharded) {
    // (collective) Each rank scored its own rows: sum losses, counts and hits over ranks.
    if (c == 1)
      throw InputError(opts_.label +
                       ": sharded evaluation needs a multi-class or pretraining objective");
    const double hits =
        set.size() > 0 ? probs.argmax(1).eq(set.labels.cpu()).sum().item<double>() : 0.0;
    std::vector<double> sums{loss_sum, ce_sum, static_cast<double>(set.size()), hits};
    ctx_.allreduceSum(sums);
    const double n = std::max(1.0, sums[2]);
    r.loss = sums[0] / n;
    if (objective == Objective::kPretrain) r.metrics["ce"] = sums[1] / n;
    r.metrics["accuracy"] = sums[3] / n;
    r.metrics["jets"] = sums[2];
    if (was_training) model_->train();
    return r;
  }
  r.loss = loss_sum / static_cast<double>(std::max<int64_t>(1, set.size()));
  const Tensor labels = set.labels.cpu();
  if (c == 1) {
    std::vector<double> s(probs.data_ptr<float>(), probs.data_ptr<float>() + probs.numel());
    const Tensor yc = labels.to(torch::kInt32).contiguous();
    const Tensor wc = set.weights.to(torch::kFloat64).cpu().contiguous();
    std::vector<int> y(yc.data_ptr<int>(), yc.data_ptr<int>() + yc.numel());
    std::vector<double> w(wc.data_ptr<double>(), wc.data_ptr<double>() + wc.numel());
    const BinaryMetrics m = binaryMetrics(s, y, w);
    r.metrics["accuracy"] = m.accuracy;
    r.metrics["auc"] = m.auc;
    r.metrics["rejection_at_50"] = m.rejection50;
    r.metrics["rejection_at_30"] = m.rejection30;
  } else {
    r.metrics["accuracy"] = probs.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
  }
  if (was_training) model_->train();
  return r;
}

Tensor predictProbabilities(Pet& model, const JetTensors& set, int64_t batch_size, bool bucket) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t c = model->config().num_classes;
  // On the model's device until every batch is scored.
  const torch::Device device = model->parameters().front().device();
  const auto on = torch::TensorOptions().device(device);
  Tensor probs = c == 1 ? torch::zeros({set.size()}, on) : torch::zeros({set.size(), c}, on);
  const bool zero = scoresZeroLogits(model, set, device);
  for (const auto& rows : evalBatches(set, batch_size, bucket)) {
    const Tensor logits =
        zero ? zeroLogits(set, rows, device)
             : classifierLogits(model, batchToDevice(makeBatch(set, rows, bucket), device));
    probs.index_copy_(0, rowIndex(rows, device), classProbabilities(logits).to(probs.dtype()));
  }
  if (was_training) model->train();
  return probs.cpu();
}

}  // namespace foldfarm
