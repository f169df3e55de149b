// Campaign specs are validated before anything runs: one line, exit 2, nothing created.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <regex>
#include <string>

#include "core/base/error.hpp"
#include "core/base/process.hpp"
#include "core/base/sha256.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/input_record.hpp"
#include "jobs/slots.hpp"
#include "jobs/task_kind.hpp"
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
    return json{{"name", "t"},
                {"task", "sleep"},
                {"replicas", 3},
                {"members", 2},
                {"seed", 7},
                {"params", {{"seconds", 0.0}}},
                {"resources", {{"cpu_slots", 2}}}};
  }
  // Runs `init` on the spec: returns the run; asserts the campaign dir was not created.
  ToolRun initRejected(const json& spec) { return initRejectedText(spec.dump(2)); }
  // The same for a spec given as text (numbers that a json object cannot hold).
  ToolRun initRejectedText(const std::string& text) {
    std::string p = dir_ + "/spec.json";
    writeText(p, text);
    std::string target = dir_ + "/campaign";
    ToolRun r = runTool({"init", p, "--dir", target}, dir_);
    EXPECT_FALSE(exists(target)) << "a rejected spec must create nothing";
    return r;
  }
  // A chain campaign's spec over stand-in input files (mc.h5, data.h5). The real chain kind
  // needs LibTorch (apps/foldfarm); a stand-in that accepts anything shows what the spec
  // itself refuses.
  json chainSpec() {
    registerTaskKind("chain",
                     TaskRunner([](const json&, const std::string&) { return TaskOutcome{}; }),
                     TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
    writeText(dir_ + "/mc.h5", "x");
    writeText(dir_ + "/data.h5", "x");
    return {{"task", "chain"},
            {"replicas", 2},
            {"inputs", {{"mc", "mc.h5"}, {"data", "data.h5"}}},
            {"chain", {{"iterations", 2}}}};
  }
  // `spec` with `key` set to `value` is refused with a message holding `needle`.
  void expectParseRefused(json spec, const std::string& key, const json& value,
                          const std::string& needle) {
    spec[key] = value;
    try {
      parseCampaignSpec(spec, "spec", dir_);
      ADD_FAILURE() << "accepted " << key << ": " << value.dump();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
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
  // A directory is no program, by path or on PATH (before: accepted here, and every task
  // failed to start).
  s["params"] = {{"argv", {"/bin"}}};
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'params.argv[0]' = /bin is not an executable file"), std::string::npos)
      << r.err;
  s["params"] = {{"argv", {"no-such-program-anywhere"}}};
  r = initRejected(s);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("is not found on PATH"), std::string::npos) << r.err;
}

// Relative inputs are taken from the spec's directory; a ".." on the way is resolved on disk:
// through a symbolic link it is the link target's parent, and a directory the path went
// through (where `campaign init` was run) may go away (before: "/work/run1/../mc.h5" was
// frozen as such, and removing run1 made the untouched mc.h5 "missing").
TEST_F(SpecValidation, RelativeInputsThroughDotDotAreFrozenAsTheyAreOnDisk) {
  namespace fs = std::filesystem;
  const std::string root = fs::canonical(dir_).string();
  fs::create_directories(root + "/run1");
  fs::create_directories(root + "/real/sub");
  fs::create_directory_symlink(root + "/real/sub", root + "/link");
  writeText(root + "/mc.h5", "x");
  writeText(root + "/real/data.h5", "x");
  json s = validSpec();
  s["inputs"] = {{"mc", "../mc.h5"}, {"data", "../real/data.h5"}};
  CampaignSpec spec = parseCampaignSpec(s, "spec", root + "/run1");
  EXPECT_EQ(spec.inputs.at("mc"), root + "/mc.h5");
  EXPECT_EQ(spec.inputs.at("data"), root + "/real/data.h5");
  s["inputs"] = {{"data", "../data.h5"}};  // link/.. is real/, not root/
  spec = parseCampaignSpec(s, "spec", root + "/link");
  EXPECT_EQ(spec.inputs.at("data"), root + "/real/data.h5");
  s["inputs"] = {{"mc", "mc.h5"}};  // no "..": the path as written, through the link
  writeText(root + "/real/sub/mc.h5", "x");
  spec = parseCampaignSpec(s, "spec", root + "/link");
  EXPECT_EQ(spec.inputs.at("mc"), root + "/link/mc.h5");
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

// A campaign whose input file moved away: reading it (status, cancel, report) still works;
// the commands that start tasks refuse with one line naming the file and change nothing;
// once the file is back as it was (moved back), the campaign runs. (Before: every command on
// the campaign, status included, refused.)
TEST_F(SpecValidation, AMissingInputStopsRunsButNotStatus) {
  const std::string input = dir_ + "/input.txt";
  writeText(input, "x");
  json s = validSpec();
  s["inputs"] = {{"data", input}};
  const std::string spec = dir_ + "/spec.json", camp = dir_ + "/campaign";
  writeText(spec, s.dump(2));
  ASSERT_EQ(runTool({"init", spec, "--dir", camp}, dir_).exit_code, 0);
  ASSERT_EQ(std::rename(input.c_str(), (input + ".away").c_str()), 0);

  const ToolRun status = runTool({"status", camp, "--json"}, dir_, "status");
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("pending"), std::string::npos) << status.out;
  const ToolRun run = runTool({"run", camp, "--slots", "2"}, dir_, "run");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(countLines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find(input), std::string::npos) << run.err;
  const ToolRun after = runTool({"status", camp, "--json"}, dir_, "after");
  // The journal as it was; the lock file names the run that took it to refuse.
  json before_j = json::parse(status.out), after_j = json::parse(after.out);
  before_j.erase("last_orchestrator");
  after_j.erase("last_orchestrator");
  EXPECT_EQ(after_j, before_j) << "a refused run changed the journal";

  ASSERT_EQ(std::rename((input + ".away").c_str(), input.c_str()), 0);  // as it was
  EXPECT_EQ(runTool({"run", camp, "--slots", "2"}, dir_, "rerun").exit_code, 0);
}

// The GPUs a node offers a campaign: CUDA_VISIBLE_DEVICES when set (a Slurm allocation's),
// else the /dev/nvidiaN devices.
TEST(GpusOnThisNode, CountsTheVisibleDevicesOrTheDeviceFiles) {
  const char* saved = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string keep = saved != nullptr ? saved : "";
  ::setenv("CUDA_VISIBLE_DEVICES", "0,1,3", 1);
  EXPECT_EQ(gpusOnThisNode(), 3);
  for (const char* none : {"", "-1", "NoDevFiles"}) {
    ::setenv("CUDA_VISIBLE_DEVICES", none, 1);
    EXPECT_EQ(gpusOnThisNode(), 0) << none;
  }
  ::unsetenv("CUDA_VISIBLE_DEVICES");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator("/dev")) {
    const std::string name = e.path().filename().string();
    files += std::regex_match(name, std::regex("nvidia[0-9]+")) ? 1 : 0;
  }
  EXPECT_EQ(gpusOnThisNode(), files);
  if (saved != nullptr) ::setenv("CUDA_VISIBLE_DEVICES", keep.c_str(), 1);
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

// Asserts one line, exit 2, and that every string of `mentions` is in the message.
void expectRefused(const ToolRun& r, std::initializer_list<const char*> mentions) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(countLines(r.err), 1) << r.err;
  for (const char* m : mentions) EXPECT_NE(r.err.find(m), std::string::npos) << m << ": " << r.err;
}

