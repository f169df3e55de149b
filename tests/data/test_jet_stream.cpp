// The streamed training set (core/data/jet_stream.hpp): every training jet exactly once per
// epoch over the ranks, each streamed row carrying its file's values, equal step counts,
// a resume inside the epoch (inside a bucketed window too) that continues bit for bit, a
// resume on another number of ranks that neither loses nor repeats a jet, and files that
// are refused by name before any batch.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/base/error.hpp"
#include "core/data/convert.hpp"
#include "core/data/jet_files.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_stream.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"

using namespace foldfarm;
using namespace foldfarm::data;
namespace fs = std::filesystem;

namespace {

struct Files {
  // Three files of 700, 333 and 1201 jets; or `count` files of a tenth of those sizes.
  explicit Files(int count = 3) {
    dir = fs::temp_directory_path() / ("ff_jet_stream_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const int64_t sizes[] = {700, 333, 1201};
    for (int k = 0; k < count; ++k) {
      const int64_t n = count == 3 ? sizes[k] : sizes[k % 3] / 10;
      SynthConfig cfg = SynthConfig::pretrainDefaults();
      cfg.P = 24;
      const JetArrays a = synthPretrain(cfg, 10 + static_cast<uint64_t>(k), 0, n);
      paths.push_back((dir / ("f" + std::to_string(k) + ".h5")).string());
      writeJetFile(paths.back(), a, {});
      rows.push_back(n);
      if (all.n == 0)
        all = a;
      else
        all.append(a);
    }
  }
  ~Files() { fs::remove_all(dir); }
  fs::path dir;
  std::vector<std::string> paths;
  std::vector<int64_t> rows;
  JetArrays all;  // every file's rows in order: row = global id
};

JetStreamOptions options() {
  JetStreamOptions o;
  o.batch_size = 32;
  o.buffer_jets = 300;
  o.seed = 7;
  o.readers = 2;
  o.read_ahead = 3;
  return o;
}

struct Taken {
  std::vector<int64_t> ids;
  std::vector<JetArrays> batches;
};

// Steps [0, steps) of the stream's epoch from its current start (all when steps < 0).
void take(JetStream& s, int64_t steps, Taken& t) {
  std::vector<int64_t> ids;
  for (int64_t k = 0; k != steps; ++k) {
    JetArrays b;
    try {
      b = s.next(&ids);
    } catch (const Error&) {
      if (steps < 0) return;
      throw;
    }
    t.ids.insert(t.ids.end(), ids.begin(), ids.end());
    t.batches.push_back(std::move(b));
  }
}

void expectRowsMatchFile(const Files& f, const Taken& t) {
  size_t k = 0;
  for (const auto& b : t.batches) {
    for (int64_t i = 0; i < b.n; ++i, ++k) {
      const int64_t id = t.ids[k];
      ASSERT_TRUE(std::equal(b.jet(i), b.jet(i) + kNumJetFeatures, f.all.jet(id))) << "row " << id;
      ASSERT_TRUE(std::equal(b.particle(i, 0), b.particle(i, 0) + b.P * kNumParticleFeatures,
                             f.all.particle(id, 0)))
          << "row " << id;
      ASSERT_EQ(b.labels[static_cast<size_t>(i)], f.all.labels[static_cast<size_t>(id)]);
    }
  }
}

std::vector<int64_t> idsOf(const std::vector<StreamBlock>& blocks) {
  std::vector<int64_t> out;
  for (const auto& b : blocks)
    for (int64_t r = 0; r < b.size(); ++r) out.push_back(b.global + r);
  return out;
}

}  // namespace

TEST(JetStream, EveryTrainingJetOncePerEpochOverTwoRanksWithItsOwnValues) {
  Files f;
  const auto blocks = cutStreamBlocks(f.rows, 100);
  const StreamSplit split = splitStreamBlocks(blocks, 0.1, 0.1, 3, 0);
  // Held-out and training rows are disjoint and cover the files.
  std::vector<int64_t> every = idsOf(split.train);
  every.insert(every.end(), split.val.begin(), split.val.end());
  every.insert(every.end(), split.test.begin(), split.test.end());
  std::sort(every.begin(), every.end());
  ASSERT_EQ(every.size(), static_cast<size_t>(f.all.n));
  for (int64_t i = 0; i < f.all.n; ++i) ASSERT_EQ(every[static_cast<size_t>(i)], i);

  const std::vector<int64_t> want = idsOf(split.train);
  std::vector<int64_t> first_epoch;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> seen;
    int64_t steps0 = -1;
    for (int rank = 0; rank < 2; ++rank) {
      JetStream s(f.paths, split.train, options());
      const int64_t steps = s.startEpoch(epoch, {}, 2, rank);
      EXPECT_EQ(steps, s.stepsPerEpoch(2));
      if (rank == 0) steps0 = steps;
      EXPECT_EQ(steps, steps0) << "every rank takes the same number of steps";
      Taken t;
      take(s, steps, t);
      EXPECT_THROW(s.next(), Error) << "no step beyond the epoch";
      for (const auto& b : t.batches) EXPECT_GT(b.n, 0);
      expectRowsMatchFile(f, t);
      seen.insert(seen.end(), t.ids.begin(), t.ids.end());
      if (rank == 0 && epoch == 0) first_epoch = t.ids;
      if (rank == 0 && epoch == 1) {
        EXPECT_NE(t.ids, first_epoch) << "epochs are reshuffled";
      }
    }
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, want) << "epoch " << epoch << ": each training jet exactly once";
  }
}

