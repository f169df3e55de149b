#pragma once
// Shared by the `slurm`-labelled tests: starts the local one-node cluster through
// scripts/slurm-local.sh (idempotent) and ends the test binary with exit code 77 when it
// cannot run here (not root, Slurm not installed).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "core/base/process.hpp"
#include "slurm/slurm_client.hpp"

namespace foldfarm::slurm::testing {

inline void ensureLocalCluster() {
  static bool ready = false;
  if (ready) return;
  ProcessOptions o;
  o.timeout = std::chrono::seconds(90);
  ProcessResult r = runProcess({std::string(FOLDFARM_SOURCE_DIR) + "/scripts/slurm-local.sh", "start"}, o);
  if (r.exitCode == 77) {
    std::fprintf(stderr, "SKIPPED: no local Slurm cluster here: %s\n", r.err.c_str());
    std::exit(77);
  }
  ASSERT_EQ(r.exitCode, 0) << "scripts/slurm-local.sh start failed: " << r.err;
  ready = true;
}

// Polls squeue until every element of `jobId` is finished or forgotten.
inline void waitForJob(const SlurmClient& client, const std::string& jobId, int timeoutS) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(timeoutS);
  while (std::chrono::steady_clock::now() < end) {
    bool live = false;
    for (const auto& j : client.queue({jobId})) live = live || !j.finished();
    if (!live) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  FAIL() << "job " << jobId << " did not end within " << timeoutS << " s";
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string makeTempDir(const std::string& stem) {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/" + stem + ".XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  if (!d) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

}  // namespace foldfarm::slurm::testing
