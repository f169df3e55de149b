#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/output_lock.hpp"
#include "tests/support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;

namespace {

// `name` (not made) in a new scratch directory, removed when the test passes.
fs::path freshDir(const std::string& name) {
  return fs::path(foldfarm::testing::newScratchDir("ff_outlock_")) / name;
}

void touch(const fs::path& p) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << "x";
}

// The message of the InputError that `f` throws ("" when it throws none).
template <class F>
std::string inputErrorOf(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(OutputDirectoryLock, ASecondRunIntoTheDirectoryIsRefusedNamingTheHolder) {
  const fs::path d = freshDir("second") / "out";
  {
    OutputDirectoryLock first(d.string(), "--out");
    EXPECT_TRUE(first.locked());
    EXPECT_TRUE(fs::is_directory(d));  // made, with its parent
    // flock belongs to the open directory: a second open, even in this process, conflicts.
    const std::string msg = inputErrorOf([&] { OutputDirectoryLock second(d.string(), "--out"); });
    EXPECT_NE(msg.find(d.string() + ": another foldfarm run is writing into this directory"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("pid " + std::to_string(::getpid())), std::string::npos) << msg;
    EXPECT_NE(msg.find("choose another --out"), std::string::npos) << msg;
    EXPECT_TRUE(fs::is_directory(d));  // the refused run removed nothing
  }
  // Released with its holder: the next run takes it.
  OutputDirectoryLock next(d.string(), "--out");
  EXPECT_TRUE(next.locked());
}

TEST(OutputDirectoryLock, AKilledHolderReleasesTheDirectory) {
  const fs::path d = freshDir("killed");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    OutputDirectoryLock lock(d.string(), "--out");
    touch(d / "state" / "meta.json.tmp.99.1");  // as a writer killed mid-write leaves it
    char c = 'y';
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  const std::string msg = inputErrorOf([&] { OutputDirectoryLock l(d.string(), "--out"); });
  EXPECT_NE(msg.find("pid " + std::to_string(child)), std::string::npos) << msg;

  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  OutputDirectoryLock after(d.string(), "--out");
  ASSERT_TRUE(after.locked());
  EXPECT_EQ(after.removeLeftTemporaries({"state"}), 1);
  EXPECT_FALSE(fs::exists(d / "state" / "meta.json.tmp.99.1"));
}

TEST(OutputDirectoryLock, SweepsTemporariesOnlyWhereTheCommandWrites) {
  const fs::path d = freshDir("sweep");
  touch(d / "result.json.tmp.12.0");
  touch(d / "result.json");
  touch(d / "state" / "deep" / "tensors-ab.pt.tmp.12.3");
  touch(d / "state" / "progress.json");
  touch(d / "elsewhere" / "x.tmp.12.4");  // a directory the command does not write: kept
  OutputDirectoryLock lock(d.string(), "--out");
  EXPECT_EQ(lock.removeLeftTemporaries({"state", "model"}), 2);  // model/ absent: fine
  EXPECT_FALSE(fs::exists(d / "result.json.tmp.12.0"));
  EXPECT_FALSE(fs::exists(d / "state" / "deep" / "tensors-ab.pt.tmp.12.3"));
  EXPECT_TRUE(fs::exists(d / "result.json"));
  EXPECT_TRUE(fs::exists(d / "state" / "progress.json"));
  EXPECT_TRUE(fs::exists(d / "elsewhere" / "x.tmp.12.4"));
}

TEST(OutputDirectoryLock, ARunThatWroteNothingLeavesNoDirectoryAndKeepsWhatWasThere) {
  const fs::path base = freshDir("made");
  { OutputDirectoryLock lock((base / "a" / "b").string(), "--out"); }
  EXPECT_FALSE(fs::exists(base / "a"));  // made and empty: removed, parents too
  {
    OutputDirectoryLock lock((base / "c").string(), "--out");
    touch(base / "c" / "model" / "meta.json");
  }
  EXPECT_TRUE(fs::exists(base / "c" / "model" / "meta.json"));  // a run's output stays
  fs::create_directories(base / "existing");
  { OutputDirectoryLock lock((base / "existing").string(), ""); }
  EXPECT_TRUE(fs::is_directory(base / "existing"));  // there before: never removed
}

TEST(OutputDirectoryLock, AFileWhereTheDirectoryGoesIsAnInputError) {
  const fs::path base = freshDir("file");
  touch(base / "taken");
  const std::string msg =
      inputErrorOf([&] { OutputDirectoryLock l((base / "taken").string(), "--out"); });
  EXPECT_NE(msg.find("exists and is not a directory; choose another --out"), std::string::npos)
      << msg;
  const std::string none =
      inputErrorOf([&] { OutputDirectoryLock l((base / "taken" / "x").string(), ""); });
  EXPECT_NE(none.find("choose another output directory"), std::string::npos) << none;
}

// A directory no file can be made in (read-only: permissions for a user, the immutable flag
// for root, whom permissions do not stop) is refused when it is locked, before the command
// computes anything; so is the directory of an output file. Nothing is left in either.
TEST(OutputDirectoryLock, ADirectoryNoFileCanBeMadeInIsRefusedAtOnce) {
  const fs::path ro = freshDir("readonly");
  fs::create_directories(ro);
  const bool root = ::geteuid() == 0;
  if (root) {
    if (std::system(("chattr +i '" + ro.string() + "' 2>/dev/null").c_str()) != 0)
      GTEST_SKIP() << "running as root and this file system has no immutable flag (chattr)";
  } else {
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  }
  const std::string msg = inputErrorOf([&] { OutputDirectoryLock l(ro.string(), "--out"); });
  const std::string file = inputErrorOf([&] { requireOutputDirectory((ro / "jets.h5").string()); });
  // A directory to be made in it: an InputError too (exit 2; it was an Error, exit 1).
  const std::string sub =
      inputErrorOf([&] { OutputDirectoryLock l((ro / "sub").string(), "--out"); });
  if (root)
    EXPECT_EQ(std::system(("chattr -i '" + ro.string() + "'").c_str()), 0);
  else
    fs::permissions(ro, fs::perms::owner_all);
  EXPECT_NE(msg.find(ro.string() + ": cannot write into this directory ("), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("make it writable or choose another --out"), std::string::npos) << msg;
  EXPECT_NE(file.find(": cannot write into " + ro.string()), std::string::npos) << file;
  EXPECT_NE(sub.find("sub: cannot create the output directory ("), std::string::npos) << sub;
  EXPECT_TRUE(fs::is_empty(ro));
  EXPECT_NO_THROW(OutputDirectoryLock(ro.string(), "--out"));
  EXPECT_NO_THROW(requireOutputDirectory((ro / "jets.h5").string()));
  EXPECT_TRUE(fs::is_empty(ro));
}
