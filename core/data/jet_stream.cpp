#include "core/data/jet_stream.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/lru_cache.hpp"
#include "core/base/seed.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/rng.hpp"

namespace foldfarm::data {
namespace {

constexpr int64_t F = kNumParticleFeatures;
constexpr uint64_t kPurposeHoldout = 0x686f6c646f7574ULL;   // "holdout"
constexpr uint64_t kPurposeEpochOrder = 0x65706f6368ULL;    // "epoch"
constexpr uint64_t kPurposeDraws = 0x6472617773ULL;         // "draws"
constexpr uint64_t kPurposeBatchOrder = 0x626f72646572ULL;  // "border"
// Files a reader keeps open (least recently read closed first): the feed's pieces come from
// few files at a time, and reopening one costs far less than decoding a block.
constexpr size_t kOpenFilesPerReader = 8;

int64_t windowSteps(const JetStreamOptions& o) {
  return o.bucket ? kStreamWindow : 1;
}

// Rows of steps [from, to) of a plan.
int64_t rowsOfSteps(const SegmentPlan& p, int64_t from, int64_t to) {
  int64_t n = 0;
  for (int64_t s = from; s < to; ++s) n += p.batch_sizes[static_cast<size_t>(s)];
  return n;
}

Rng drawRng(const JetStreamOptions& o, int64_t epoch, int segment, int rank) {
  return Rng(deriveSeed({o.seed, kPurposeDraws, static_cast<uint64_t>(epoch),
                         static_cast<uint64_t>(segment), static_cast<uint64_t>(rank)}));
}

// The feed of a plan as a cursor over ids.
struct FeedCursor {
  const SegmentPlan* plan = nullptr;
  size_t piece = 0;
  int64_t offset = 0;  // within the piece
  int64_t fed = 0;
  bool more() const { return fed < plan->feed_rows; }
  int64_t next() {
    while (plan->feed[piece].size() == offset) {
      ++piece;
      offset = 0;
    }
    const int64_t id = plan->feed[piece].global + offset;
    ++offset;
    ++fed;
    return id;
  }
};

// The shuffle buffer on ids: `ids[j]` is the row in slot j.
struct DrawState {
  std::vector<int64_t> ids;
  FeedCursor feed;
  Rng rng{0};
  bool filled = false;
};

DrawState startDraws(const SegmentPlan& plan, const JetStreamOptions& o, int64_t epoch, int segment,
                     int rank) {
  DrawState s;
  s.feed.plan = &plan;
  s.rng = drawRng(o, epoch, segment, rank);
  return s;
}

// Draws `n` rows: appends their ids to `out` (when given).
void drawIds(DrawState& s, int64_t K, int64_t n, std::vector<int64_t>* out) {
  if (!s.filled) {
    while (static_cast<int64_t>(s.ids.size()) < K && s.feed.more()) s.ids.push_back(s.feed.next());
    s.filled = true;
  }
  for (int64_t k = 0; k < n; ++k) {
    if (s.ids.empty()) throw Error("jet stream: the shuffle buffer ran dry (plan mismatch)");
    const auto j = static_cast<size_t>(s.rng.below(s.ids.size()));
    if (out) out->push_back(s.ids[j]);
    if (s.feed.more()) {
      s.ids[j] = s.feed.next();
    } else {
      s.ids[j] = s.ids.back();
      s.ids.pop_back();
    }
  }
}

std::vector<StreamBlock> epochOrder(const std::vector<StreamBlock>& train, uint64_t seed,
                                    int64_t epoch) {
  std::vector<StreamBlock> order = train;
  Rng rng(deriveSeed({seed, kPurposeEpochOrder, static_cast<uint64_t>(epoch)}));
  rng.shuffle(order);
  return order;
}

// Rank r's part of the rows of `order` not in `drawn` (sorted), and the segment's steps.
SegmentPlan planFromDrawn(const std::vector<StreamBlock>& order, const std::vector<int64_t>& drawn,
                          const JetStreamOptions& o, int world, int rank) {
  int64_t total = 0;
  for (const auto& b : order) total += b.size();
  const int64_t M = total - static_cast<int64_t>(drawn.size());
  if (M < world)
    throw InputError("jet stream: " + std::to_string(M) + " training jets left for " +
                     std::to_string(world) + " ranks; use more jets or fewer ranks");
  const auto cut = [M, world](int64_t r) {
    return static_cast<int64_t>(static_cast<__int128>(M) * r / world);
  };
  const int64_t lo = cut(rank), hi = cut(rank + 1);
  SegmentPlan p;
  int64_t pos = 0;  // position in the sequence of rows not drawn
  for (const auto& b : order) {
    if (pos >= hi) break;
    // Runs of rows of `b` not drawn.
    auto it = std::lower_bound(drawn.begin(), drawn.end(), b.global);
    int64_t row = b.begin;
    while (row < b.end && pos < hi) {
      int64_t stop = b.end;
      if (it != drawn.end() && *it < b.global + b.size()) stop = b.begin + (*it - b.global);
      if (stop > row) {
        const int64_t len = stop - row;
        const int64_t a = std::max(lo, pos), e = std::min(hi, pos + len);
        if (a < e) {
          const int64_t off = a - pos;
          p.feed.push_back(
              {b.file, row + off, row + off + (e - a), b.global + (row - b.begin) + off});
          p.feed_rows += e - a;
        }
        pos += len;
      }
      row = stop;
      if (it != drawn.end() && *it < b.global + b.size()) {
        ++row;  // skip the drawn row
        ++it;
      }
    }
  }
  const int64_t largest = (M + world - 1) / world;
  const int64_t B = o.batch_size;
  const int64_t S = (largest + B - 1) / B;
  p.batch_sizes.assign(static_cast<size_t>(S), B);
  const int64_t last = p.feed_rows - (S - 1) * B;
  p.batch_sizes.back() = last;
  if (last == 0) {  // one row fewer than the largest part, and a multiple of B
    p.batch_sizes[static_cast<size_t>(S - 2)] = B - 1;
    p.batch_sizes.back() = 1;
  }
  return p;
}

void copyRow(const JetArrays& from, int64_t i, JetArrays& to, int64_t j) {
  const int64_t P = from.P;
  std::copy_n(from.particles.data() + i * P * F, P * F, to.particles.data() + j * P * F);
  std::copy_n(from.jets.data() + i * kNumJetFeatures, kNumJetFeatures,
              to.jets.data() + j * kNumJetFeatures);
  if (!from.labels.empty()) to.labels[static_cast<size_t>(j)] = from.labels[static_cast<size_t>(i)];
  if (!from.weights.empty())
    to.weights[static_cast<size_t>(j)] = from.weights[static_cast<size_t>(i)];
}

// The batches of steps [first, last) of a segment from the window's rows (indices into them,
// in draw order): sorted by extent when bucketing, cut into the steps' sizes, and the slices
// of full size dealt to those steps in an order shuffled by (seed, epoch, segment, first),
// alike on every rank.
std::vector<std::vector<int64_t>> formWindowBatches(const std::vector<int64_t>& extents,
                                                    const SegmentPlan& plan, int64_t first,
                                                    int64_t last, const JetStreamOptions& o,
                                                    int64_t epoch, int segment) {
  const auto n = static_cast<int64_t>(extents.size());
  std::vector<int64_t> rows(static_cast<size_t>(n));
  std::iota(rows.begin(), rows.end(), int64_t{0});
  if (o.bucket)
    std::stable_sort(rows.begin(), rows.end(), [&extents](int64_t a, int64_t b) {
      return extents[static_cast<size_t>(a)] < extents[static_cast<size_t>(b)];
    });
  std::vector<std::vector<int64_t>> batches;
  int64_t at = 0;
  for (int64_t st = first; st < last; ++st) {
    const int64_t b = plan.batch_sizes[static_cast<size_t>(st)];
    batches.emplace_back(rows.begin() + at, rows.begin() + at + b);
    at += b;
  }
  if (o.bucket && batches.size() > 1) {
    std::vector<size_t> same;
    for (size_t k = 0; k < batches.size(); ++k)
      if (static_cast<int64_t>(batches[k].size()) == o.batch_size) same.push_back(k);
    std::vector<size_t> perm = same;
    // The same order on every rank (rank 0's seed): the ranks' batches of a step hold the
    // same place in their windows' multiplicity order, so none waits on another's longest.
    Rng rng(deriveSeed({o.seed, kPurposeBatchOrder, static_cast<uint64_t>(epoch),
                        static_cast<uint64_t>(segment), 0, static_cast<uint64_t>(first)}));
    rng.shuffle(perm);
    std::vector<std::vector<int64_t>> shuffled = batches;
    for (size_t k = 0; k < same.size(); ++k) shuffled[same[k]] = batches[perm[k]];
    batches = std::move(shuffled);
  }
  return batches;
}

// Extent of a raw jet: 1 + index of its last real particle (raw feature 2 != 0).
int64_t extentOf(const float* particles, int64_t P) {
  for (int64_t j = P - 1; j >= 0; --j)
    if (particles[j * F + 2] != 0.0f) return j + 1;
  return 0;
}

}  // namespace

std::vector<StreamBlock> cutStreamBlocks(const std::vector<int64_t>& rows_per_file,
                                         int64_t block_rows) {
  if (block_rows < 1) throw InputError("jet stream: block rows must be >= 1");
  std::vector<StreamBlock> out;
  int64_t global = 0;
  for (size_t f = 0; f < rows_per_file.size(); ++f) {
    for (int64_t b = 0; b < rows_per_file[f]; b += block_rows)
      out.push_back(
          {static_cast<int>(f), b, std::min(rows_per_file[f], b + block_rows), global + b});
    global += rows_per_file[f];
  }
  return out;
}

StreamSplit splitStreamBlocks(const std::vector<StreamBlock>& blocks, double val_fraction,
                              double test_fraction, uint64_t seed, int64_t eval_cap) {
  if (!(val_fraction >= 0) || !(test_fraction >= 0) || val_fraction + test_fraction >= 1)
    throw InputError("jet stream: validation and test fractions must be >= 0 and sum below 1");
  int64_t total = 0;
  for (const auto& b : blocks) total += b.size();
  std::vector<size_t> idx(blocks.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  Rng rng(deriveSeed({seed, kPurposeHoldout}));
  rng.shuffle(idx);
  const auto want = [total](double f) { return static_cast<int64_t>(std::llround(f * total)); };
  const int64_t want_test = want(test_fraction), want_val = want(val_fraction);
  StreamSplit s;
  std::vector<bool> held(blocks.size(), false);
  size_t k = 0;
  const auto take = [&](int64_t wanted, std::vector<int64_t>& ids, int64_t& rows) {
    // Keep at least one block for training.
    while (rows < wanted && k + 1 < idx.size()) {
      const StreamBlock& b = blocks[idx[k]];
      held[idx[k]] = true;
      for (int64_t r = 0;
           r < b.size() && (eval_cap <= 0 || static_cast<int64_t>(ids.size()) < eval_cap); ++r)
        ids.push_back(b.global + r);
      rows += b.size();
      ++k;
    }
  };
  take(want_test, s.test, s.test_rows);
  take(want_val, s.val, s.val_rows);
  for (size_t i = 0; i < blocks.size(); ++i)
    if (!held[i]) s.train.push_back(blocks[i]);
  return s;
}

SegmentPlan planSegment(const std::vector<StreamBlock>& train, const JetStreamOptions& o,
                        int64_t epoch, const std::vector<StreamSegment>& done, int world, int rank,
                        std::vector<int64_t>* drawn_out, const ExtentsFn& extents) {
  if (o.batch_size < 2) throw InputError("jet stream: the batch size must be at least 2");
  if (o.buffer_jets < 1) throw InputError("jet stream: the shuffle buffer must hold >= 1 jet");
  if (world < 1 || rank < 0 || rank >= world)
    throw InputError("jet stream: rank " + std::to_string(rank) + " outside world size " +
                     std::to_string(world));
  if (!done.empty()) {
    // The ids of every row drawn in the earlier segments are held (sorted, with the
    // segment's own and its replay): about 24 bytes per row, refused by name beyond the
    // budget (a resume of a 10^9-jet epoch on another number of ranks).
    double rows = 0, train_rows = 0;
    for (const auto& d : done)
      rows += static_cast<double>(d.world) * static_cast<double>(std::max<int64_t>(d.steps, 0)) *
              static_cast<double>(o.batch_size);
    for (const auto& b : train) train_rows += static_cast<double>(b.size());
    rows = std::min(rows, train_rows);
    requireWithinReadBudget("jet stream",
                            "continuing epoch " + std::to_string(epoch) + " from the " +
                                std::to_string(static_cast<int64_t>(rows)) +
                                " jets drawn before the stop",
                            24.0 * rows,
                            "resume on the number of ranks the run stopped with, or with "
                            "FOLDFARM_READ_BUDGET_GIB raised where memory allows");
  }
  const std::vector<StreamBlock> order = epochOrder(train, o.seed, epoch);
  std::vector<int64_t> drawn;
  for (size_t i = 0; i < done.size(); ++i) {
    std::vector<int64_t> now;
    for (int q = 0; q < done[i].world; ++q) {
      const SegmentPlan p = planFromDrawn(order, drawn, o, done[i].world, q);
      if (done[i].steps > static_cast<int64_t>(p.batch_sizes.size()))
        throw InputError("jet stream: a recorded segment has " + std::to_string(done[i].steps) +
                         " steps, more than its plan's " + std::to_string(p.batch_sizes.size()) +
                         " (the state belongs to other data or options)");
      const std::vector<int64_t> ids =
          replayDraws(p, o, epoch, static_cast<int>(i), q, done[i].steps, extents);
      now.insert(now.end(), ids.begin(), ids.end());
    }
    drawn.insert(drawn.end(), now.begin(), now.end());
    std::sort(drawn.begin(), drawn.end());
  }
  SegmentPlan p = planFromDrawn(order, drawn, o, world, rank);
  if (drawn_out) *drawn_out = std::move(drawn);
  return p;
}

std::vector<int64_t> replayDraws(const SegmentPlan& plan, const JetStreamOptions& o, int64_t epoch,
                                 int segment, int rank, int64_t steps, const ExtentsFn& extents) {
  DrawState s = startDraws(plan, o, epoch, segment, rank);
  std::vector<int64_t> out;
  const int64_t W = windowSteps(o);
  const auto S = static_cast<int64_t>(plan.batch_sizes.size());
  steps = std::min(steps, S);
  const int64_t w0 = steps / W * W;
  drawIds(s, o.buffer_jets, rowsOfSteps(plan, 0, w0), &out);
  if (w0 == steps) return out;
  // Stopped inside a window: which of its rows the first steps took depends on their
  // multiplicities (the window is sorted by them).
  if (!extents)
    throw Error("jet stream: replaying a window begun but not finished needs the jets' extents");
  std::vector<int64_t> win;
  drawIds(s, o.buffer_jets, rowsOfSteps(plan, w0, std::min(S, w0 + W)), &win);
  const auto batches =
      formWindowBatches(extents(win), plan, w0, std::min(S, w0 + W), o, epoch, segment);
  for (int64_t st = w0; st < steps; ++st)
    for (int64_t r : batches[static_cast<size_t>(st - w0)])
      out.push_back(win[static_cast<size_t>(r)]);
  return out;
}

// ---------------------------------------------------------------------------------------
// JetStream

struct JetStream::Impl {
  std::vector<std::string> paths;
  std::vector<StreamBlock> train;
  JetStreamOptions o;
  int64_t P = 0;
  bool labels = false, weights = false;
  int64_t train_rows = 0;

  // The current segment.
  int64_t epoch = 0;
  std::vector<StreamSegment> history;  // earlier segments of the epoch
  int world = 1, rank = 0;
  SegmentPlan plan;
  int64_t step = 0;  // steps taken in the segment
  DrawState draws;

  // Slot data of the shuffle buffer (slot j holds draws.ids[j]).
  JetArrays buffer;
  // The current window: its rows (drawn), and its batches as row lists (in step order).
  JetArrays window;
  std::vector<int64_t> window_ids;
  std::vector<std::vector<int64_t>> window_batches;
  int64_t window_first_step = 0;

  // Read-ahead.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> readers;
  std::map<size_t, JetArrays> ready;
  size_t next_to_read = 0, consumed = 0;
  bool stopping = false;
  // The first failed read: its error and piece. Pieces are taken in order and a reader ends
  // the read it took, so every earlier piece still arrives (or fails, and becomes the first).
  std::exception_ptr error;
  size_t error_piece = 0;
  // The piece being fed from, and the row within it.
  JetArrays piece;
  size_t piece_index = 0;
  int64_t piece_row = 0;
  bool have_piece = false;
  double wait_s = 0;

  ~Impl() { stopReaders(); }

  void stopReaders() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_all();
    for (auto& t : readers) t.join();
    readers.clear();
    ready.clear();
    stopping = false;
    error = nullptr;
    error_piece = 0;
  }

  void readerLoop() {
    // The files this reader read last, open: each open file holds HDF5's chunk caches of its
    // datasets, so a reader that kept every file of a large set open would hold memory in
    // proportion to the data set, not to the buffer.
    LruCache<int, std::unique_ptr<JetFile>> files(kOpenFilesPerReader);
    for (;;) {
      size_t i = 0;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] {
          return stopping || error ||
                 (next_to_read < plan.feed.size() &&
                  next_to_read < consumed + static_cast<size_t>(std::max(1, o.read_ahead)));
        });
        if (stopping || error || next_to_read >= plan.feed.size()) return;
        i = next_to_read++;
      }
      try {
        const StreamBlock& b = plan.feed[i];
        faultError("stream.read", std::to_string(i));
        std::unique_ptr<JetFile>* f = files.find(b.file);
        if (f == nullptr)
          f = &files.put(b.file, std::make_unique<JetFile>(paths[static_cast<size_t>(b.file)]));
        JetArrays a = JetArrays::zeros(b.size(), P, labels);
        if (weights) a.weights.assign(static_cast<size_t>(b.size()), 0.0f);
        (*f)->readJetsInto(b.begin, b.end, o.level, a, 0);
        std::lock_guard<std::mutex> lock(mu);
        ready.emplace(i, std::move(a));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error || i < error_piece) {
          error = std::current_exception();
          error_piece = i;
        }
      }
      cv.notify_all();
    }
  }

  // Piece i once read. A failed read ends the stream where it failed, not earlier: the pieces
  // before it are used, so the step at which the error surfaces does not depend on how the
  // readers' threads were scheduled.
  JetArrays takeReady(std::unique_lock<std::mutex>& lock, size_t i) {
    cv.wait(lock, [&] { return ready.count(i) != 0 || (error && i >= error_piece); });
    if (ready.count(i) == 0) std::rethrow_exception(error);
    JetArrays a = std::move(ready.at(i));
    ready.erase(i);
    return a;
  }

  void startReaders(size_t first_piece) {
    stopReaders();
    next_to_read = consumed = first_piece;
    const int n = h5ReadThreads(std::max(1, o.readers), "streamed reading");
    for (int k = 0; k < n; ++k) readers.emplace_back([this] { readerLoop(); });
  }

  // The next feed row: copies it into buffer slot `slot` and returns its id.
  int64_t feedInto(int64_t slot) {
    while (!have_piece || piece_row == piece.n) {
      if (have_piece) ++piece_index;
      const auto t0 = std::chrono::steady_clock::now();
      std::unique_lock<std::mutex> lock(mu);
      consumed = piece_index;
      cv.notify_all();
      piece = takeReady(lock, piece_index);
      wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      have_piece = true;
      piece_row = 0;
    }
    copyRow(piece, piece_row, buffer, slot);
    const int64_t id = plan.feed[piece_index].global + piece_row;
    ++piece_row;
    return id;
  }

  // Draws the rows of steps [first, last) of the segment into `window` (real data), mirroring
  // drawIds slot for slot.
  void drawWindow(int64_t first, int64_t last) {
    const int64_t n = rowsOfSteps(plan, first, last);
    window = JetArrays::zeros(n, P, labels);
    if (weights) window.weights.assign(static_cast<size_t>(n), 0.0f);
    window_ids.assign(static_cast<size_t>(n), 0);
    DrawState& s = draws;
    if (!s.filled) {
      while (static_cast<int64_t>(s.ids.size()) < o.buffer_jets && s.feed.more()) {
        s.feed.next();
        s.ids.push_back(feedInto(static_cast<int64_t>(s.ids.size())));
      }
      s.filled = true;
    }
    for (int64_t k = 0; k < n; ++k) {
      if (s.ids.empty()) throw Error("jet stream: the shuffle buffer ran dry (plan mismatch)");
      const auto j = static_cast<int64_t>(s.rng.below(s.ids.size()));
      copyRow(buffer, j, window, k);
      window_ids[static_cast<size_t>(k)] = s.ids[static_cast<size_t>(j)];
      if (s.feed.more()) {
        const int64_t want = s.feed.next();
        const int64_t got = feedInto(j);
        if (got != want) throw Error("jet stream: feed out of step (plan mismatch)");
        s.ids[static_cast<size_t>(j)] = got;
      } else {
        const auto last_slot = static_cast<int64_t>(s.ids.size()) - 1;
        if (j != last_slot) copyRow(buffer, last_slot, buffer, j);
        s.ids[static_cast<size_t>(j)] = s.ids.back();
        s.ids.pop_back();
      }
    }
    std::vector<int64_t> ext(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)
      ext[static_cast<size_t>(k)] = extentOf(window.particle(k, 0), P);
    window_batches =
        formWindowBatches(ext, plan, first, last, o, epoch, static_cast<int>(history.size()));
    window_first_step = first;
  }
};

