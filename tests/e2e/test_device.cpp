// --device through the real `foldfarm` commands: what `foldfarm device` reports, the device
// a campaign worker resolves from its slot (GPU slots hand each task its own
// CUDA_VISIBLE_DEVICES), a GPU campaign refused at init by a build whose LibTorch lacks CUDA,
// `--device cuda` refused with one line and nothing written, and `bench pet` over several
// batch sizes with the padded baseline beside it; `bench mlp` with the CPU fit beside.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/sha256.hpp"
#include "core/data/jet_files.hpp"
#include "tests/support/run_child.hpp"

namespace fs = std::filesystem;
using foldfarm::testing::runFoldfarm;
using nlohmann::json;

namespace {

class Device : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "no foldfarm binary";
    dir_ = fs::temp_directory_path() /
           ("ff_device_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const foldfarm::ProcessResult d = runFoldfarm({"device", "--json"}, dir_);
    ASSERT_EQ(d.exitCode, 0) << d.err;
    facts_ = json::parse(d.out);
    // Under the GPU check (scripts/gpu-check.sh) a CPU LibTorch or no visible GPU would turn
    // every GPU case here into its CPU twin, and the run would pass without testing a GPU.
    if (const char* check = std::getenv("FOLDFARM_GPU_CHECK"); check && std::string(check) == "1") {
      ASSERT_TRUE(hasCuda() && facts_.at("visible_gpus").get<int>() > 0)
          << "FOLDFARM_GPU_CHECK=1 but foldfarm sees no GPU: " << d.out;
    }
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  bool hasCuda() const { return facts_.at("torch_cuda").get<bool>(); }
  // Synthetic pretraining jets (32 particles) in <dir>/jets.h5.
  std::string synthJets(int jets, int seed) {
    const std::string path = (dir_ / "jets.h5").string();
    const foldfarm::ProcessResult r = runFoldfarm(
        {"data", "synth", "--kind", "pretrain", "--jets", std::to_string(jets), "--particles", "32",
         "--seed", std::to_string(seed), "--out", path, "--overwrite"},
        dir_);
    EXPECT_EQ(r.exitCode, 0) << r.err;
    return path;
  }
  // `bench pet` of the tiny preset's pretraining step on the CPU, one thread, one warm-up
  // step, JSON: its output parsed (exit 0 expected).
  json benchPet(const std::string& data, std::vector<std::string> more) {
    std::vector<std::string> args{"bench",    "pet",    "--preset",  "tiny",     "--mode",
                                  "pretrain", "--data", data,        "--device", "cpu",
                                  "--warmup", "1",      "--threads", "1",        "--json"};
    args.insert(args.end(), more.begin(), more.end());
    const foldfarm::ProcessResult r = runFoldfarm(args, dir_);
    EXPECT_EQ(r.exitCode, 0) << r.err;
    return r.exitCode == 0 ? json::parse(r.out) : json::object();
  }
  fs::path dir_;
  json facts_;
};

}  // namespace

TEST_F(Device, ReportsWhatAutoResolvesToAndWhy) {
  const json c = facts_.at("choice");
  EXPECT_EQ(c.at("requested"), "auto");
  if (!hasCuda() || facts_.at("visible_gpus").get<int>() == 0) {
    EXPECT_EQ(c.at("device"), "cpu");
    EXPECT_FALSE(c.at("reason").get<std::string>().empty());
  } else {
    EXPECT_EQ(c.at("device").get<std::string>().rfind("cuda:", 0), 0u);
  }
  const foldfarm::ProcessResult cpu = runFoldfarm({"device", "--device", "cpu", "--json"}, dir_);
  ASSERT_EQ(cpu.exitCode, 0) << cpu.err;
  EXPECT_EQ(json::parse(cpu.out).at("choice").at("device"), "cpu");
}

