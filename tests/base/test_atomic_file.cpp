#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/full_disk.hpp"
#include "core/base/process.hpp"
#include "tests/support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;

namespace {
// A new scratch directory, removed when the test passes.
fs::path tempDir() {
  return foldfarm::testing::newScratchDir("ff_atomic_");
}
size_t openDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}
size_t countFiles(const fs::path& d) {
  size_t n = 0;
  for (auto& e : fs::directory_iterator(d)) {
    (void)e;
    ++n;
  }
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

// Each writer owns its temporary file's descriptor: a commit, an abandoned write and a
// moved writer each leave no descriptor open, and the moved-to writer commits the bytes.
// What a signal handler removes: the temporary files still being written, not a committed
// file, not one whose writer is gone.
TEST(AtomicFile, LiveTemporaryFilesAreRemovedForASignal) {
  const fs::path d = tempDir() / "live";
  fs::create_directories(d);
  std::string done_temp;
  {
    AtomicFile done((d / "done.json").string());
    done.write("{}");
    done_temp = done.tempPath();
    done.commit();
  }
  AtomicFile live((d / "live.json").string());
  live.write("{");
  AtomicFile moved_from((d / "moved.json").string());
  AtomicFile moved(std::move(moved_from));
  ASSERT_TRUE(fs::exists(live.tempPath()));
  removeLiveTemporaryFiles();
  EXPECT_FALSE(fs::exists(live.tempPath()));
  EXPECT_FALSE(fs::exists(moved.tempPath()));
  EXPECT_TRUE(fs::exists(d / "done.json"));
  EXPECT_FALSE(fs::exists(done_temp));
  fs::remove_all(d);
}

TEST(AtomicFile, LeavesNoDescriptorOpen) {
  auto d = tempDir();
  auto p = (d / "c.json").string();
  const size_t before = openDescriptors();
  for (int i = 0; i < 20; ++i) writeFileAtomic(p, "v" + std::to_string(i));
  EXPECT_EQ(openDescriptors(), before) << "commit closes the temporary file";
  for (int i = 0; i < 20; ++i) {
    AtomicFile f(p);
    f.write("abandoned");
  }
  EXPECT_EQ(openDescriptors(), before) << "an abandoned writer closes its temporary file";
  {
    AtomicFile a(p);
    a.write("moved ");
    AtomicFile b(std::move(a));
    b.write("then committed");
    b.commit();
  }
  EXPECT_EQ(openDescriptors(), before) << "a moved writer holds one descriptor, closed once";
  EXPECT_EQ(readFile(p), "moved then committed");
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

// A legal name near NAME_MAX (255 bytes) is written (its temporary takes the name's
// beginning; before: "File name too long (check that the directory exists and is writable)"
// from 240 bytes on); a name past it says so.
TEST(AtomicFile, ANameNearTheLimitIsWrittenAndOnePastItSaysSo) {
  auto d = tempDir();
  for (size_t len : {240u, 255u}) {
    const std::string p = (d / std::string(len, 'n')).string();
    writeFileAtomic(p, "x");
    EXPECT_EQ(readFile(p), "x") << len;
  }
  EXPECT_EQ(countFiles(d), 2u) << "no temporary file left behind";
  try {
    writeFileAtomic((d / std::string(256, 'n')).string(), "x");
    FAIL() << "a 256-byte name was written";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at most 255 bytes per name"), std::string::npos)
        << e.what();
  }
  fs::remove_all(d);
}

// A TMPDIR that is missing or not writable is named as such (before: "internal error:
// filesystem error: temp_directory_path"; "mkdtemp failed at core/base/process.cpp:276").
TEST(TempDir, AnUnusableTmpdirIsNamed) {
  auto d = tempDir();
  const char* was = std::getenv("TMPDIR");
  const std::string saved = was ? was : "";
  for (const std::string& tmpdir : {std::string("/nonexistent_dir_ff"), (d / "file").string()}) {
    std::ofstream((d / "file").string()) << "x";
    ::setenv("TMPDIR", tmpdir.c_str(), 1);
    try {
      TempDir t("x");
      ADD_FAILURE() << "made " << t.path();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("TMPDIR=" + tmpdir + ": "), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("point TMPDIR at a directory you can write"),
                std::string::npos)
          << e.what();
    }
  }
  if (was)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  fs::remove_all(d);
}

// An output file where a directory is, or in a directory that does not exist, is refused
// before anything is computed (before: the rename failed after the work).
TEST(OutputDirectory, AnOutputFileWhereADirectoryIsIsRefused) {
  const fs::path d = tempDir() / "outfile";
  fs::create_directories(d / "dir.h5");
  EXPECT_NO_THROW(requireOutputDirectory((d / "new.h5").string()));
  for (const auto& [path, why] : std::vector<std::pair<fs::path, std::string>>{
           {d / "dir.h5", "is a directory; name a file for the output"},
           {d / "none" / "x.h5",
            "output directory " + (d / "none").string() + " does not exist; create it first"}}) {
    try {
      requireOutputDirectory(path.string());
      ADD_FAILURE() << path << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), path.string() + ": " + why);
    }
  }
  fs::remove_all(d);
}