// More files than a reader keeps open (8): the pieces of 24 files, in the feed's random
// order, are read through files closed and opened again, each jet with its own values.
TEST(JetStream, ManyMoreFilesThanAReaderKeepsOpenAreEachReadWhole) {
  Files f(24);
  const auto blocks = cutStreamBlocks(f.rows, 16);
  const StreamSplit split = splitStreamBlocks(blocks, 0.0, 0.0, 3, 0);
  JetStreamOptions o = options();
  o.readers = 1;
  JetStream s(f.paths, split.train, o);
  const int64_t steps = s.startEpoch(0, {}, 1, 0);
  Taken t;
  take(s, steps, t);
  expectRowsMatchFile(f, t);
  std::sort(t.ids.begin(), t.ids.end());
  EXPECT_EQ(t.ids, idsOf(split.train));
}

TEST(JetStream, ResumeInsideTheEpochContinuesBitForBit) {
  Files f;
  const auto blocks = cutStreamBlocks(f.rows, 64);
  const StreamSplit split = splitStreamBlocks(blocks, 0.1, 0.0, 3, 0);
  for (bool bucket : {true, false}) {
    JetStreamOptions o = options();
    o.bucket = bucket;
    for (int64_t stop : {5, 16, 21}) {  // inside a window, at its end, inside the next
      JetStream whole(f.paths, split.train, o);
      const int64_t steps = whole.startEpoch(1, {}, 2, 1);
      ASSERT_GT(steps, 30);
      Taken a;
      take(whole, steps, a);

      JetStream first(f.paths, split.train, o);
      first.startEpoch(1, {}, 2, 1);
      Taken b;
      take(first, stop, b);
      const nlohmann::json pos = first.position();
      EXPECT_EQ(pos["segments"], nlohmann::json::parse("[[2," + std::to_string(stop) + "]]"));

      JetStream resumed(f.paths, split.train, o);
      EXPECT_EQ(resumed.startEpoch(1, {{2, stop}}, 2, 1), steps - stop);
      take(resumed, steps - stop, b);
      ASSERT_EQ(a.ids, b.ids) << "bucket " << bucket << " stop " << stop;
      for (size_t k = 0; k < a.batches.size(); ++k) {
        EXPECT_EQ(a.batches[k].particles, b.batches[k].particles);
        EXPECT_EQ(a.batches[k].labels, b.batches[k].labels);
      }
    }
  }
}

TEST(JetStream, ResumeOnAnotherNumberOfRanksNeitherLosesNorRepeatsAJet) {
  Files f;
  const auto blocks = cutStreamBlocks(f.rows, 50);
  const StreamSplit split = splitStreamBlocks(blocks, 0.0, 0.0, 3, 0);
  const std::vector<int64_t> want = idsOf(split.train);
  // 2 ranks for 7 steps (inside a bucketed window), then 3 ranks for 4, then 1 to the end.
  std::vector<int64_t> seen;
  for (int r = 0; r < 2; ++r) {
    JetStream s(f.paths, split.train, options());
    s.startEpoch(0, {}, 2, r);
    Taken t;
    take(s, 7, t);
    expectRowsMatchFile(f, t);
    seen.insert(seen.end(), t.ids.begin(), t.ids.end());
  }
  for (int r = 0; r < 3; ++r) {
    JetStream s(f.paths, split.train, options());
    s.startEpoch(0, {{2, 7}}, 3, r);
    Taken t;
    take(s, 4, t);
    expectRowsMatchFile(f, t);
    seen.insert(seen.end(), t.ids.begin(), t.ids.end());
  }
  JetStream last(f.paths, split.train, options());
  const int64_t left = last.startEpoch(0, {{2, 7}, {3, 4}}, 1, 0);
  Taken t;
  take(last, left, t);
  expectRowsMatchFile(f, t);
  EXPECT_EQ(last.position()["segments"],
            nlohmann::json::parse("[[2,7],[3,4],[1," + std::to_string(left) + "]]"));
  seen.insert(seen.end(), t.ids.begin(), t.ids.end());
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, want);

  // The drawn ids such a resume holds count against the read budget: refused by name.
  ::setenv("FOLDFARM_READ_BUDGET_GIB", "0.000001",
           1);  // 1 KiB; 2 x 7 x 32 = 448 rows need 10.5 KiB
  try {
    planSegment(split.train, options(), 0, {{2, 7}}, 1, 0);
    ADD_FAILURE() << "a resume beyond the budget was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("from the 448 jets drawn before the stop"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(planSegment(split.train, options(), 0, {}, 1, 0)) << "a fresh epoch holds none";
  ::unsetenv("FOLDFARM_READ_BUDGET_GIB");
}