TEST_F(SpecValidation, IntegersBeyond32BitsAreRefusedNotWrapped) {
  // 2^32 + 1 would be cast to 1 replica; 2^32 + 2 to 2 CPU slots.
  json s = validSpec();
  s["replicas"] = 4294967297LL;
  expectRefused(initRejected(s), {"'replicas'", "4294967297", "32-bit"});
  s = validSpec();
  s["resources"] = {{"cpu_slots", 4294967298LL}};
  expectRefused(initRejected(s), {"'resources.cpu_slots'", "4294967298"});
  s = validSpec();
  s["retry"] = {{"max_attempts", -4294967295LL}};
  expectRefused(initRejected(s), {"'retry.max_attempts'"});
  // Beyond 64 bits the parser yields a float: still refused, naming the key.
  std::string text = validSpec().dump();
  text.replace(text.find("\"seed\":7"), 8, "\"seed\":18446744073709551617");
  expectRefused(initRejectedText(text), {"'seed'"});
}

// A key given twice in one object (JSON keeps the last without a word) is refused naming it;
// the same key in two objects is fine.
TEST_F(SpecValidation, AKeyGivenTwiceIsRefusedNamingIt) {
  std::string text = validSpec().dump();
  text.insert(text.size() - 1, ",\"replicas\":5");
  expectRefused(initRejectedText(text), {"'replicas' is given twice"});
  text = validSpec().dump();
  text.replace(text.find("\"cpu_slots\":2"), 13, "\"cpu_slots\":2,\"cpu_slots\":3");
  expectRefused(initRejectedText(text), {"'resources.cpu_slots' is given twice"});
  // "seconds" in params and in two overrides: one key per object, accepted.
  json ok = validSpec();
  ok["overrides"] = {{"r0000m0", {{"seconds", 0.0}}}, {"r0001m1", {{"seconds", 0.0}}}};
  writeText(dir_ + "/ok.json", ok.dump());
  const ToolRun r = runTool({"init", dir_ + "/ok.json", "--dir", dir_ + "/ok"}, dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(SpecValidation, NumbersBeyondDoubleAreRefusedNamingTheKey) {
  std::string text = validSpec().dump();
  text.insert(text.size() - 1, ",\"time_limit_s\":1e400");
  expectRefused(initRejectedText(text), {"'time_limit_s'", "1e400", "double"});
  text = validSpec().dump();
  text.replace(text.find("\"cpu_slots\":2"), 13, "\"cpu_slots\":-2e999");
  expectRefused(initRejectedText(text), {"'resources.cpu_slots'", "-2e999"});
  // A spec built in code can hold infinity; it is refused as well.
  json j = validSpec();
  j["retry"] = {{"backoff_s", std::numeric_limits<double>::infinity()}};
  EXPECT_THROW(parseCampaignSpec(j, "spec", dir_), InputError);
}

TEST_F(SpecValidation, CountsAndDurationsHaveUpperBounds) {
  struct Case {
    json patch;
    const char* key;
    const char* limit;
  };
  const Case cases[] = {
      {{{"resources", {{"cpu_slots", 100000}}}}, "'resources.cpu_slots'", "1024"},
      {{{"resources", {{"gpus", 65}}}}, "'resources.gpus'", "64"},
      {{{"resources", {{"gpus", 1}, {"tasks_per_gpu", 65}}}}, "'resources.tasks_per_gpu'", "64"},
      {{{"resources", {{"cpu_slots", 1}, {"threads_per_task", 4096}}}},
       "'resources.threads_per_task'",
       "1024"},
      {{{"time_limit_s", 1e12}}, "'time_limit_s'", "31536000"},
      {{{"retry", {{"max_attempts", 1000000}}}}, "'retry.max_attempts'", "1000"},
      {{{"retry", {{"backoff_s", 1e6}}}}, "'retry.backoff_s'", "86400"},
      {{{"retry", {{"max_interruptions", 2000000000}}}}, "'retry.max_interruptions'", "100000"},
  };
  for (const Case& c : cases) {
    json s = validSpec();
    s.merge_patch(c.patch);
    expectRefused(initRejected(s), {c.key, c.limit});
  }
  // The bounds themselves are accepted.
  json s = validSpec();
  s["resources"] = {{"cpu_slots", kMaxCpuSlots}, {"threads_per_task", 1}};
  s["time_limit_s"] = kMaxTimeLimitSeconds;
  s["retry"] = {{"max_attempts", kMaxAttempts}, {"backoff_s", kMaxBackoffSeconds}};
  EXPECT_NO_THROW(parseCampaignSpec(s, "spec", dir_));
}

TEST_F(SpecValidation, ParametersTheCampaignSetsAreRefusedInParamsAndOverrides) {
  // taskDef() writes seed, threads, inputs, ... over whatever params/overrides hold.
  json s = validSpec();
  s["overrides"] = {{"r0001m0", {{"seed", 3}}}};
  expectRefused(initRejected(s), {"'overrides.r0001m0.seed'", "top-level 'seed'"});
  s = validSpec();
  s["params"]["threads"] = 4;
  expectRefused(initRejected(s), {"'params.threads'", "threads_per_task"});
  s = validSpec();
  s["overrides"] = {{"r0002m1", {{"task_id", "r0000m0"}}}};
  expectRefused(initRejected(s), {"'overrides.r0002m1.task_id'"});
}

TEST_F(SpecValidation, KeysABuiltInKindDoesNotReadAreRefused) {
  // A misspelt parameter would be dropped: the sleep task reads only "seconds".
  json s = validSpec();
  s["params"]["second"] = 2;
  expectRefused(initRejected(s), {"'params.second'", "sleep task", "seconds"});
  s = validSpec();
  s["overrides"] = {{"r0001m0", {{"seconds", 1}, {"argv", {"/bin/true"}}}}};
  expectRefused(initRejected(s), {"'overrides.r0001m0.argv'", "sleep task"});
  // Beyond what the clock holds: the task slept 0 s and counted as done.
  s = validSpec();
  s["params"]["seconds"] = 1e308;
  expectRefused(initRejected(s), {"sleep task", "0 to 10^7"});
}

TEST_F(SpecValidation, ChainTasksRefuseParamsAndOverridesTheyWouldDrop) {
  json s = chainSpec();
  EXPECT_NO_THROW(parseCampaignSpec(s, "spec", dir_));
  s["overrides"] = {{"r0001m0", {{"iterations", 5}}}};
  try {
    parseCampaignSpec(s, "spec", dir_);
    ADD_FAILURE() << "an override the chain drops was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'overrides.r0001m0.iterations'"), std::string::npos)
        << e.what();
  }
  s.erase("overrides");
  s["params"] = {{"epochs", 3}};
  EXPECT_THROW(parseCampaignSpec(s, "spec", dir_), InputError);
  s["params"] = json::object();
  s["overrides"] = {{"r0001m0", {{"chain", {{"iterations", 5}}}}}};
  EXPECT_THROW(parseCampaignSpec(s, "spec", dir_), InputError);
}

