// The `foldfarm data` commands on good and bad files, through the real executable.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/process.hpp"
#include "core/data/features.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "tests/data/bad_files.hpp"

using namespace foldfarm::data;
namespace fs = std::filesystem;

namespace {

struct Result {
  int code;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class DataCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
    dir_ = fs::temp_directory_path() / ("ff_data_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string file(const std::string& n) const { return (dir_ / n).string(); }

  // `foldfarm ARGS`, started from its argv (no shell): the exit status (128 + the signal
  // when one ended it), stdout and stderr.
  static Result run(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {FOLDFARM_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    foldfarm::ProcessOptions o;
    o.timeout = std::chrono::minutes(5);
    const foldfarm::ProcessResult r = foldfarm::runProcess(argv, o);
    return {r.status(), r.out, r.err};
  }

  fs::path dir_;
};

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n + (!s.empty() && s.back() != '\n');
}

}  // namespace

TEST_F(DataCli, BadInputFilesGiveExitTwoAndOneLineNamingTheFile) {
  for (const std::string kind : {"missing_key", "wrong_shape", "truncated", "nan", "empty"}) {
    const std::string bad = file(kind + ".h5");
    badfiles::writeBad(bad, kind);
    const Result inspect = run({"data", "inspect", bad});
    EXPECT_EQ(inspect.code, 2) << kind << ": " << inspect.err;
    EXPECT_EQ(lines(inspect.err), 1) << kind << ": " << inspect.err;
    EXPECT_NE(inspect.err.find(bad), std::string::npos) << kind << ": " << inspect.err;

    // convert: no output created; an existing output stays byte-identical.
    const std::string out = file(kind + "_out.h5");
    const Result conv = run({"data", "convert", "--in", bad, "--out", out});
    EXPECT_EQ(conv.code, 2) << kind << ": " << conv.err;
    EXPECT_EQ(lines(conv.err), 1) << kind << ": " << conv.err;
    EXPECT_NE(conv.err.find(bad), std::string::npos) << kind << ": " << conv.err;
    EXPECT_FALSE(fs::exists(out)) << kind;
    { std::ofstream(out) << "previous result"; }
    EXPECT_EQ(run({"data", "convert", "--in", bad, "--out", out}).code, 2);
    EXPECT_EQ(slurp(out), "previous result") << kind;
    EXPECT_EQ(run({"data", "observables", "--in", bad, "--out", out}).code, 2);
    EXPECT_EQ(slurp(out), "previous result") << kind;
  }
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos)
        << "temporary file left: " << e.path();
}

// Paths that are not what a command needs say what they are: a directory given as an input
// file, a file given as the directory of an output, a negative thread count.
// Four-vectors with an energy <= 0 beside a momentum are refused naming the jet and the
// particle, nothing written (before: converted, log E = -69 in the features).
TEST_F(DataCli, AParticleWithoutPositiveEnergyIsRefusedNamingIt) {
  const std::string in = file("negative_energy.h5"), out = file("negative_energy_conv.h5");
  // 3 jets x 4 slots: jet 1, slot 2 has px = 3 and E = -5; the last slot of each is padding.
  std::vector<float> px(12, 0.0f), py(12, 0.0f), pz(12, 0.0f), en(12, 0.0f);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const size_t k = static_cast<size_t>(4 * i + j);
      px[k] = 10.0f + j;
      py[k] = 1.0f;
      pz[k] = 2.0f;
      en[k] = 20.0f;
    }
  const auto write = [&] {
    H5Handle f = FF_H5_OWN(H5Fcreate(in.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                           H5Kind::kFile, in);
    badfiles::writeRawFloat(f.get(), "part_px", {3, 4}, px);
    badfiles::writeRawFloat(f.get(), "part_py", {3, 4}, py);
    badfiles::writeRawFloat(f.get(), "part_pz", {3, 4}, pz);
    badfiles::writeRawFloat(f.get(), "part_energy", {3, 4}, en);
    h5WriteStringAttr(f.get(), "source", "an export (label 1 = quark)");
  };
  write();
  ASSERT_EQ(run({"data", "convert", "--in", in, "--out", out}).code, 0);  // sound as written
  // The input's attributes are kept (its provenance was replaced by a path), the path beside.
  EXPECT_EQ(JetFile(out).attributes().at("source"), "an export (label 1 = quark)");
  EXPECT_EQ(JetFile(out).attributes().at("converted_from_file"), in);
  fs::remove(out);
  en[4 * 1 + 2] = -5.0f;
  write();
  const Result r = run({"data", "convert", "--in", in, "--out", out});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(in + ": jet row 1, particle 2: part_energy -5 <= 0"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(out));
}

