#pragma once
// Test support: scratch directories under the system temp directory that do not pile up.
// A directory made by newScratchDir() is removed when the test that made it passes, and kept
// (its path printed) when it fails, so that its files can be read. One made outside a test
// (SetUpTestSuite, a global) is removed at the end of the program when every test passed.
// Under mpirun every removal waits for the end of the program: another rank may still be
// reading a directory that this rank made. FOLDFARM_KEEP_TEST_DIRS=1 keeps them all.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace foldfarm::testing {

class ScratchDirs final : public ::testing::EmptyTestEventListener {
 public:
  // The listener of this process, appended to GoogleTest's listeners (which own it) on first
  // use.
  static ScratchDirs& get() {
    static ScratchDirs* const self = [] {
      auto* s = new ScratchDirs;
      ::testing::UnitTest::GetInstance()->listeners().Append(s);
      return s;
    }();
    return *self;
  }

  void add(const std::string& dir) {
    const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
    std::lock_guard<std::mutex> lock(mu_);
    dirs_.push_back({t ? fullName(*t) : std::string(), dir});
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (underMpi()) return;
    const std::string name = fullName(info);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = dirs_.begin(); it != dirs_.end();) {
      if (it->first != name) {
        ++it;
        continue;
      }
      settle(it->second, !info.result()->Failed());
      it = dirs_.erase(it);
    }
  }

  void OnTestProgramEnd(const ::testing::UnitTest& unit) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [test, dir] : dirs_) {
      bool passed = unit.Passed();
      if (!test.empty()) passed = !failed(unit, test);
      settle(dir, passed);
    }
    dirs_.clear();
  }

 private:
  ScratchDirs() = default;

  static std::string fullName(const ::testing::TestInfo& t) {
    return std::string(t.test_suite_name()) + "." + t.name();
  }
  static bool underMpi() {
    return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") ||
           std::getenv("PMI_RANK");
  }
  static bool failed(const ::testing::UnitTest& unit, const std::string& test) {
    for (int i = 0; i < unit.total_test_suite_count(); ++i) {
      const ::testing::TestSuite* s = unit.GetTestSuite(i);
      for (int j = 0; j < s->total_test_count(); ++j)
        if (fullName(*s->GetTestInfo(j)) == test) return s->GetTestInfo(j)->result()->Failed();
    }
    return false;
  }
  static void settle(const std::string& dir, bool passed) {
    const char* keep = std::getenv("FOLDFARM_KEEP_TEST_DIRS");
    if (!passed || (keep && std::string(keep) == "1")) {
      std::fprintf(stderr, "scratch directory kept: %s\n", dir.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec)
      std::fprintf(stderr, "could not remove scratch directory %s: %s\n", dir.c_str(),
                   ec.message().c_str());
  }

  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> dirs_;  // (test, directory)
};

// A new directory `<temp>/<stem>XXXXXX` (mkdtemp), removed after the test as said above.
inline std::string newScratchDir(const std::string& stem) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (stem + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + " failed");
  ScratchDirs::get().add(tmpl);
  return tmpl;
}

}  // namespace foldfarm::testing
