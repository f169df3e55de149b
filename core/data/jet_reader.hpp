#pragma once
// Reading OmniLearn HDF5 files (the layout of OmniLearn's preprocessing scripts): all at
// once, or streamed in batches.
//
// Layouts:
//  - jets (classification / pretraining): `data` (N,P,13) float, `jet` (N,4) float,
//    `pid` (N,) integer or (N,C) one-hot float/int (converted to class indices), optional
//    `weights` (N,).
//  - unfold: `reco`,`gen` (N,P,13); `reco_jets`,`gen_jets` (N,4); optional `reco_subs`,
//    `gen_subs` (N,6), `weights` (N,), `pass_reco`, `pass_gen` (N,) (any integer/float type,
//    non-zero = pass).
// Every problem with the input - unreadable/truncated/corrupt file, missing dataset, wrong
// rank or shape, N inconsistent across datasets, N == 0, zero-width rows (P == 0), a shape
// whose byte size overflows 64 bits, a read larger than readBudgetBytes(), NaN/Inf in a
// feature or weight, weights that are all zero over the whole file, a class label outside
// [0, C) or a one-hot row with no class set - throws InputError with ONE line naming the
// file, the dataset (and the row for bad values) and what to do. Thread-safety: one
// reader/stream per thread (HDF5 is serial).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/data/jet_arrays.hpp"

namespace foldfarm::data {

enum class FileLayout { kJets, kUnfold };

// Class labels are indices below the one-hot width, below the length of the file's
// `class_names` attribute when it has one, and always below this.
inline constexpr int64_t kMaxLabelClasses = 1024;

// Memory that one read (or one stream's index and window) may allocate: the value of
// FOLDFARM_READ_BUDGET_GIB when set (InputError if it is not a positive number), else this
// machine's physical memory. A read beyond it is refused with both sizes in GiB instead of
// failing in the allocator or being killed for memory.
uint64_t readBudgetBytes();
// InputError "<who>: <what> needs <bytes> of memory, more than the read budget of <budget>
// (...); <advice>" when `bytes` exceed readBudgetBytes().
void requireWithinReadBudget(const std::string& who, const std::string& what, double bytes,
                             const std::string& advice);

struct DatasetInfo {
  std::string name;
  std::vector<int64_t> dims;
  std::string type;  // "float32", "int64", ...
};

class JetFile {
 public:
  // Opens read-only and validates the layout (keys, ranks, shapes, N > 0). Does not read
  // the arrays (values are checked for NaN/Inf when read).
  explicit JetFile(std::string path);
  ~JetFile();
  JetFile(JetFile&&) noexcept;
  JetFile& operator=(JetFile&&) noexcept;

  const std::string& path() const;
  FileLayout layout() const;
  int64_t numJets() const;
  int64_t numParticles() const;  // P
  bool hasLabels() const;        // jets layout with `pid`
  // C of a one-hot pid, else the length of the `class_names` attribute; 0 if unknown or none.
  int64_t numClasses() const;
  bool hasSubs() const;  // unfold layout with the *_subs of every level it holds
  // Unfold layout: whether the file holds `level` ("reco" or "gen"). Experimental data holds
  // its reco level only, a truth sample its gen level only; readJets of a level the file does
  // not hold is an InputError naming it, readUnfold leaves it empty (UnfoldArrays::hasReco).
  bool hasLevel(const std::string& level) const;
  std::vector<DatasetInfo> datasets() const;
  std::map<std::string, std::string> attributes() const;  // root attributes as text