// The chain object: beside "config" only "iterations" and "keep_models" (a key there would be
// dropped); "keep_models" makes every nominal task keep its per-step models (a warm-started
// variation can then be added by `campaign extend`), and is not a chain config key.
TEST_F(SpecValidation, TheChainObjectHoldsTheConfigAndTheChainsOwnKeys) {
  json s = chainSpec();
  expectParseRefused(s, "chain", {{"iteratons", 3}, {"config", {{"classifier", "mlp"}}}},
                     "unknown key 'chain.iteratons'");
  expectParseRefused(s, "chain", {{"keep_models", 1}}, "'chain.keep_models' must be true or false");
  const CampaignSpec plain = parseCampaignSpec(s, "spec", dir_);
  EXPECT_FALSE(plain.taskDef(1).params.value("keep_models", false));
  for (const json& chain :
       {json{{"iterations", 2}, {"keep_models", true}},
        json{{"iterations", 2}, {"keep_models", true}, {"config", {{"classifier", "mlp"}}}}}) {
    s["chain"] = chain;
    const CampaignSpec c = parseCampaignSpec(s, "spec", dir_);
    for (int i = 0; i < c.numTasks(); ++i)
      EXPECT_TRUE(c.taskDef(i).params.value("keep_models", false)) << c.taskDef(i).id;
  }
}

// "aggregate": a chain campaign's default aggregation choices, validated like the rest and
// kept in the frozen spec.
TEST_F(SpecValidation, AggregateChoicesAreCheckedAndKept) {
  json s = chainSpec();
  EXPECT_FALSE(parseCampaignSpec(s, "spec", dir_).toJson().contains("aggregate"));
  const json choices = {
      {"shift_noise", "subtract"}, {"event_weights", "central"}, {"plots", false}};
  s["aggregate"] = choices;
  const CampaignSpec parsed = parseCampaignSpec(s, "spec", dir_);
  EXPECT_EQ(parsed.aggregate, choices);
  EXPECT_EQ(parseCampaignSpec(parsed.toJson(), "frozen", dir_).aggregate, choices);
  auto refused = [&](const json& aggregate, const std::string& needle) {
    expectParseRefused(s, "aggregate", aggregate, needle);
  };
  refused("subtract", "'aggregate' must be an object");
  refused({{"shift_noise", "drop"}}, "'aggregate.shift_noise' = 'drop' (use keep, subtract)");
  refused({{"event_weights", "some"}}, "'aggregate.event_weights' = 'some'");
  refused({{"plots", "no"}}, "'aggregate.plots' must be true or false");
  refused({{"shift-noise", "keep"}}, "aggregate.shift-noise");
  json sleep = validSpec();
  sleep["aggregate"] = {{"plots", false}};
  ToolRun r = initRejected(sleep);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'aggregate' applies to campaigns of chain tasks"), std::string::npos)
      << r.err;
}

TEST_F(SpecValidation, NameIsOnePrintableLine) {
  json s = validSpec();
  s["name"] = "a\n#SBATCH --wrap=x";
  expectRefused(initRejected(s), {"'name'"});
  s["name"] = "";
  expectRefused(initRejected(s), {"'name'"});
}

TEST_F(SpecValidation, ExistingDirectoryIsNeverOverwritten) {
  std::string p = writeSpec(dir_, validSpec());
  std::string target = dir_ + "/campaign";
  ASSERT_EQ(runTool({"init", p, "--dir", target}, dir_).exit_code, 0);
  std::string frozen = readText(target + "/spec.json");
  ToolRun again = runTool({"init", p, "--dir", target}, dir_);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find(target +
                           ": already exists; choose a new --dir, or continue that "
                           "campaign with `foldfarm campaign resume " +
                           target + "`"),
            std::string::npos)
      << again.err;
  EXPECT_EQ(readText(target + "/spec.json"), frozen);
  // A directory that is no campaign (or a file) is not offered to `resume`.
  const std::string plain = dir_ + "/plain";
  std::filesystem::create_directories(plain);
  ToolRun into_plain = runTool({"init", p, "--dir", plain}, dir_);
  EXPECT_EQ(into_plain.exit_code, 2);
  EXPECT_NE(into_plain.err.find(plain + ": already exists and is no campaign"), std::string::npos)
      << into_plain.err;
  EXPECT_EQ(into_plain.err.find("resume"), std::string::npos) << into_plain.err;
  // A --dir whose parent is missing: said before anything is made (init makes D alone).
  ToolRun no_parent = runTool({"init", p, "--dir", dir_ + "/a/b/c"}, dir_);
  EXPECT_EQ(no_parent.exit_code, 2);
  EXPECT_NE(no_parent.err.find(dir_ + "/a/b/c: output directory " + dir_ + "/a/b does not exist"),
            std::string::npos)
      << no_parent.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a"));
  // A directory given as the spec is named as one (before: "not valid JSON").
  ToolRun dir_spec = runTool({"init", plain, "--dir", dir_ + "/from_dir"}, dir_);
  EXPECT_EQ(dir_spec.exit_code, 2);
  EXPECT_NE(dir_spec.err.find(plain + ": is a directory, not a file"), std::string::npos)
      << dir_spec.err;
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
  // A relative path is resolved without "." components ("./spec.json" names "mc.h5" in the
  // working directory); an absolute one stays as written (a frozen spec's, which its tasks
  // recorded).
  j["inputs"] = {{"mc", "./mc.h5"}};
  EXPECT_EQ(parseCampaignSpec(j, "spec.json", dir_ + "/.").taskDef(0).params["inputs"]["mc"],
            dir_ + "/mc.h5");
  j["inputs"] = {{"mc", dir_ + "/./mc.h5"}};
  EXPECT_EQ(parseCampaignSpec(j, "spec.json", "/elsewhere").taskDef(0).params["inputs"]["mc"],
            dir_ + "/./mc.h5");
}

