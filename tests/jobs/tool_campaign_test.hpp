#pragma once
// The fixture of the jobs tests that make their campaign with ff_jobs_tool: a fresh scratch
// directory per test, the campaign directory scratch_/c, the test task kinds registered in
// this process too (tests that open the campaign read their params), init(spec).
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs::testing {

class ToolCampaignTest : public ::testing::Test {
 protected:
  // `name`: the scratch directory's prefix (which test left it).
  explicit ToolCampaignTest(std::string name) : name_(std::move(name)) {}
  void SetUp() override {
    registerTestTaskKinds();
    scratch_ = makeScratchDir(name_);
    dir_ = scratch_ + "/c";
  }
  // `ff_jobs_tool init SPEC --dir dir_`, which must succeed.
  void init(const nlohmann::json& spec) {
    ToolRun r = runTool({"init", writeSpec(scratch_, spec), "--dir", dir_}, scratch_, "init");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  std::string scratch_, dir_;

 private:
  std::string name_;
};

}  // namespace foldfarm::jobs::testing
