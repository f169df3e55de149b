// Datasets of many files: paths, glob patterns and @lists expand to files in a stable order,
// a file whose layout differs from the first is refused by name, and the files read as one
// sequence of jets.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/base/error.hpp"
#include "core/data/jet_files.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"

using namespace foldfarm;
using namespace foldfarm::data;
namespace fs = std::filesystem;

namespace {

struct Dir {
  Dir() {
    path = fs::temp_directory_path() / ("ff_jet_files_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path / "part");
  }
  ~Dir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  fs::path path;
};

JetArrays jets(int64_t n, int64_t P, uint64_t seed) {
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = P;
  return synthPretrain(cfg, seed, 0, n);
}

std::string messageOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(JetFiles, PathsPatternsAndListsExpandInOrderAndReadAsOneSequence) {
  Dir d;
  writeJetFile(d.file("part/b.h5"), jets(30, 16, 2), {});
  writeJetFile(d.file("part/a.h5"), jets(20, 16, 1), {});
  writeJetFile(d.file("c.h5"), jets(10, 16, 3), {});
  {
    std::ofstream list(d.file("list.txt"));
    list << "# training files\n\npart/*.h5\n  c.h5  \n";
  }
  const std::vector<std::string> want = {d.file("part/a.h5"), d.file("part/b.h5"), d.file("c.h5")};
  EXPECT_EQ(expandDatasetFiles(d.file("part/*.h5") + "," + d.file("c.h5")), want);
  EXPECT_EQ(expandDatasetFiles("@" + d.file("list.txt")), want);
  EXPECT_EQ(countJetsInFiles(want), 60);
  const JetArrays all = readJetsFiles(want);
  ASSERT_EQ(all.n, 60);
  EXPECT_EQ(all.slice(20, 50).particles, JetFile(want[1]).readJets().particles);
  // Rows 19..21 straddle the first two files.
  const JetArrays rows = readJetsRows(want, {19, 20, 55});
  EXPECT_EQ(rows.n, 3);
  EXPECT_EQ(rows.slice(1, 2).particles, JetFile(want[1]).readJets(0, 1).particles);
}

TEST(JetFiles, MissingFilesEmptyPatternsAndMismatchedLayoutsAreRefusedByName) {
  Dir d;
  writeJetFile(d.file("a.h5"), jets(20, 16, 1), {});
  writeJetFile(d.file("wide.h5"), jets(20, 24, 2), {});
  JetArrays unlabelled = jets(20, 16, 3);
  unlabelled.labels.clear();
  writeJetFile(d.file("nolabels.h5"), unlabelled, {});
  EXPECT_NE(messageOf([&] { expandDatasetFiles(d.file("nope.h5")); }).find("nope.h5"),
            std::string::npos);
  EXPECT_NE(messageOf([&] { expandDatasetFiles(d.file("x_*.h5")); }).find("matches no file"),
            std::string::npos);
  EXPECT_NE(messageOf([&] { expandDatasetFiles("@" + d.file("none.txt")); }).find("none.txt"),
            std::string::npos);
  // One file named twice, matched again by a pattern, or through a link: refused by name.
  std::filesystem::create_symlink(d.file("a.h5"), d.file("link.h5"));
  {
    std::ofstream list(d.file("twice.txt"));
    list << "a.h5\nwide.h5\na.h5\n";
  }
  for (const auto& [spec, expected] : std::vector<std::pair<std::string, std::string>>{
           {d.file("a.h5") + "," + d.file("a.h5"), "names " + d.file("a.h5") + " twice"},
           {"@" + d.file("twice.txt"), "names " + d.file("a.h5") + " twice"},
           {d.file("w*.h5") + "," + d.file("wide.h5"), "names " + d.file("wide.h5") + " twice"},
           {d.file("a.h5") + "," + d.file("link.h5"),
            "names " + d.file("link.h5") + " and " + d.file("a.h5") + ", which are one file"}}) {
    const std::string list = spec;  // a structured binding is not captured before C++20
    const std::string why = messageOf([&] { expandDatasetFiles(list); });
    EXPECT_NE(why.find(expected), std::string::npos) << spec << ": " << why;
  }
  const std::string wide = messageOf([&] {
    countJetsInFiles({d.file("a.h5"), d.file("wide.h5")});
  });
  EXPECT_NE(wide.find("wide.h5: 24 particle slots"), std::string::npos) << wide;
  const std::string labels = messageOf([&] {
    countJetsInFiles({d.file("a.h5"), d.file("nolabels.h5")});
  });
  EXPECT_NE(labels.find("nolabels.h5: has no class labels"), std::string::npos) << labels;
}