// Variations: their tasks follow the nominal ones, carry their inputs and params, and need
// the nominal task of the same replica and member when they warm-start from it.
TEST_F(SpecValidation, VariationsAddTasksThatNeedTheirNominalTask) {
  writeText(dir_ + "/mc.h5", "x");
  writeText(dir_ + "/mc_up.h5", "x");
  json j = validSpec();  // 3 replicas x 2 members of sleep
  j["inputs"] = {{"mc", "mc.h5"}};
  j["variations"] = {
      {"up", {{"inputs", {{"mc", "mc_up.h5"}}}, {"params", {{"seconds", 0.25}}}, {"members", 1}}},
      {"wide", {{"replicas", 4}, {"members", 3}}},
      {"cold", {{"warm_start", false}}}};
  j["overrides"] = {{"wide.r0003m2", {{"seconds", 0.5}}}};
  CampaignSpec s = parseCampaignSpec(j, "spec.json", dir_);
  // Nominal 6, then the variations in the order of their names: cold 2, up 1, wide 12.
  ASSERT_EQ(s.numTasks(), 6 + 2 + 1 + 12);
  EXPECT_EQ(s.taskDef(6).id, "cold.r0000m0");
  EXPECT_TRUE(s.taskDef(6).needs.empty()) << "warm_start false: no dependency";
  TaskDef up = s.taskDef(8);
  EXPECT_EQ(up.id, "up.r0000m0");
  EXPECT_EQ(up.variation, "up");
  EXPECT_EQ(up.needs, std::vector<int>{0});
  EXPECT_EQ(up.params["warm_from_task"], "r0000m0");
  EXPECT_EQ(up.params["seconds"].get<double>(), 0.25);
  EXPECT_EQ(up.params["inputs"]["mc"].get<std::string>(), dir_ + "/mc_up.h5");
  EXPECT_EQ(up.params["variation"]["name"], "up");
  EXPECT_EQ(up.params["variation"]["source"], "up");
  // wide.r0002m1 needs r0002m1 (index 5); replica 3 and member 2 have no nominal twin.
  EXPECT_EQ(s.taskDef(s.indexOf("wide.r0002m1")).needs, std::vector<int>{5});
  EXPECT_TRUE(s.taskDef(s.indexOf("wide.r0003m0")).needs.empty());
  EXPECT_TRUE(s.taskDef(s.indexOf("wide.r0000m2")).needs.empty());
  EXPECT_EQ(s.taskDef(s.indexOf("wide.r0003m2")).params["seconds"].get<double>(), 0.5);
  // Nominal tasks some variation starts from keep their models; the others need not.
  EXPECT_TRUE(s.taskDef(0).params.value("keep_models", false));
  for (int i = 0; i < s.numTasks(); ++i) {
    EXPECT_EQ(s.indexOf(s.taskDef(i).id), i) << s.taskDef(i).id;
    EXPECT_EQ(s.taskPosition(i).needs, s.taskDef(i).needs);
    for (int n : s.taskDef(i).needs) EXPECT_LT(n, i);
  }
  EXPECT_EQ(s.indexOf("up.r0000m1"), -1);
  EXPECT_EQ(s.indexOf("down.r0000m0"), -1);
  EXPECT_EQ(s.indexOf("up.r0000m0x"), -1);
  CampaignSpec back = parseCampaignSpec(s.toJson(), "frozen", "/");
  ASSERT_EQ(back.numTasks(), s.numTasks());
  for (int i = 0; i < s.numTasks(); ++i) EXPECT_EQ(back.taskDef(i).params, s.taskDef(i).params);
}

TEST_F(SpecValidation, BadVariationsAreRefusedNamingTheKey) {
  writeText(dir_ + "/mc.h5", "x");
  auto with = [&](const json& variations) {
    json j = validSpec();
    j["variations"] = variations;
    return j;
  };
  expectRefused(initRejected(with({{"a b", json::object()}})), {"variation name 'a b'"});
  expectRefused(initRejected(with({{"x", {{"replica", 2}}}})), {"'variations.x.replica'"});
  expectRefused(initRejected(with({{"x", {{"type", "jes"}}}})), {"'variations.x.type'"});
  expectRefused(initRejected(with({{"x", {{"direction", "sideways"}}}})),
                {"'variations.x.direction'"});
  expectRefused(initRejected(with({{"x", {{"inputs", {{"mc", "missing.h5"}}}}}})),
                {"'variations.x.inputs.mc'", "does not exist"});
  expectRefused(initRejected(with({{"x", {{"params", {{"second", 1}}}}}})),
                {"'variations.x.params.second'"});
  expectRefused(initRejected(with({{"x", {{"params", {{"replica", 1}}}}}})),
                {"'variations.x.params.replica'"});
  expectRefused(initRejected(with({{"up", {{"source", "s"}, {"direction", "up"}}}})),
                {"source 's'", "one 'up' and one 'down'"});
  expectRefused(initRejected(with({{"a", {{"source", "s"}, {"direction", "up"}}},
                                   {"b", {{"source", "s"}, {"direction", "up"}}}})),
                {"source 's'", "2 up"});
  expectRefused(initRejected(with({{"a", {{"source", "s"}}}, {"b", {{"source", "s"}}}})),
                {"source 's'", "one-sided"});
  expectRefused(
      initRejected(with({{"a", {{"source", "s"}, {"direction", "up"}}},
                         {"b", {{"source", "s"}, {"direction", "down"}, {"symmetrise", "max"}}}})),
      {"disagree on 'symmetrise'"});
  expectRefused(initRejected(with({{"x", {{"replicas", 0}}}})), {"'variations.x.replicas'"});
  // Too many for task ids: the limits said (before: "must be >= 1" for 20000000).
  expectRefused(initRejected(with({{"x", {{"replicas", 20000000}}}})),
                {"'variations.x.replicas'", "1 to 9999999", "got 20000000 x "});
}

