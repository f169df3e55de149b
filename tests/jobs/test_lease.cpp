// The task lease: no two processes run a task at once, an older attempt never runs after a
// newer one, and the processes of an abandoned attempt are fenced on this host.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "jobs/file_locks.hpp"
#include "jobs/task_lease.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs {
namespace {

using namespace foldfarm::jobs::testing;
using Clock = std::chrono::steady_clock;

// A child process that takes the lease for `attempt`, writes one byte to a pipe and then
// sleeps (SIGTERM ends it, whatever handler an earlier test of this process installed).
// Returns its pid once it holds the lease.
pid_t holdInChild(const std::string& dir, int attempt) {
  int p[2];
  if (::pipe(p) != 0) std::abort();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    ::signal(SIGTERM, SIG_DFL);
    try {
      TaskLease l = TaskLease::acquire(dir, "t", attempt, LeaseOptions{0.0, 0.1});
      char c = 1;
      if (::write(p[1], &c, 1) != 1) ::_exit(3);
      for (;;) ::pause();
    } catch (...) {
      ::_exit(2);
    }
  }
  ::close(p[1]);
  char c = 0;
  if (::read(p[0], &c, 1) != 1) {
    ::close(p[0]);
    return -1;
  }
  ::close(p[0]);
  return pid;
}

// A child that holds the lease of `dir` with the holder record `record(its pid)` until killed;
// returns once it holds it (before: a 200 ms sleep, which a loaded machine could outlast).
pid_t forkLeaseHolder(const std::string& dir, const std::function<std::string(pid_t)>& record) {
  const int fd = ::open((dir + "/.lease").c_str(), O_RDWR | O_CREAT, 0644);
  EXPECT_GE(fd, 0);
  int ready[2];
  EXPECT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    if (::flock(fd, LOCK_EX) != 0) ::_exit(2);
    const std::string rec = record(::getpid());
    if (::pwrite(fd, rec.data(), rec.size(), 0) < 0) ::_exit(3);
    if (::write(ready[1], "h", 1) != 1) ::_exit(4);
    for (;;) ::pause();
  }
  ::close(fd);
  ::close(ready[1]);
  char c = 0;
  EXPECT_EQ(::read(ready[0], &c, 1), 1) << "the holder did not take the lease";
  ::close(ready[0]);
  return child;
}

int waitStatus(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return st;
}

TEST(TaskLease, ANewerAttemptWaitsThenFencesTheHolderOnThisHost) {
  std::string dir = makeScratchDir("lease");
  pid_t holder = holdInChild(dir, 1);
  ASSERT_GT(holder, 0);
  auto t0 = Clock::now();
  TaskLease l = TaskLease::acquire(dir, "t", 2, LeaseOptions{0.3, 1.0});
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(l.held());
  EXPECT_GE(s, 0.3) << "it waited for the holder first";
  int st = waitStatus(holder);
  ASSERT_TRUE(WIFSIGNALED(st));
  EXPECT_EQ(WTERMSIG(st), SIGTERM) << "the holder was fenced with SIGTERM";
  EXPECT_EQ(readText(dir + "/.attempt"), "2\n");
}

