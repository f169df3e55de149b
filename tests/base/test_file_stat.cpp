// statPath says what stat() says; restoreTimeCommand's command, run by a shell, gives a file
// back the recorded modification time to the nanosecond, whatever its name holds.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/base/file_stat.hpp"
#include "core/base/process.hpp"

namespace foldfarm {
namespace {

TEST(FileStat, StatSaysWhatAPathIs) {
  TempDir dir("file_stat");
  const std::string file = dir.path() + "/x.h5";
  EXPECT_FALSE(statPath(file).exists);
  { std::ofstream(file) << "abcd"; }
  const FileStat f = statPath(file);
  EXPECT_TRUE(f.exists && f.regular && !f.directory);
  EXPECT_EQ(f.size, 4);
  // The time to the nanosecond: moved on by 1.234567891 s, the stat moves as much.
  const auto t = std::filesystem::last_write_time(file);
  std::filesystem::last_write_time(file, t + std::chrono::nanoseconds(1234567891));
  EXPECT_EQ(statPath(file).mtime_ns - f.mtime_ns, 1234567891LL);
  const FileStat d = statPath(dir.path());
  EXPECT_TRUE(d.exists && d.directory && !d.regular);
}

TEST(FileStat, TheRestoreCommandSetsTheTimeBackToTheNanosecond) {
  EXPECT_EQ(restoreTimeCommand("/d/mc.h5", 1733170862123456789LL),
            "touch -d @1733170862.123456789 '/d/mc.h5'");
  EXPECT_EQ(restoreTimeCommand("/d/m", 5), "touch -d @0.000000005 '/d/m'");
  EXPECT_EQ(restoreTimeCommand("/d/m", -2500000000LL), "touch -d @-2.500000000 '/d/m'");
  EXPECT_EQ(restoreTimeCommand("/a b/it's.h5", 1000000000LL),
            "touch -d @1.000000000 '/a b/it'\\''s.h5'");

  TempDir dir("file_stat");
  const std::string file = dir.path() + "/it's a $file `x`.h5";
  { std::ofstream(file) << "abcd"; }
  const long long then = statPath(file).mtime_ns;
  for (const long long target : {then - 86400LL * 1000000000LL - 123456789LL, then}) {
    ASSERT_TRUE(runProcess({"sh", "-c", restoreTimeCommand(file, target)}).ok());
    EXPECT_EQ(statPath(file).mtime_ns, target) << restoreTimeCommand(file, target);
  }
}

// setModificationTime does what the restore command does, before the epoch too (the
// nanoseconds counted forward from the second below), and says why it cannot.
TEST(FileStat, SetModificationTimeSetsItToTheNanosecondOrSaysWhyNot) {
  TempDir dir("file_stat");
  const std::string file = dir.path() + "/mc.h5";
  { std::ofstream(file) << "abcd"; }
  for (const long long target : {1733170862123456789LL, -2500000001LL, 0LL, 7LL}) {
    EXPECT_EQ(setModificationTime(file, target), "") << target;
    EXPECT_EQ(statPath(file).mtime_ns, target) << target;
  }
  EXPECT_EQ(setModificationTime(dir.path() + "/missing.h5", 5), "No such file or directory");
}

}  // namespace
}  // namespace foldfarm