  // Rows [begin, end) (end = -1: to N). Jets layout: data/jet/pid/weights. Unfold layout with
  // level "reco" or "gen": that level's particles and jets, weights (no labels).
  JetArrays readJets(int64_t begin = 0, int64_t end = -1, const std::string& level = "") const;
  // Same as readJets, but into rows [at, at + end - begin) of `dst`, which must already have
  // this file's P and n >= at + end - begin rows, and labels/weights sized iff the file has them.
  void readJetsInto(int64_t begin, int64_t end, const std::string& level, JetArrays& dst,
                    int64_t at) const;
  // Unfold layout only (InputError otherwise).
  UnfoldArrays readUnfold(int64_t begin = 0, int64_t end = -1) const;
  // Selection flags `name` (pass_reco, pass_gen) of rows [begin, end) as readUnfold reads
  // them (1: the event passes); empty when the file has none (every event passes). Every
  // value must be 0 or 1 (bool, integer or float); InputError naming the row otherwise.
  std::vector<uint8_t> readPassFlags(const std::string& name, int64_t begin = 0,
                                     int64_t end = -1) const;
  // Reads every value that readUnfold (unfold layout) or readJets (jets layout) reads, a
  // piece of rows at a time, and throws the InputError that read would throw (NaN/Inf naming
  // the row, a selection flag other than 0/1, a class label out of range, weights all zero
  // over the whole file): a whole-file check in bounded memory (a piece per thread). On
  // threads, the error is the one of the lowest piece that holds one, as a reading in order
  // finds it.
  struct ValueCheck {
    int64_t rows_per_piece = 0;  // 0: whole chunks of the particles, about 32 MiB a piece
    int threads = 1;             // > 1: pieces in parallel, each thread through its own reader
    // Pieces part, part + parts, ... only (the ranks of a job share a file); with parts > 1
    // weights all zero are not refused (no part sees them all).
    int part = 0, parts = 1;
    // (rows read, rows of this part's pieces) after each piece, one call at a time; it may
    // throw (Ctrl-C): the check stops with that error.
    std::function<void(int64_t, int64_t)> on_rows;
    // The rows of a file of n rows that this part reads, in pieces of `piece_rows` (> 0).
    int64_t partRows(int64_t n, int64_t piece_rows) const;
  };
  void checkValues(const ValueCheck& how) const;
  void checkValues() const { checkValues(ValueCheck{}); }
  // Any 1-D or 2-D numeric dataset as float rows [begin, end) (e.g. part_px, subs).
  std::vector<float> readFloat(const std::string& name, int64_t begin = 0, int64_t end = -1) const;
  bool has(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a whole numeric dataset of any layout-free file as float / int64 (e.g. part_px,
// pid). `dims` receives its shape. InputError (one line, file and dataset named) when the
// file cannot be opened, the dataset is missing, N == 0, or (floats) a value is not finite.
std::vector<float> readFloatDataset(const std::string& path, const std::string& name,
                                    std::vector<int64_t>* dims = nullptr);
std::vector<int64_t> readInt64Dataset(const std::string& path, const std::string& name,
                                      std::vector<int64_t>* dims = nullptr);
bool fileHasDataset(const std::string& path, const std::string& name);
// How a dataset is stored: "chunked (256,128,13) shuffle+deflate(1)", "contiguous", ...
// InputError as readFloatDataset when the file or dataset cannot be opened.
std::string datasetStorageText(const std::string& path, const std::string& name);
// Class labels of dataset `name` as indices: (N,) integers, or (N,C) one-hot (the column
// of the largest entry). InputError naming the row for an index outside
// [0, kMaxLabelClasses) or a one-hot row with no entry > 0, and as readInt64Dataset.
std::vector<int64_t> readClassLabels(const std::string& path, const std::string& name = "pid");

// The classes of labelled jets files read together (pretraining): the names their
// `class_names` attributes give (empty when none gives them) and the jets of each class over
// every row. InputError naming the files when one file names its classes otherwise than
// another, or names them beside one that does not (the labels would mean other classes);
// InputError naming the row when, without names, a label leaves more classes empty than hold
// jets (labels 0, 1 and one 1000: a 1001-class model of which 998 classes never train).
struct ClassCensus {
  std::vector<std::string> names;
  std::vector<int64_t> counts;  // jets per label, 0 .. the largest label
};
ClassCensus classCensus(const std::vector<std::string>& files);

inline JetArrays readJetFile(const std::string& path) {
  return JetFile(path).readJets();
}
inline UnfoldArrays readUnfoldFile(const std::string& path) {
  return JetFile(path).readUnfold();
}

// Streams batches of jets from one or more files without loading them.
//
// Rows of all files form one sequence (file order, then row order), cut into blocks of
// `block_rows` contiguous rows (blocks never cross files). Per epoch:
//  1. if shuffle: block order is permuted with a generator seeded from (seed, epoch);
//  2. the resulting row sequence is cut into world_size equal shards of floor(N/world_size)
//     rows; rank r takes shard r (the N mod world_size remainder is skipped this epoch). So
//     ranks partition rows, every rank gets the same count, and shards change per epoch;
//  3. each rank reads its blocks as contiguous hyperslabs, `window_blocks` at a time, and if
//     shuffle permutes the rows within the window (seeded from (seed, epoch, rank, window));
//  4. batches of `batch_size` rows are cut; the last, smaller batch is returned unless
//     drop_last.
// Every rank sees the same number of batches per epoch (batchesPerEpoch()).
// All files must share P and layout. For unfold files, `level` selects "reco" or "gen".
struct StreamOptions {
  int64_t batch_size = 256;
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = false;
  int64_t block_rows = 512;
  int64_t window_blocks = 8;
  std::string level;  // "" for jets files; "reco" or "gen" for unfold files
};

class BatchStream {
 public:
  // Opens and validates every file (InputError as JetFile). Throws InputError when
  // rank/world_size/batch_size are invalid or there are fewer rows than ranks.
  BatchStream(std::vector<std::string> files, StreamOptions opts);
  ~BatchStream();
  BatchStream(BatchStream&&) noexcept;
  BatchStream& operator=(BatchStream&&) noexcept;

  int64_t totalRows() const;    // N over all files
  int64_t rowsPerRank() const;  // floor(N / world_size)
  int64_t batchesPerEpoch() const;
  int64_t numParticles() const;  // P
  bool hasLabels() const;

  // Starts (or restarts) epoch `epoch`; next() then yields its batches.
  void startEpoch(int64_t epoch);
  // Fills `batch` with the next batch; returns false at the end of the epoch.
  bool next(JetArrays& batch);
  // Global row indices (over all files) of the last batch, in batch order.
  const std::vector<int64_t>& lastRows() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace foldfarm::data
