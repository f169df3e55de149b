#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;

namespace {
fs::path tempDir() {
  fs::path d = fs::temp_directory_path() / ("ff_atomic_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}
size_t countFiles(const fs::path& d) {
  size_t n = 0;
  for (auto& e : fs::directory_iterator(d)) { (void)e; ++n; }
  return n;
}
}  // namespace

TEST(AtomicFile, ReplacesWholeFile) {
  auto d = tempDir();
  auto p = (d / "a.json").string();
  writeFileAtomic(p, "old");
  writeFileAtomic(p, "new content");
  EXPECT_EQ(readFile(p), "new content");
  EXPECT_EQ(countFiles(d), 1u) << "no temporary file left behind";
  fs::remove_all(d);
}

TEST(AtomicFile, AbandonedWriteLeavesOldFileAndNoTemp) {
  auto d = tempDir();
  auto p = (d / "b.json").string();
  writeFileAtomic(p, "kept");
  try {
    AtomicFile f(p);
    f.write("partial");
    throw std::runtime_error("simulated failure before commit");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(readFile(p), "kept");
  EXPECT_EQ(countFiles(d), 1u);
  fs::remove_all(d);
}

TEST(AtomicFile, MissingDirectoryIsAClearError) {
  try {
    writeFileAtomic("/nonexistent_dir_ff/x.json", "x");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent_dir_ff/x.json"), std::string::npos);
  }
}

TEST(ReadFile, MissingFileIsInputError) {
  EXPECT_THROW(readFile("/nonexistent_ff_file"), InputError);
  try {
    readFile("/nonexistent_ff_file");
  } catch (const InputError& e) {
    EXPECT_EQ(e.exitCode(), kExitBadInput);
  }
}