TEST(JetStream, SplitHoldsOutFractionsAndCapsTheEvaluationRows) {
  const auto blocks = cutStreamBlocks({1000, 1000}, 100);
  const StreamSplit s = splitStreamBlocks(blocks, 0.2, 0.1, 1, 50);
  EXPECT_EQ(s.test_rows, 200);  // whole blocks: at least the fraction
  EXPECT_EQ(s.val_rows, 400);
  EXPECT_EQ(s.test.size(), 50u);
  EXPECT_EQ(s.val.size(), 50u);
  EXPECT_EQ(idsOf(s.train).size(), 1400u);
  EXPECT_THROW(splitStreamBlocks(blocks, 0.6, 0.5, 1, 0), InputError);
}

TEST(JetStream, AFileThatCannotBeReadOrDiffersIsRefusedByNameBeforeAnyBatch) {
  Files f;
  const auto blocks = cutStreamBlocks(f.rows, 100);
  // Truncated: the first half of a good file.
  const std::string cut = (f.dir / "cut.h5").string();
  {
    std::ifstream in(f.paths[1], std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  std::vector<std::string> files = f.paths;
  files[1] = cut;
  try {
    JetStream s(files, blocks, options());
    FAIL() << "a truncated file was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("cut.h5"), std::string::npos) << e.what();
  }
  // Other particle slots.
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = 16;
  const std::string other = (f.dir / "p16.h5").string();
  writeJetFile(other, synthPretrain(cfg, 1, 0, 333), {});
  files[1] = other;
  try {
    JetStream s(files, blocks, options());
    FAIL() << "a file of other particle slots was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("p16.h5"), std::string::npos) << e.what();
  }
}

TEST(JetStream, AFileRepackedForStreamingHoldsTheSameJetsInWholeRowChunks) {
  Files f;
  // A plain file: other chunking, deflate 4 without shuffle.
  WriteOptions plain;
  plain.chunk_rows = 100;
  plain.deflate_level = 4;
  plain.shuffle = false;
  const std::string in = (f.dir / "plain.h5").string(), out = (f.dir / "packed.h5").string();
  writeJetFile(in, f.all, {}, plain);
  EXPECT_EQ(datasetStorageText(in, "data"), "chunked (100,24,13) deflate(4)");
  repackJets(in, out);
  EXPECT_EQ(datasetStorageText(out, "data"), "chunked (128,24,13) shuffle+deflate(1)");
  const JetArrays a = JetFile(in).readJets(), b = JetFile(out).readJets();
  EXPECT_EQ(a.particles, f.all.particles);
  EXPECT_EQ(b.particles, f.all.particles);
  EXPECT_EQ(b.jets, f.all.jets);
  EXPECT_EQ(b.labels, f.all.labels);
  // Both stream the same rows.
  const auto blocks = cutStreamBlocks({f.all.n}, 256);
  std::vector<int64_t> ids_a, ids_b;
  JetStream sa({in}, blocks, options()), sb({out}, blocks, options());
  const int64_t steps = sa.startEpoch(0, {}, 1, 0);
  sb.startEpoch(0, {}, 1, 0);
  for (int64_t k = 0; k < steps; ++k) {
    const JetArrays x = sa.next(&ids_a), y = sb.next(&ids_b);
    ASSERT_EQ(ids_a, ids_b);
    ASSERT_EQ(x.particles, y.particles);
  }
}

TEST(JetStream, ABadValueMidStreamEndsItWithTheFileNamedInsteadOfHanging) {
  const fs::path dir =
      fs::temp_directory_path() / ("ff_jet_stream_nan_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string good = (dir / "good.h5").string(), bad = (dir / "nan.h5").string();
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = 16;
  writeJetFile(good, synthPretrain(cfg, 1, 0, 12), {});
  JetArrays a = synthPretrain(cfg, 2, 0, 12);
  a.particles[static_cast<size_t>(9 * 16 * kNumParticleFeatures + 1)] = std::nanf("");
  writeJetFile(bad, a, {});
  JetStreamOptions o = options();
  o.batch_size = 4;
  o.buffer_jets = 4;
  o.read_ahead = 2;
  JetStream s({good, bad}, cutStreamBlocks(countJetsPerFile({good, bad}), 2), o);
  const int64_t steps = s.startEpoch(0, {}, 1, 0);
  std::string message;
  try {
    for (int64_t k = 0; k < steps; ++k) s.next();
  } catch (const InputError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("nan.h5"), std::string::npos) << message;
  fs::remove_all(dir);
}

// A read that fails (here FOLDFARM_FAULT at the feed's 41st piece, in the third window of
// steps) ends the stream where the stream needs that piece, whatever the readers: the steps
// before it are those of a stream without the fault, and with eight readers (the failing read
// ends at once, the pieces before it are still being read) each of 20 streams ends at the same
// step as one with a single reader (before: a stream ended at the first piece still in flight,
// so the step depended on how the threads were scheduled).
TEST(JetStream, AFailedReadEndsTheStreamAtItsPieceWhateverTheReaders) {
  Files f;
  const StreamSplit split = splitStreamBlocks(cutStreamBlocks(f.rows, 32), 0.0, 0.0, 3, 0);
  JetStreamOptions o = options();
  o.buffer_jets = 64;
  o.read_ahead = 8;
  // The steps a stream takes before it throws, their ids, and its message.
  struct Run {
    int64_t steps = 0;
    std::vector<int64_t> ids;
    std::string error;
  };
  auto run = [&](int readers, int64_t limit) {
    o.readers = readers;
    Run r;
    try {
      JetStream s(f.paths, split.train, o);
      const int64_t steps = std::min(limit, s.startEpoch(0, {}, 1, 0));
      std::vector<int64_t> ids;
      for (; r.steps < steps; ++r.steps) {
        s.next(&ids);
        r.ids.insert(r.ids.end(), ids.begin(), ids.end());
      }
    } catch (const Error& e) {
      r.error = e.what();
    }
    return r;
  };
  ::setenv("FOLDFARM_FAULT", "stream.read:40", 1);
  const Run one = run(1, 1 << 30);
  std::vector<Run> eight;
  for (int k = 0; k < 20; ++k) eight.push_back(run(8, 1 << 30));
  ::unsetenv("FOLDFARM_FAULT");
  EXPECT_NE(one.error.find("stream.read (40): failure injected"), std::string::npos) << one.error;
  EXPECT_GT(one.steps, 0);
  const Run clean = run(4, one.steps);
  EXPECT_TRUE(clean.error.empty()) << clean.error;
  EXPECT_EQ(one.ids, clean.ids) << "the steps before the failed piece are the stream's own";
  for (const Run& r : eight) {
    EXPECT_EQ(r.steps, one.steps) << r.error;
    EXPECT_EQ(r.ids, one.ids);
    EXPECT_EQ(r.error, one.error);
  }
}

// A shuffle buffer beyond the read budget (this machine's memory, or
// FOLDFARM_READ_BUDGET_GIB) is refused before it is allocated, naming the option that sets
// it, instead of ending in std::bad_alloc or the OOM killer.
TEST(JetStream, AShuffleBufferBeyondTheReadBudgetIsRefusedNamingTheOption) {
  Files f;
  const auto blocks = cutStreamBlocks(f.rows, 100);
  JetStreamOptions small = options();
  small.buffer_jets = 100;
  const double fits = JetStream(f.paths, blocks, small).memoryBytes();
  const std::string gib = std::to_string(fits * 1.05 / double(1ull << 30));
  ::setenv("FOLDFARM_READ_BUDGET_GIB", gib.c_str(), 1);
  EXPECT_NO_THROW(JetStream(f.paths, blocks, small));
  JetStreamOptions big = options();
  big.buffer_jets = 2000;
  try {
    JetStream s(f.paths, blocks, big);
    ADD_FAILURE() << "a buffer beyond the budget was accepted";
  } catch (const InputError& e) {
    const std::string what = e.what();
    for (const char* part : {"jet stream: ", "2000 jets (--shuffle-buffer)", "(--block-rows)",
                             "(--batch)", "FOLDFARM_READ_BUDGET_GIB", "lower --shuffle-buffer"})
      EXPECT_NE(what.find(part), std::string::npos) << part << " in: " << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
  ::unsetenv("FOLDFARM_READ_BUDGET_GIB");
}
