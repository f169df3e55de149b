#include "core/train/jet_batches.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/seed.hpp"

namespace foldfarm {

using torch::Tensor;

JetTensors JetTensors::fromArrays(const data::JetArrays& raw, const data::FeatureStats& stats) {
  return fromArrays(data::JetArrays(raw), stats);
}

JetTensors JetTensors::fromArrays(data::JetArrays&& raw, const data::FeatureStats& stats) {
  raw.checkShapes();
  JetTensors t;
  const int64_t n = raw.n, p = raw.P;
  const std::vector<uint8_t> mask = raw.realMask();
  data::JetArrays& std_arrays = raw;
  stats.standardize(std_arrays);
  t.particles = torch::from_blob(std_arrays.particles.data(), {n, p, data::kNumParticleFeatures},
                                 torch::kFloat32)
                    .clone();
  t.jets =
      torch::from_blob(std_arrays.jets.data(), {n, data::kNumJetFeatures}, torch::kFloat32).clone();
  t.mask = torch::from_blob(const_cast<uint8_t*>(mask.data()), {n, p}, torch::kUInt8)
               .to(torch::kFloat32);
  t.particles.mul_(t.mask.unsqueeze(-1));
  if (!raw.labels.empty())
    t.labels =
        torch::from_blob(const_cast<int64_t*>(raw.labels.data()), {n}, torch::kInt64).clone();
  else
    t.labels = torch::zeros({n}, torch::kInt64);
  if (!raw.weights.empty())
    t.weights =
        torch::from_blob(const_cast<float*>(raw.weights.data()), {n}, torch::kFloat32).clone();
  else
    t.weights = torch::ones({n}, torch::kFloat32);
  t.extent.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = p - 1; j >= 0; --j)
      if (mask[static_cast<size_t>(i * p + j)]) {
        t.extent[static_cast<size_t>(i)] = j + 1;
        break;
      }
  return t;
}

void JetTensors::setOffset(const std::vector<float>& logit_offset) {
  if (static_cast<int64_t>(logit_offset.size()) != size())
    throw InputError("logit offsets: " + std::to_string(logit_offset.size()) + " values for " +
                     std::to_string(size()) + " jets");
  offset = torch::from_blob(const_cast<float*>(logit_offset.data()), {size()}, torch::kFloat32)
               .to(particles.device(), /*non_blocking=*/false, /*copy=*/true);
}

JetTensors JetTensors::subset(const std::vector<int64_t>& rows) const {
  const Tensor idx = rowIndex(rows, particles.device());
  JetTensors s;
  s.particles = particles.index_select(0, idx);
  s.mask = mask.index_select(0, idx);
  s.jets = jets.index_select(0, idx);
  s.labels = labels.index_select(0, idx);
  s.weights = weights.index_select(0, idx);
  if (offset.defined()) s.offset = offset.index_select(0, idx);
  for (int64_t r : rows) s.extent.push_back(extent.at(static_cast<size_t>(r)));
  return s;
}

JetTensors JetTensors::to(torch::Device device) const {
  JetTensors out = *this;
  for (Tensor* t : {&out.particles, &out.mask, &out.jets, &out.labels, &out.weights, &out.offset})
    if (t->defined()) *t = t->to(device);
  return out;
}

int64_t JetTensors::bytes() const {
  int64_t n = 0;
  for (const Tensor* t : {&particles, &mask, &jets, &labels, &weights, &offset})
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  return n;
}

Tensor rowIndex(const std::vector<int64_t>& rows, torch::Device device) {
  const Tensor idx = torch::tensor(rows, torch::kInt64);
  if (!device.is_cuda()) return idx.to(device);
  return idx.pin_memory().to(device, /*non_blocking=*/true);
}

JetBatch pinned(JetBatch b) {
  for (Tensor* t : {&b.particles, &b.mask, &b.jets, &b.labels, &b.weights, &b.offset, &b.row_mask})
    if (t->defined() && !t->is_pinned()) *t = t->pin_memory();
  return b;
}

JetTensors labelledSet(const std::vector<LabelledPart>& parts) {
  if (parts.empty()) throw Error("labelledSet: no parts");
  const torch::Device device = parts.front().from->particles.device();
  std::vector<Tensor> x, m, j, y, w;
  JetTensors out;
  for (const LabelledPart& p : parts) {
    const std::vector<int64_t>& rows = *p.rows;
    const Tensor idx = rowIndex(rows, device);
    x.push_back(p.from->particles.index_select(0, idx));
    m.push_back(p.from->mask.index_select(0, idx));
    j.push_back(p.from->jets.index_select(0, idx));
    y.push_back(torch::full({static_cast<int64_t>(rows.size())}, p.label,
                            torch::TensorOptions(torch::kInt64).device(device)));
    std::vector<float> wf(rows.size());
    for (size_t i = 0; i < rows.size(); ++i)
      wf[i] = static_cast<float>((*p.w)[static_cast<size_t>(rows[i])]);
    w.push_back(torch::from_blob(wf.data(), {static_cast<int64_t>(wf.size())}, torch::kFloat32)
                    .to(device, /*non_blocking=*/false, /*copy=*/true));
    for (int64_t r : rows) out.extent.push_back(p.from->extent.at(static_cast<size_t>(r)));
  }
  out.particles = torch::cat(x);
  out.mask = torch::cat(m);
  out.jets = torch::cat(j);
  out.labels = torch::cat(y);
  out.weights = torch::cat(w);
  return out;
}

