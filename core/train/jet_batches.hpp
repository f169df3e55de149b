#pragma once
// Jets as tensors for training, and how an epoch is cut into batches.
//
// JetTensors holds a whole (in-memory) set: standardised features, the mask taken from the
// RAW feature 2 before standardisation, labels, per-event weights, and each jet's extent
// (1 + index of its last real particle).
//
// Batches (epochBatches): the permutation of all rows is a pure function of (seed, epoch);
// rank r of W takes the r-th of W equal shards of floor(N/W) rows, so every rank runs the
// same number of steps. With bucketing, rows are sorted by extent inside windows of
// kBucketWindow batches and the batch order is shuffled: jets of similar multiplicity share
// a batch and makeBatch() drops the padding columns beyond the batch's largest extent. The
// batch order is the same permutation on every rank: at each step the ranks' batches have
// the same size and the same place in their windows' extent order.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/data/features.hpp"
#include "core/data/jet_arrays.hpp"

namespace foldfarm {

struct JetTensors {
  torch::Tensor particles;  // (N, P, F) float32, standardised, padding rows 0
  torch::Tensor mask;       // (N, P) float32
  torch::Tensor jets;       // (N, J) float32, standardised
  torch::Tensor labels;     // (N) int64 (0 when the source had none)
  torch::Tensor weights;    // (N) float32 (1 when the source had none)
  // (N) float32 logit added to a one-logit classifier's output (undefined: none). A boosted
  // classifier (ensembles' "pet+mlp" chains) trains PET on top of another model's logits.
  torch::Tensor offset;
  std::vector<int64_t> extent;  // per jet: 1 + index of the last real particle (0: empty)

  int64_t size() const { return particles.defined() ? particles.size(0) : 0; }
  // From raw arrays (mask from raw feature 2, then standardised with `stats`).
  static JetTensors fromArrays(const data::JetArrays& raw, const data::FeatureStats& stats);
  // The same, standardising `raw` in place (no copy of the arrays).
  static JetTensors fromArrays(data::JetArrays&& raw, const data::FeatureStats& stats);
  // Sets `offset` (one value per row; InputError when the count differs from size()).
  void setOffset(const std::vector<float>& logit_offset);
  JetTensors subset(const std::vector<int64_t>& rows) const;
  // The tensors on `device` (extents stay on the host); batches of a set on a GPU are
  // gathered there (makeBatch).
  JetTensors to(torch::Device device) const;
  int64_t bytes() const;  // of its tensors
};

// One part of a labelled set cut from standardised jets: `rows` of `from`, each with the
// label `label` and the weight float(w[row]).
struct LabelledPart {
  const JetTensors* from = nullptr;
  const std::vector<int64_t>* rows = nullptr;
  int64_t label = 0;
  const std::vector<double>* w = nullptr;
};
// The parts one after the other, on the device of the first part: the same tensors as
// JetTensors::fromArrays of the concatenated raw rows (standardisation is per element), without
// touching the raw arrays again.
JetTensors labelledSet(const std::vector<LabelledPart>& parts);

struct JetBatch {
  torch::Tensor particles, mask, jets, labels, weights;
  torch::Tensor offset;       // (B) or undefined, as JetTensors::offset
  std::vector<int64_t> rows;  // rows of the source set, in batch order
  // Rows and particle columns holding data; the rest is padding of a fixed-shape batch
  // (padBatch). -1: the whole shape.
  int64_t real_rows = -1, real_cols = -1;
  // The static form a captured CUDA graph takes (staticForm): (B) float32, 1 for the rows
  // that count, 0 for padding rows. When defined, losses divide by its sum (a device value,
  // not a host count) and random draws cover the whole shape (real_rows/real_cols are -1).
  torch::Tensor row_mask;
  int64_t size() const { return particles.size(0); }
  int64_t realRows() const { return real_rows < 0 ? size() : real_rows; }
  int64_t realCols() const { return real_cols < 0 ? particles.size(1) : real_cols; }
  bool padded() const { return realRows() != size() || realCols() != particles.size(1); }
};

// trim: drop padding columns beyond the largest extent of the batch (else keep all P). The
// batch is on the set's device.
JetBatch makeBatch(const JetTensors& set, const std::vector<int64_t>& rows, bool trim);

// The batch on `device` (asynchronous from pinned memory to a GPU).
JetBatch batchToDevice(const JetBatch& b, torch::Device device);
// A host batch in page-locked memory, so that batchToDevice copies it without blocking.
JetBatch pinned(JetBatch b);

// `rows` as an int64 index tensor on `device`. On a GPU it is copied from page-locked memory
// without blocking (the host allocator keeps the block until the copy ran): a pageable
// copy would wait for every kernel queued before it, once per training step.
torch::Tensor rowIndex(const std::vector<int64_t>& rows, torch::Device device);

// Fixed shapes: the width a batch of `cols` particle columns is padded to: multiples of 16
// up to 64, of 32 up to 128, then of 64 (a handful of shapes per data set), but not past the
// data's `slots` (its particle slots, 0: unknown) rounded up to 16: 150 slots give the widest
// batches 160 columns, not 192 (28% more linear work, 64% more attention).
int64_t fixedBatchWidth(int64_t cols, int64_t slots = 0);
// `b` padded to `rows` rows (zero weight, label 0, no particles) and `cols` columns (mask 0).
// real_rows/real_cols keep what was there.
JetBatch padBatch(const JetBatch& b, int64_t rows, int64_t cols);

// `b` (padded or not) in the static form: row_mask marks its real rows, and the whole shape
// counts for random draws. Two batches of one shape then differ only in tensor values, so a
// step captured on one replays on the other.
JetBatch staticForm(const JetBatch& b);

constexpr int64_t kBucketWindow = 16;

std::vector<std::vector<int64_t>> epochBatches(const JetTensors& set, int64_t batch_size,
                                               uint64_t seed, int64_t epoch, int rank,
                                               int world_size, bool bucket);
// Sharded data (each rank holds only its own rows in `set`): this rank's batches of an
// epoch are its rows shuffled by (seed, epoch, rank), cut to the first `rows_per_rank`
// (the smallest shard, so every rank takes the same number of steps), then batched and
// bucketed like epochBatches.
std::vector<std::vector<int64_t>> shardEpochBatches(const JetTensors& set, int64_t batch_size,
                                                    uint64_t seed, int64_t epoch, int rank,
                                                    int64_t rows_per_rank, bool bucket);
// All rows once, sorted by extent (evaluation; predictions go back through JetBatch::rows).
std::vector<std::vector<int64_t>> evalBatches(const JetTensors& set, int64_t batch_size,
                                              bool bucket);

// Throws InputError "<command>: --val-fraction must be in [0, 1), not F" (and the same for
// --test-fraction; NaN too): the check of a command's held-out fractions, before it reads.
void checkHeldOutFractions(const std::string& command, double val_fraction, double test_fraction);

// Deterministic split of n rows: (train rows, held-out rows) with round(fraction * n) held out.
std::pair<std::vector<int64_t>, std::vector<int64_t>> splitRows(int64_t n, double fraction,
                                                                uint64_t seed);

}  // namespace foldfarm