TEST_F(Device, EachWorkerOfAGpuCampaignResolvesItsDeviceFromItsSlot) {
  // Two GPU slots on a node whose allocation lists GPUs 4 and 7: each task's process sees
  // only its slot's GPU and resolves --device auto against it.
  const std::string self = FOLDFARM_BINARY;
  json spec = {{"name", "slots"},
               {"task", "command"},
               {"replicas", 4},
               {"params", {{"argv", {self, "device", "--json"}}}},
               {"resources", {{"gpus", 2}, {"tasks_per_gpu", 1}}}};
  std::ofstream(dir_ / "spec.json") << spec.dump();
  const std::vector<std::string> env = {"CUDA_VISIBLE_DEVICES=4,7"};
  foldfarm::ProcessResult r = runFoldfarm(
      {"campaign", "init", (dir_ / "spec.json").string(), "--dir", (dir_ / "camp").string()}, dir_,
      env);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = runFoldfarm({"campaign", "run", (dir_ / "camp").string()}, dir_, env);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  std::set<std::string> seen;
  for (int t = 0; t < 4; ++t) {
    const fs::path log = dir_ / "camp" / "tasks" / ("r000" + std::to_string(t) + "m0") / "task.log";
    ASSERT_TRUE(fs::exists(log)) << log;
    const std::string text = foldfarm::readFile(log.string());
    const auto brace = text.find('{');
    ASSERT_NE(brace, std::string::npos) << text;
    const json j = json::parse(text.substr(brace, text.find('\n', brace) - brace));
    const std::string cvd = j.at("cuda_visible_devices").get<std::string>();
    EXPECT_TRUE(cvd == "4" || cvd == "7") << cvd;
    seen.insert(cvd);
    EXPECT_FALSE(j.at("slot").is_null());
    if (!hasCuda()) {
      EXPECT_EQ(j.at("choice").at("device"), "cpu");
      EXPECT_NE(j.at("choice").at("reason").get<std::string>().find("without CUDA"),
                std::string::npos);
    } else if (j.at("visible_gpus").get<int>() == 1) {
      EXPECT_EQ(j.at("choice").at("device"), "cuda:0");
      EXPECT_EQ(j.at("choice").at("gpu"), cvd);
    }
  }
  EXPECT_EQ(seen.size(), 2u) << "both GPU slots ran tasks";
}

