// Campaign specs are validated before anything runs: one line, exit 2, nothing created.
#include <gtest/gtest.h>

#include "core/base/error.hpp"
#include "jobs/campaign_spec.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

class SpecValidation : public ::testing::Test {
 protected:
  void SetUp() override {
    registerTestTaskKinds();
    dir_ = makeScratchDir("spec");
  }
  json validSpec() {
    return json{{"name", "t"}, {"task", "sleep"}, {"replicas", 3}, {"members", 2},
                {"seed", 7},   {"params", {{"seconds", 0.0}}},
                {"resources", {{"cpu_slots", 2}}}};
  }
  // Runs `init` on the spec: returns the run; asserts the campaign dir was not created.
  ToolRun initRejected(const json& spec) {
    std::string p = writeSpec(dir_, spec);
    std::string target = dir_ + "/campaign";
    ToolRun r = runTool({"init", p, "--dir", target}, dir_);
    EXPECT_FALSE(exists(target)) << "a rejected spec must create nothing";
    return r;
  }
  std::string dir_;
};

TEST_F(SpecValidation, UnknownKeyIsOneLineExit2) {
  json s = validSpec();
  s["resources"]["gpu_slots"] = 2;
  ToolRun r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(countLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("resources.gpu_slots"), std::string::npos) << r.err;
  s = validSpec();
  s["replica"] = 4;
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'replica'"), std::string::npos) << r.err;
}

TEST_F(SpecValidation, MissingInputFileIsNamed) {
  json s = validSpec();
  s["inputs"] = {{"mc", "no_such_mc.h5"}};
  ToolRun r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(countLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("no_such_mc.h5"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("inputs.mc"), std::string::npos) << r.err;
  // A command task whose program does not exist is a missing file as well.
  s = validSpec();
  s["task"] = "command";
  s["params"] = {{"argv", {"/no/such/program"}}};
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/no/such/program"), std::string::npos) << r.err;
}

TEST_F(SpecValidation, ImpossibleResourcesAreRejected) {
  json s = validSpec();
  s["resources"] = {{"gpus", 64}};
  ToolRun r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(countLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("resources.gpus"), std::string::npos) << r.err;

  s = validSpec();
  s["resources"] = {{"cpu_slots", 1}, {"threads_per_task", 100000}};
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("threads_per_task"), std::string::npos) << r.err;

  s = validSpec();
  s["resources"] = {{"gpus", 1}, {"tasks_per_gpu", 0}};
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("tasks_per_gpu"), std::string::npos) << r.err;
}

TEST_F(SpecValidation, BadKindAndParamsAreRejected) {
  json s = validSpec();
  s["task"] = "train_everything";
  ToolRun r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train_everything"), std::string::npos) << r.err;
  s = validSpec();
  s["params"] = json::object();
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("params.seconds"), std::string::npos) << r.err;
  s = validSpec();
  s["overrides"] = {{"r0009m0", {{"seconds", 1}}}};
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("r0009m0"), std::string::npos) << r.err;
}

TEST_F(SpecValidation, ExistingDirectoryIsNeverOverwritten) {
  std::string p = writeSpec(dir_, validSpec());
  std::string target = dir_ + "/campaign";
  ASSERT_EQ(runTool({"init", p, "--dir", target}, dir_).exit_code, 0);
  std::string frozen = readText(target + "/spec.json");
  ToolRun again = runTool({"init", p, "--dir", target}, dir_);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(readText(target + "/spec.json"), frozen);
}

TEST_F(SpecValidation, TaskDefsCarrySeedsInputsAndOverrides) {
  writeText(dir_ + "/mc.h5", "x");
  json j = validSpec();
  j["inputs"] = {{"mc", "mc.h5"}};
  j["overrides"] = {{"r0001m1", {{"seconds", 0.5}}}};
  CampaignSpec s = parseCampaignSpec(j, "spec.json", dir_);
  ASSERT_EQ(s.numTasks(), 6);
  TaskDef t = s.taskDef(3);
  EXPECT_EQ(t.id, "r0001m1");
  EXPECT_EQ(t.replica, 1);
  EXPECT_EQ(t.member, 1);
  EXPECT_EQ(t.params["seed"].get<uint64_t>(), 7u);
  EXPECT_EQ(t.params["seconds"].get<double>(), 0.5);
  EXPECT_EQ(s.taskDef(2).params["seconds"].get<double>(), 0.0);
  EXPECT_EQ(t.params["inputs"]["mc"].get<std::string>(), dir_ + "/mc.h5");
  for (int i = 0; i < s.numTasks(); ++i) EXPECT_EQ(s.indexOf(s.taskDef(i).id), i);
  EXPECT_EQ(s.indexOf("r0003m0"), -1);
  EXPECT_EQ(s.indexOf("r1m1"), -1);
  // The frozen form parses back to the same tasks.
  CampaignSpec back = parseCampaignSpec(s.toJson(), "frozen", "/");
  EXPECT_EQ(back.taskDef(3).params, t.params);
}

}  // namespace
}  // namespace foldfarm::jobs