TEST_F(SpecValidation, ChainVariationsNeedATypeAndTheInputsItReplaces) {
  json s = chainSpec();
  writeText(dir_ + "/alt.h5", "x");
  auto refused = [&](const json& variations, const std::string& needle) {
    expectParseRefused(s, "variations", variations, needle);
  };
  refused({{"x", json::object()}}, "'variations.x.type'");
  refused({{"x", {{"type", "modelling"}}}}, "'variations.x.inputs.mc'");
  refused({{"x", {{"type", "detector"}, {"inputs", {{"data", "alt.h5"}}}}}},
          "'variations.x.inputs.mc'");
  refused({{"x", {{"type", "non_closure"}}}}, "'variations.x.inputs.data'");
  refused({{"x", {{"type", "mc_bootstrap"}, {"inputs", {{"mc", "alt.h5"}}}}}}, "nominal files");
  refused({{"x", {{"type", "mc_bootstrap"}, {"direction", "up"}}}}, "has no direction");
  refused({{"x", {{"type", "modelling"}, {"inputs", {{"mc", "alt.h5"}}}, {"params", {{"a", 1}}}}}},
          "'variations.x.params.a'");
  // Names and sources the aggregation reserves, and a second MC-statistics variation.
  refused({{"nominal", {{"type", "modelling"}, {"inputs", {{"mc", "alt.h5"}}}}}}, "reserved");
  refused({{"replica_0001", {{"type", "modelling"}, {"inputs", {{"mc", "alt.h5"}}}}}}, "reserved");
  refused({{"x", {{"type", "modelling"}, {"source", "total"}, {"inputs", {{"mc", "alt.h5"}}}}}},
          "'variations.x.source'");
  refused({{"a", {{"type", "mc_bootstrap"}}}, {"b", {{"type", "mc_bootstrap"}}}}, "at most one");
  refused({{"a",
            {{"type", "detector"},
             {"source", "s"},
             {"direction", "up"},
             {"inputs", {{"mc", "alt.h5"}}}}},
           {"b",
            {{"type", "modelling"},
             {"source", "s"},
             {"direction", "down"},
             {"inputs", {{"mc", "alt.h5"}}}}}},
          "different types");
  refused({{"x", {{"type", "modelling"}, {"inputs", {{"mc", "mc.h5"}}}}}},
          "the nominal's own file");
  refused({{"x", {{"type", "non_closure"}, {"inputs", {{"data", "data.h5"}}}}}},
          "the nominal's own file");
  json ok = s;
  ok["variations"] = {{"alt", {{"type", "modelling"}, {"inputs", {{"mc", "alt.h5"}}}}},
                      {"stat", {{"type", "mc_bootstrap"}, {"replicas", 5}}},
                      {"closure", {{"type", "non_closure"}, {"inputs", {{"data", "alt.h5"}}}}}};
  CampaignSpec c = parseCampaignSpec(ok, "spec", dir_);
  EXPECT_EQ(c.numTasks(), 2 + 1 + 1 + 5);
  EXPECT_EQ(c.taskDef(c.indexOf("closure.r0000m0")).params["inputs"]["data"], dir_ + "/alt.h5");
  EXPECT_EQ(c.taskDef(c.indexOf("stat.r0004m0")).params["variation"]["type"], "mc_bootstrap");
  // Varied chains start from the nominal chain of their replica and member, except the
  // MC-statistics replicas (which would inherit the data-bootstrap draw of that replica),
  // unless asked to.
  EXPECT_EQ(c.taskDef(c.indexOf("alt.r0000m0")).needs, std::vector<int>{0});
  EXPECT_TRUE(c.taskDef(c.indexOf("stat.r0000m0")).needs.empty());
  EXPECT_FALSE(c.taskDef(c.indexOf("stat.r0000m0")).params.contains("warm_from_task"));
  ok["variations"]["stat"]["warm_start"] = true;
  const CampaignSpec warm = parseCampaignSpec(ok, "spec", dir_);
  EXPECT_EQ(warm.taskDef(warm.indexOf("stat.r0000m0")).needs, std::vector<int>{0});
  EXPECT_EQ(warm.taskDef(warm.indexOf("stat.r0000m0")).params["warm_from_task"], "r0000m0");
}