TEST_F(Device, AGpuChainCampaignIsRefusedAtInitWhenLibTorchLacksCuda) {
  if (hasCuda()) GTEST_SKIP() << "this build's LibTorch has CUDA";
  for (const char* tune : {"sim", "data"})
    ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "50", "--tune", tune,
                           "--seed", "3", "--out",
                           (dir_ / (std::string(tune) == "sim" ? "mc.h5" : "data.h5")).string()},
                          dir_)
                  .exitCode,
              0);
  json spec = {
      {"name", "gpu"},
      {"task", "chain"},
      {"replicas", 2},
      {"inputs", {{"mc", (dir_ / "mc.h5").string()}, {"data", (dir_ / "data.h5").string()}}},
      {"chain", {{"config", {{"classifier", "pet"}}}}},
      {"resources", {{"gpus", 1}}}};
  std::ofstream(dir_ / "spec.json") << spec.dump();
  const foldfarm::ProcessResult r = runFoldfarm(
      {"campaign", "init", (dir_ / "spec.json").string(), "--dir", (dir_ / "camp").string()}, dir_,
      {"CUDA_VISIBLE_DEVICES=0"});
  EXPECT_EQ(r.exitCode, 2) << r.err;
  EXPECT_NE(r.err.find("spec.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("without CUDA"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "camp"));
  // GPUs for chains that a config's device cpu keeps on the CPU: refused on any build.
  spec["chain"]["config"]["device"] = "cpu";
  std::ofstream(dir_ / "gpu_cpu.json") << spec.dump();
  const foldfarm::ProcessResult gc =
      runFoldfarm({"campaign", "init", (dir_ / "gpu_cpu.json").string(), "--dir",
                   (dir_ / "camp_gpu_cpu").string()},
                  dir_, {"CUDA_VISIBLE_DEVICES=0"});
  EXPECT_EQ(gc.exitCode, 2) << gc.err;
  EXPECT_NE(gc.err.find("gpu_cpu.json: resources.gpus is 1 but the chain config trains on the CPU"),
            std::string::npos)
      << gc.err;
  EXPECT_FALSE(fs::exists(dir_ / "camp_gpu_cpu"));
  spec["chain"]["config"].erase("device");
  // The same campaign on CPU slots is accepted (its inputs are checked later).
  spec["resources"] = {{"gpus", 0}, {"cpu_slots", 1}};
  std::ofstream(dir_ / "cpu.json") << spec.dump();
  const foldfarm::ProcessResult c = runFoldfarm(
      {"campaign", "init", (dir_ / "cpu.json").string(), "--dir", (dir_ / "camp_cpu").string()},
      dir_);
  EXPECT_EQ(c.exitCode, 0) << c.err;
  EXPECT_TRUE(fs::exists(dir_ / "camp_cpu"));
  // A GPU campaign made by another foldfarm (one with CUDA: here its frozen spec edited) is
  // refused by every command that would start its tasks, before any starts, Slurm's
  // included (before: `slurm submit` submitted it, to train on the CPU).
  {
    const fs::path frozen = dir_ / "camp_cpu" / "spec.json";
    json j = json::parse(foldfarm::readFile(frozen.string()));
    j["resources"]["gpus"] = 1;
    j["resources"].erase("cpu_slots");
    std::ofstream(frozen) << j.dump();
    for (const std::vector<std::string>& start :
         {std::vector<std::string>{"campaign", "run", (dir_ / "camp_cpu").string()},
          std::vector<std::string>{"slurm", "submit", (dir_ / "camp_cpu").string(), "--no-wait"}}) {
      const foldfarm::ProcessResult s = runFoldfarm(start, dir_);
      EXPECT_EQ(s.exitCode, 2) << start[1] << ": " << s.err;
      EXPECT_EQ(foldfarm::testing::errorLines(s.err), 1) << s.err;
      EXPECT_NE(s.err.find("without CUDA"), std::string::npos) << s.err;
    }
    EXPECT_FALSE(fs::exists(dir_ / "camp_cpu" / "tasks" / "r0000m0" / "task.log"));
    EXPECT_FALSE(fs::exists(dir_ / "camp_cpu" / "slurm"));
  }
  // A chain config that needs a GPU, for chains on CPU slots (the config inline in "chain"),
  // is refused the same way (every task would stop with exit 2), naming the spec and the key:
  // CUDA graphs, bf16 PET, a device cuda (before: accepted, each task failed when it
  // started); an MLP chain trains in fp32 whatever its precision.
  auto init = [&](const json& chain, const std::string& name) {
    spec["chain"] = chain;
    std::ofstream(dir_ / (name + ".json")) << spec.dump();
    return runFoldfarm({"campaign", "init", (dir_ / (name + ".json")).string(), "--dir",
                        (dir_ / ("camp_" + name)).string()},
                       dir_);
  };
  for (const auto& [chain, name, key] : std::vector<std::tuple<json, std::string, std::string>>{
           {{{"classifier", "pet"}, {"cuda_graphs", true}}, "graphs", "cuda_graphs"},
           {{{"classifier", "pet+mlp"}, {"precision", "bf16"}}, "bf16", "precision bf16"},
           {{{"classifier", "mlp"}, {"device", "cuda"}}, "device_cuda", "device cuda"}}) {
    const foldfarm::ProcessResult g = init(chain, name);
    EXPECT_EQ(g.exitCode, 2) << g.err;
    EXPECT_NE(g.err.find(name + ".json"), std::string::npos) << g.err;
    EXPECT_NE(g.err.find(key), std::string::npos) << g.err;
    EXPECT_FALSE(fs::exists(dir_ / ("camp_" + name)));
  }
  EXPECT_EQ(init({{"classifier", "mlp"}, {"precision", "bf16"}}, "bf16_mlp").exitCode, 0);
}

TEST_F(Device, CudaIsRefusedWithOneLineAndNothingWrittenWithoutAGpu) {
  if (hasCuda() && facts_.at("visible_gpus").get<int>() > 0) GTEST_SKIP() << "a GPU is here";
  ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "pretrain", "--jets", "64", "--particles", "16",
                         "--seed", "2", "--out", (dir_ / "jets.h5").string()},
                        dir_)
                .exitCode,
            0);
  const foldfarm::ProcessResult r =
      runFoldfarm({"pretrain", "--data", (dir_ / "jets.h5").string(), "--out",
                   (dir_ / "out").string(), "--epochs", "1", "--device", "cuda"},
                  dir_);
  EXPECT_EQ(r.exitCode, 2) << r.err;
  EXPECT_EQ(foldfarm::testing::errorLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--device cpu"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  // bf16 needs a GPU too.
  const foldfarm::ProcessResult b =
      runFoldfarm({"pretrain", "--data", (dir_ / "jets.h5").string(), "--out",
                   (dir_ / "out").string(), "--epochs", "1", "--precision", "bf16"},
                  dir_);
  EXPECT_EQ(b.exitCode, 2) << b.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  // So do CUDA graphs, refused before anything is read or written.
  const foldfarm::ProcessResult g =
      runFoldfarm({"pretrain", "--data", (dir_ / "jets.h5").string(), "--out",
                   (dir_ / "out").string(), "--epochs", "1", "--device", "cpu", "--cuda-graphs"},
                  dir_);
  EXPECT_EQ(g.exitCode, 2) << g.err;
  EXPECT_NE(g.err.find("CUDA graphs cannot be used"), std::string::npos) << g.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  const foldfarm::ProcessResult bg =
      runFoldfarm({"bench", "pet", "--preset", "tiny", "--data", (dir_ / "jets.h5").string(),
                   "--device", "cpu", "--cuda-graphs"},
                  dir_);
  EXPECT_EQ(bg.exitCode, 2) << bg.err;
  EXPECT_NE(bg.err.find("bench pet --cuda-graphs: CUDA graphs cannot be used"), std::string::npos)
      << bg.err;
  // The studies train where their config or --device says, and refuse a missing GPU the same
  // way: one line, before any input is read, nothing written.
  for (const std::vector<std::string>& study :
       {std::vector<std::string>{"study", "warmstart", "--mc", "no_mc.h5", "--data", "no_data.h5",
                                 "--init", "no_model", "--out", (dir_ / "out").string(), "--device",
                                 "cuda"},
        std::vector<std::string>{"study", "reweight-qg", "--jets", "no_jets.h5", "--out",
                                 (dir_ / "out").string(), "--device", "cuda"}}) {
    const foldfarm::ProcessResult s = runFoldfarm(study, dir_);
    EXPECT_EQ(s.exitCode, 2) << study[1] << ": " << s.err;
    EXPECT_NE(s.err.find("--device cpu"), std::string::npos) << study[1] << ": " << s.err;
    EXPECT_EQ(s.err.find("no_"), std::string::npos) << study[1] << " read its inputs: " << s.err;
    EXPECT_FALSE(fs::exists(dir_ / "out")) << study[1];
  }
}