// Fencing signals the holder's process group only while that group id is still the
// holder's: a recorded group whose leader's pid now belongs to another process (another start
// time) is left alone, and the holder's own pid is still fenced.
TEST(TaskLease, FencingSparesAProcessGroupWhoseIdWasReused) {
  std::string dir = makeScratchDir("lease");
  const pid_t innocent = ::fork();
  if (innocent == 0) {
    ::setpgid(0, 0);
    ::signal(SIGTERM, SIG_DFL);
    for (;;) ::pause();
  }
  ASSERT_GT(innocent, 0);
  ::setpgid(innocent, innocent);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const pid_t holder = ::fork();
  if (holder == 0) {
    ::close(p[0]);
    ::signal(SIGTERM, SIG_DFL);
    const int fd = ::open((dir + "/.lease").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(2);
    // The group it recorded: the innocent process's pid, with another leader's start time.
    const std::string rec =
        "{\"attempt\":1,\"host\":\"" + hostName() + "\",\"pid\":" + std::to_string(::getpid()) +
        ",\"start\":" + std::to_string(processStartTicks(::getpid())) +
        ",\"pgid\":" + std::to_string(innocent) +
        ",\"pgid_start\":" + std::to_string(processStartTicks(innocent) + 1) + "}\n";
    if (::pwrite(fd, rec.data(), rec.size(), 0) < 0) ::_exit(3);
    char c = 1;
    if (::write(p[1], &c, 1) != 1) ::_exit(3);
    for (;;) ::pause();
  }
  ::close(p[1]);
  char c = 0;
  ASSERT_EQ(::read(p[0], &c, 1), 1);
  ::close(p[0]);
  TaskLease l = TaskLease::acquire(dir, "t", 2, LeaseOptions{0.2, 1.0});
  EXPECT_TRUE(l.held());
  const int st = waitStatus(holder);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << "the holder itself was fenced";
  EXPECT_TRUE(processAlive(innocent)) << "a reused group id was signalled";
  ::kill(innocent, SIGKILL);
  waitStatus(innocent);
}

TEST(TaskLease, AnAttemptOlderThanTheNewestIsSupersededAndAByHandRunIsNot) {
  std::string dir = makeScratchDir("lease");
  { TaskLease l = TaskLease::acquire(dir, "t", 3); }
  EXPECT_THROW(TaskLease::acquire(dir, "t", 2), SupersededError);
  try {
    TaskLease::acquire(dir, "t", 2);
  } catch (const SupersededError& e) {
    EXPECT_EQ(e.exitCode(), kExitSuperseded);
    EXPECT_NE(std::string(e.what()).find("superseded by attempt 3"), std::string::npos) << e.what();
  }
  { TaskLease l = TaskLease::acquire(dir, "t", 3); }  // the same attempt again (its own restart)
  { TaskLease l = TaskLease::acquire(dir, "t", 0); }  // by hand: no number
  EXPECT_EQ(readText(dir + "/.attempt"), "3\n");
  promiseAttempt(dir, 5);  // a submitter promised attempt 5 to a queued job
  EXPECT_THROW(TaskLease::acquire(dir, "t", 4), SupersededError);
  promiseAttempt(dir, 4);  // never lowers
  EXPECT_EQ(readText(dir + "/.attempt"), "5\n");
  TaskLease l5 = TaskLease::acquire(dir, "t", 5);
  EXPECT_TRUE(l5.held());
  // The holder before it was the hand run (0): a promise is no holder.
  EXPECT_EQ(l5.previousHolder(), 0);
}

// Each attempt notes which attempt held the lease before it (what lets a later attempt take
// the result of an earlier one that finished, see executeTask); a superseded one takes nothing.
TEST(TaskLease, EachAttemptNotesThePreviousHolder) {
  std::string dir = makeScratchDir("lease");
  {
    TaskLease l = TaskLease::acquire(dir, "t", 1);
    EXPECT_EQ(l.previousHolder(), -1) << "nobody held it before";
  }
  {
    TaskLease l = TaskLease::acquire(dir, "t", 2);
    EXPECT_EQ(l.previousHolder(), 1);
  }
  EXPECT_THROW(TaskLease::acquire(dir, "t", 1), SupersededError);
  TaskLease l = TaskLease::acquire(dir, "t", 3);
  EXPECT_EQ(l.previousHolder(), 2) << "the superseded attempt never held it";
}

// Who holds a lease, asked with a shared lock on a descriptor open for reading (an exclusive
// one needs it open for writing on NFS: EBADF there); a test that leaves the lease free for
// the next attempt, and that does not see another reader's test as a holder.
TEST(TaskLease, WhoHoldsALeaseIsAskedWithoutTakingIt) {
  std::string dir = makeScratchDir("lease");
  EXPECT_EQ(leaseHolderNow(dir), "") << "no lease file yet";
  {
    TaskLease l = TaskLease::acquire(dir, "t", 4);
    const std::string holder = leaseHolderNow(dir);
    EXPECT_NE(holder.find("attempt 4"), std::string::npos) << holder;
    EXPECT_NE(holder.find("pid " + std::to_string(::getpid())), std::string::npos) << holder;
  }
  // Another reader testing meanwhile (a shared lock held) is no holder.
  const Fd reader(::open((dir + "/" + kLeaseFile).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  ASSERT_EQ(::flock(reader.get(), LOCK_SH | LOCK_NB), 0);
  EXPECT_EQ(leaseHolderNow(dir), "");
  ASSERT_EQ(::flock(reader.get(), LOCK_UN), 0);
  TaskLease next = TaskLease::acquire(dir, "t", 5, LeaseOptions{0.0, 0.1});
  EXPECT_NE(leaseHolderNow(dir).find("attempt 5"), std::string::npos);
}

TEST(TaskLease, AHolderOnAnotherHostIsNeverSignalledAndTheAttemptIsRetriedLater) {
  std::string dir = makeScratchDir("lease");
  // Another host's holder: the lock is held here by a child, but the record names a host
  // that is not this one, so fencing must not touch it.
  const pid_t child = forkLeaseHolder(dir, [](pid_t self) {
    return "{\"attempt\":1,\"host\":\"elsewhere\",\"pid\":" + std::to_string(self) +
           ",\"start\":1,\"pgid\":0}\n";
  });
  try {
    TaskLease::acquire(dir, "t", 2, LeaseOptions{0.2, 0.2});
    ADD_FAILURE() << "the lease was granted while another host held it";
  } catch (const InterruptedError& e) {
    EXPECT_NE(std::string(e.what()).find("host elsewhere"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("will be retried"), std::string::npos) << e.what();
  }
  EXPECT_EQ(::kill(child, 0), 0) << "a holder on another host was signalled";
  ::kill(child, SIGKILL);
  waitStatus(child);
  TaskLease l = TaskLease::acquire(dir, "t", 2);  // its death released the lock
  EXPECT_TRUE(l.held());
}

TEST(TaskLease, APidThatIsNoLongerTheHolderIsNotSignalled) {
  std::string dir = makeScratchDir("lease");
  // The record names this test process with a wrong start time (a reused pid): fencing
  // must not signal it; the lock itself is held by a child that ignores nothing.
  const pid_t me = ::getpid();
  const pid_t child = forkLeaseHolder(dir, [me](pid_t) {
    return "{\"attempt\":1,\"host\":\"" + hostName() + "\",\"pid\":" + std::to_string(me) +
           ",\"start\":12345,\"pgid\":0}\n";
  });
  EXPECT_THROW(TaskLease::acquire(dir, "t", 2, LeaseOptions{0.1, 0.1}), InterruptedError);
  ::kill(child, SIGKILL);
  waitStatus(child);
}

// Which mounts give flock locks that other nodes see: Lustre only with `flock`, NFS unless
// local_lock keeps them on the client; the mount holding a path is its longest mount point
// on a component boundary (escaped spaces decoded).
TEST(FileLocks, NodeLocalLockingIsReadFromTheMountHoldingThePath) {
  const std::string table =
      "22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw\n"
      "30 22 0:40 / /lus rw - lustre 10.0.0.1@o2ib:/fs rw,flock,lazystatfs\n"
      "31 22 0:41 / /lus2 rw - lustre 10.0.0.1@o2ib:/fs2 rw,localflock\n"
      "32 22 0:42 / /lus3 rw - lustre 10.0.0.1@o2ib:/fs3 rw,noflock\n"
      "38 22 0:48 / /lus4 rw - lustre 10.0.0.1@o2ib:/fs4 rw,lazystatfs\n"
      "33 22 0:43 / /home rw shared:5 - nfs4 srv:/home rw,vers=4.2,local_lock=none\n"
      "34 22 0:44 / /proj rw - nfs srv:/proj rw,vers=3,local_lock=flock\n"
      "35 22 0:45 / /old rw,nolock - nfs srv:/old rw,vers=3\n"
      "36 22 0:46 / /my\\040scratch rw - lustre mgs:/s rw,localflock\n"
      "37 30 0:47 / /lus/local rw - ext4 /dev/sdb rw\n";
  EXPECT_EQ(nodeLocalLocking("/lus/u/camp", table), "");
  EXPECT_EQ(nodeLocalLocking("/home/u/camp", table), "");
  EXPECT_EQ(nodeLocalLocking("/tmp/camp", table), "");
  EXPECT_EQ(nodeLocalLocking("/lus/local/camp", table), "") << "mounted over the Lustre one";
  EXPECT_NE(
      nodeLocalLocking("/lus2/u/camp", table).find("lustre at /lus2 is mounted with localflock"),
      std::string::npos);
  EXPECT_NE(nodeLocalLocking("/lus3/camp", table).find("with noflock"), std::string::npos);
  EXPECT_EQ(nodeLocalLocking("/lus4/camp", table), "") << "neither shown: the client's default";
  EXPECT_NE(nodeLocalLocking("/proj/camp", table).find("local_lock=flock or all"),
            std::string::npos);
  EXPECT_NE(nodeLocalLocking("/old/camp", table).find("nolock"), std::string::npos);
  EXPECT_NE(nodeLocalLocking("/my scratch/camp", table).find("at /my scratch"), std::string::npos);
  EXPECT_EQ(nodeLocalLocking("/lus22/camp", table), "") << "/lus2 does not hold /lus22";
  // This machine's own table: the scratch directory of the tests locks across processes.
  EXPECT_NO_THROW(requireClusterWideLocks(makeScratchDir("locks"), "a test"));
}

}  // namespace
}  // namespace foldfarm::jobs