// The warm reference: added by withWarmReference (init, plan, extend) to cover every task of
// the warm-started detector and modelling variations within the nominal's counts, raised when
// they grow, never for other types or cold variations; written into the frozen spec as
// counts, read back the same; its name and type go together, and it takes no inputs.
TEST_F(SpecValidation, TheWarmReferenceCoversTheWarmStartedShiftsTasks) {
  json s = chainSpec();  // 2 replicas x 1 member
  s["members"] = 3;
  writeText(dir_ + "/alt.h5", "x");
  const json alt = {{"type", "modelling"}, {"inputs", {{"mc", "alt.h5"}}}};
  s["variations"] = {
      {"cold", {{"type", "modelling"}, {"warm_start", false}, {"inputs", {{"mc", "alt.h5"}}}}},
      {"stat", {{"type", "mc_bootstrap"}, {"replicas", 4}}},
      {"closure", {{"type", "non_closure"}, {"inputs", {{"data", "alt.h5"}}}}}};
  bool added = true;
  const CampaignSpec none = withWarmReference(parseCampaignSpec(s, "spec", dir_), &added);
  EXPECT_FALSE(added);
  EXPECT_EQ(none.indexOf("warm_reference.r0000m0"), -1);
  json alt_wide = alt;
  alt_wide["replicas"] = 5;  // beyond the nominal's 2: only 2 have a nominal task to start from
  alt_wide["members"] = 2;
  s["variations"]["alt"] = alt_wide;
  const CampaignSpec c = withWarmReference(parseCampaignSpec(s, "spec", dir_), &added);
  EXPECT_TRUE(added);
  const Variation* ref = nullptr;
  for (const Variation& v : c.variations)
    if (v.name == kWarmReference) ref = &v;
  ASSERT_NE(ref, nullptr);
  EXPECT_EQ(ref->type, "reference");
  EXPECT_EQ(ref->replicas, 2);
  EXPECT_EQ(ref->members, 2);
  const TaskDef t = c.taskDef(c.indexOf("warm_reference.r0001m1"));
  EXPECT_EQ(t.needs, std::vector<int>{c.indexOf("r0001m1")});
  EXPECT_EQ(t.params["inputs"], c.taskDef(c.indexOf("r0001m1")).params["inputs"]);
  EXPECT_EQ(t.params["variation"]["type"], "reference");
  // Already covered: unchanged; a wider variation raises it.
  withWarmReference(c, &added);
  EXPECT_FALSE(added);
  json back = c.toJson();
  EXPECT_EQ(back["variations"]["warm_reference"],
            (json{{"type", "reference"}, {"replicas", 2}, {"members", 2}, {"warm_start", true}}));
  back["variations"]["alt"]["members"] = 3;
  const CampaignSpec wider = withWarmReference(parseCampaignSpec(back, "frozen", "/"), &added);
  EXPECT_TRUE(added);
  EXPECT_GE(wider.indexOf("warm_reference.r0001m2"), 0);
  // The name and the type go together; the reference runs the nominal's tasks as they are.
  expectParseRefused(s, "variations", {{"warm_reference", alt}}, "go together");
  expectParseRefused(s, "variations", {{"ref", {{"type", "reference"}}}}, "go together");
  expectParseRefused(s, "variations",
                     {{"warm_reference", {{"type", "reference"}, {"inputs", {{"mc", "alt.h5"}}}}}},
                     "'variations.warm_reference.inputs'");
  expectParseRefused(s, "variations",
                     {{"warm_reference", {{"type", "reference"}, {"warm_start", false}}}},
                     "must be true");
}

}  // namespace
}  // namespace foldfarm::jobs