TEST_F(Device, BenchPetReportsEveryBatchSizeWithThePaddedBaselineBeside) {
  const json j = benchPet(synthJets(300, 3),
                          {"--batches", "16,32", "--steps", "2", "--compare", "--fixed-shapes"});
  ASSERT_FALSE(j.empty());
  EXPECT_EQ(j.at("device").at("device"), "cpu");
  ASSERT_EQ(j.at("runs").size(), 2u);
  for (const auto& run : j.at("runs")) {
    EXPECT_GT(run.at("jets_per_s").get<double>(), 0);
    EXPECT_GT(run.at("baseline_jets_per_s").get<double>(), 0);
    EXPECT_GT(run.at("speedup").get<double>(), 0);
    EXPECT_GT(run.at("achieved_tflops").get<double>(), 0);
    EXPECT_GT(run.at("fraction_of_peak").get<double>(), 0);
  }
  EXPECT_EQ(j.at("runs")[0].at("batch"), 16);
  EXPECT_EQ(j.at("runs")[1].at("batch"), 32);
}

// `bench pet --attention` times the attention it names (what the JSON says), and sdpa runs
// where LibTorch has it (2.x) and is refused in one line where it does not (1.x).
TEST_F(Device, BenchPetRunsTheAttentionItIsAskedFor) {
  const std::string data = synthJets(200, 5);
  for (const std::string name : {"padded", "auto"}) {
    const json j = benchPet(data, {"--batch", "16", "--steps", "2", "--attention", name});
    ASSERT_FALSE(j.empty()) << name;
    EXPECT_EQ(j.at("attention"), name);
    EXPECT_GT(j.at("jets_per_s").get<double>(), 0) << name;
  }
  const foldfarm::ProcessResult sdpa = runFoldfarm(
      {"bench",   "pet",      "--preset", "tiny",     "--mode",      "pretrain",  "--data",
       data,      "--device", "cpu",      "--warmup", "1",           "--threads", "1",
       "--batch", "16",       "--steps",  "2",        "--attention", "sdpa",      "--json"},
      dir_);
  if (sdpa.exitCode == 0) {
    EXPECT_EQ(json::parse(sdpa.out).at("attention"), "sdpa");
  } else {
    EXPECT_EQ(sdpa.exitCode, 2);
    EXPECT_NE(sdpa.err.find("--attention sdpa: this LibTorch (1."), std::string::npos) << sdpa.err;
  }
}