namespace {

// Rows of the largest feed piece (a piece is at most a block).
int64_t largestPiece(const std::vector<StreamBlock>& train) {
  int64_t largest = 0;
  for (const auto& b : train) largest = std::max(largest, b.size());
  return largest;
}

// Bytes of the buffer of `buffer_rows` jets of P particles, the bucketing window and the
// read-ahead pieces at most.
double streamMemoryBytes(int64_t P, int64_t buffer_rows, const std::vector<StreamBlock>& train,
                         const JetStreamOptions& o) {
  const double row = static_cast<double>(P * F + kNumJetFeatures + 3) * 4.0;
  const int64_t largest_piece = largestPiece(train);
  const double window_rows = static_cast<double>(windowSteps(o) * o.batch_size);
  return row * (static_cast<double>(buffer_rows) + window_rows * 2 +
                static_cast<double>(largest_piece) * (o.read_ahead + o.readers + 1));
}

}  // namespace

JetStream::JetStream(std::vector<std::string> files, std::vector<StreamBlock> train,
                     JetStreamOptions o)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.o = o;
  if (files.empty()) throw InputError("jet stream: no input files given");
  if (train.empty()) throw InputError("jet stream: no training jets");
  if (o.readers < 1 || o.readers > 256)
    throw InputError("jet stream: reader threads must be between 1 and 256");
  if (o.read_ahead < 1) throw InputError("jet stream: the read-ahead must be >= 1 piece");
  for (size_t f = 0; f < files.size(); ++f) {
    JetFile jf(files[f]);  // validates the layout; InputError names the file
    const bool l = jf.layout() == FileLayout::kJets && jf.hasLabels();
    if (f == 0) {
      I.P = jf.numParticles();
      I.labels = l;
      I.weights = jf.has("weights");
    } else if (jf.numParticles() != I.P || l != I.labels || jf.has("weights") != I.weights) {
      throw InputError(files[f] + ": its layout differs from " + files[0] +
                       " (particle slots, labels or weights); stream files of one kind together");
    }
    if (jf.layout() == FileLayout::kUnfold && o.level != "reco" && o.level != "gen")
      throw InputError(files[f] + ": is an unfolding file: stream it with level reco or gen");
    if (jf.layout() == FileLayout::kUnfold && !jf.hasLevel(o.level))
      throw InputError(files[f] + ": has no " + o.level + " level (it holds the " +
                       (o.level == "reco" ? "gen" : "reco") +
                       " level only); stream another level or file");
  }
  for (const auto& b : train) {
    if (b.file < 0 || static_cast<size_t>(b.file) >= files.size())
      throw Error("jet stream: a block names file " + std::to_string(b.file));
    I.train_rows += b.size();
  }
  const int64_t buffer_rows = std::max<int64_t>(1, std::min(o.buffer_jets, I.train_rows));
  // Refused before it is allocated, with the option that sets it, rather than std::bad_alloc
  // or the OOM killer later.
  requireWithinReadBudget(
      "jet stream",
      "a shuffle buffer of " + std::to_string(buffer_rows) + " jets (--shuffle-buffer), " +
          std::to_string(o.read_ahead + o.readers + 1) + " read-ahead pieces of up to " +
          std::to_string(largestPiece(train)) + " jets (--block-rows) and a window of 2 x " +
          std::to_string(windowSteps(o)) + " batches of " + std::to_string(o.batch_size) +
          " jets (--batch)",
      streamMemoryBytes(I.P, buffer_rows, train, o),
      "lower --shuffle-buffer, --block-rows or --batch; each rank of a node holds its own");
  I.paths = std::move(files);
  I.train = std::move(train);
  I.buffer = JetArrays::zeros(buffer_rows, I.P, I.labels);
  if (I.weights) I.buffer.weights.assign(static_cast<size_t>(I.buffer.n), 0.0f);
}

