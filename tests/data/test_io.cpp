// Writer/reader round trips, streaming (sharding, shuffling) and input validation.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <limits>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/sha256.hpp"
#include "core/data/data_bench.hpp"
#include "core/data/jet_files.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "tests/data/bad_files.hpp"
#include "tests/support/resource_limits.hpp"

using namespace foldfarm::data;
using foldfarm::data::badfiles::replaceDataset;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("ff_data_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

JetArrays smallJets(int64_t n, uint64_t seed = 1) {
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = 24;
  return synthPretrain(cfg, seed, 0, n);
}

// n jets of two classes ("q", "g"), label 1 on every `every`-th jet, written to `path`.
JetArrays writeTwoClassJets(const std::string& path, int64_t n, int64_t every) {
  JetArrays a = smallJets(n);
  a.labels.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; i += every) a.labels[static_cast<size_t>(i)] = 1;
  writeJetFile(path, a, {{"class_names", nlohmann::json({"q", "g"}).dump()}});
  return a;
}

}  // namespace

TEST(JetIo, JetsLayoutRoundTripWithAttributes) {
  TempDir dir;
  JetArrays a = smallJets(300);
  a.weights.assign(300, 0.5f);
  WriteOptions opt;
  opt.chunk_rows = 64;
  writeJetFile(dir.file("j.h5"), a, {{"seed", 42}, {"tune", "sim"}, {"stats", {{"x", 1}}}}, opt);
  JetFile f(dir.file("j.h5"));
  EXPECT_EQ(f.layout(), FileLayout::kJets);
  EXPECT_EQ(f.numJets(), 300);
  EXPECT_EQ(f.numParticles(), 24);
  const JetArrays b = f.readJets();
  EXPECT_EQ(a.particles, b.particles);
  EXPECT_EQ(a.jets, b.jets);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.weights, b.weights);
  const JetArrays mid = f.readJets(100, 130);
  EXPECT_EQ(mid.particles, a.slice(100, 130).particles);
  const auto attrs = f.attributes();
  EXPECT_EQ(attrs.at("seed"), "42");
  EXPECT_EQ(attrs.at("tune"), "sim");
  EXPECT_EQ(attrs.at("layout"), "jets");
  EXPECT_EQ(nlohmann::json::parse(attrs.at("stats"))["x"], 1);
  // No temporary file is left next to the output.
  int files = 0;
  for (auto& e : fs::directory_iterator(dir.file(""))) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(JetIo, UnfoldLayoutRoundTripAndAppendInPieces) {
  TempDir dir;
  SynthConfig cfg = SynthConfig::unfoldDefaults();
  cfg.P = 30;
  const UnfoldArrays u = synthUnfold(cfg, 9, 0, 90);
  {
    JetFileWriter w(dir.file("u.h5"), FileLayout::kUnfold, 30, false, {{"kind", "unfold"}});
    w.append(u.slice(0, 40));
    w.append(u.slice(40, 90));
    w.commit();
  }
  JetFile f(dir.file("u.h5"));
  EXPECT_EQ(f.layout(), FileLayout::kUnfold);
  EXPECT_TRUE(f.hasSubs());
  const UnfoldArrays v = f.readUnfold();
  EXPECT_EQ(u.gen.particles, v.gen.particles);
  EXPECT_EQ(u.reco.particles, v.reco.particles);
  EXPECT_EQ(u.reco.jets, v.reco.jets);
  EXPECT_EQ(u.gen_subs, v.gen_subs);
  EXPECT_EQ(u.reco_subs, v.reco_subs);
  EXPECT_EQ(u.pass_reco, v.pass_reco);
  EXPECT_EQ(u.pass_gen, v.pass_gen);
  EXPECT_EQ(u.weights, v.weights);
  const JetArrays reco = f.readJets(0, -1, "reco");
  EXPECT_EQ(reco.particles, u.reco.particles);
  EXPECT_THROW(f.readJets(), foldfarm::InputError);  // level required
}

// Experimental data holds its detector level only, a truth sample its particle level only:
// either is an unfolding file of one level. It is read with that level (the other empty),
// the missing level is refused by name when asked for, and it is written as it was read.
TEST(JetIo, AnUnfoldingFileOfOneLevelReadsThatLevelAndRefusesTheOther) {
  TempDir dir;
  SynthConfig cfg = SynthConfig::unfoldDefaults();
  cfg.P = 20;
  const UnfoldArrays both = synthUnfold(cfg, 5, 0, 60);
  for (const std::string kept : {"reco", "gen"}) {
    const std::string dropped = kept == "reco" ? "gen" : "reco";
    UnfoldArrays one = both;
    (dropped == "gen" ? one.gen : one.reco) = JetArrays{};
    (dropped == "gen" ? one.gen_subs : one.reco_subs).clear();
    (dropped == "gen" ? one.pass_gen : one.pass_reco).clear();
    EXPECT_EQ(one.n(), 60);
    EXPECT_EQ(one.slice(10, 30).n(), 20) << kept;
    EXPECT_EQ(one.subset({3, 1}).n(), 2) << kept;
    const std::string path = dir.file(kept + "_only.h5");
    writeUnfoldFile(path, one);
    JetFile f(path);
    EXPECT_EQ(f.layout(), FileLayout::kUnfold);
    EXPECT_EQ(f.numJets(), 60);
    EXPECT_EQ(f.numParticles(), 20);
    EXPECT_TRUE(f.hasLevel(kept));
    EXPECT_FALSE(f.hasLevel(dropped));
    EXPECT_FALSE(f.has(dropped)) << "nothing of the dropped level is written";
    EXPECT_FALSE(f.has(dropped + "_jets"));
    EXPECT_TRUE(f.hasSubs()) << "the subs of every level the file holds";
    const UnfoldArrays v = f.readUnfold();
    EXPECT_EQ(v.n(), 60);
    const JetArrays& got = kept == "reco" ? v.reco : v.gen;
    const JetArrays& want = kept == "reco" ? both.reco : both.gen;
    EXPECT_EQ(got.particles, want.particles) << kept;
    EXPECT_EQ(got.jets, want.jets) << kept;
    EXPECT_EQ(kept == "reco" ? v.reco_subs : v.gen_subs,
              kept == "reco" ? both.reco_subs : both.gen_subs);
    EXPECT_EQ(kept == "reco" ? v.pass_reco : v.pass_gen,
              kept == "reco" ? both.pass_reco : both.pass_gen);
    EXPECT_EQ(v.weights, both.weights);
    EXPECT_EQ(kept == "reco" ? v.hasGen() : v.hasReco(), false);
    EXPECT_TRUE((kept == "reco" ? v.gen_subs : v.reco_subs).empty());
    EXPECT_EQ(f.readJets(0, -1, kept).particles, want.particles);
    try {
      f.readJets(0, -1, dropped);
      ADD_FAILURE() << "reading the " << dropped << " level of a " << kept << " file";
    } catch (const foldfarm::InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + dropped + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(kept + " level only"), std::string::npos) << msg;
    }
    // Appending events of another set of levels is refused.
    EXPECT_THROW(UnfoldArrays(one).append(both), foldfarm::Error) << kept;
  }
}

