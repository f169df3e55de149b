#pragma once
// Training jets streamed from files that need not fit in memory (`pretrain --stream`,
// `bench data --stream`). Memory is set by the shuffle buffer and the read-ahead, not by the
// data set.
//
// The plan is a pure function of the files' row counts and the options, so every rank, and
// every resumed run, computes the same one without talking to the others:
//  1. The rows of the files, in order, are cut into blocks of `block_rows` rows (never across
//     files); `splitStreamBlocks` holds some blocks out for validation and test.
//  2. Epoch e permutes the training blocks with (seed, e); their rows in that order are the
//     epoch's sequence.
//  3. A segment is a stretch of an epoch run on W ranks. Its rows are the epoch's sequence
//     minus the rows drawn in the epoch's earlier segments, cut into W contiguous parts whose
//     sizes differ by at most one; part r feeds rank r's shuffle buffer in order.
//  4. Every rank takes S = ceil(largest part / B) steps: batches of B rows, the last one the
//     rest of the part (when that rest is empty, the batch before it gives it one row).
//  5. The shuffle buffer holds K jets. It is filled from the feed; each draw takes a uniform
//     slot (generator seeded by (seed, e, segment, r)) and refills that slot from the feed, or
//     with the last slot once the feed is done. With bucketing, the rows of 16 steps are drawn
//     at once, sorted by multiplicity, cut into that window's batches, and the batches are
//     taken in a shuffled order (the same on every rank, so that the ranks' batches of a step
//     have similar multiplicity), so that jets of a batch have similar multiplicity and the
//     padding beyond the batch's longest jet can be dropped.
// Each training row is therefore drawn exactly once per epoch over all ranks, and which rows
// a rank has drawn by step s depends on row ids only. A run stopped at step s resumes by
// replaying the draws (no data read), reading back the rows the buffer held and going on:
// bit-identical on the same number of ranks. On another number of ranks a new segment starts
// from the rows not yet drawn: no row is lost or repeated.
//
// Reading: `readers` threads read the feed's pieces ahead of the trainer (at most
// `read_ahead` pieces ready or in flight), each with its own open files.
// Thread-safety: one JetStream per trainer thread; its reader threads are internal.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/jet_arrays.hpp"

namespace foldfarm::data {

// Rows [begin, end) of file `file`; `global` is the id of row `begin` over all files.
struct StreamBlock {
  int file = 0;
  int64_t begin = 0, end = 0;
  int64_t global = 0;
  int64_t size() const { return end - begin; }
};

// The files' rows cut into blocks, in file order. `rows_per_file` from countJetsInFiles.
std::vector<StreamBlock> cutStreamBlocks(const std::vector<int64_t>& rows_per_file,
                                         int64_t block_rows);

// Held-out blocks: a fixed permutation of the blocks by `seed` gives the test blocks (about
// test_fraction of the rows), then the validation blocks (val_fraction), the rest trains.
// `val`/`test` receive global row ids of at most `eval_cap` rows each (0: all), taken from the
// held-out blocks in that order: what the trainer evaluates in memory.
struct StreamSplit {
  std::vector<StreamBlock> train;
  std::vector<int64_t> val, test;
  int64_t val_rows = 0, test_rows = 0;  // held out (before the cap)
};
StreamSplit splitStreamBlocks(const std::vector<StreamBlock>& blocks, double val_fraction,
                              double test_fraction, uint64_t seed, int64_t eval_cap);

// One stretch of an epoch run on `world` ranks, of `steps` steps each.
struct StreamSegment {
  int world = 1;
  int64_t steps = 0;
};

struct JetStreamOptions {
  int64_t batch_size = 256;
  int64_t buffer_jets = 16384;  // K
  bool bucket = true;           // windows of kStreamWindow steps sorted by multiplicity
  uint64_t seed = 0;
  int readers = 2;
  int read_ahead = 8;  // feed pieces ready or being read, over all readers
  std::string level;   // "" for jets files; "reco" or "gen" for unfold files
};

inline constexpr int64_t kStreamWindow = 16;

// The id-level plan of one segment for one rank: its feed and its batch sizes.
struct SegmentPlan {
  std::vector<StreamBlock> feed;  // pieces of blocks, in feed order
  int64_t feed_rows = 0;
  std::vector<int64_t> batch_sizes;  // one per step; every rank has the same count
};

// Extents (1 + index of the last real particle) of the given rows: what a replay needs to
// know which rows of a bucketed window the steps taken before a stop used.
using ExtentsFn = std::function<std::vector<int64_t>(const std::vector<int64_t>& ids)>;

// The plan for rank `rank` of a segment of `world` ranks that follows `done` (earlier
// segments of the epoch, with the steps taken in each) in epoch `epoch`. `drawn` (optional)
// receives the ids taken in `done`, sorted. `extents` is needed only when a segment of
// `done` ended inside a bucketed window. InputError when fewer rows remain than ranks, or
// when batch_size < 2.
SegmentPlan planSegment(const std::vector<StreamBlock>& train, const JetStreamOptions& o,
                        int64_t epoch, const std::vector<StreamSegment>& done, int world, int rank,
                        std::vector<int64_t>* drawn = nullptr, const ExtentsFn& extents = nullptr);

// Ids of the rows that segment `segment`'s rank `rank` takes in its first `steps` steps
// (replaying the shuffle buffer on ids), window by window in draw order; the id-only twin of
// JetStream. `extents` as for planSegment.
std::vector<int64_t> replayDraws(const SegmentPlan& plan, const JetStreamOptions& o, int64_t epoch,
                                 int segment, int rank, int64_t steps,
                                 const ExtentsFn& extents = nullptr);

class JetStream {
 public:
  // Opens every file (InputError naming a file that cannot be read or whose layout differs
  // from the first's). `train`: the training blocks (cutStreamBlocks, splitStreamBlocks).
  JetStream(std::vector<std::string> files, std::vector<StreamBlock> train, JetStreamOptions o);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  // Starts epoch `epoch` on `world` ranks as rank `rank`, continuing `history` (the epoch's
  // segments so far, the last one possibly unfinished): when the last segment has this
  // world size the run goes on inside it, at its step count; otherwise a new segment starts.
  // Returns the number of steps left in this epoch for this run.
  int64_t startEpoch(int64_t epoch, std::vector<StreamSegment> history, int world, int rank);
  // The next batch (raw features, labels and weights as the files hold them); its global
  // row ids in `ids`. Error after the last step of the epoch.
  JetArrays next(std::vector<int64_t>* ids = nullptr);
  // The epoch's segments including the current one with the steps taken in it, and the
  // batch size and buffer that drew their rows: what a state records to resume ({"epoch": e,
  // "segments": [[W, steps], ...], "batch_size": B, "buffer_jets": K}).
  nlohmann::json position() const;
  // Steps of a fresh epoch on `world` ranks (the learning-rate schedule's unit).
  int64_t stepsPerEpoch(int world) const;
  int64_t trainRows() const;
  int64_t numParticles() const;
  bool hasLabels() const;
  // Bytes held by the buffer and the read-ahead at most (for the log).
  double memoryBytes() const;
  // Seconds the trainer waited for data so far.
  double waitSeconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads the given global rows (any order) of `files` cut as `blocks` into memory, in that
// order (validation and test sets of a stream).
JetArrays readStreamRows(const std::vector<std::string>& files,
                         const std::vector<StreamBlock>& blocks, const std::vector<int64_t>& ids,
                         const std::string& level = "");

}  // namespace foldfarm::data