// `data inspect` of a file with event weights says what they are: their sum and range, how
// many are negative (NLO generators) or zero, and their effective sample size (Σw)²/Σw².
TEST_F(DataCli, InspectSummarisesTheEventWeightsAndTheirNegativeShare) {
  UnfoldArrays u = synthUnfold(SynthConfig::unfoldDefaults(Tune::kSim), 5, 0, 40);
  u.weights.assign(40, 2.0f);
  for (size_t i = 0; i < 10; ++i) u.weights[i] = -1.0f;  // 10 negative
  u.weights[10] = 0.0f;
  const std::string path = file("signed.h5");
  writeUnfoldFile(path, u);
  Result r = run({"data", "inspect", path, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto w = nlohmann::json::parse(r.out).at("weights");
  EXPECT_EQ(w.at("events"), 40);
  EXPECT_EQ(w.at("negative"), 10);
  EXPECT_EQ(w.at("zero"), 1);
  EXPECT_DOUBLE_EQ(w.at("sum").get<double>(), 29 * 2.0 - 10);
  EXPECT_DOUBLE_EQ(w.at("negative_sum").get<double>(), -10);
  EXPECT_DOUBLE_EQ(w.at("min").get<double>(), -1);
  EXPECT_DOUBLE_EQ(w.at("max").get<double>(), 2);
  EXPECT_DOUBLE_EQ(w.at("ess").get<double>(), 48.0 * 48.0 / (29 * 4.0 + 10));
  r = run({"data", "inspect", path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("10 negative (25.0%, summing to -10), 1 zero"), std::string::npos) << r.out;
  // All negative: no effective sample (a total of -40 is not 40 events), and said.
  u.weights.assign(40, -1.0f);
  writeUnfoldFile(file("negative.h5"), u);
  r = run({"data", "inspect", file("negative.h5"), "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("weights").at("ess").get<double>(), 0.0);
  r = run({"data", "inspect", file("negative.h5")});
  EXPECT_NE(r.out.find("their total is not positive: an unfolding refuses these weights"),
            std::string::npos)
      << r.out;
  // A file without weights has no such entry.
  u.weights.clear();
  writeUnfoldFile(file("unweighted.h5"), u);
  r = run({"data", "inspect", file("unweighted.h5"), "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(nlohmann::json::parse(r.out).contains("weights"));
}

TEST_F(DataCli, WrongKindsOfPathAndNegativeThreadsSayWhatIsWrong) {
  const std::string pre = file("pre.h5");
  ASSERT_EQ(run({"data", "synth", "--kind", "pretrain", "--jets", "8", "--out", pre}).code, 0);
  const Result dir = run({"data", "inspect", dir_.string()});
  EXPECT_EQ(dir.code, 2) << dir.err;
  EXPECT_EQ(lines(dir.err), 1) << dir.err;
  EXPECT_NE(dir.err.find(dir_.string() + ": is a directory"), std::string::npos) << dir.err;
  const Result under_file =
      run({"data", "synth", "--kind", "pretrain", "--jets", "8", "--out", pre + "/x.h5"});
  EXPECT_EQ(under_file.code, 2) << under_file.err;
  EXPECT_NE(under_file.err.find("output directory " + pre + " is not a directory"),
            std::string::npos)
      << under_file.err;
  const Result threads = run({"data", "synth", "--kind", "pretrain", "--jets", "8", "--threads",
                              "-1", "--out", pre, "--overwrite"});
  EXPECT_EQ(threads.code, 2) << threads.err;
  EXPECT_NE(threads.err.find("--threads -1 is negative"), std::string::npos) << threads.err;
  const Result conv = run({"data", "convert", "--in", dir_.string(), "--out", file("c.h5")});
  EXPECT_EQ(conv.code, 2) << conv.err;
  EXPECT_NE(conv.err.find(dir_.string() + ": is a directory; give an HDF5 file"), std::string::npos)
      << conv.err;
  // Where several files are taken (pretraining's --data), the advice names the pattern.
  const Result pre_dir =
      run({"pretrain", "--data", dir_.string(), "--out", file("pt"), "--preset", "tiny"});
  EXPECT_EQ(pre_dir.code, 2) << pre_dir.err;
  EXPECT_NE(pre_dir.err.find(dir_.string() + ": is a directory; give its files (e.g. " +
                             dir_.string() + "/*.h5)"),
            std::string::npos)
      << pre_dir.err;
  EXPECT_FALSE(fs::exists(file("pt")));
}

// The same seed writes the same bytes, whenever it runs: a campaign records its inputs' sha256,
// and a file generated again from its seed is the file it recorded (before: the HDF5 object
// headers held their creation times, and the checksums differed).
TEST_F(DataCli, SynthWithTheSameSeedWritesTheSameBytes) {
  const std::vector<std::vector<std::string>> kinds = {
      {"--kind", "pretrain", "--jets", "50", "--seed", "3"},
      {"--kind", "unfold", "--tune", "sim", "--events", "40", "--seed", "5"}};
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // next second
    for (size_t k = 0; k < kinds.size(); ++k) {
      std::vector<std::string> args = {"data", "synth"};
      args.insert(args.end(), kinds[k].begin(), kinds[k].end());
      args.insert(args.end(),
                  {"--out", file(std::to_string(k) + "_" + std::to_string(pass) + ".h5")});
      const Result r = run(args);
      ASSERT_EQ(r.code, 0) << r.err;
    }
  }
  for (size_t k = 0; k < kinds.size(); ++k) {
    const std::string a = slurp(file(std::to_string(k) + "_0.h5"));
    EXPECT_FALSE(a.empty());
    EXPECT_TRUE(a == slurp(file(std::to_string(k) + "_1.h5"))) << kinds[k][1];
  }
}

TEST_F(DataCli, SynthInspectConvertObservables) {
  const std::string pre = file("pre.h5");
  Result r =
      run({"data", "synth", "--kind", "pretrain", "--jets", "120", "--seed", "3", "--out", pre});
  ASSERT_EQ(r.code, 0) << r.err;
  r = run({"data", "inspect", pre, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["jets"], 120);
  EXPECT_EQ(j["layout"], "jets");
  EXPECT_EQ(j["labels"]["counts"].size(), 6u);
  EXPECT_EQ(j["labels"]["counts"][0], 20);

  const std::string unf = file("unf.h5");
  r = run({"data", "synth", "--kind", "unfold", "--tune", "data", "--events", "60", "--seed", "4",
           "--out", unf});
  ASSERT_EQ(r.code, 0) << r.err;
  JetFile u(unf);
  EXPECT_TRUE(u.hasSubs());
  EXPECT_EQ(u.numJets(), 60);
  EXPECT_EQ(u.attributes().at("tune"), "data");

  // observables recomputed from stored gen features equal the stored gen_subs.
  const std::string obs = file("obs.h5");
  r = run({"data", "observables", "--in", unf, "--out", obs, "--level", "gen"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<int64_t> dims;
  const auto subs = readFloatDataset(obs, "subs", &dims);
  EXPECT_EQ(dims, (std::vector<int64_t>{60, kNumSubs}));
  const auto stored = u.readFloat("gen_subs");
  ASSERT_EQ(subs.size(), stored.size());
  for (size_t k = 0; k < subs.size(); ++k) ASSERT_FLOAT_EQ(subs[k], stored[k]) << k;
  // `data inspect` summarises the observables file: its rows and each column, in its order
  // (the mean of mass is that of the stored gen_subs' first column); as a training input it is
  // refused, named as what it is.
  r = run({"data", "inspect", obs, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto o = nlohmann::json::parse(r.out);
  EXPECT_EQ(o["layout"], "arrays");
  EXPECT_EQ(o["rows"], 60);
  const auto& columns = o["levels"]["subs"]["columns"];
  ASSERT_EQ(columns.size(), static_cast<size_t>(kNumSubs));
  EXPECT_EQ(columns[0]["name"], "mass");
  EXPECT_EQ(columns[5]["name"], "tau21");
  double mass_sum = 0;
  for (size_t k = 0; k < stored.size(); k += kNumSubs) mass_sum += stored[k];
  EXPECT_NEAR(columns[0]["mean"].get<double>(), mass_sum / 60, 1e-9 * std::abs(mass_sum));
  r = run({"data", "inspect", obs});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("60 rows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  tau21"), std::string::npos) << r.out;
  r = run({"data", "convert", "--in", obs, "--out", file("obs_conv.h5")});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("is a file of observables"), std::string::npos) << r.err;
  // A file of datasets in groups (as foldfarm's bands.h5 and event_weights.h5 are): listed, not
  // called empty; as a training input it is named for what it is.
  const std::string grouped = file("grouped.h5");
  {
    H5Handle f = h5Create(grouped);
    H5Handle g = FF_H5_OWN(H5Gcreate2(f.get(), "mass", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                           H5Kind::kGroup, "mass");
    const hsize_t n = 5;
    H5Handle space = FF_H5_OWN(H5Screate_simple(1, &n, nullptr), H5Kind::kDataspace, "space");
    H5Handle ds = FF_H5_OWN(H5Dcreate2(g.get(), "std", H5T_NATIVE_DOUBLE, space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT),
                            H5Kind::kDataset, "std");
    const double v[5] = {1, 2, 3, 4, 5};
    FF_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), "std");
  }
  r = run({"data", "inspect", grouped, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto g = nlohmann::json::parse(r.out);
  EXPECT_EQ(g["layout"], "other");
  EXPECT_EQ(g["datasets"]["mass/std"]["shape"], nlohmann::json::array({5}));
  r = run({"data", "inspect", grouped});
  EXPECT_NE(r.out.find("holds no jets nor events (1 dataset(s)"), std::string::npos) << r.out;
  r = run({"data", "convert", "--in", grouped, "--out", file("grouped_out.h5")});
  EXPECT_NE(r.err.find("holds no jets nor events (1 dataset(s) in groups, e.g. mass/std"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("empty file"), std::string::npos) << r.err;
  // A file that is not HDF5: one line, no dangling separator.
  std::ofstream(file("text.h5")) << "not hdf5\n";
  r = run({"data", "inspect", file("text.h5")});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err.find("; \n"), std::string::npos) << r.err;

  // convert recomputes data/jet from four-vectors of the real-jet file.
  const std::string conv = file("conv.h5");
  r = run({"data", "convert", "--in",
           std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5", "--out", conv});
  ASSERT_EQ(r.code, 0) << r.err;
  const JetArrays a = JetFile(conv).readJets();
  const JetArrays b =
      JetFile(std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5").readJets();
  EXPECT_EQ(a.labels, b.labels);
  ASSERT_EQ(a.jets.size(), b.jets.size());
  for (size_t k = 0; k < a.jets.size(); k += 4) ASSERT_NEAR(a.jets[k], b.jets[k], 1e-3 * b.jets[k]);
  // The mass comes from the stored float four-vectors in double precision. (The file's own
  // `jet` masses were summed in float32 by its exporter: for a light, hard jet such as row
  // 790, 5.309 GeV there against 5.296 GeV from the same four-vectors in double.)
  const std::string qg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";
  std::vector<int64_t> d;
  const auto px = readFloatDataset(qg, "part_px", &d), py = readFloatDataset(qg, "part_py"),
             pz = readFloatDataset(qg, "part_pz"), en = readFloatDataset(qg, "part_energy");
  for (int64_t i = 0; i < d[0]; ++i) {
    long double x = 0, y = 0, z = 0, e = 0;
    for (int64_t j = 0; j < d[1]; ++j) {
      const size_t k = static_cast<size_t>(i * d[1] + j);
      x += px[k];
      y += py[k];
      z += pz[k];
      e += en[k];
    }
    const double m = static_cast<double>(std::sqrt(std::max(0.0L, e * e - x * x - y * y - z * z)));
    ASSERT_NEAR(a.jets[static_cast<size_t>(4 * i + 2)], m, 2e-6 * m + 1e-6) << "jet " << i;
  }
  EXPECT_NEAR(a.jets[4 * 790 + 2], 5.29589, 1e-4);
}

// `data synth --levels reco` writes a data sample as an experiment has it (detector level
// only): the events of `--levels both` with the same seed; `data inspect` summarises the
// level it holds and says so; `data observables` takes that level by default.
TEST_F(DataCli, ASampleOfTheRecoLevelOnlyIsWrittenInspectedAndMeasured) {
  const std::string both = file("both.h5"), reco = file("reco.h5");
  Result r = run({"data", "synth", "--kind", "unfold", "--tune", "data", "--events", "50", "--seed",
                  "6", "--out", both});
  ASSERT_EQ(r.code, 0) << r.err;
  r = run({"data", "synth", "--kind", "unfold", "--tune", "data", "--events", "50", "--seed", "6",
           "--levels", "reco", "--out", reco});
  ASSERT_EQ(r.code, 0) << r.err;
  const JetFile fb(both), fr(reco);
  EXPECT_TRUE(fr.hasLevel("reco"));
  EXPECT_FALSE(fr.hasLevel("gen"));
  EXPECT_FALSE(fr.has("gen_jets"));
  EXPECT_FALSE(fr.has("pass_gen"));
  EXPECT_EQ(fr.attributes().at("levels"), "reco");
  EXPECT_EQ(fr.readJets(0, -1, "reco").particles, fb.readJets(0, -1, "reco").particles);
  EXPECT_EQ(fr.readFloat("reco_subs"), fb.readFloat("reco_subs"));
  EXPECT_LT(fs::file_size(reco), fs::file_size(both));

  r = run({"data", "inspect", reco, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["levels"].contains("reco"));
  EXPECT_FALSE(j["levels"].contains("gen"));
  EXPECT_TRUE(j["pass_fraction"].contains("reco"));
  EXPECT_FALSE(j["pass_fraction"].contains("gen"));
  r = run({"data", "inspect", reco});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("(the file holds its reco level only)"), std::string::npos) << r.out;

  const std::string obs = file("obs_reco.h5");
  r = run({"data", "observables", "--in", reco, "--out", obs});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(readFloatDataset(obs, "subs"), fr.readFloat("reco_subs"));
  r = run({"data", "observables", "--in", reco, "--out", file("obs_gen.h5"), "--level", "gen"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("reco level only"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(file("obs_gen.h5")));

  r = run({"data", "synth", "--kind", "pretrain", "--jets", "10", "--levels", "reco", "--out",
           file("p.h5")});
  EXPECT_EQ(r.code, 2) << "levels apply to unfolding samples";
  EXPECT_FALSE(fs::exists(file("p.h5")));
}

namespace {

// Starts `foldfarm data synth` of 4 M jets into `target` (stdout discarded, stderr into
// `err`, else discarded), with the default action for SIGINT and SIGTERM.
pid_t startLongSynth(const std::string& target, const std::string& err = "/dev/null") {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
    ::execl(FOLDFARM_BINARY, FOLDFARM_BINARY, "data", "synth", "--jets", "4000000", "--threads",
            "1", "--out", target.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// The temporary files in `dir`, once there is one (none after 30 s).
std::vector<fs::path> waitForTemporaries(const fs::path& dir) {
  std::vector<fs::path> temps;
  for (int i = 0; i < 3000 && temps.empty(); ++i) {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().find(".tmp.") != std::string::npos)
        temps.push_back(e.path());
    if (temps.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return temps;
}

}  // namespace

// Ctrl-C or scancel (SIGINT, SIGTERM) while a command writes leaves no half-written
// "<out>.tmp.<host>.<pid>.<n>" behind, and the process still ends by the signal (the caller,
// a shell or Slurm, sees it so), having said so in a line.
TEST_F(DataCli, ASignalWhileWritingLeavesNoTemporaryFile) {
  for (int signo : {SIGTERM, SIGINT}) {
    const fs::path out = dir_ / ("sig" + std::to_string(signo));
    fs::create_directories(out);
    const std::string err = (dir_ / ("sig" + std::to_string(signo) + ".err")).string();
    const pid_t pid = startLongSynth((out / "big.h5").string(), err);
    ASSERT_GE(pid, 0);
    EXPECT_FALSE(waitForTemporaries(out).empty()) << "no temporary file appeared";
    ::kill(pid, signo);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == signo) << "status " << status;
    for (const auto& e : fs::directory_iterator(out)) ADD_FAILURE() << "left behind: " << e.path();
    std::ifstream in(err);
    const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(said.find("foldfarm: ended by signal " + std::to_string(signo) +
                        "; no file it writes is left half-written"),
              std::string::npos)
        << said;
  }
}

// SIGKILL (the OOM killer, a node's watchdog) while a command writes cannot be caught: the
// half-written temporary stays. The next run that writes the same output removes it, so a
// killed run costs no disk beyond the next run.
TEST_F(DataCli, AHalfWrittenOutputOfAKilledRunIsRemovedByTheNextRun) {
  const fs::path out = dir_ / "killed";
  fs::create_directories(out);
  const std::string target = (out / "big.h5").string();
  const pid_t pid = startLongSynth(target);
  ASSERT_GE(pid, 0);
  const std::vector<fs::path> temps = waitForTemporaries(out);
  ASSERT_FALSE(temps.empty()) << "no temporary file appeared";
  ::kill(pid, SIGKILL);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  ASSERT_TRUE(fs::exists(temps[0])) << "precondition: SIGKILL leaves the temporary";
  const Result again = run({"data", "synth", "--jets", "200", "--out", target});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("removed " + temps[0].string()), std::string::npos) << again.err;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(out)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"big.h5"});
}

// Jets cut to the file's particle slots are counted and said (before: not a word, and the
// observables of the cut jets went into unfoldings beside files of other slot counts).
TEST_F(DataCli, SynthSaysHowManyJetsFillEverySlot) {
  const Result narrow = run({"data", "synth", "--kind", "unfold", "--tune", "sim", "--events",
                             "200", "--seed", "11", "--particles", "8", "--out", file("n.h5")});
  ASSERT_EQ(narrow.code, 0) << narrow.err;
  const size_t at = narrow.err.find(" of 200 events' gen jets and ");
  ASSERT_NE(at, std::string::npos) << narrow.err;
  EXPECT_NE(narrow.err.find("fill all 8 particle slots (--particles): they are cut to their 8 "
                            "hardest particles"),
            std::string::npos)
      << narrow.err;
  // Most jets have more than 8 particles: the count is large (taken from the written rows).
  const size_t start = narrow.err.rfind(' ', at - 1) + 1;
  EXPECT_GT(std::stoi(narrow.err.substr(start, at - start)), 100) << narrow.err;
  const Result wide = run({"data", "synth", "--kind", "unfold", "--tune", "sim", "--events", "200",
                           "--seed", "11", "--particles", "200", "--out", file("w.h5")});
  ASSERT_EQ(wide.code, 0) << wide.err;
  EXPECT_EQ(wide.err.find("particle slots"), std::string::npos) << wide.err;
  // Pretraining jets too (the command's default kind).
  const Result jets = run(
      {"data", "synth", "--jets", "60", "--seed", "3", "--particles", "8", "--out", file("p8.h5")});
  ASSERT_EQ(jets.code, 0) << jets.err;
  EXPECT_NE(jets.err.find(" of 60 jets fill all 8 particle slots (--particles)"), std::string::npos)
      << jets.err;
}

// `data inspect` checks the particle features against OmniLearn's definitions, which no NaN or
// shape check sees: a synthetic file and the shipped real jets pass; a file with one broken jet
// per check names each check's first row; a file whose producer stored log(pT/pT_jet) where
// log(1 - pT/pT_jet) belongs is told so. Inspection still succeeds (these are warnings).
TEST_F(DataCli, InspectChecksTheParticleFeaturesAndNamesTheFirstJetOfEachProblem) {
  const std::string pre = file("pre.h5");
  Result r =
      run({"data", "synth", "--kind", "pretrain", "--jets", "60", "--seed", "5", "--out", pre});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const std::string& good :
       {pre, std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5"}) {
    r = run({"data", "inspect", good, "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["warnings"].empty()) << good << ": " << j["warnings"].dump();
    EXPECT_EQ(j["levels"]["jets"]["particles"].size(), 13u);
    r = run({"data", "inspect", good});
    EXPECT_NE(r.out.find("checks: passed"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("  1 dphi"), std::string::npos) << r.out;
  }

  JetArrays a = JetFile(pre).readJets();
  for (int64_t i : {3, 5, 7, 8, 11}) ASSERT_GT(a.multiplicity(i), 1) << i;
  const int64_t m9 = a.multiplicity(9);
  ASSERT_LT(m9, a.P);
  a.particle(3, 0)[1] += 6.3f;  // dphi not wrapped (and so dR no longer its hypot)
  a.particle(5, 1)[4] = 0.2f;   // log(1 - E/E_jet) > 0
  a.particle(7, 0)[6] += 0.5f;  // dR alone
  a.particle(8, 0)[8] = a.particle(8, 0)[9] = 1;  // two types
  a.particle(9, m9)[0] = 0.1f;                    // a value in a padding slot
  a.particle(11, 0)[7] = 0.5f;                    // charge
  a.jet(12)[3] += 1;                              // multiplicity column
  a.jet(13)[0] = -1;                              // jet pT
  for (int64_t j = 0; j < a.P; ++j)
    std::fill_n(a.particle(15, j), kNumParticleFeatures, 0.0f);  // no particle
  // One particle, its log(1 - pT/pT_jet) = -inf filled with 0 (and its energy's alike): one
  // warning of its own, not also "no particle", "multiplicity" and "padding slot".
  for (int64_t j = 1; j < a.P; ++j) std::fill_n(a.particle(17, j), kNumParticleFeatures, 0.0f);
  a.particle(17, 0)[2] = a.particle(17, 0)[4] = 0.0f;
  a.jet(17)[3] = 1;
  const std::string bad = file("bad_features.h5");
  writeJetFile(bad, a);
  r = run({"data", "inspect", bad, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& checks = j["levels"]["jets"]["checks"];
  const std::map<std::string, int64_t> first = {
      {"dphi_outside_pi", 3},           {"log_ratio_not_negative", 5},
      {"particle_type_not_one_hot", 8}, {"padding_slots_with_values", 9},
      {"charge_not_unit", 11},          {"jet_pt_not_positive", 13},
      {"jets_without_particles", 15},   {"one_particle_read_as_padding", 17}};
  for (const auto& [key, row] : first) {
    EXPECT_EQ(checks[key]["jets"], 1) << key << ": " << checks.dump();
    EXPECT_EQ(checks[key]["first_row"], row) << key;
  }
  EXPECT_EQ(checks["dr_not_hypot_deta_dphi"]["jets"], 2);  // rows 3 and 7
  EXPECT_EQ(checks["dr_not_hypot_deta_dphi"]["first_row"], 3);
  // Row 12's column and row 15's (its particles gone, its column not).
  EXPECT_EQ(checks["jet_multiplicity_not_the_particle_count"]["jets"], 2);
  EXPECT_EQ(checks["jet_multiplicity_not_the_particle_count"]["first_row"], 12);
  EXPECT_EQ(j["warnings"].size(), 10u) << j["warnings"].dump(1);
  r = run({"data", "inspect", bad});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("warning: 1 jet(s) (1.67%, first row 3) have a particle with |dphi| > pi"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("first row 9) have a slot whose feature 2 is 0 but other features are "
                       "not: foldfarm reads it as padding"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("checks: passed"), std::string::npos) << r.out;

  // A file cut to 8 slots whose column 3 keeps each jet's full count: a jet filling every slot
  // may count more (before: each warned of); one of fewer particles may not.
  const std::string eight = file("pre8.h5");
  ASSERT_EQ(run({"data", "synth", "--kind", "pretrain", "--jets", "60", "--seed", "5",
                 "--particles", "8", "--out", eight})
                .code,
            0);
  JetArrays cut = JetFile(eight).readJets();
  int64_t full = 0;
  for (int64_t i = 0; i < cut.n; ++i)
    if (cut.multiplicity(i) == cut.P) {
      cut.jet(i)[3] = static_cast<float>(cut.P + 1 + i);
      ++full;
    }
  ASSERT_GT(full, 1);
  const std::string cut_path = file("cut8.h5");
  writeJetFile(cut_path, cut);
  r = run({"data", "inspect", cut_path, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out)["warnings"].empty()) << r.out;
  // A jet of 7 particles in its 8 slots that counts 9 is warned of.
  int64_t partial = 0;
  while (cut.multiplicity(partial) != cut.P) ++partial;
  std::fill_n(cut.particle(partial, cut.P - 1), kNumParticleFeatures, 0.0f);
  writeJetFile(cut_path, cut);
  r = run({"data", "inspect", cut_path, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(
      nlohmann::json::parse(
          r.out)["levels"]["jets"]["checks"]["jet_multiplicity_not_the_particle_count"]["jets"],
      1)
      << r.out;

  // log(pT/pT_jet) and log(E/E_jet) where log(1 - ratio) belongs.
  JetArrays l = JetFile(pre).readJets();
  for (int64_t i = 0; i < l.n; ++i)
    for (int64_t j = 0; j < l.multiplicity(i); ++j)
      for (int k : {2, 4}) {
        float& x = l.particle(i, j)[k];
        x = static_cast<float>(std::log(std::max(1e-8, 1 - std::exp(double(x)))));
      }
  const std::string logs = file("log_ratio.h5");
  writeJetFile(logs, l);
  r = run({"data", "inspect", logs});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("have particles whose energy fractions 1 - exp(feature 4) add up to more "
                       "than 1.5: log(E/E_jet) stored where log(1 - E/E_jet) belongs?"),
            std::string::npos)
      << r.out;
  // Jets of two and three particles, as OmniLearn defines them: no alarm (the standardised mean
  // of feature 2 lay 5-10 standard deviations out for them).
  JetArrays few = JetFile(pre).readJets();
  for (int64_t i = 0; i < few.n; ++i) {
    const int64_t keep = 2 + i % 2;
    if (few.multiplicity(i) <= keep) continue;
    std::vector<Particle> parts;
    for (int64_t j = 0; j < keep; ++j) {
      const float* x = few.particle(i, j);
      parts.push_back({FourVector::fromPtEtaPhiM(std::exp(double(x[3])), x[0], x[1], 0.0), x[7],
                       ParticleType::kUnknown});
    }
    fillJetFeatures(parts, few.P, few.particle(i, 0), few.jet(i));
  }
  const std::string few_path = file("few.h5");
  writeJetFile(few_path, few);
  r = run({"data", "inspect", few_path, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out)["warnings"].empty()) << r.out.substr(0, 2000);

  // An unfolding file: an event that fails reco may hold no reco jet (not checked); one that
  // passes it must, and is named with its level.
  const std::string unf = file("unf.h5");
  r = run({"data", "synth", "--kind", "unfold", "--events", "40", "--seed", "6", "--out", unf});
  ASSERT_EQ(r.code, 0) << r.err;
  UnfoldArrays u = JetFile(unf).readUnfold(0, 40);
  ASSERT_FALSE(u.pass_reco.empty());
  for (int64_t i : {2, 4}) {
    u.pass_reco[static_cast<size_t>(i)] = i == 2 ? 0 : 1;
    for (int64_t j = 0; j < u.reco.P; ++j)
      std::fill_n(u.reco.particle(i, j), kNumParticleFeatures, 0.0f);
    std::fill_n(u.reco.jet(i), kNumJetFeatures, 0.0f);
  }
  const std::string holes = file("unf_holes.h5");
  writeUnfoldFile(holes, u);
  r = run({"data", "inspect", holes, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto uj = nlohmann::json::parse(r.out);
  EXPECT_EQ(uj["levels"]["reco"]["checks"]["jets_without_particles"]["jets"], 1) << uj.dump();
  EXPECT_EQ(uj["levels"]["reco"]["checks"]["jets_without_particles"]["first_row"], 4);
  EXPECT_EQ(uj["levels"]["gen"]["checks"]["jets_without_particles"]["jets"], 0);
  bool named = false;
  for (const auto& w : uj["warnings"]) {
    const std::string t = w.get<std::string>();
    named = named || (t.rfind("reco level: 1 jet(s) (", 0) == 0 &&
                      t.find("first row 4) have no particle") != std::string::npos);
  }
  EXPECT_TRUE(named) << uj["warnings"].dump();
}

// An unfolding sample whose spectrum lies below the selection's jet pT cut would pass no event
// (every unfolding refuses such a file): refused when asked for, nothing written.
TEST_F(DataCli, SynthRefusesAnUnfoldingSpectrumBelowItsSelection) {
  const std::string out = file("low.h5");
  const Result r = run({"data", "synth", "--kind", "unfold", "--events", "20", "--pt-min", "1",
                        "--pt-max", "100", "--out", out});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--pt-max 100 GeV lies below the unfolding samples' selection (jet pT >= "
                       "150 GeV"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(out));
  // Above the cut, but so steep a spectrum that no event of these reaches it.
  const Result steep = run({"data", "synth", "--kind", "unfold", "--events", "200", "--pt-min",
                            "10", "--pt-max", "160", "--seed", "1", "--out", out});
  EXPECT_EQ(steep.code, 2) << steep.err;
  EXPECT_NE(steep.err.find("no event of the 200 passes the unfolding samples' selection at reco "
                           "level (jet pT >= 150 GeV; --pt-min 10, --pt-max 160)"),
            std::string::npos)
      << steep.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(run({"data", "synth", "--kind", "pretrain", "--jets", "20", "--pt-min", "1", "--pt-max",
                 "100", "--out", out})
                .code,
            0)
      << "pretraining jets are not selected";
}