JetStream::~JetStream() = default;

int64_t JetStream::startEpoch(int64_t epoch, std::vector<StreamSegment> history, int world,
                              int rank) {
  Impl& I = *impl_;
  I.stopReaders();
  int64_t step = 0;
  if (!history.empty() && history.back().world == world) {
    step = history.back().steps;
    history.pop_back();
  }
  I.epoch = epoch;
  I.history = history;
  I.world = world;
  I.rank = rank;
  const ExtentsFn extents = [&I](const std::vector<int64_t>& ids) {
    const JetArrays a = readStreamRows(I.paths, I.train, ids, I.o.level);
    std::vector<int64_t> e(ids.size());
    for (int64_t k = 0; k < a.n; ++k) e[static_cast<size_t>(k)] = extentOf(a.particle(k, 0), a.P);
    return e;
  };
  I.plan = planSegment(I.train, I.o, epoch, history, world, rank, nullptr, extents);
  const auto S = static_cast<int64_t>(I.plan.batch_sizes.size());
  if (step > S)
    throw InputError("jet stream: the state is at step " + std::to_string(step) +
                     " of a segment of " + std::to_string(S) +
                     " steps (it belongs to other data or options)");
  const int segment = static_cast<int>(history.size());
  I.draws = startDraws(I.plan, I.o, epoch, segment, rank);
  I.draws.feed.plan = &I.plan;
  I.have_piece = false;
  I.piece_index = 0;
  I.piece_row = 0;
  I.window_batches.clear();
  const int64_t W = windowSteps(I.o);
  const int64_t w0 = std::min(step, S) / W * W;
  if (w0 > 0) {
    // Replay the draws before the window of `step` on ids, then read back what the buffer
    // held and go on feeding from where the replay stopped.
    drawIds(I.draws, I.o.buffer_jets, rowsOfSteps(I.plan, 0, w0), nullptr);
    JetArrays held = readStreamRows(I.paths, I.train, I.draws.ids, I.o.level);
    for (int64_t j = 0; j < held.n; ++j) copyRow(held, j, I.buffer, j);
    // The feed cursor: piece and row within it.
    I.piece_index = I.draws.feed.piece;
    I.piece_row = I.draws.feed.offset;
    if (I.piece_index < I.plan.feed.size() && I.piece_row == I.plan.feed[I.piece_index].size()) {
      ++I.piece_index;
      I.piece_row = 0;
    }
  }
  I.step = w0;
  // Readers start at the cursor's piece; the first piece is then entered at piece_row.
  const int64_t start_row = I.piece_row;
  I.startReaders(I.piece_index);
  if (I.piece_index < I.plan.feed.size()) {
    std::unique_lock<std::mutex> lock(I.mu);
    I.piece = I.takeReady(lock, I.piece_index);
    I.have_piece = true;
    I.piece_row = start_row;
  }
  if (step > w0) {
    I.drawWindow(w0, std::min(S, w0 + W));
    I.step = step;
  }
  return S - step;
}