// Several models trained side by side in one process (--members): each from its own thread,
// with its own draw generator and, on the CPU, its share of the threads. Member 0 of a pair must
// end exactly where the same model ends alone (a shared generator or crossed batches would show),
// the other member elsewhere.
TEST_F(Device, BenchPetMembersTrainSideBySideAsEachWouldAlone) {
  const std::string data = synthJets(200, 4);
  const json j = benchPet(data, {"--batch", "16", "--steps", "3", "--members", "1,2", "--compare"});
  ASSERT_FALSE(j.empty());
  ASSERT_EQ(j.at("runs").size(), 2u);
  const json& one = j.at("runs")[0];
  const json& two = j.at("runs")[1];
  EXPECT_EQ(one.at("members"), 1);
  EXPECT_EQ(two.at("members"), 2);
  ASSERT_EQ(one.at("member_checksums").size(), 1u);
  ASSERT_EQ(two.at("member_checksums").size(), 2u);
  EXPECT_EQ(two.at("member_checksums")[0].get<double>(),
            one.at("member_checksums")[0].get<double>());
  EXPECT_NE(two.at("member_checksums")[1].get<double>(),
            two.at("member_checksums")[0].get<double>());
  EXPECT_DOUBLE_EQ(one.at("members_speedup").get<double>(), 1.0);
  EXPECT_GT(two.at("members_speedup").get<double>(), 0);
  EXPECT_GT(two.at("baseline_jets_per_s").get<double>(), 0);

  // On the CPU the members share --threads (else each starts a team of all of them): two
  // members of 2 threads run with 1 each, and a later lone run has its 2 back.
  const foldfarm::ProcessResult shared = runFoldfarm(
      {"bench",    "pet",      "--preset",  "tiny",    "--mode",    "classifier", "--data",
       data,       "--device", "cpu",       "--batch", "16",        "--steps",    "1",
       "--warmup", "1",        "--threads", "2",       "--members", "2,1",        "--json"},
      dir_);
  ASSERT_EQ(shared.exitCode, 0) << shared.err;
  const json runs = json::parse(shared.out).at("runs");
  EXPECT_EQ(runs[0].at("members"), 2);
  EXPECT_EQ(runs[0].at("threads_per_member"), 1);
  EXPECT_EQ(runs[1].at("members"), 1);
  EXPECT_EQ(runs[1].at("threads_per_member"), 2);

  const foldfarm::ProcessResult p = runFoldfarm({"bench", "pet", "--preset", "tiny", "--data", data,
                                                 "--device", "cpu", "--members", "2", "--profile"},
                                                dir_);
  EXPECT_EQ(p.exitCode, 2) << p.err;
  EXPECT_NE(p.err.find("--profile reads one thread's operators"), std::string::npos) << p.err;
}