// h5py writes numpy bools as a one-byte enum (FALSE = 0, TRUE = 1): `pid` and `weights`
// stored so read as the labels and weights 0/1 they are, whole or by rows (before, the rows
// of `pid` were packed eight to a label and the weights were garbage).
TEST(JetIo, BoolLabelsAndWeightsAsH5pyWritesThemReadAsZeroAndOne) {
  TempDir dir;
  const std::string path = dir.file("bools.h5");
  JetArrays a = writeTwoClassJets(path, 40, 3);
  a.weights.assign(40, 1.0f);
  a.weights[5] = 0.0f;
  {
    H5Handle type = FF_H5_OWN(H5Tenum_create(H5T_NATIVE_INT8), H5Kind::kDatatype, "enum");
    const int8_t no = 0, yes = 1;
    FF_H5_CHECK(H5Tenum_insert(type.get(), "FALSE", &no), "enum");
    FF_H5_CHECK(H5Tenum_insert(type.get(), "TRUE", &yes), "enum");
    for (const char* name : {"pid", "weights"}) {
      std::vector<int8_t> v(40);
      for (size_t i = 0; i < v.size(); ++i)
        v[i] = static_cast<int8_t>(name[0] == 'p' ? a.labels[i] : a.weights[i]);
      replaceDataset(path, name, type.get(), type.get(), v.data(), v.size());
    }
  }
  JetFile f(path);
  const JetArrays b = f.readJets();
  EXPECT_EQ(b.labels, a.labels);
  EXPECT_EQ(b.weights, a.weights);
  const JetArrays mid = f.readJets(7, 30);
  EXPECT_EQ(mid.labels, a.slice(7, 30).labels);
  EXPECT_EQ(mid.weights, a.slice(7, 30).weights);
  EXPECT_EQ(readClassLabels(path), a.labels);
}

// Labels stored as floats (numpy's default dtype) read as the class indices they are when
// they are whole numbers; 0.5 is refused naming the row (converted to integers it read as 0).
TEST(JetIo, FloatLabelsMustBeWholeNumbers) {
  TempDir dir;
  const std::string path = dir.file("float_pid.h5");
  const JetArrays a = writeTwoClassJets(path, 20, 2);
  const auto rewrite = [&](const std::vector<float>& v) {
    replaceDataset(path, "pid", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v.data(), v.size());
  };
  std::vector<float> whole(a.labels.begin(), a.labels.end());
  rewrite(whole);
  EXPECT_EQ(JetFile(path).readJets().labels, a.labels);
  EXPECT_EQ(JetFile(path).readJets(3, 9).labels, a.slice(3, 9).labels);
  whole[7] = 0.5f;
  rewrite(whole);
  try {
    JetFile(path).readJets();
    FAIL() << "label 0.5 was read";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("row 7 holds 0.5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  // The whole-dataset reader (data convert) too.
  try {
    readClassLabels(path);
    FAIL() << "label 0.5 was read by readClassLabels";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("row 7 holds 0.5"), std::string::npos) << e.what();
  }
  whole[7] = static_cast<float>(a.labels[7]);
  rewrite(whole);
  EXPECT_EQ(readClassLabels(path), a.labels);
}

// Selection flags read as 0/1 whatever their type (bool as h5py writes it, an integer, a
// float), the same by every reader (readUnfold, readPassFlags, whole or by rows); any other
// value is refused naming the file, the flag and the row. Before, the chains read flags
// converted to one byte (0.5 and -1 failed, 2 passed) and the truth read them as != 0 (0.5
// and -1 passed): the same file selected other events in the unfolding and in its truth.
// checkValues reads the whole file a piece of rows at a time and refuses what readUnfold would,
// naming the row in the file whatever piece holds it; weights all zero over the file are
// refused, zero in every piece but one accepted (a piece may hold only zeros).
TEST(JetIo, CheckValuesReadsEveryValueInPiecesAndNamesTheRowInTheFile) {
  const auto check = [](const std::string& file, int64_t rows_per_piece, int threads = 1,
                        std::function<void(int64_t, int64_t)> on_rows = {}, int part = 0,
                        int parts = 1) {
    JetFile::ValueCheck how;
    how.rows_per_piece = rows_per_piece;
    how.threads = threads;
    how.on_rows = std::move(on_rows);
    how.part = part;
    how.parts = parts;
    JetFile(file).checkValues(how);
  };
  TempDir dir;
  SynthConfig cfg = SynthConfig::unfoldDefaults();
  cfg.P = 8;
  const int64_t n = 50;
  const UnfoldArrays good = synthUnfold(cfg, 5, 0, n);
  const size_t row = good.reco.particles.size() / n;  // P x F values
  const std::string path = dir.file("values.h5");
  writeUnfoldFile(path, good);
  for (const int64_t piece : {0, 1, 7, 50, 64}) {
    std::vector<int64_t> done;
    check(path, piece, 1, [&](int64_t d, int64_t total) {
      EXPECT_EQ(total, n);
      done.push_back(d);
    });
    ASSERT_FALSE(done.empty()) << piece;
    EXPECT_EQ(done.back(), n) << piece;
    EXPECT_TRUE(std::is_sorted(done.begin(), done.end())) << piece;
    if (piece == 7) {
      EXPECT_EQ(done.size(), 8u);
    }
  }
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<std::function<void(UnfoldArrays&)>, std::string>> bad = {
      {[&](UnfoldArrays& u) { u.reco.particles[37 * row + 5] = nan; },
       "dataset 'reco': row 37 holds a non-finite value (NaN)"},
      {[&](UnfoldArrays& u) { u.gen.particles[3 * row + row - 1] = -inf; },
       "dataset 'gen': row 3 holds a non-finite value (Inf)"},
      {[](UnfoldArrays& u) { u.gen.jets[49 * 4 + 2] = inf; },
       "dataset 'gen_jets': row 49 holds a non-finite value (Inf)"},
      {[](UnfoldArrays& u) { u.reco_subs[22 * 6 + 1] = nan; },
       "dataset 'reco_subs': row 22 holds a non-finite value (NaN)"},
      {[](UnfoldArrays& u) { u.weights[8] = inf; },
       "dataset 'weights': row 8 holds a non-finite value (Inf)"},
      {[](UnfoldArrays& u) { u.pass_reco[20] = 2; },
       "dataset 'pass_reco': row 20 holds 2, not a selection flag"},
      {[](UnfoldArrays& u) { u.weights.assign(u.weights.size(), 0.0f); },
       "dataset 'weights': are all zero (50 rows)"}};
  const std::string spoilt = dir.file("spoilt.h5");
  for (const auto& [spoil, text] : bad) {
    UnfoldArrays u = good;
    spoil(u);
    fs::remove(spoilt);
    writeUnfoldFile(spoilt, u);
    for (const auto& [piece, threads] : {std::pair{0, 1}, std::pair{7, 1}, std::pair{7, 3}}) {
      int64_t last = 0;
      try {
        check(spoilt, piece, threads, [&](int64_t d, int64_t) { last = d; });
        ADD_FAILURE() << text << " was not found with pieces of " << piece << " on " << threads
                      << " threads";
      } catch (const foldfarm::InputError& e) {
        EXPECT_NE(std::string(e.what()).find(spoilt + ": " + text), std::string::npos) << e.what();
        // Refused in its piece, not after the last (weights: known all zero after the last).
        if (text.find("all zero") == std::string::npos) {
          EXPECT_LT(last, n) << text;
        }
      }
    }
  }
  // On threads, the error is the lowest row's, as a reading in order finds it, whichever
  // thread met which first.
  UnfoldArrays two = good;
  two.reco.particles[12 * row] = nan;
  two.gen.jets[45 * 4] = nan;
  fs::remove(spoilt);
  writeUnfoldFile(spoilt, two);
  for (const int threads : {2, 4, 8}) {
    for (int repeat = 0; repeat < 5; ++repeat) {
      try {
        check(spoilt, 3, threads);
        ADD_FAILURE() << "two NaN were not found";
      } catch (const foldfarm::InputError& e) {
        EXPECT_NE(std::string(e.what()).find("dataset 'reco': row 12 holds"), std::string::npos)
            << threads << " threads: " << e.what();
      }
    }
  }
  std::vector<int64_t> done;
  check(path, 7, 4, [&](int64_t d, int64_t) { done.push_back(d); });
  EXPECT_EQ(done.size(), 8u);
  EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
  EXPECT_EQ(done.back(), n);
  // A callback that throws (Ctrl-C seen by `campaign init`) stops the reading with its error;
  // no piece after it starts (on threads, those already started finish).
  for (const int threads : {1, 3}) {
    int calls = 0;
    EXPECT_THROW(check(path, 7, threads,
                       [&](int64_t d, int64_t) {
                         ++calls;
                         if (d >= 14) throw foldfarm::InterruptedError("stopped");
                       }),
                 foldfarm::InterruptedError);
    EXPECT_LE(calls, 1 + threads) << threads;
  }
  // The ranks of a job share a file: parts 0, 1, 2 of pieces of 7 rows read pieces 0, 3, 6
  // (21 rows) / 1, 4, 7 (15 rows: piece 7 is row 49) / 2, 5 (14 rows), every row once between
  // them; only the part holding row 37 (piece 5) finds its NaN, naming the row in the file.
  {
    UnfoldArrays u = good;
    u.reco.particles[37 * row + 5] = nan;
    fs::remove(spoilt);
    writeUnfoldFile(spoilt, u);
    for (const auto& [part, rows] : {std::pair{0, 21}, std::pair{1, 15}, std::pair{2, 14}}) {
      int64_t mine = 0, of = -1;
      try {
        check(
            spoilt, 7, part == 1 ? 2 : 1, [&](int64_t d, int64_t t) { mine = d, of = t; }, part, 3);
        EXPECT_NE(part, 2) << "part 2 holds row 37";
        EXPECT_EQ(mine, rows) << part;
      } catch (const foldfarm::InputError& e) {
        EXPECT_EQ(part, 2) << e.what();
        EXPECT_NE(std::string(e.what()).find("dataset 'reco': row 37 holds"), std::string::npos)
            << e.what();
        EXPECT_EQ(mine, 7);  // piece 2 read, piece 5 refused
      }
      EXPECT_EQ(of, rows) << part;
    }
  }
  UnfoldArrays last_only = good;
  last_only.weights.assign(last_only.weights.size(), 0.0f);
  last_only.weights[n - 1] = 0.5f;
  fs::remove(spoilt);
  writeUnfoldFile(spoilt, last_only);
  EXPECT_NO_THROW(check(spoilt, 7));
  EXPECT_NO_THROW(check(spoilt, 7, 4));
  last_only.weights[n - 1] = 0.0f;  // all zero: refused by a whole reading, not by a part's
  fs::remove(spoilt);
  writeUnfoldFile(spoilt, last_only);
  EXPECT_THROW(check(spoilt, 7), foldfarm::InputError);
  for (int part = 0; part < 2; ++part) EXPECT_NO_THROW(check(spoilt, 7, 1, {}, part, 2));

  // The jets layout: what readJets reads, labels included.
  SynthConfig jet_cfg = SynthConfig::pretrainDefaults();
  jet_cfg.P = 8;
  JetArrays jets = synthPretrain(jet_cfg, 9, 0, 30);
  jets.particles[17 * (jets.particles.size() / 30)] = nan;
  const std::string jets_path = dir.file("jets.h5");
  writeJetFile(jets_path, jets);
  try {
    check(jets_path, 4);
    ADD_FAILURE() << "a NaN in the jets layout was not found";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("dataset 'data': row 17 holds a non-finite value (NaN)"),
              std::string::npos)
        << e.what();
  }
  // Read whole, the slot and feature are named, and a padding slot is said to be one.
  try {
    JetFile(jets_path).readJets();
    ADD_FAILURE() << "a NaN in the jets layout was read";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("row 17 holds a non-finite value (NaN) in particle slot "
                                         "0, feature 0;"),
              std::string::npos)
        << e.what();
  }
  JetArrays padded = jets;
  padded.particles[17 * (jets.particles.size() / 30)] = 0.0f;
  const int64_t last = padded.P - 1;
  float* slot = padded.particles.data() + (17 * padded.P + last) * kNumParticleFeatures;
  std::fill(slot, slot + kNumParticleFeatures, 0.0f);
  slot[3] = nan;
  fs::remove(jets_path);
  writeJetFile(jets_path, padded);
  try {
    JetFile(jets_path).readJets();
    ADD_FAILURE() << "a NaN in a padding slot was read";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("in particle slot " + std::to_string(last) +
                                         ", feature 3 (a padding slot: store 0 there)"),
              std::string::npos)
        << e.what();
  }
}