namespace foldfarm::jobs {
// What stat() says of a file or a directory's files is recorded; any change to it is named
// with the path, what it was and what it is; hidden names and atomic-write temporaries in a
// directory are not part of it.
TEST(InputRecord, ChangesToAFileOrADirectorysFilesAreNamed) {
  const std::string dir = makeScratchDir("inputrecord");
  const std::string file = dir + "/mc.h5";
  writeText(file, "abcd");
  json record = {{file, recordInput(file)}};
  EXPECT_EQ(record[file]["size"], 4);
  EXPECT_EQ(inputChangeSince(record), "");
  const auto then = std::filesystem::last_write_time(file);
  std::filesystem::last_write_time(file, then + std::chrono::seconds(1));  // touched
  std::string change = inputChangeSince(record);
  EXPECT_NE(change.find(file + " changed since `campaign init`"), std::string::npos) << change;
  // The same size: the clause gives the command that restores the recorded time, which does.
  const auto at = change.find("`touch -d @");
  ASSERT_NE(at, std::string::npos) << change;
  const std::string command = change.substr(at + 1, change.find('`', at + 1) - at - 1);
  ASSERT_TRUE(runProcess({"sh", "-c", command}).ok()) << command;
  EXPECT_EQ(inputChangeSince(record), "") << "restored as it was by " << command;
  EXPECT_EQ(std::filesystem::last_write_time(file), then);
  writeText(file, "abcdef");
  change = inputChangeSince(record);
  EXPECT_NE(change.find("(4 bytes, modified "), std::string::npos) << change;
  EXPECT_NE(change.find("; 6 bytes, modified "), std::string::npos) << change;
  EXPECT_EQ(change.find("touch"), std::string::npos) << "another size: no time to restore";
  EXPECT_THROW(requireInputsAsRecorded(record, "spec.json"), InputError);
  try {
    requireInputsAsRecorded(record, "spec.json");
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("spec.json: " + file, 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("restore it"), std::string::npos) << e.what();
  }
  std::filesystem::remove(file);
  EXPECT_NE(inputChangeSince(record).find("; missing now)"), std::string::npos);

  const std::string pet = dir + "/pet";
  std::filesystem::create_directories(pet + "/model");
  writeText(pet + "/model/meta.json", "{}");
  writeText(pet + "/model/tensors-a.pt", "aaaa");
  const json dir_record = {{pet, recordInput(pet)}};
  EXPECT_EQ(dir_record[pet]["files"], 2);
  EXPECT_EQ(dir_record[pet]["bytes"], 6);
  writeText(pet + "/.lease", "x");
  writeText(pet + "/model/meta.json.tmp.host.12.0", "{partial");
  std::filesystem::create_directories(pet + "/.hidden");
  writeText(pet + "/.hidden/x", "y");
  EXPECT_EQ(inputChangeSince(dir_record), "") << "hidden names and temporaries do not count";
  writeText(pet + "/model/tensors-b.pt", "bbbb");
  change = inputChangeSince(dir_record);
  EXPECT_NE(change.find(pet + " (a directory: its files) changed since"), std::string::npos)
      << change;
  EXPECT_NE(change.find("(2 files, 6 bytes"), std::string::npos) << change;
  EXPECT_NE(change.find("; 3 files, 10 bytes"), std::string::npos) << change;
  std::filesystem::remove(pet + "/model/tensors-b.pt");
  std::filesystem::remove(pet + "/model/tensors-a.pt");
  writeText(pet + "/model/tensors-c.pt", "cccc");  // same count and size, another file
  EXPECT_NE(inputChangeSince(dir_record), "");
  EXPECT_NO_THROW(requireInputsAsRecorded(json::object(), "old campaign"));
  EXPECT_NO_THROW(requireInputsAsRecorded(json(), "old campaign"));
  std::filesystem::remove_all(dir);
}

// What a result names of its inputs: a file's size and sha256; a directory's file count,
// bytes and the sha256 of its files' checksums by name, which its files' times do not change
// and their bytes do; null for a record without checksums.
TEST(InputRecord, ChecksumsNameTheBytesOfFilesAndOfADirectorysFiles) {
  const std::string dir = makeScratchDir("inputsums");
  const std::string file = dir + "/mc.h5", pet = dir + "/pet";
  writeText(file, "abcd");
  std::filesystem::create_directories(pet + "/model");
  writeText(pet + "/meta.json", "{}");
  writeText(pet + "/model/t.pt", "weights");
  const json sums = inputChecksums(recordInputs({file, pet}));
  EXPECT_EQ(sums[file], json({{"size", 4}, {"sha256", sha256Hex("abcd")}}));
  const std::string listing =
      "meta.json\t" + sha256Hex("{}") + "\nmodel/t.pt\t" + sha256Hex("weights") + "\n";
  EXPECT_EQ(sums[pet], json({{"files", 2}, {"bytes", 9}, {"sha256", sha256Hex(listing)}}));
  std::filesystem::last_write_time(
      pet + "/meta.json",
      std::filesystem::last_write_time(pet + "/meta.json") + std::chrono::seconds(3));
  EXPECT_EQ(inputChecksums(recordInputs({pet}))[pet]["sha256"], sums[pet]["sha256"]);
  writeText(pet + "/model/t.pt", "weightz");
  EXPECT_NE(inputChecksums(recordInputs({pet}))[pet]["sha256"], sums[pet]["sha256"]);
  EXPECT_EQ(inputChecksums(json{{file, recordInput(file)}})[file]["sha256"], nullptr);
  std::filesystem::remove_all(dir);
}

// What `campaign init` records of a file holds its checksum, of a directory its files'
// (a missing path is missing); the checks compare stat() only and point inputs copied again
// to `campaign repair`, which gives them back their times when their bytes are the recorded
// ones and names them otherwise, setting no time then.
TEST(InputRecord, InputsCopiedAgainWithTheSameBytesGetTheirTimesBack) {
  const std::string dir = makeScratchDir("inputtimes");
  const std::string file = dir + "/mc.h5", other = dir + "/data.h5", gone = dir + "/gone.h5";
  writeText(file, "abcd");
  writeText(other, "0123456789");
  std::filesystem::create_directories(dir + "/pet");
  writeText(dir + "/pet/meta.json", "{}");
  const json record = recordInputs({file, other, dir + "/pet", gone, file});
  ASSERT_EQ(record.size(), 4u) << record.dump();
  EXPECT_EQ(record[file]["sha256"], sha256Hex("abcd"));
  EXPECT_EQ(record[other]["sha256"], sha256Hex("0123456789"));
  EXPECT_EQ(record[dir + "/pet"]["listing"]["meta.json"]["sha256"], sha256Hex("{}"));
  EXPECT_EQ(record[gone], json({{"missing", true}}));
  const json files = {{file, record[file]}, {other, record[other]}};
  EXPECT_EQ(inputChangeSince(files), "");
  EXPECT_TRUE(restoreInputTimes(files).restored.empty()) << "nothing to restore";

  const auto then = std::filesystem::last_write_time(file);
  writeText(file, "abcd");
  std::filesystem::last_write_time(file, then + std::chrono::seconds(5));  // copied again
  const std::string change = inputChangeSince(files);
  EXPECT_NE(change.find(file + " changed since `campaign init`"), std::string::npos) << change;
  EXPECT_NE(change.find("`foldfarm campaign repair` checks them against the checksum"),
            std::string::npos)
      << change;
  EXPECT_EQ(change.find("touch -d"), std::string::npos) << change;
  InputTimesRestored r = restoreInputTimes(files);
  EXPECT_EQ(r.restored, std::vector<std::string>{file});
  EXPECT_TRUE(r.left.empty()) << r.left.front();
  EXPECT_EQ(std::filesystem::last_write_time(file), then);
  EXPECT_EQ(inputChangeSince(files), "");

  // Other bytes of the same size, and another size: named, neither time nor bytes touched.
  writeText(file, "abce");
  writeText(other, "01234567890");
  const auto file_time = std::filesystem::last_write_time(file);
  const auto other_time = std::filesystem::last_write_time(other);
  r = restoreInputTimes(files);
  EXPECT_TRUE(r.restored.empty());
  ASSERT_EQ(r.left.size(), 2u);
  EXPECT_EQ(
      r.left[1].rfind(file + ": its bytes differ from those read at `campaign init` (sha256 " +
                          sha256Hex("abcd").substr(0, 16) + "… then, " +
                          sha256Hex("abce").substr(0, 16) + "… now)",
                      0),
      0u)
      << r.left[1];
  EXPECT_NE(r.left[0].find(other + " changed since `campaign init` (10 bytes"), std::string::npos)
      << r.left[0];
  EXPECT_EQ(std::filesystem::last_write_time(file), file_time);
  EXPECT_EQ(std::filesystem::last_write_time(other), other_time);
  EXPECT_EQ(readText(file), "abce");

  // A record without a checksum (a campaign made before) gets the `touch` command.
  json old = {{file, files[file]}};
  old[file].erase("sha256");
  EXPECT_NE(inputChangeSince(old).find("`touch -d @"), std::string::npos) << inputChangeSince(old);
  r = restoreInputTimes(old);
  ASSERT_EQ(r.left.size(), 1u);
  EXPECT_NE(r.left[0].find("`touch -d @"), std::string::npos) << r.left[0];

  // A directory (a foundation) copied again: its files get their times back, all of them or,
  // when one holds other bytes, none.
  const std::string pet = dir + "/pet";
  writeText(pet + "/tensors.pt", "weights");
  const json dirs = recordInputs({pet});
  ASSERT_EQ(dirs[pet]["listing"].size(), 2u) << dirs.dump();
  const auto meta_then = std::filesystem::last_write_time(pet + "/meta.json");
  const auto tensors_then = std::filesystem::last_write_time(pet + "/tensors.pt");
  for (const char* name : {"/meta.json", "/tensors.pt"})
    std::filesystem::last_write_time(pet + name, tensors_then + std::chrono::seconds(9));
  const std::string dir_change = inputChangeSince(dirs);
  EXPECT_NE(dir_change.find("gives its files back their times"), std::string::npos) << dir_change;
  writeText(pet + "/tensors.pt", "weightz");
  r = restoreInputTimes(dirs);
  EXPECT_TRUE(r.restored.empty());
  ASSERT_EQ(r.left.size(), 1u);
  EXPECT_NE(r.left[0].find(pet + "/tensors.pt: its bytes differ"), std::string::npos) << r.left[0];
  EXPECT_NE(r.left[0].find("restore the directory it was"), std::string::npos) << r.left[0];
  EXPECT_NE(std::filesystem::last_write_time(pet + "/meta.json"), meta_then) << "all or none";
  writeText(pet + "/tensors.pt", "weights");
  r = restoreInputTimes(dirs);
  EXPECT_EQ(r.restored, std::vector<std::string>{pet});
  EXPECT_TRUE(r.left.empty()) << r.left.front();
  EXPECT_EQ(std::filesystem::last_write_time(pet + "/meta.json"), meta_then);
  EXPECT_EQ(std::filesystem::last_write_time(pet + "/tensors.pt"), tensors_then);
  EXPECT_EQ(inputChangeSince(dirs), "");
  // Another file in it: named as a change, nothing read or set.
  writeText(pet + "/extra.pt", "x");
  r = restoreInputTimes(dirs);
  ASSERT_EQ(r.left.size(), 1u);
  EXPECT_NE(r.left[0].find(pet + " (a directory: its files) changed since"), std::string::npos)
      << r.left[0];
  EXPECT_EQ(r.left[0].find("campaign repair"), std::string::npos) << r.left[0];
}

// `campaign init` records every input path once; each task carries the records of its own
// inputs; the frozen form parses back with them; a spec copied from a campaign (its record
// stale) makes a new campaign with a record of its own instead of being refused.
TEST_F(SpecValidation, InitRecordsTheInputsAndEachTaskCarriesItsOwn) {
  writeText(dir_ + "/mc.h5", "x");
  writeText(dir_ + "/mc_alt.h5", "xy");
  json j = validSpec();
  j["inputs"] = {{"mc", "mc.h5"}};
  j["variations"] = {{"alt", {{"inputs", {{"mc", "mc_alt.h5"}}}}}};
  const std::string target = dir_ + "/first";
  ASSERT_EQ(runTool({"init", writeSpec(dir_, j), "--dir", target}, dir_).exit_code, 0);
  const json frozen = json::parse(readText(target + "/spec.json"));
  const json& rec = frozen.at("inputs_at_init");
  ASSERT_EQ(rec.size(), 2u) << rec.dump();
  EXPECT_EQ(rec.at(dir_ + "/mc.h5").at("size"), 1);
  EXPECT_EQ(rec.at(dir_ + "/mc_alt.h5").at("size"), 2);
  EXPECT_EQ(rec.at(dir_ + "/mc.h5").at("sha256"), sha256Hex("x"));
  CampaignSpec s = parseCampaignSpec(frozen, "frozen", "/", false);
  EXPECT_EQ(s.taskDef(0).inputs_at_init, (json{{dir_ + "/mc.h5", rec.at(dir_ + "/mc.h5")}}));
  const int alt = s.indexOf("alt.r0000m0");
  ASSERT_GE(alt, 0);
  EXPECT_EQ(s.taskDef(alt).inputs_at_init,
            (json{{dir_ + "/mc_alt.h5", rec.at(dir_ + "/mc_alt.h5")}}));
  EXPECT_EQ(parseCampaignSpec(s.toJson(), "again", "/", false).inputs_at_init, rec);
  EXPECT_NO_THROW(requireCampaignInputs(s, "frozen"));

  writeText(dir_ + "/mc.h5", "xyz");
  EXPECT_THROW(requireCampaignInputs(s, "frozen"), InputError);
  const std::string copy = writeSpec(dir_, frozen, "copied.json");
  ASSERT_EQ(runTool({"init", copy, "--dir", dir_ + "/second"}, dir_).exit_code, 0);
  const json second = json::parse(readText(dir_ + "/second/spec.json"));
  EXPECT_EQ(second["inputs_at_init"][dir_ + "/mc.h5"]["size"], 3) << "recorded anew";

  json bad = validSpec();
  bad["inputs_at_init"] = {{"relative.h5", json::object()}};
  ToolRun r = initRejected(bad);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'inputs_at_init' is not {absolute path: record}"), std::string::npos)
      << r.err;
  for (const json& record : {json{{"size", 1}, {"mtime_ns", 2}, {"sha256", 5}},
                             json{{"size", 1}, {"mtime_ns", 2}, {"sha256", "ab12"}},
                             json{{"size", "1"}, {"mtime_ns", 2}}}) {
    bad["inputs_at_init"] = {{"/d/mc.h5", record}};
    r = initRejected(bad);
    EXPECT_EQ(r.exit_code, 2) << record.dump();
    EXPECT_NE(r.err.find("'inputs_at_init' is not {absolute path: record}"), std::string::npos)
        << r.err;
  }
}

// Slots sharing a GPU: each gets its GPU and an equal share of its memory; a GPU of its own
// or a CPU slot gets no cap.
TEST(Slots, TasksSharingAGpuEachGetTheirGpuAndAShareOfItsMemory) {
  auto env = [](const SlotBinding& b, const std::string& key) {
    for (const auto& [k, v] : b.env)
      if (k == key) return v;
    return std::string("<unset>");
  };
  CampaignResources shared;
  shared.gpus = 2;
  shared.tasks_per_gpu = 4;
  const auto slots = slotBindings(shared, 8);
  ASSERT_EQ(slots.size(), 8u);
  for (const auto& b : slots) {
    EXPECT_EQ(b.gpu, b.slot / 4);
    EXPECT_NE(env(b, "CUDA_VISIBLE_DEVICES"), "<unset>");
    EXPECT_NEAR(std::stod(env(b, "FOLDFARM_GPU_MEMORY_FRACTION")), 0.95 / 4, 1e-6);
  }
  CampaignResources own;
  own.gpus = 2;
  for (const auto& b : slotBindings(own, 2))
    EXPECT_EQ(env(b, "FOLDFARM_GPU_MEMORY_FRACTION"), "<unset>");
  CampaignResources cpu;
  cpu.cpu_slots = 2;
  for (const auto& b : slotBindings(cpu, 2)) {
    EXPECT_EQ(env(b, "CUDA_VISIBLE_DEVICES"), "");
    EXPECT_EQ(env(b, "FOLDFARM_GPU_MEMORY_FRACTION"), "<unset>");
  }
}

}  // namespace foldfarm::jobs