JetArrays JetStream::next(std::vector<int64_t>* ids) {
  Impl& I = *impl_;
  const auto S = static_cast<int64_t>(I.plan.batch_sizes.size());
  if (I.step >= S) throw Error("jet stream: the epoch has no more steps");
  const int64_t W = windowSteps(I.o);
  if (I.window_batches.empty() ||
      I.step >= I.window_first_step + static_cast<int64_t>(I.window_batches.size()))
    I.drawWindow(I.step, std::min(S, I.step / W * W + W));
  const std::vector<int64_t>& rows =
      I.window_batches[static_cast<size_t>(I.step - I.window_first_step)];
  JetArrays b = I.window.subset(rows);
  if (ids) {
    ids->clear();
    for (int64_t r : rows) ids->push_back(I.window_ids[static_cast<size_t>(r)]);
  }
  ++I.step;
  return b;
}

nlohmann::json JetStream::position() const {
  const Impl& I = *impl_;
  nlohmann::json segs = nlohmann::json::array();
  for (const auto& s : I.history) segs.push_back({s.world, s.steps});
  segs.push_back({I.world, I.step});
  // The options that decide which rows the steps drew: a resume needs the same.
  return {{"epoch", I.epoch},
          {"segments", segs},
          {"batch_size", I.o.batch_size},
          {"buffer_jets", I.o.buffer_jets}};
}

