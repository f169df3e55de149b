// Writer/reader round trips, streaming (sharding, shuffling) and input validation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/base/error.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "tests/data/bad_files.hpp"

using namespace foldfarm::data;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("ff_data_io_" + std::to_string(::getpid()) + "_" +
                                          std::to_string(counter_++));
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
        for (int64_t r : s.lastRows()) EXPECT_TRUE(seen.insert(r).second) << "row " << r << " seen twice";
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
  for (const Case& c : {Case{"missing_key", "'jet'"}, Case{"wrong_shape", "'jet'"}, Case{"nan", "row 5"},
                        Case{"empty", "0 jets"}, Case{"inconsistent_n", "'jet'"}, Case{"truncated", "bad.h5"}}) {
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
