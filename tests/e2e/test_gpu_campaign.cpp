// A GPU campaign really uses its GPU (label gpu; exit 77, skipped, without one): two chain
// tasks sharing one GPU (tasks_per_gpu 2) each run in their own worker process that holds
// GPU memory while it trains (nvidia-smi's compute processes, sampled during the run), and
// each chain's result.json records cuda:0 as the device its PET steps trained on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/process.hpp"
#include "tests/support/gpu_skip.hpp"
#include "tests/support/run_child.hpp"

namespace fs = std::filesystem;
using foldfarm::testing::runFoldfarm;
using nlohmann::json;

int main(int argc, char** argv) {
  if (std::string(FOLDFARM_BINARY).empty())
    foldfarm::testing::skipGpuTest("test_e2e_gpu_campaign", "no foldfarm binary");
  if (!foldfarm::programAvailable("nvidia-smi") || !foldfarm::runProcess({"nvidia-smi", "-L"}).ok())
    foldfarm::testing::skipGpuTest("test_e2e_gpu_campaign", "no GPU (nvidia-smi) here");
  // A LibTorch without CUDA beside a GPU: skipped too (before: GTEST_SKIP, which ctest
  // counts as passed).
  const foldfarm::ProcessResult facts =
      runFoldfarm({"device", "--json"}, fs::temp_directory_path().string());
  if (facts.exitCode != 0 || !json::parse(facts.out).at("torch_cuda").get<bool>())
    foldfarm::testing::skipGpuTest("test_e2e_gpu_campaign", "this foldfarm's LibTorch has no CUDA");
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

TEST(GpuCampaign, TwoTasksSharingOneGpuEachHoldGpuMemoryAndTrainOnIt) {
  const fs::path dir =
      fs::temp_directory_path() / ("ff_gpu_campaign_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* tune : {"sim", "data"})
    ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "3000", "--tune", tune,
                           "--seed", std::string(tune) == "sim" ? "11" : "12", "--out",
                           (dir / (std::string(tune) + ".h5")).string()},
                          dir)
                  .exitCode,
              0);
  const json spec = {
      {"name", "gpu-share"},
      {"task", "chain"},
      {"replicas", 2},
      {"seed", 7},
      {"inputs", {{"mc", (dir / "sim.h5").string()}, {"data", (dir / "data.h5").string()}}},
      {"chain",
       {{"iterations", 1},
        {"config",
         {{"classifier", "pet"},
          {"preset", "tiny"},
          {"epochs", 3},
          {"batch_size", 256},
          {"patience", 0},
          {"device", "cuda"}}}}},
      {"resources", {{"gpus", 1}, {"tasks_per_gpu", 2}, {"threads_per_task", 1}}}};
  std::ofstream(dir / "spec.json") << spec.dump();
  ASSERT_EQ(
      runFoldfarm(
          {"campaign", "init", (dir / "spec.json").string(), "--dir", (dir / "camp").string()}, dir)
          .exitCode,
      0);
  // Sample the GPU's compute processes while the campaign runs.
  std::atomic<bool> done{false};
  std::set<std::string> pids;
  std::thread sampler([&] {
    while (!done) {
      foldfarm::ProcessOptions quick;
      quick.timeout = std::chrono::seconds(10);
      const foldfarm::ProcessResult q = foldfarm::runProcess(
          {"nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"},
          quick);
      std::istringstream lines(q.out);
      for (std::string l; std::getline(lines, l);) {
        const auto comma = l.find(',');
        if (comma != std::string::npos && std::atof(l.substr(comma + 1).c_str()) > 0)
          pids.insert(l.substr(0, comma));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  });
  const foldfarm::ProcessResult r = runFoldfarm({"campaign", "run", (dir / "camp").string()}, dir);
  done = true;
  sampler.join();
  ASSERT_EQ(r.exitCode, 0) << r.err;
  // Each task says which process trained it and what its allocator held on the GPU: two
  // processes, each with GPU memory. nvidia-smi, beside, lists no process in a container
  // without the host's process ids: its count is checked where it lists any.
  std::set<int64_t> task_pids;
  for (const char* task : {"r0000m0", "r0001m0"}) {
    const json res =
        json::parse(foldfarm::readFile((dir / "camp" / "tasks" / task / "result.json").string()));
    EXPECT_EQ(res.at("device").at("device"), "cuda:0") << task;
    const json& process = res.at("device").at("process");
    task_pids.insert(process.at("pid").get<int64_t>());
    EXPECT_GT(process.at("peak_allocated_mb").get<double>(), 0.0) << task;
  }
  EXPECT_EQ(task_pids.size(), 2u) << "the two tasks were trained by one process";
  if (pids.empty())
    std::fprintf(stderr, "nvidia-smi listed no compute process (a container?): not counted\n");
  else
    EXPECT_GE(pids.size(), 2u) << "processes seen holding GPU memory: " << pids.size();
  fs::remove_all(dir);
}