TEST_F(Device, BenchOptimTimesBothFormsAndFindsThemBitIdentical) {
  for (const char* kind : {"lion", "adamw"}) {
    const foldfarm::ProcessResult r =
        runFoldfarm({"bench", "optim", "--preset", "tiny", "--kind", kind, "--steps", "3",
                     "--warmup", "1", "--threads", "1", "--device", "cpu", "--json"},
                    dir_);
    ASSERT_EQ(r.exitCode, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_TRUE(j.at("bit_identical").get<bool>()) << kind;
    EXPECT_GT(j.at("per_parameter_step_ms").get<double>(), 0) << kind;
    EXPECT_GT(j.at("flat_step_ms").get<double>(), 0) << kind;
    EXPECT_GT(j.at("parameters").get<int64_t>(), 0) << kind;
  }
}

TEST_F(Device, BenchMlpFitsOnTheDeviceWithTheCpuFitBeside) {
  // On a GPU (when there is one) the device's fit must end where the CPU's does; on the CPU
  // there is nothing to compare, said (before: the fit compared with itself, a speed-up of 1).
  const bool gpu = hasCuda() && facts_.at("visible_gpus").get<int>() > 0;
  const foldfarm::ProcessResult r = runFoldfarm(
      {"bench", "mlp", "--device", gpu ? "cuda" : "cpu", "--rows", "400", "--epochs", "2",
       "--batch", "100", "--hidden", "16,8", "--threads", "1", "--compare", "--json"},
      dir_);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j.at("hidden"), json::array({16, 8}));
  EXPECT_EQ(j.at("device").at("device").get<std::string>().substr(0, 4), gpu ? "cuda" : "cpu");
  // 360 training rows (a tenth validates) in batches of 100: 4 steps per epoch.
  EXPECT_EQ(j.at("fit").at("steps").get<int64_t>(), 8);
  EXPECT_GT(j.at("fit").at("rows_per_s").get<double>(), 0);
  EXPECT_TRUE(std::isfinite(j.at("fit").at("best_val_loss").get<double>()));
  if (gpu) {
    EXPECT_EQ(j.at("cpu").at("steps").get<int64_t>(), 8);
    // A sanity bound only: the process multiplies in TF32 on the GPU (as chains do), and the
    // first AdamW steps move each weight by about +-lr whatever the gradient's size. The fit
    // on the GPU equals the CPU's to 1e-4 in fp32 with TF32 off (test_model_gpu_train).
    EXPECT_LT(j.at("max_logit_difference").get<double>(), 5e-2);
  } else {
    EXPECT_FALSE(j.contains("cpu")) << j.dump();
    EXPECT_TRUE(j.at("speedup_vs_cpu").is_null()) << j.dump();
    EXPECT_NE(j.at("compare_note").get<std::string>().find("there is no GPU fit to compare"),
              std::string::npos);
  }
  const foldfarm::ProcessResult bad = runFoldfarm({"bench", "mlp", "--rows", "5"}, dir_);
  EXPECT_EQ(bad.exitCode, 2) << bad.err;
  EXPECT_NE(bad.err.find("--rows >= 20"), std::string::npos) << bad.err;
}