// An output directory where a file is (or under one) is refused before anything is
// computed, naming the path and the option; a directory that exists, or that can be made
// under one, is accepted.
TEST(OutputDirectory, AFileWhereTheDirectoryGoesIsRefused) {
  const fs::path d = tempDir() / "outdir";
  fs::create_directories(d / "existing");
  std::FILE* f = std::fopen((d / "file.h5").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_NO_THROW(requireOutputDirectoryPath((d / "existing").string(), "--out"));
  EXPECT_NO_THROW(requireOutputDirectoryPath((d / "new" / "deeper").string(), "--out"));
  EXPECT_NO_THROW(requireOutputDirectoryPath("relative_new_dir", "--out"));
  for (const auto& [path, why] : std::vector<std::pair<fs::path, std::string>>{
           {d / "file.h5", "exists and is not a directory; choose another --out"},
           {d / "file.h5" / "sub", "cannot be made: " + (d / "file.h5").string() +
                                       " is not a directory; choose another --out"}}) {
    try {
      requireOutputDirectoryPath(path.string(), "--out");
      ADD_FAILURE() << path << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), path.string() + ": " + why);
    }
  }
  fs::remove_all(d);
}

// The output directories a command made are removed again when it fails before writing into
// them; what was there before, and a directory holding a file, stay.
TEST(OutputDirectory, MadeDirectoriesAreRemovedAgainUnlessKept) {
  const fs::path d = tempDir() / "made";
  fs::create_directories(d / "before");
  { MadeDirectories made((d / "before" / "a" / "b").string()); }
  EXPECT_TRUE(fs::is_directory(d / "before")) << "a directory that was there stays";
  EXPECT_FALSE(fs::exists(d / "before" / "a")) << "the empty ones made are gone";
  { MadeDirectories made((d / "before" / "a" / "b").string() + "/"); }
  EXPECT_FALSE(fs::exists(d / "before" / "a")) << "with a trailing slash too";
  {
    MadeDirectories made((d / "kept" / "b").string());
    EXPECT_TRUE(fs::is_directory(d / "kept" / "b"));
    made.keep();
  }
  EXPECT_TRUE(fs::is_directory(d / "kept" / "b"));
  {
    MadeDirectories made((d / "partial" / "b").string());
    std::FILE* f = std::fopen((d / "partial" / "b" / "written.json").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  EXPECT_TRUE(fs::exists(d / "partial" / "b" / "written.json")) << "a file is never removed";
  std::FILE* f = std::fopen((d / "file").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  try {
    MadeDirectories made((d / "file" / "sub").string());
    ADD_FAILURE() << "made a directory under a file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create the output directory"), std::string::npos)
        << e.what();
  }
  fs::remove_all(d);
}

TEST(ReadFile, MissingFileIsInputError) {
  EXPECT_THROW(readFile("/nonexistent_ff_file"), InputError);
  try {
    readFile("/nonexistent_ff_file");
  } catch (const InputError& e) {
    EXPECT_EQ(e.exitCode(), kExitBadInput);
  }
}

TEST(AtomicFile, TemporaryFileNamesAreRecognised) {
  // The form AtomicFile gives its temporaries, whatever the destination's name.
  AtomicFile f((tempDir() / "weights.h5").string());
  EXPECT_TRUE(isTemporaryFileName(fs::path(f.tempPath()).filename().string()));
  EXPECT_NE(f.tempPath().find(".tmp." + hostName() + "."), std::string::npos) << f.tempPath();
  for (const char* yes : {"a.h5.tmp.12.0", "x.tmp.1.2", "spec.json.tmp.4194304.17",
                          "a.h5.tmp.node7.12.0", "a.h5.tmp.n01.ib.cluster-2_x.4194304.17"})
    EXPECT_TRUE(isTemporaryFileName(yes)) << yes;
  for (const char* no : {"a.h5", "a.tmp", "a.tmp.1", "a.tmp.1.", "a.tmp..1", ".tmp.1.2",
                         "a.tmp.x.2", "a.tmp.1.2x", "notes.tmp.txt", "a.tmp.1.2.h5", "tmp.1.2",
                         ".tmp.node.1.2", "a.tmp.no/de.1.2", "a.tmp.node..1.2x", "a.tmp.node.1"})
    EXPECT_FALSE(isTemporaryFileName(no)) << no;
}

// A writer killed by SIGKILL cannot remove its temporary. The next AtomicFile of the same
// path removes those of this host whose process has ended; it keeps those of a running
// process, of another host, and of other paths.
TEST(AtomicFile, TheNextWriterOfAPathRemovesTheTemporariesOfEndedProcessesOfThisHost) {
  const fs::path d = tempDir() / "next_writer";
  fs::create_directories(d);
  const pid_t ended = ::fork();
  if (ended == 0) ::_exit(0);
  ASSERT_GT(ended, 0);
  ::waitpid(ended, nullptr, 0);
  const std::string host = hostName();
  const std::string target = (d / "F.h5").string();
  auto touch = [](const std::string& p) { std::ofstream(p) << "partial"; };
  const std::string dead = target + ".tmp." + host + "." + std::to_string(ended) + ".0";
  const std::string running = target + ".tmp." + host + "." + std::to_string(::getppid()) + ".3";
  const std::string elsewhere = target + ".tmp.another-host." + std::to_string(ended) + ".0";
  const std::string other =
      (d / "G.h5").string() + ".tmp." + host + "." + std::to_string(ended) + ".0";
  for (const auto& p : {dead, running, elsewhere, other}) touch(p);
  writeFileAtomic(target, "whole");
  EXPECT_FALSE(fs::exists(dead));
  for (const auto& p : {running, elsewhere, other}) EXPECT_TRUE(fs::exists(p)) << p;
  EXPECT_EQ(readFile(target), "whole");
}

// What a writer killed by SIGKILL leaves: its temporaries are removed from the directory and
// its subdirectories; committed files, other names and whatever a link points to are kept.
TEST(AtomicFile, TemporariesLeftUnderADirectoryAreRemoved) {
  const fs::path d = tempDir() / "stale";
  const fs::path outside = tempDir() / "outside";
  fs::create_directories(d / "iter_1");
  fs::create_directories(outside);
  auto touch = [](const fs::path& p) { writeFileAtomic(p.string(), "x"); };
  touch(d / "result.h5");
  touch(d / "result.h5.tmp.99.0");
  touch(d / "iter_1" / "ckpt.pt.tmp.4242.3");
  touch(d / "iter_1" / "ckpt.pt");
  touch(d / "notes.tmp.txt");
  touch(outside / "theirs.tmp.1.1");
  fs::create_directory_symlink(outside, d / "link");
  EXPECT_EQ(removeTemporaryFilesUnder(d.string()), 2);
  EXPECT_FALSE(fs::exists(d / "result.h5.tmp.99.0"));
  EXPECT_FALSE(fs::exists(d / "iter_1" / "ckpt.pt.tmp.4242.3"));
  for (const fs::path& kept :
       {d / "result.h5", d / "iter_1" / "ckpt.pt", d / "notes.tmp.txt", outside / "theirs.tmp.1.1"})
    EXPECT_TRUE(fs::exists(kept)) << kept;
  EXPECT_EQ(removeTemporaryFilesUnder(d.string()), 0);
  EXPECT_THROW(removeTemporaryFilesUnder((d / "absent").string()), Error);
  fs::remove_all(d);
  fs::remove_all(outside);
}

// FOLDFARM_SIGNALS_HELD leaves the stop signals held only for a process that its parent
// started with them held (the variable names the parent's pid). Set by hand, with any value,
// it blocked SIGINT, SIGTERM and SIGHUP for the whole command: a pretraining ignored Ctrl-C,
// scancel and preemption and trained to its end.
TEST(SignalsHeld, OnlyAVariableNamingTheParentKeepsTheStopSignalsHeld) {
  sigset_t before;
  ::sigprocmask(SIG_SETMASK, nullptr, &before);
  const auto blocked = [] {
    sigset_t now;
    ::sigprocmask(SIG_SETMASK, nullptr, &now);
    return sigismember(&now, SIGINT) == 1 && sigismember(&now, SIGTERM) == 1 &&
           sigismember(&now, SIGHUP) == 1;
  };
  for (const std::string& value :
       std::vector<std::string>{"1", "0", "", std::to_string(::getpid())}) {
    holdSignalsAcrossExec();
    ASSERT_TRUE(blocked());
    ::setenv(kSignalsHeldEnv, value.c_str(), 1);
    EXPECT_FALSE(takeSignalsHeldForParent()) << "'" << value << "'";
    EXPECT_FALSE(blocked()) << "'" << value << "'";
    EXPECT_EQ(std::getenv(kSignalsHeldEnv), nullptr);
  }
  holdSignalsAcrossExec();
  ::setenv(kSignalsHeldEnv, std::to_string(::getppid()).c_str(), 1);
  EXPECT_TRUE(takeSignalsHeldForParent());
  EXPECT_TRUE(blocked()) << "held for this process to release";
  EXPECT_EQ(std::getenv(kSignalsHeldEnv), nullptr);
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  EXPECT_EQ(signalsHeldValue(), "FOLDFARM_SIGNALS_HELD=" + std::to_string(::getpid()));
}

// A write beyond the file size limit (`ulimit -f`) is an error naming the file and the limit,
// with the temporary removed and the file before it kept (before: SIGXFSZ ended the process
// with no message, its temporary half-written).
TEST(AtomicFile, AWriteBeyondTheFileSizeLimitIsAnErrorThatKeepsTheFileBeforeIt) {
  const fs::path d = tempDir() / "fsize";
  fs::create_directories(d);
  const std::string target = (d / "bands.h5").string();
  writeFileAtomic(target, "before");
  const pid_t pid = ::fork();
  if (pid == 0) {
    installTemporaryFileCleanup();
    const struct rlimit limit { 64 * 1024, 64 * 1024 };
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
    try {
      writeFileAtomic(target, std::string(1 << 20, 'x'));
    } catch (const Error& e) {
      const std::string what = e.what();
      const bool says = what.find(target) != std::string::npos &&
                        what.find("File too large") != std::string::npos &&
                        fullDiskAdvice(what, "again").find("ulimit -f") != std::string::npos;
      ::_exit(says ? 0 : 4);
    }
    ::_exit(5);
  }
  ASSERT_GT(pid, 0);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st)) << "ended by signal " << WTERMSIG(st);
  EXPECT_EQ(WEXITSTATUS(st), 0) << "3: setrlimit, 4: the message, 5: no error";
  EXPECT_EQ(readFile(target), "before");
  for (const auto& entry : fs::directory_iterator(d))
    EXPECT_EQ(entry.path().string(), target) << "left behind";
}