TEST(JetIo, SelectionFlagsAreZeroOrOneWhateverTheirTypeAndAnythingElseIsRefused) {
  TempDir dir;
  SynthConfig cfg = SynthConfig::unfoldDefaults();
  cfg.P = 8;
  UnfoldArrays u = synthUnfold(cfg, 3, 0, 30);
  for (size_t i = 0; i < u.pass_gen.size(); ++i) u.pass_gen[i] = i % 3 != 0;
  const std::string path = dir.file("flags.h5");
  writeUnfoldFile(path, u);
  EXPECT_EQ(JetFile(path).readPassFlags("pass_gen"), u.pass_gen);
  H5Handle bool_type = FF_H5_OWN(H5Tenum_create(H5T_NATIVE_INT8), H5Kind::kDatatype, "enum");
  const int8_t no = 0, yes = 1;
  FF_H5_CHECK(H5Tenum_insert(bool_type.get(), "FALSE", &no), "enum");
  FF_H5_CHECK(H5Tenum_insert(bool_type.get(), "TRUE", &yes), "enum");
  std::vector<int8_t> bytes(u.pass_gen.begin(), u.pass_gen.end());
  std::vector<int64_t> ints(u.pass_gen.begin(), u.pass_gen.end());
  std::vector<float> floats(u.pass_gen.begin(), u.pass_gen.end());
  const auto as = [&](const char* type) {
    if (type[0] == 'b')
      replaceDataset(path, "pass_gen", bool_type.get(), bool_type.get(), bytes.data(),
                     bytes.size());
    else if (type[0] == 'i')
      replaceDataset(path, "pass_gen", H5T_STD_I64LE, H5T_NATIVE_INT64, ints.data(), ints.size());
    else
      replaceDataset(path, "pass_gen", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, floats.data(),
                     floats.size());
  };
  for (const char* type : {"bool", "int64", "float32"}) {
    as(type);
    const JetFile f(path);
    EXPECT_EQ(f.readPassFlags("pass_gen"), u.pass_gen) << type;
    EXPECT_EQ(f.readUnfold().pass_gen, u.pass_gen) << type;
    EXPECT_EQ(f.readPassFlags("pass_gen", 4, 17), u.slice(4, 17).pass_gen) << type;
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto& [type, row, value, text] : {std::tuple{"float32", 7, 0.5f, "row 7 holds 0.5,"},
                                               std::tuple{"float32", 4, -1.0f, "row 4 holds -1,"},
                                               std::tuple{"float32", 29, nan, "row 29 holds NaN,"},
                                               std::tuple{"int64", 12, 2.0f, "row 12 holds 2,"}}) {
    floats.assign(u.pass_gen.begin(), u.pass_gen.end());
    ints.assign(u.pass_gen.begin(), u.pass_gen.end());
    floats[static_cast<size_t>(row)] = value;
    ints[static_cast<size_t>(row)] = static_cast<int64_t>(value);
    as(type);
    for (const bool whole : {true, false}) {
      try {
        const JetFile f(path);
        if (whole)
          f.readUnfold();
        else
          f.readPassFlags("pass_gen", row, row + 1);
        ADD_FAILURE() << "flag " << text << " was read";
      } catch (const foldfarm::InputError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(path + ": dataset 'pass_gen': " + text + " not a selection flag"),
                  std::string::npos)
            << msg;
        EXPECT_NE(msg.find("fix the producer of this file"), std::string::npos) << msg;
      }
    }
  }
}

