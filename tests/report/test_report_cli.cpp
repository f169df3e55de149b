// The `foldfarm report` and `foldfarm study scaling` commands of the real executable:
// help, bad input refused with exit 2 and one line, and a small scaling study (2 MPI ranks,
// 2 scheduler slots) writing its tables and figures. Skips (77) in builds without the
// executable (no LibTorch).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/process.hpp"
#include "report/html.hpp"
#include "tests/report/campaign_fixture.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;
using namespace foldfarm::report;
using nlohmann::json;

namespace {

std::string binary() {
  const std::string b = FOLDFARM_BINARY;
  if (b.empty() || !fs::exists(b)) {
    std::fprintf(stderr, "foldfarm executable not built (no LibTorch): skipped\n");
    std::exit(77);
  }
  return b;
}

// The limits are safety nets for a hang, far beyond a loaded 2-core machine's times.
ProcessResult runFoldfarm(const std::vector<std::string>& args, double timeout_s = 180) {
  std::vector<std::string> argv = {binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions po;
  po.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  return runProcess(argv, po);
}

size_t lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST(ReportCli, HelpAndBadInput) {
  ProcessResult r = runFoldfarm({"report", "--help"});
  EXPECT_EQ(r.status(), 0);
  EXPECT_NE(r.out.find("--out"), std::string::npos);
  r = runFoldfarm({"study", "scaling", "--help"});
  EXPECT_EQ(r.status(), 0);
  EXPECT_NE(r.out.find("--max-ranks"), std::string::npos);

  report::testing::ScratchDir scratch;
  fs::create_directories(scratch.path() + "/plain");
  r = runFoldfarm({"report", scratch.path() + "/plain", "--out", scratch.path() + "/r.html"});
  EXPECT_EQ(r.status(), 2);
  EXPECT_NE(r.err.find(scratch.path() + "/plain"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_FALSE(fs::exists(scratch.path() + "/r.html"));
  r = runFoldfarm({"study", "scaling", "--max-ranks", "0", "--out", scratch.path() + "/s"});
  EXPECT_EQ(r.status(), 2);
  EXPECT_FALSE(fs::exists(scratch.path() + "/s"));
}

TEST(ScalingStudy, TwoRanksTwoSlotsWritesTablesAndFigures) {
  report::testing::ScratchDir scratch;
  const std::string out = scratch.path() + "/scaling";
  ProcessResult r = runFoldfarm(
      {"study",         "scaling", "--max-ranks",     "2",    "--max-slots", "2", "--tasks", "200",
       "--sleep-tasks", "4",       "--sleep-seconds", "0.05", "--steps",     "3", "--batch", "8",
       "--particles",   "32",      "--out",           out},
      500);
  ASSERT_EQ(r.status(), 0) << r.err;
  const json s = json::parse(readFile(out + "/scaling.json"));
  ASSERT_EQ(s["ddp_derived"].size(), 2u);
  EXPECT_EQ(s["ddp"][1]["ranks"], 2);
  for (const auto& row : s["ddp_derived"]) {
    EXPECT_GT(row["jets_per_s"].get<double>(), 0);
    EXPECT_GT(row["efficiency"].get<double>(), 0);
  }
  EXPECT_DOUBLE_EQ(s["ddp_derived"][0]["efficiency"].get<double>(), 1.0);
  EXPECT_GT(s["ddp"][1]["comm_ms"].get<double>(), 0) << "2 ranks all-reduce gradients";
  // The step timed is pretraining's, its gradient buckets slices of the flat gradient.
  EXPECT_EQ(s["ddp"][1]["objective"], "pretrain");
  EXPECT_EQ(s["ddp"][1]["buckets_slice_flat_gradient"], true);
  ASSERT_EQ(s["scheduler_derived"].size(), 2u);
  EXPECT_GT(s["scheduler_derived"][1]["tasks_per_s"].get<double>(), 0);
  ASSERT_TRUE(s["model"].contains("extrapolation"));
  EXPECT_EQ(s["model"]["extrapolation"].back()["ranks"], 1024);
  const std::string md = readFile(out + "/scaling.md");
  EXPECT_NE(md.find("| 2 |"), std::string::npos);
  for (const char* png : {"ddp_throughput", "ddp_efficiency", "ddp_model", "scheduler_throughput",
                          "scheduler_efficiency"})
    EXPECT_TRUE(isPng(readFile(out + "/" + png + ".png"))) << png;
  EXPECT_NE(r.out.find("# Scaling study"), std::string::npos);

  // A second study into the same directory without the data-parallel part: its figures
  // replace the first one's, and the ddp figures it does not draw are removed (before, they
  // stayed beside a scaling.json without ddp rows).
  r = runFoldfarm({"study", "scaling", "--no-ddp", "--max-slots", "1", "--tasks", "50",
                   "--sleep-tasks", "2", "--sleep-seconds", "0.01", "--out", out},
                  120);
  ASSERT_EQ(r.status(), 0) << r.err;
  const json again = json::parse(readFile(out + "/scaling.json"));
  EXPECT_TRUE(again["ddp"].empty());
  EXPECT_FALSE(again.contains("ddp_derived"));
  for (const char* png : {"ddp_throughput", "ddp_efficiency", "ddp_model"})
    EXPECT_FALSE(fs::exists(out + "/" + png + ".png")) << png;
  for (const char* png : {"scheduler_throughput", "scheduler_efficiency"})
    EXPECT_TRUE(isPng(readFile(out + "/" + png + ".png"))) << png;
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 4u);  // scaling.json, scaling.md, two figures
}

// An --out where no directory can be is refused before minutes of measurements.
TEST(ScalingStudy, AnOutputThatIsAFileIsRefusedFirst) {
  report::testing::ScratchDir scratch;
  const std::string file = scratch.path() + "/taken";
  writeFileAtomic(file, "x");
  ProcessResult r = runFoldfarm({"study", "scaling", "--out", file}, 60);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(r.err.find(file + ": exists and is not a directory"), std::string::npos) << r.err;
  EXPECT_EQ(readFile(file), "x");
}