int64_t JetStream::stepsPerEpoch(int world) const {
  const Impl& I = *impl_;
  const int64_t largest = (I.train_rows + world - 1) / world;
  return (largest + I.o.batch_size - 1) / I.o.batch_size;
}
int64_t JetStream::trainRows() const {
  return impl_->train_rows;
}
int64_t JetStream::numParticles() const {
  return impl_->P;
}
bool JetStream::hasLabels() const {
  return impl_->labels;
}
double JetStream::memoryBytes() const {
  const Impl& I = *impl_;
  return streamMemoryBytes(I.P, I.buffer.n, I.train, I.o);
}
double JetStream::waitSeconds() const {
  return impl_->wait_s;
}

JetArrays readStreamRows(const std::vector<std::string>& files,
                         const std::vector<StreamBlock>& blocks, const std::vector<int64_t>& ids,
                         const std::string& level) {
  // Blocks sorted by global id, to find each id's block.
  std::vector<StreamBlock> sorted = blocks;
  std::sort(sorted.begin(), sorted.end(),
            [](const StreamBlock& a, const StreamBlock& b) { return a.global < b.global; });
  std::vector<size_t> order(ids.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&ids](size_t a, size_t b) { return ids[a] < ids[b]; });
  JetArrays out;
  std::vector<std::unique_ptr<JetFile>> open(files.size());
  size_t k = 0;
  while (k < order.size()) {
    const int64_t id = ids[order[k]];
    auto it = std::upper_bound(sorted.begin(), sorted.end(), id,
                               [](int64_t v, const StreamBlock& b) { return v < b.global; });
    if (it == sorted.begin() || id >= std::prev(it)->global + std::prev(it)->size())
      throw Error("jet stream: row " + std::to_string(id) + " is in no block");
    const StreamBlock& b = *std::prev(it);
    // Every requested row of this block: read the span they cover once.
    size_t e = k;
    while (e < order.size() && ids[order[e]] < b.global + b.size()) ++e;
    const int64_t lo = ids[order[k]] - b.global, hi = ids[order[e - 1]] - b.global + 1;
    auto& f = open[static_cast<size_t>(b.file)];
    if (!f) f = std::make_unique<JetFile>(files[static_cast<size_t>(b.file)]);
    if (out.n == 0 && out.P == 0) {
      out = JetArrays::zeros(static_cast<int64_t>(ids.size()), f->numParticles(),
                             f->layout() == FileLayout::kJets && f->hasLabels());
      if (f->has("weights")) out.weights.assign(ids.size(), 0.0f);
    }
    JetArrays span = JetArrays::zeros(hi - lo, out.P, !out.labels.empty());
    if (!out.weights.empty()) span.weights.assign(static_cast<size_t>(hi - lo), 0.0f);
    f->readJetsInto(b.begin + lo, b.begin + hi, level, span, 0);
    for (size_t q = k; q < e; ++q)
      copyRow(span, ids[order[q]] - b.global - lo, out, static_cast<int64_t>(order[q]));
    k = e;
  }
  return out;
}

}  // namespace foldfarm::data