TEST(JetIo, WriterWithoutCommitLeavesExistingFileUntouched) {
  TempDir dir;
  const std::string path = dir.file("keep.h5");
  writeJetFile(path, smallJets(10));
  const auto before = fs::file_size(path);
  {
    JetFileWriter w(path, FileLayout::kJets, 24, true);
    w.append(smallJets(50, 3));
  }  // destroyed without commit
  EXPECT_EQ(fs::file_size(path), before);
  EXPECT_EQ(JetFile(path).numJets(), 10);
}

// A write the file system refuses (full, over quota, over the size limit) ends in one error
// that names the file and gives the system's reason, and leaves neither the file nor its
// temporary behind.
TEST(JetIo, AWriteTheSystemRefusesNamesTheReasonAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("big.h5");
  const JetArrays jets = smallJets(2000);
  try {
    foldfarm::testing::FileSizeLimit limit(64 * 1024);
    WriteOptions o;
    o.deflate_level = 0;
    JetFileWriter w(path, FileLayout::kJets, 24, true, nlohmann::json::object(), o);
    w.append(jets);
    w.commit();
    FAIL() << "wrote past the file-size limit";
  } catch (const foldfarm::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("File too large"), std::string::npos) << what;
    EXPECT_NE(what.find(path), std::string::npos) << what;
  }
  EXPECT_TRUE(fs::is_empty(fs::path(path).parent_path())) << "nothing is left behind";
}

// A file that another program holds open for writing (h5py in 'w' or 'a' mode, a producer
// still running: HDF5 keeps an exclusive flock) is refused by name, saying what to do: it
// reads as whatever part of it is on disk (before: a writer's first 1,000 of 1,500 jets were
// read and trained on silently). Readers beside it (a shared lock, h5py in 'r' mode) do not
// stop a read, and files are still written beside it (foldfarm's writers take no lock).
TEST(JetIo, AFileOpenForWritingInAnotherProgramIsRefusedAndReadersAreNot) {
  TempDir dir;
  const std::string path = dir.file("locked.h5");
  writeJetFile(path, smallJets(10));
  {
    const int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_SH | LOCK_NB), 0);
    EXPECT_EQ(JetFile(path).numJets(), 10) << "another reader";
    ::close(fd);
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  auto messageOf = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const foldfarm::InputError& e) {
      return e.what();
    }
    return "";
  };
  const std::string why = messageOf([&] { JetFile f(path); });
  EXPECT_EQ(why, path +
                     ": is open for writing in another program (it holds the file's HDF5 lock: "
                     "h5py in 'w', 'a' or 'r+' mode, a producer still running); close it there "
                     "or let it finish, then run again");
  EXPECT_NE(messageOf([&] { (void)readJetsFiles({path}, 0); }).find("open for writing"),
            std::string::npos);
  writeJetFile(dir.file("beside.h5"), smallJets(5));
  EXPECT_EQ(JetFile(dir.file("beside.h5")).numJets(), 5);
  ::close(fd);
  EXPECT_EQ(JetFile(path).numJets(), 10) << "once the writer closed it";
}

