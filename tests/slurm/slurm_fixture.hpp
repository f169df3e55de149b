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
  // A start-up limit (free when the start is quick): a cold machine under load takes long.
  o.timeout = std::chrono::seconds(300);
  ProcessResult r =
      runProcess({std::string(FOLDFARM_SOURCE_DIR) + "/scripts/slurm-local.sh", "start"}, o);
  if (r.exitCode == 77) {
    std::fprintf(stderr, "SKIPPED: no local Slurm cluster here: %s\n", r.err.c_str());
    std::exit(77);
  }
  ASSERT_EQ(r.exitCode, 0) << "scripts/slurm-local.sh start failed: " << r.err;
  ready = true;
}

// Polls squeue until every element of `jobId` is finished or forgotten. A squeue that fails
// (slurmctld busy: "Socket timed out") is asked again until the deadline.
inline void waitForJob(const SlurmClient& client, const std::string& jobId, int timeoutS) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(timeoutS);
  std::string last_error;
  while (std::chrono::steady_clock::now() < end) {
    bool live = false;
    try {
      for (const auto& j : client.queue({jobId})) live = live || !j.finished();
    } catch (const SlurmQueryError& e) {
      last_error = e.what();
      live = true;
    }
    if (!live) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  FAIL() << "job " << jobId << " did not end within " << timeoutS << " s " << last_error;
}

// Cancels every job whose batch script lies under `base` (a test's scratch directory): a test
// that failed half-way leaves no job holding the one node for the tests after it.
inline void cancelJobsUnder(const std::string& base) {
  const ProcessResult q = runProcess({"squeue", "-h", "-o", "%A|%o"});
  std::istringstream lines(q.out);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t bar = line.find('|');
    if (bar == std::string::npos) continue;
    if (line.compare(bar + 1, base.size() + 1, base + "/") == 0)
      runProcess({"scancel", line.substr(0, bar)});
  }
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