TEST_F(Device, GenerateSamplesTheClassRepeatablyFromTheSeed) {
  // A tiny foundation model, then jets of class 2 sampled from its generator head: the same
  // seed gives the same jets, another seed others; every jet has the class's label, at least
  // one particle and the multiplicity it reports.
  const std::string data = synthJets(160, 5), ck = (dir_ / "ck").string();
  const foldfarm::ProcessResult p =
      runFoldfarm({"pretrain", "--data", data, "--out", ck, "--preset", "tiny", "--epochs", "1",
                   "--batch", "32", "--seed", "3", "--threads", "1", "--device", "cpu"},
                  dir_);
  ASSERT_EQ(p.exitCode, 0) << p.err;
  auto generate = [&](const std::string& name, int seed) {
    const std::string out = (dir_ / name).string();
    const foldfarm::ProcessResult g = runFoldfarm(
        {"generate", "--ckpt", ck, "--class", "2", "--jets", "5", "--steps", "4", "--seed",
         std::to_string(seed), "--threads", "1", "--device", "cpu", "--out", out},
        dir_);
    EXPECT_EQ(g.exitCode, 0) << g.err;
    return foldfarm::data::readJetsFiles({out});
  };
  const foldfarm::data::JetArrays a = generate("a.h5", 7), b = generate("b.h5", 7),
                                  c = generate("c.h5", 8);
  ASSERT_EQ(a.n, 5);
  EXPECT_EQ(a.particles, b.particles);
  EXPECT_EQ(a.jets, b.jets);
  EXPECT_NE(a.particles, c.particles);
  for (int64_t i = 0; i < a.n; ++i) {
    EXPECT_EQ(a.labels[static_cast<size_t>(i)], 2) << i;
    EXPECT_GE(a.multiplicity(i), 1) << i;
    EXPECT_EQ(static_cast<float>(a.multiplicity(i)), a.jet(i)[3]) << i;
  }
  // A class whose jets' pT spreads across 0 (its conditioning moved there, the checkpoint
  // rewritten with its checksum): every generated jet has pT > 0 and mass >= 0 (before: the
  // normal draw gave jets of negative pT); one that cannot give a positive pT is refused.
  const auto moveClass = [&](double pt_sigmas) {
    const std::string meta_path = ck + "/model/meta.json";
    json j = json::parse(foldfarm::readFile(meta_path));
    json& cond = j["extra"]["jet_conditioning"]["2"];
    const double jet_mean = j["feature_stats"]["jet_mean"][0];
    const double jet_std = j["feature_stats"]["jet_std"][0];
    const double sd = cond["std"][0].get<double>();
    // The standardised mean whose raw pT lies pt_sigmas spreads from 0.
    cond["mean"][0] = (pt_sigmas * sd * jet_std - jet_mean) / jet_std;
    j.erase("meta_sha256");
    j["meta_sha256"] = foldfarm::sha256Hex(j.dump());
    foldfarm::writeFileAtomic(meta_path, j.dump(2) + "\n");
  };
  moveClass(0.0);
  const foldfarm::data::JetArrays wide = generate("wide.h5", 7);
  ASSERT_EQ(wide.n, 5);
  for (int64_t i = 0; i < wide.n; ++i) {
    EXPECT_GT(wide.jet(i)[0], 0.f) << "pT of jet " << i;
    EXPECT_GE(wide.jet(i)[2], 0.f) << "mass of jet " << i;
  }
  moveClass(-50.0);
  const foldfarm::ProcessResult none =
      runFoldfarm({"generate", "--ckpt", ck, "--class", "2", "--jets", "5", "--steps", "4",
                   "--threads", "1", "--device", "cpu", "--out", (dir_ / "none.h5").string()},
                  dir_);
  EXPECT_EQ(none.exitCode, 2) << none.err;
  EXPECT_NE(none.err.find("class 2's jet pT distribution"), std::string::npos) << none.err;
  EXPECT_FALSE(fs::exists(dir_ / "none.h5"));
}