TEST(JetIo, WriterRefusesADeflateLevelOutOfRangeBeforeWritingAnything) {
  TempDir dir;
  const std::string path = dir.file("x.h5");
  for (int level : {-1, 10}) {
    WriteOptions o;
    o.deflate_level = level;
    try {
      JetFileWriter w(path, FileLayout::kJets, 24, true, nlohmann::json::object(), o);
      ADD_FAILURE() << "deflate level " << level << " accepted";
    } catch (const foldfarm::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("0 (none) to 9"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(fs::is_empty(fs::path(path).parent_path())) << "no file, temporary or final, is left";
}

TEST(BatchStream, RanksPartitionRowsWithEqualCounts) {
  TempDir dir;
  writeJetFile(dir.file("a.h5"), smallJets(203, 1));
  writeJetFile(dir.file("b.h5"), smallJets(150, 2));
  const std::vector<std::string> files{dir.file("a.h5"), dir.file("b.h5")};
  for (int world : {1, 2, 3}) {
    std::set<int64_t> seen;
    for (int rank = 0; rank < world; ++rank) {
      StreamOptions o;
      o.batch_size = 32;
      o.rank = rank;
      o.world_size = world;
      o.seed = 5;
      o.block_rows = 40;
      o.window_blocks = 2;
      BatchStream s(files, o);
      EXPECT_EQ(s.totalRows(), 353);
      s.startEpoch(1);
      int64_t rows = 0, batches = 0;
      JetArrays b;
      while (s.next(b)) {
        ++batches;
        rows += b.n;
        for (int64_t r : s.lastRows())
          EXPECT_TRUE(seen.insert(r).second) << "row " << r << " seen twice";
      }
      EXPECT_EQ(rows, 353 / world);
      EXPECT_EQ(batches, s.batchesPerEpoch());
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), (353 / world) * world);
  }
}

TEST(BatchStream, BatchesCarryTheRightRowsAndShufflingIsDeterministicPerEpoch) {
  TempDir dir;
  const JetArrays all = smallJets(257, 4);
  writeJetFile(dir.file("a.h5"), all);
  StreamOptions o;
  o.batch_size = 50;
  o.seed = 17;
  o.block_rows = 32;
  o.window_blocks = 3;
  auto order = [&](int64_t epoch, uint64_t seed) {
    StreamOptions oo = o;
    oo.seed = seed;
    BatchStream s({dir.file("a.h5")}, oo);
    s.startEpoch(epoch);
    std::vector<int64_t> rows;
    JetArrays b;
    while (s.next(b)) {
      const auto& r = s.lastRows();
      // Content matches the rows the stream says it returned.
      EXPECT_EQ(b.particles, all.subset(r).particles);
      EXPECT_EQ(b.labels, all.subset(r).labels);
      rows.insert(rows.end(), r.begin(), r.end());
    }
    return rows;
  };
  const auto e0 = order(0, 17), e0b = order(0, 17), e1 = order(1, 17), other = order(0, 18);
  EXPECT_EQ(e0, e0b);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, other);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 257; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_FALSE(std::is_sorted(e0.begin(), e0.end()));
  // Without shuffling rows come in file order.
  o.shuffle = false;
  BatchStream s({dir.file("a.h5")}, o);
  JetArrays b;
  ASSERT_TRUE(s.next(b));
  EXPECT_EQ(s.lastRows().front(), 0);
  EXPECT_EQ(b.particles, all.slice(0, 50).particles);
}

TEST(JetIo, InvalidFilesThrowOneLineInputErrorNamingFileAndDataset) {
  TempDir dir;
  struct Case {
    std::string kind, must_mention;
  };
  for (const Case& c :
       {Case{"missing_key", "'jet'"}, Case{"wrong_shape", "'jet'"}, Case{"nan", "row 5"},
        Case{"empty", "0 jets"}, Case{"inconsistent_n", "'jet': has 7 rows but 'data' has 8"},
        Case{"truncated", "truncated file: eof"}}) {
    const std::string path = dir.file("bad.h5");
    fs::remove(path);
    badfiles::writeBad(path, c.kind);
    try {
      JetFile f(path);
      f.readJets();
      ADD_FAILURE() << c.kind << ": no error";
    } catch (const foldfarm::InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << c.kind << ": " << msg;
      EXPECT_NE(msg.find(c.must_mention), std::string::npos) << c.kind << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << c.kind << ": " << msg;
    }
  }
  EXPECT_THROW(JetFile(dir.file("does_not_exist.h5")), foldfarm::InputError);
}

namespace {

// Opens `path` and reads it whole; returns the InputError's message ("" when none).
std::string readError(const std::string& path) {
  try {
    JetFile f(path);
    f.readJets();
  } catch (const foldfarm::InputError& e) {
    return e.what();
  }
  return "";
}

void expectOneLineNaming(const std::string& msg, const std::string& path,
                         std::initializer_list<const char*> mentions) {
  ASSERT_FALSE(msg.empty()) << path << ": no error";
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  for (const char* m : mentions) EXPECT_NE(msg.find(m), std::string::npos) << m << ": " << msg;
}

// An identity filter registered under a number of the plugin range, to write a file whose
// filter a later reader does not have (as h5py's lzf or PyTables' blosc).
size_t identityFilter(unsigned, size_t, const unsigned[], size_t nbytes, size_t*, void**) {
  return nbytes;
}
constexpr H5Z_filter_t kTestFilter = 32099;

// `path`'s dataset `name` replaced by a float32 (N, P, F) dataset chunked by whole rows with
// the filters `with` in that order (deflate, shuffle or kTestFilter).
void rewriteFiltered(const std::string& path, const std::string& name, const JetArrays& a,
                     const std::vector<H5Z_filter_t>& with,
                     unsigned test_filter_flags = H5Z_FLAG_MANDATORY) {
  H5Handle f = FF_H5_OWN(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Kind::kFile, path);
  FF_H5_CHECK(H5Ldelete(f.get(), name.c_str(), H5P_DEFAULT), name);
  const hsize_t dims[3] = {static_cast<hsize_t>(a.n), static_cast<hsize_t>(a.P),
                           kNumParticleFeatures};
  const hsize_t chunk[3] = {4, dims[1], dims[2]};
  H5Handle dcpl = FF_H5_OWN(H5Pcreate(H5P_DATASET_CREATE), H5Kind::kPropList, name);
  FF_H5_CHECK(H5Pset_chunk(dcpl.get(), 3, chunk), name);
  for (H5Z_filter_t id : with) {
    if (id == H5Z_FILTER_DEFLATE) FF_H5_CHECK(H5Pset_deflate(dcpl.get(), 4), name);
    if (id == H5Z_FILTER_SHUFFLE) FF_H5_CHECK(H5Pset_shuffle(dcpl.get()), name);
    if (id == kTestFilter)
      FF_H5_CHECK(H5Pset_filter(dcpl.get(), kTestFilter, test_filter_flags, 0, nullptr), name);
  }
  H5Handle space = FF_H5_OWN(H5Screate_simple(3, dims, nullptr), H5Kind::kDataspace, name);
  H5Handle ds = FF_H5_OWN(H5Dcreate2(f.get(), name.c_str(), H5T_IEEE_F32LE, space.get(),
                                     H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                          H5Kind::kDataset, name);
  FF_H5_CHECK(
      H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.particles.data()),
      name);
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

}  // namespace

// Files as other producers write them. Read exactly: labels as an (N,1) column (before: a
// one-hot of one class, every label 0, trained on silently); deflate before shuffle, a valid
// pipeline the direct chunk decoder does not know (before: "the file is corrupt"); a virtual
// dataset merging two shards. Refused by name, saying what to do: a merge with a shard missing
// or a gap (before: zeros of class 0, read silently), a filter this HDF5 lacks (before:
// "truncated or corrupt"), text labels, datasets one group down, a dangling external link.
TEST(JetIo, FilesAsOtherProducersWriteThemReadExactlyOrAreRefusedByName) {
  TempDir dir;
  const std::string base = dir.file("base.h5");
  const JetArrays a = writeTwoClassJets(base, 12, 3);
  auto copyOf = [&](const std::string& name) {
    const std::string to = dir.file(name);
    fs::copy_file(base, to, fs::copy_options::overwrite_existing);
    return to;
  };
  auto reopen = [](const std::string& path) {
    return FF_H5_OWN(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Kind::kFile, path);
  };
  // pid as an (N,1) column, of integers and of floats.
  for (const bool floats : {false, true}) {
    const std::string path = copyOf(floats ? "pid_col_float.h5" : "pid_col.h5");
    const std::vector<double> as_double(a.labels.begin(), a.labels.end());
    const std::vector<hsize_t> column = {static_cast<hsize_t>(a.n), 1};
    if (floats)
      replaceDataset(path, "pid", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, as_double.data(), column);
    else
      replaceDataset(path, "pid", H5T_STD_I64LE, H5T_NATIVE_INT64, a.labels.data(), column);
    EXPECT_EQ(JetFile(path).readJets().labels, a.labels) << path;
    EXPECT_EQ(readClassLabels(path, "pid"), a.labels) << path;
  }
  // Event weights as an (N,1) column, and one-hot rows that set two classes equally (refused:
  // argmax took the first in silence).
  {
    JetArrays w = a;
    w.weights.resize(static_cast<size_t>(a.n));
    for (int64_t i = 0; i < a.n; ++i) w.weights[static_cast<size_t>(i)] = 0.5f + 0.1f * i;
    const std::string path = dir.file("weights_col.h5");
    writeJetFile(path, w);
    replaceDataset(path, "weights", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, w.weights.data(),
                   {static_cast<hsize_t>(a.n), 1});
    EXPECT_EQ(JetFile(path).readJets().weights, w.weights);
  }
  {
    const std::string path = copyOf("onehot_tie.h5");
    std::vector<float> onehot(static_cast<size_t>(2 * a.n), 0.0f);
    for (int64_t i = 0; i < a.n; ++i) onehot[static_cast<size_t>(2 * i + a.labels[i])] = 1.0f;
    onehot[2 * 5] = onehot[2 * 5 + 1] = 1.0f;  // row 5: both
    replaceDataset(path, "pid", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, onehot.data(),
                   {static_cast<hsize_t>(a.n), 2});
    expectOneLineNaming(readError(path), path,
                        {"dataset 'pid': row 5 of the one-hot labels sets several classes"});
  }
  // Selection flags as an (N,1) column.
  {
    SynthConfig uc = SynthConfig::unfoldDefaults(Tune::kSim);
    uc.P = 8;
    UnfoldArrays u = synthUnfold(uc, 4, 0, 20);
    u.pass_reco.assign(20, 1);
    u.pass_reco[3] = u.pass_reco[7] = 0;
    const std::string path = dir.file("pass_col.h5");
    writeUnfoldFile(path, u);
    replaceDataset(path, "pass_reco", H5T_STD_U8LE, H5T_NATIVE_UINT8, u.pass_reco.data(), {20, 1});
    EXPECT_EQ(JetFile(path).readPassFlags("pass_reco"), u.pass_reco);
  }
  // Deflate before shuffle.
  {
    const std::string path = copyOf("deflate_shuffle.h5");
    rewriteFiltered(path, "data", a, {H5Z_FILTER_DEFLATE, H5Z_FILTER_SHUFFLE});
    EXPECT_EQ(JetFile(path).readJets().particles, a.particles);
  }
  // A filter this HDF5 lacks: the file written, and read back exactly, by a child process
  // that has it registered (H5Zunregister is not safe once other files were open).
  {
    const std::string path = copyOf("plugin_filter.h5");
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      int rc = 1;
      try {
        const H5Z_class2_t cls = {H5Z_CLASS_T_VERS, kTestFilter, 1,       1,
                                  "test-only",      nullptr,     nullptr, identityFilter};
        if (H5Zregister(&cls) >= 0) {
          rewriteFiltered(path, "data", a, {kTestFilter});
          rc = JetFile(path).readJets().particles == a.particles ? 0 : 3;
        }
      } catch (...) {
        rc = 2;
      }
      ::_exit(rc);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "the writer with the filter: " << status;
    expectOneLineNaming(readError(path), path,
                        {"dataset 'data': is compressed with the HDF5 filter 'test-only' (id "
                         "32099), which this HDF5 cannot decode",
                         "HDF5_PLUGIN_PATH", "compression='gzip'"});
  }
  // An optional filter this HDF5 lacks, skipped when the file was written (as h5py marks lzf
  // and blosc): the chunks are stored as they are, and read exactly.
  {
    const std::string path = copyOf("optional_filter.h5");
    rewriteFiltered(path, "data", a, {kTestFilter}, H5Z_FLAG_OPTIONAL);
    EXPECT_EQ(JetFile(path).readJets().particles, a.particles);
  }
  // Text labels.
  {
    const std::string path = copyOf("pid_text.h5");
    H5Handle type = FF_H5_OWN(H5Tcopy(H5T_C_S1), H5Kind::kDatatype, "pid");
    FF_H5_CHECK(H5Tset_size(type.get(), 1), "pid");
    const std::string text(static_cast<size_t>(a.n), 'q');
    replaceDataset(path, "pid", type.get(), type.get(), text.data(), static_cast<hsize_t>(a.n));
    expectOneLineNaming(readError(path), path,
                        {"dataset 'pid': holds text; labels are class indices"});
  }
  // Datasets one group down.
  {
    const std::string path = copyOf("grouped.h5");
    {
      H5Handle f = reopen(path);
      H5Handle g = FF_H5_OWN(H5Gcreate2(f.get(), "jets", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                             H5Kind::kGroup, "jets");
      for (const char* n : {"data", "jet", "pid"})
        FF_H5_CHECK(H5Lmove(f.get(), n, g.get(), n, H5P_DEFAULT, H5P_DEFAULT), n);
    }
    expectOneLineNaming(readError(path), path,
                        {"holds its datasets in the group '/jets'", "f.move('jets/' + k, k)"});
  }
  // A dangling external link.
  {
    const std::string path = copyOf("extlink.h5");
    {
      H5Handle f = reopen(path);
      FF_H5_CHECK(H5Ldelete(f.get(), "data", H5P_DEFAULT), "data");
      FF_H5_CHECK(
          H5Lcreate_external("moved_away.h5", "/data", f.get(), "data", H5P_DEFAULT, H5P_DEFAULT),
          "data");
    }
    expectOneLineNaming(readError(path), path,
                        {"dataset 'data': is an external link to moved_away.h5:/data, which "
                         "cannot be opened"});
  }
  // A virtual dataset over two shards of 8 and 4 jets; then one shard gone; then a gap.
  const std::string shard0 = dir.file("shard0.h5"), shard1 = dir.file("shard1.h5");
  writeJetFile(shard0, a.slice(0, 8));
  writeJetFile(shard1, a.slice(8, 12));
  auto writeMerge = [&](const std::string& path, bool both,
                        const std::string& second = "shard1.h5") {
    fs::copy_file(base, path, fs::copy_options::overwrite_existing);
    H5Handle f = reopen(path);
    FF_H5_CHECK(H5Ldelete(f.get(), "data", H5P_DEFAULT), "data");
    const hsize_t all[3] = {static_cast<hsize_t>(a.n), static_cast<hsize_t>(a.P),
                            kNumParticleFeatures};
    H5Handle dcpl = FF_H5_OWN(H5Pcreate(H5P_DATASET_CREATE), H5Kind::kPropList, "vds");
    const std::vector<std::pair<std::string, std::pair<hsize_t, hsize_t>>> parts = {
        {"shard0.h5", {0, 8}}, {second, {8, 12}}};
    for (size_t k = 0; k < (both ? 2u : 1u); ++k) {
      const auto& [file, rows] = parts[k];
      H5Handle vspace = FF_H5_OWN(H5Screate_simple(3, all, nullptr), H5Kind::kDataspace, "vds");
      const hsize_t start[3] = {rows.first, 0, 0};
      const hsize_t count[3] = {rows.second - rows.first, all[1], all[2]};
      FF_H5_CHECK(H5Sselect_hyperslab(vspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                  "vds");
      H5Handle src = FF_H5_OWN(H5Screate_simple(3, count, nullptr), H5Kind::kDataspace, "vds");
      FF_H5_CHECK(H5Pset_virtual(dcpl.get(), vspace.get(), file.c_str(), "data", src.get()), "vds");
    }
    H5Handle space = FF_H5_OWN(H5Screate_simple(3, all, nullptr), H5Kind::kDataspace, "vds");
    H5Handle ds = FF_H5_OWN(H5Dcreate2(f.get(), "data", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                       dcpl.get(), H5P_DEFAULT),
                            H5Kind::kDataset, "vds");
  };
  const std::string merged = dir.file("merged.h5"), gap = dir.file("gap.h5");
  writeMerge(merged, true);
  writeMerge(gap, false);
  EXPECT_EQ(JetFile(merged).readJets().particles, a.particles) << "both shards";
  // Through a symbolic link in another directory: HDF5 finds the shards beside the real file.
  fs::create_directories(dir.file("link"));
  fs::create_symlink(merged, dir.file("link/merged.h5"));
  EXPECT_EQ(JetFile(dir.file("link/merged.h5")).readJets().particles, a.particles);
  // A shard that is there without the dataset, or with fewer rows than the merge reads.
  const std::string hollow = dir.file("hollow.h5"), short_shard = dir.file("short.h5");
  writeJetFile(short_shard, a.slice(8, 10));
  fs::copy_file(shard1, hollow);
  {
    H5Handle f = reopen(hollow);
    FF_H5_CHECK(H5Ldelete(f.get(), "data", H5P_DEFAULT), "data");
  }
  const std::string to_hollow = dir.file("to_hollow.h5"), to_short = dir.file("to_short.h5");
  writeMerge(to_hollow, true, "hollow.h5");
  writeMerge(to_short, true, "short.h5");
  const std::string hollow_text = "whose source " + hollow + " holds no dataset 'data'";
  expectOneLineNaming(readError(to_hollow), to_hollow, {hollow_text.c_str()});
  const std::string short_text =
      "that maps " + std::to_string(4 * a.P * kNumParticleFeatures) + " values from";
  expectOneLineNaming(readError(to_short), to_short, {short_text.c_str(), "which has shape (2,"});
  const std::string gap_text =
      "dataset 'data': is a virtual dataset (a merge of files) that maps " +
      std::to_string(8 * a.P * kNumParticleFeatures) + " of its " +
      std::to_string(12 * a.P * kNumParticleFeatures) + " values to sources";
  expectOneLineNaming(readError(gap), gap, {gap_text.c_str()});
  fs::remove(shard1);
  expectOneLineNaming(readError(merged), merged,
                      {"dataset 'data': is a virtual dataset (a merge of files) whose source "
                       "shard1.h5:data cannot be found"});
}

// A dataset stored as one chunk larger than the chunk cache and than the direct decoder takes
// (h5py's chunks=(N, P, F)) reads exactly: through HDF5 with a cache of that chunk (before, each
// block read inflated the whole chunk again: 9 minutes to inspect 1 GB).
TEST(JetIo, OneChunkLargerThanTheCacheReadsExactly) {
  TempDir dir;
  const std::string path = dir.file("one_chunk.h5");
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = 24;
  const JetArrays a = synthPretrain(cfg, 3, 0, 14000);  // 17.5 MB of particles
  writeJetFile(path, a);
  {
    H5Handle f = FF_H5_OWN(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Kind::kFile, path);
    FF_H5_CHECK(H5Ldelete(f.get(), "data", H5P_DEFAULT), "data");
    const hsize_t dims[3] = {static_cast<hsize_t>(a.n), static_cast<hsize_t>(a.P),
                             kNumParticleFeatures};
    H5Handle dcpl = FF_H5_OWN(H5Pcreate(H5P_DATASET_CREATE), H5Kind::kPropList, "data");
    FF_H5_CHECK(H5Pset_chunk(dcpl.get(), 3, dims), "data");
    FF_H5_CHECK(H5Pset_shuffle(dcpl.get()), "data");
    FF_H5_CHECK(H5Pset_deflate(dcpl.get(), 1), "data");
    H5Handle space = FF_H5_OWN(H5Screate_simple(3, dims, nullptr), H5Kind::kDataspace, "data");
    H5Handle ds = FF_H5_OWN(H5Dcreate2(f.get(), "data", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                       dcpl.get(), H5P_DEFAULT),
                            H5Kind::kDataset, "data");
    FF_H5_CHECK(
        H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.particles.data()),
        "data");
  }
  JetFile f(path);
  EXPECT_EQ(f.readJets().particles, a.particles);
  EXPECT_EQ(f.readJets(5000, 5100).particles, a.slice(5000, 5100).particles);
}

TEST(JetIo, ZeroWidthParticleArraysAreRefused) {
  TempDir dir;
  const std::string path = dir.file("bad.h5");
  badfiles::writeBad(path, "zero_particles");
  expectOneLineNaming(readError(path), path, {"'data'", "(8,0,13)", "zero-width"});
  fs::remove(path);
  badfiles::writeBad(path, "zero_features");
  expectOneLineNaming(readError(path), path, {"'data'", "(8,10,0)"});
}

// HDF5 stores a chunked dataset of any declared shape in a few hundred bytes: the reader
// must refuse the shape before anything sizes an allocation from it.
TEST(JetIo, DimensionsWhoseByteSizeOverflowsAreRefusedAtOpen) {
  TempDir dir;
  const std::string path = dir.file("bad.h5");
  badfiles::writeBad(path, "overflow");
  ASSERT_LT(fs::file_size(path), 100000u);
  try {
    JetFile f(path);
    ADD_FAILURE() << "opened";
  } catch (const foldfarm::InputError& e) {
    expectOneLineNaming(e.what(), path, {"'data'", "(1099511627776,1048576,13)", "64-bit"});
  }
  EXPECT_THROW(BatchStream({path}, StreamOptions{}), foldfarm::InputError);
}

// A 1 KiB file can declare 2^30 jets of 128 particles (6.5 TiB) without storing them: it is
// refused at open, before any caller sizes an index or an allocation by its row count.
TEST(JetIo, DeclaredButUnwrittenRowsAreRefusedAtOpen) {
  TempDir dir;
  const std::string path = dir.file("huge.h5");
  badfiles::writeBad(path, "huge");
  ASSERT_LT(fs::file_size(path), 100000u);
  try {
    JetFile f(path);
    ADD_FAILURE() << "opened";
  } catch (const foldfarm::InputError& e) {
    expectOneLineNaming(e.what(), path, {"'data'", "(1073741824,128,13)", "ever written"});
  }
  EXPECT_THROW(BatchStream({path}, StreamOptions{}), foldfarm::InputError);
}

TEST(JetIo, ReadsBeyondTheMemoryBudgetAreRefusedWithTheirSize) {
  TempDir dir;
  const std::string good = dir.file("good.h5");
  badfiles::writeGoodJets(good, 12, 16);            // 12 jets: 10.1 KiB in memory
  EXPECT_GT(readBudgetBytes(), uint64_t{1} << 26);  // this machine's memory by default
  {
    ScopedEnv env("FOLDFARM_READ_BUDGET_GIB", "0.000001");  // about 1 KiB
    expectOneLineNaming(readError(good), good, {"10.1 KiB", "1.0 KiB", "FOLDFARM_READ_BUDGET_GIB"});
    EXPECT_THROW(readFloatDataset(good, "data"), foldfarm::InputError);
    EXPECT_THROW(JetFile(good).readFloat("data"), foldfarm::InputError);
  }
  {
    // A stream holds its window of rows (8 blocks of 512 by default): 3.6 MiB for this file.
    ScopedEnv env("FOLDFARM_READ_BUDGET_GIB", "0.001");
    EXPECT_EQ(readError(good), "");
    try {
      BatchStream s({good}, StreamOptions{});
      ADD_FAILURE() << "a stream beyond the budget was built";
    } catch (const foldfarm::InputError& e) {
      expectOneLineNaming(e.what(), good, {"streaming 12 jets", "MiB"});
    }
  }
  {
    ScopedEnv env("FOLDFARM_READ_BUDGET_GIB", "lots");
    EXPECT_THROW(readBudgetBytes(), foldfarm::InputError);
  }
  EXPECT_EQ(readError(good), "");
}

TEST(JetIo, ClassLabelsOutOfRangeAreRefused) {
  TempDir dir;
  const std::string path = dir.file("bad.h5");
  badfiles::writeBad(path, "label_range");
  expectOneLineNaming(readError(path), path, {"'pid'", "row 3", "5000", "[0, 1024)"});
  EXPECT_THROW(readClassLabels(path), foldfarm::InputError);
  fs::remove(path);
  badfiles::writeBad(path, "negative_label");
  expectOneLineNaming(readError(path), path, {"'pid'", "row 3", "-1"});
  fs::remove(path);
  badfiles::writeBad(path, "onehot_empty");
  expectOneLineNaming(readError(path), path, {"'pid'", "row 6", "no class set"});
  try {
    readClassLabels(path);
    ADD_FAILURE() << "accepted";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("row 6"), std::string::npos) << e.what();
  }

  // With `class_names`, labels must lie below its length.
  JetArrays a = smallJets(6);
  a.labels = {0, 1, 0, 2, 1, 0};
  const std::string named = dir.file("named.h5");
  writeJetFile(named, a, {{"class_names", nlohmann::json({"q", "g"}).dump()}});
  EXPECT_EQ(JetFile(named).numClasses(), 2);
  expectOneLineNaming(readError(named), named, {"row 3", "[0, 2)"});
  a.labels[3] = 1;
  fs::remove(named);
  writeJetFile(named, a, {{"class_names", nlohmann::json({"q", "g"}).dump()}});
  EXPECT_EQ(readError(named), "");
  EXPECT_EQ(readClassLabels(named), a.labels);
}

// Files read together must mean the same classes by the same labels, and a stray label must
// not make a model of mostly empty classes (before: label 1000 in 2000 quark/gluon jets made
// a 1001-class model, silently).
TEST(JetIo, TheClassesOfFilesReadTogetherAreCheckedAndNamed) {
  TempDir dir;
  JetArrays a = smallJets(6);
  a.labels = {0, 1, 0, 1, 1, 0};
  const std::string qg = dir.file("qg.h5"), plain = dir.file("plain.h5");
  const std::string other = dir.file("other.h5"), stray = dir.file("stray.h5");
  writeJetFile(qg, a, {{"class_names", nlohmann::json({"q", "g"}).dump()}});
  writeJetFile(plain, a);
  writeJetFile(other, a, {{"class_names", nlohmann::json({"g", "q"}).dump()}});
  ClassCensus c = classCensus({qg, qg});
  EXPECT_EQ(c.names, (std::vector<std::string>{"q", "g"}));
  EXPECT_EQ(c.counts, (std::vector<int64_t>{6, 6}));
  c = classCensus({plain});
  EXPECT_TRUE(c.names.empty());
  EXPECT_EQ(c.counts, (std::vector<int64_t>{3, 3}));
  const auto refusal = [](const std::vector<std::string>& files) {
    try {
      classCensus(files);
    } catch (const foldfarm::InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  std::string why = refusal({qg, other});
  EXPECT_NE(why.find(other + ": names its classes [\"g\",\"q\"], " + qg + " [\"q\",\"g\"]"),
            std::string::npos)
      << why;
  why = refusal({plain, qg});
  EXPECT_NE(why.find(plain + ": names no classes"), std::string::npos) << why;
  why = refusal({qg, plain});
  EXPECT_NE(why.find(plain + ": names no classes"), std::string::npos) << why;
  // Labels 0, 1 and 7: 5 of 8 classes empty, more than hold jets. Named classes may be empty.
  a.labels[4] = 7;
  writeJetFile(stray, a);
  why = refusal({plain, stray});
  EXPECT_NE(why.find(stray + ": row 4 holds label 7, which makes 8 classes of which 5 hold no jet "
                             "(0: 6 jets, 1: 5 jets, 7: 1 jet)"),
            std::string::npos)
      << why;
  a.labels = {0, 1, 2, 0, 1, 2};
  fs::remove(stray);
  writeJetFile(stray, a);
  a.labels[0] = 5;  // with `stray`: classes 3 and 4 empty, 4 hold jets
  const std::string wide = dir.file("wide.h5");
  writeJetFile(wide, a);
  EXPECT_EQ(classCensus({stray, wide}).counts, (std::vector<int64_t>{3, 4, 4, 0, 0, 1}));
}

TEST(JetIo, NanOrAllZeroWeightsAreRefused) {
  TempDir dir;
  const std::string path = dir.file("bad.h5");
  badfiles::writeBad(path, "nan_weights");
  expectOneLineNaming(readError(path), path, {"'weights'", "row 2", "NaN"});
  fs::remove(path);
  badfiles::writeBad(path, "zero_weights");
  expectOneLineNaming(readError(path), path, {"'weights'", "all zero"});
  EXPECT_NO_THROW(JetFile(path).readJets(0, 4));  // a slice of zeros is not an error
  EXPECT_THROW(JetFile(path).readFloat("weights"), foldfarm::InputError);

  // Unfolding files (what a chain reads whole) likewise.
  SynthConfig cfg = SynthConfig::unfoldDefaults();
  cfg.P = 16;
  UnfoldArrays u = synthUnfold(cfg, 1, 0, 10);
  u.weights.assign(10, 0.0f);
  const std::string unfold = dir.file("unfold.h5");
  writeUnfoldFile(unfold, u);
  try {
    JetFile(unfold).readUnfold();
    ADD_FAILURE() << "accepted";
  } catch (const foldfarm::InputError& e) {
    expectOneLineNaming(e.what(), unfold, {"'weights'", "all zero"});
  }
  u.weights[7] = 0.5f;
  fs::remove(unfold);
  writeUnfoldFile(unfold, u);
  EXPECT_NO_THROW(JetFile(unfold).readUnfold());
}

TEST(JetIo, ZeroWidthOrOverflowingRawDatasetsAreRefused) {
  // The layout-free readers (`data convert` reads part_px ... with them).
  TempDir dir;
  const std::string path = dir.file("raw.h5");
  {
    foldfarm::data::H5Handle f = h5Create(path);
    badfiles::writeRawFloat(f.get(), "part_px", {4, 0}, {});
    badfiles::writeDeclaredFloat(f.get(), "part_py", {hsize_t(1) << 62, 4});
    f.close(path);
  }
  try {
    readFloatDataset(path, "part_px");
    ADD_FAILURE() << "accepted";
  } catch (const foldfarm::InputError& e) {
    expectOneLineNaming(e.what(), path, {"'part_px'", "(4,0)", "zero-width"});
  }
  try {
    readFloatDataset(path, "part_py");
    ADD_FAILURE() << "accepted";
  } catch (const foldfarm::InputError& e) {
    expectOneLineNaming(e.what(), path, {"'part_py'", "64-bit"});
  }
}

// `bench data` runs end to end on a small sample and reports every figure, the SHA-256 of
// the written file by both codes among them (it throws when they disagree); no figure is
// checked against a speed (benchmarks print figures; they are not timed tests).
TEST(DataBench, ReportsEveryFigureAndBothSha256CodesAgree) {
  TempDir dir;
  DataBenchOptions o;
  o.jets = 512;
  o.P = 16;
  o.read_epochs = 1;
  o.tmp_dir = fs::path(dir.file("x")).parent_path().string();
  const nlohmann::json r = benchData(o);
  for (const char* key : {"synth_pretrain_jets_per_s", "write_jets_per_s", "stream_read_jets_per_s",
                          "stream_read_uncompressed_jets_per_s", "sha256_MB_per_cpu_s",
                          "sha256_portable_MB_per_cpu_s", "sha256_speedup"})
    EXPECT_GT(r.at(key).get<double>(), 0.0) << key;
  EXPECT_EQ(r.at("sha256_code"), foldfarm::sha256Implementation());
  EXPECT_TRUE(fs::is_empty(o.tmp_dir)) << "the temporary files are removed";
}