JetBatch makeBatch(const JetTensors& set, const std::vector<int64_t>& rows, bool trim) {
  const Tensor idx = rowIndex(rows, set.particles.device());
  int64_t cols = set.particles.size(1);
  if (trim) {
    int64_t m = 1;
    for (int64_t r : rows) m = std::max(m, set.extent[static_cast<size_t>(r)]);
    cols = std::min(cols, m);
  }
  JetBatch b;
  b.particles = set.particles.narrow(1, 0, cols).index_select(0, idx);
  b.mask = set.mask.narrow(1, 0, cols).index_select(0, idx);
  b.jets = set.jets.index_select(0, idx);
  b.labels = set.labels.index_select(0, idx);
  b.weights = set.weights.index_select(0, idx);
  if (set.offset.defined()) b.offset = set.offset.index_select(0, idx);
  b.rows = rows;
  return b;
}

JetBatch batchToDevice(const JetBatch& b, torch::Device device) {
  if (b.particles.device() == device) return b;
  const bool async = device.is_cuda();
  auto move = [&](const Tensor& t) {
    if (!t.defined()) return t;
    return ((async && !t.is_pinned()) ? t.pin_memory() : t).to(device, /*non_blocking=*/async);
  };
  JetBatch out = b;
  out.particles = move(b.particles);
  out.mask = move(b.mask);
  out.jets = move(b.jets);
  out.labels = move(b.labels);
  out.weights = move(b.weights);
  out.offset = move(b.offset);
  out.row_mask = move(b.row_mask);
  return out;
}

JetBatch staticForm(const JetBatch& b) {
  JetBatch out = b;
  const auto on = torch::TensorOptions(torch::kFloat32).device(b.particles.device());
  out.row_mask = torch::arange(b.size(), on).lt(static_cast<double>(b.realRows())).to(on);
  out.real_rows = -1;
  out.real_cols = -1;
  return out;
}

int64_t fixedBatchWidth(int64_t cols, int64_t slots) {
  const int64_t step = cols <= 64 ? 16 : cols <= 128 ? 32 : 64;
  const int64_t width = std::max<int64_t>(step, (cols + step - 1) / step * step);
  if (slots <= 0) return width;
  return std::min(width, std::max(cols, (slots + 15) / 16 * 16));
}

JetBatch padBatch(const JetBatch& b, int64_t rows, int64_t cols) {
  const int64_t n = b.size(), p = b.particles.size(1);
  if (rows < n || cols < p)
    throw Error("padBatch: cannot pad a batch of " + std::to_string(n) + " x " + std::to_string(p) +
                " to " + std::to_string(rows) + " x " + std::to_string(cols));
  JetBatch out = b;
  out.real_rows = b.realRows();
  out.real_cols = b.realCols();
  if (rows == n && cols == p) return out;
  namespace F = torch::nn::functional;
  // constant_pad_nd pads the last dimensions first: {last_lo, last_hi, prev_lo, prev_hi, ...}.
  out.particles = F::pad(b.particles, F::PadFuncOptions({0, 0, 0, cols - p, 0, rows - n}));
  out.mask = F::pad(b.mask, F::PadFuncOptions({0, cols - p, 0, rows - n}));
  out.jets = F::pad(b.jets, F::PadFuncOptions({0, 0, 0, rows - n}));
  out.labels = F::pad(b.labels, F::PadFuncOptions({0, rows - n}));
  out.weights = F::pad(b.weights, F::PadFuncOptions({0, rows - n}));
  if (b.offset.defined()) out.offset = F::pad(b.offset, F::PadFuncOptions({0, rows - n}));
  if (b.row_mask.defined()) out.row_mask = F::pad(b.row_mask, F::PadFuncOptions({0, rows - n}));
  return out;
}

namespace {

// Batches of `mine` (rows of `set`, in order): with bucketing, windows of kBucketWindow
// batches are sorted by extent and the batches shuffled by (seed, epoch). Every rank holds as
// many rows and shuffles its batches alike, so at each step all ranks train on a batch of the
// same size (the one short batch falls on the same step everywhere, and the gradient mean
// over ranks weighs every jet alike) and of the same place in its window's extent order (no
// rank waits on another's longest jets). The seed is the one rank 0 always had: a single
// process's order is unchanged.
std::vector<std::vector<int64_t>> batchRows(const JetTensors& set, std::vector<int64_t> mine,
                                            int64_t batch_size, uint64_t seed, int64_t epoch,
                                            bool bucket) {
  const auto per_rank = static_cast<int64_t>(mine.size());
  std::vector<std::vector<int64_t>> batches;
  // A batch beyond the rows is all of them (and batch_size * kBucketWindow would overflow).
  batch_size = std::min(batch_size, std::max<int64_t>(1, per_rank));
  const int64_t window = bucket ? batch_size * kBucketWindow : batch_size;
  for (int64_t w = 0; w < per_rank; w += window) {
    const auto first = mine.begin() + w;
    const auto last = mine.begin() + std::min(per_rank, w + window);
    if (bucket)
      std::stable_sort(first, last, [&](int64_t a, int64_t b) {
        return set.extent[static_cast<size_t>(a)] < set.extent[static_cast<size_t>(b)];
      });
    for (auto it = first; it < last; it += std::min<int64_t>(batch_size, last - it))
      batches.emplace_back(it, it + std::min<int64_t>(batch_size, last - it));
  }
  if (bucket) {
    std::mt19937_64 gb(deriveSeed({seed, 0x6275636bULL, static_cast<uint64_t>(epoch), 0}));
    std::shuffle(batches.begin(), batches.end(), gb);
  }
  return batches;
}

}  // namespace

std::vector<std::vector<int64_t>> epochBatches(const JetTensors& set, int64_t batch_size,
                                               uint64_t seed, int64_t epoch, int rank,
                                               int world_size, bool bucket) {
  const int64_t n = set.size();
  if (batch_size < 1) throw InputError("batch size must be >= 1");
  if (world_size < 1 || rank < 0 || rank >= world_size || n < world_size)
    throw InputError("cannot shard " + std::to_string(n) + " jets over " +
                     std::to_string(world_size) +
                     " ranks (each rank needs at least one jet a batch): use more jets or fewer "
                     "ranks");
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 g(deriveSeed({seed, 0x6a657473ULL, static_cast<uint64_t>(epoch)}));
  std::shuffle(perm.begin(), perm.end(), g);
  const int64_t per_rank = n / world_size;
  std::vector<int64_t> mine(perm.begin() + rank * per_rank, perm.begin() + (rank + 1) * per_rank);
  return batchRows(set, std::move(mine), batch_size, seed, epoch, bucket);
}

std::vector<std::vector<int64_t>> shardEpochBatches(const JetTensors& set, int64_t batch_size,
                                                    uint64_t seed, int64_t epoch, int rank,
                                                    int64_t rows_per_rank, bool bucket) {
  if (batch_size < 1) throw InputError("batch size must be >= 1");
  if (rows_per_rank < 1 || rows_per_rank > set.size())
    throw InputError("cannot take " + std::to_string(rows_per_rank) +
                     " rows per rank from a shard of " + std::to_string(set.size()) + " jets");
  std::vector<int64_t> perm(static_cast<size_t>(set.size()));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 g(deriveSeed(
      {seed, 0x7368617264ULL, static_cast<uint64_t>(epoch), static_cast<uint64_t>(rank)}));
  std::shuffle(perm.begin(), perm.end(), g);
  perm.resize(static_cast<size_t>(rows_per_rank));
  return batchRows(set, std::move(perm), batch_size, seed, epoch, bucket);
}

std::vector<std::vector<int64_t>> evalBatches(const JetTensors& set, int64_t batch_size,
                                              bool bucket) {
  std::vector<int64_t> rows(static_cast<size_t>(set.size()));
  std::iota(rows.begin(), rows.end(), 0);
  if (bucket)
    std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) {
      return set.extent[static_cast<size_t>(a)] < set.extent[static_cast<size_t>(b)];
    });
  std::vector<std::vector<int64_t>> batches;
  for (size_t i = 0; i < rows.size(); i += static_cast<size_t>(batch_size))
    batches.emplace_back(rows.begin() + i,
                         rows.begin() + std::min(rows.size(), i + static_cast<size_t>(batch_size)));
  return batches;
}

void checkHeldOutFractions(const std::string& command, double val_fraction, double test_fraction) {
  for (const auto& [name, f] : {std::pair<const char*, double>{"--val-fraction", val_fraction},
                                {"--test-fraction", test_fraction}})
    if (!(f >= 0 && f < 1))
      throw InputError(fmt::format("{}: {} must be in [0, 1), not {}", command, name, f));
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> splitRows(int64_t n, double fraction,
                                                                uint64_t seed) {
  if (!(fraction >= 0 && fraction <= 1))
    throw InputError(fmt::format("a held-out fraction must be in [0, 1], not {}", fraction));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 g(deriveSeed({seed, 0x73706c74ULL}));
  std::shuffle(perm.begin(), perm.end(), g);
  const auto held = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  std::vector<int64_t> out(perm.begin(), perm.begin() + held);
  std::vector<int64_t> in(perm.begin() + held, perm.end());
  std::sort(out.begin(), out.end());
  std::sort(in.begin(), in.end());
  return {in, out};
}

}  // namespace foldfarm
