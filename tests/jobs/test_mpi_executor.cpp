// The mpi executor under `mpirun -np 3`: rank 0 dispatches, ranks 1 and 2 run the tasks
// in their worker processes; a segfaulting task costs one attempt and the campaign ends
// with every task done.
#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "core/base/error.hpp"
#include "core/mpi/mpi_runtime.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/cancel_request.hpp"
#include "jobs/executor.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

// MPI as foldfarm starts it (MpiRuntime::ensure: thread level checked, errors returned to
// FF_MPI_CHECK, finalised at exit), so that the pilot runs here as it does in the program.
class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { dist::MpiRuntime::ensure(); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

std::string broadcastString(std::string s) {
  int n = static_cast<int>(s.size());
  MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
  s.resize(n);
  MPI_Bcast(s.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD);
  return s;
}

// Rank 0 creates the campaign of `spec` in a scratch directory; every rank then runs the
// pilot on it. Returns the campaign directory and the summary (meaningful on rank 0).
std::pair<std::string, RunSummary> runPilotCampaign(const json& spec, const std::string& name) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir;
  if (rank == 0) {
    std::string scratch = makeScratchDir(name);
    dir = scratch + "/c";
    Campaign::init(parseCampaignSpec(spec, "spec", scratch), dir);
  }
  dir = broadcastString(dir);
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  return {dir, runMpi(dir, opt)};
}

TEST(MpiExecutor, CompletesACampaignAndSurvivesACrashingTask) {
  registerTestTaskKinds();
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ASSERT_EQ(size, 3) << "run under mpirun -np 3";
  const json spec{{"name", "mpi"},
                  {"task", "crash"},
                  {"replicas", 10},
                  {"params", {{"crash", false}}},
                  {"overrides", {{"r0003m0", {{"crash", true}}}, {"r0007m0", {{"crash", true}}}}},
                  {"executor", "mpi"},
                  {"retry", {{"max_attempts", 2}}},
                  {"resources", {{"cpu_slots", 1}}}};
  const auto [dir, s] = runPilotCampaign(spec, "mpi");
  if (rank == 0) {
    EXPECT_FALSE(s.interrupted);
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 10);
    std::set<int> slots;
    {
      SqliteDb db(dir + "/journal.sqlite", false);
      SqliteStatement st(db, "SELECT DISTINCT slot FROM events WHERE to_state='running'");
      while (st.step()) slots.insert(static_cast<int>(st.columnInt(0)));
    }
    for (const auto& t : c.tasks()) {
      EXPECT_EQ(t.ingested, 1) << t.id;
      EXPECT_FALSE(t.host.empty()) << t.id;
      if (t.id == "r0003m0" || t.id == "r0007m0") {
        EXPECT_EQ(t.failures, 1) << t.id << " crashed once";
      } else {
        EXPECT_EQ(t.failures, 0) << t.id;
      }
    }
    EXPECT_EQ(slots, (std::set<int>{0, 1})) << "both worker ranks were given tasks";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// `campaign retry D --cancelled --executor mpi` on every rank: rank 0 moves the cancelled
// tasks back to pending once it holds the journal, and the pilot runs them. (Every rank
// once opened the journal itself to move them: one rank lost the race for its lock and the
// job aborted, with the tasks moved and none run.)
TEST(MpiExecutor, RetryOnEveryRankMovesTheTasksOnceAndRunsThem) {
  registerTestTaskKinds();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir;
  if (rank == 0) {
    dir = makeScratchDir("mpi_retry") + "/c";
    const json spec{{"name", "mpi-retry"}, {"task", "sleep"},
                    {"replicas", 4},       {"params", {{"seconds", 0.0}}},
                    {"executor", "mpi"},   {"resources", {{"cpu_slots", 1}}}};
    Campaign::init(parseCampaignSpec(spec, "spec", dir + "/.."), dir);
    Campaign c = Campaign::open(dir, Campaign::Access::kWriter);
    EXPECT_EQ(c.cancel("test"), 4);
  }
  dir = broadcastString(dir);
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  EXPECT_EQ(retryCommand(dir, "mpi", opt, /*failed=*/false, /*cancelled=*/true), 0);
  if (rank == 0) {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 4);
    int moved = 0;
    c.journal().forEachEvent([&](const CampaignJournal::Event& e) {
      moved += e.from == TaskState::kCancelled && e.to == TaskState::kPending;
    });
    EXPECT_EQ(moved, 4) << "each cancelled task moved back once";
    for (const auto& t : c.tasks()) EXPECT_EQ(t.attemptsSinceRetry(), 1) << t.id;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// `campaign retry D --tasks-file F --executor mpi` on every rank: rank 0 alone reads F and
// moves the tasks it names (done ones: their outputs set aside), once, and the pilot runs them
// again. (Every rank once read F and moved them, racing for the journal; under mpirun a rank
// other than 0 has no standard input, so `--tasks-file -` refused the retry there.)
TEST(MpiExecutor, ARetryOfAListOfTasksIsPreparedOnceByRankZero) {
  registerTestTaskKinds();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir;
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  if (rank == 0) {
    dir = makeScratchDir("mpi_retry_list") + "/c";
    const json spec{
        {"name", "mpi-retry-list"},     {"task", "sleep"},   {"replicas", 4},
        {"params", {{"seconds", 0.0}}}, {"executor", "mpi"}, {"resources", {{"cpu_slots", 1}}}};
    Campaign::init(parseCampaignSpec(spec, "spec", dir + "/.."), dir);
    std::ofstream(dir + "/../again.txt") << "# two of them\nr0001m0\nr0003m0\n";
  }
  dir = broadcastString(dir);
  EXPECT_EQ(runCommand(dir, "mpi", opt), 0);
  EXPECT_EQ(retryCommand(dir, "mpi", opt, /*failed=*/false, /*cancelled=*/false, {},
                         dir + "/../again.txt"),
            0);
  if (rank == 0) {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 4);
    std::map<int, int> moved;  // task index -> done -> pending moves
    c.journal().forEachEvent([&](const CampaignJournal::Event& e) {
      if (e.from == TaskState::kDone && e.to == TaskState::kPending) ++moved[e.task];
    });
    EXPECT_EQ(moved, (std::map<int, int>{{1, 1}, {3, 1}}));  // r0001m0, r0003m0
    for (const auto& t : c.tasks())
      EXPECT_EQ(t.attempts, t.id == "r0001m0" || t.id == "r0003m0" ? 2 : 1) << t.id;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// A cancel request addressed to the pilot (`campaign cancel` from a login node, here written
// by a thread of rank 0 once two tasks are done): rank 0 stops the worker ranks' tasks,
// cancels every unfinished task, removes the request (no cancel waits for it here), and
// every rank returns. The first two tasks end at once; the others wait for a file `go`, made
// only if the pilot still runs 30 s after the request (so that one that ignores it ends, and
// the test fails rather than hangs): the request lands with 28 tasks unfinished however slow
// the machine, and none of them can end before the pilot acts on it.
TEST(MpiExecutor, ACancelRequestEndsThePilotWithTheRestCancelled) {
  registerTestTaskKinds();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir;
  if (rank == 0) {
    dir = makeScratchDir("mpi_cancel") + "/c";
    const std::string go = dir + "/../go";
    json spec = gatedCommandTasks(go, 30);
    spec.update({{"name", "mpi-cancel"}, {"executor", "mpi"}, {"resources", {{"cpu_slots", 1}}}});
    Campaign::init(parseCampaignSpec(spec, "spec", dir + "/.."), dir);
  }
  dir = broadcastString(dir);
  std::thread asker;
  std::atomic<bool> ended{false};
  if (rank == 0) {
    asker = std::thread([dir, &ended] {
      int mismatched = 0;
      for (int i = 0; i < 600 && countResultFiles(dir + "/tasks", mismatched) < 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      writeCancelRequest(dir, CancelRequest{orchestratorIdentity(), "a test", wallClockNow()});
      for (int i = 0; i < 600 && !ended; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (!ended) std::ofstream(dir + "/../go").close();
    });
  }
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  const RunSummary s = runMpi(dir, opt);
  if (rank == 0) {
    ended = true;
    asker.join();
    EXPECT_FALSE(std::filesystem::exists(dir + "/../go")) << "the pilot did not stop";
    EXPECT_TRUE(s.cancelled);
    EXPECT_FALSE(s.interrupted);
    EXPECT_FALSE(std::filesystem::exists(dir + "/cancel.request")) << "answered by the pilot";
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    auto counts = c.counts();
    EXPECT_EQ(counts[TaskState::kDone], 2) << "only the tasks that ended at once";
    EXPECT_EQ(counts[TaskState::kCancelled], 28);
    EXPECT_EQ(s.tasks_cancelled, counts[TaskState::kCancelled]);
    for (const auto& t : c.tasks()) EXPECT_EQ(t.failures, 0) << t.id;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// The journal deleted while the pilot runs: the records of its end went into a file that is no
// longer the campaign's, so `campaign run` ends with the error that names repair and resume,
// not "done" (as a local run does), and every rank finalises MPI as after any run. Deleted once
// two tasks are done (the first two, which end at once); the others wait for a file `go`,
// made only after the journal is gone, so the pilot cannot end before it, however slow the
// machine.
TEST(MpiExecutor, AJournalThatIsNoLongerThereWhenThePilotEndsIsAnErrorNotDone) {
  registerTestTaskKinds();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir;
  if (rank == 0) {
    dir = makeScratchDir("mpi_journal_gone") + "/c";
    const std::string go = dir + "/../go";
    json spec = gatedCommandTasks(go, 8);
    spec.update(
        {{"name", "mpi-journal-gone"}, {"executor", "mpi"}, {"resources", {{"cpu_slots", 1}}}});
    Campaign::init(parseCampaignSpec(spec, "spec", dir + "/.."), dir);
  }
  dir = broadcastString(dir);
  std::thread remover;
  if (rank == 0) {
    remover = std::thread([dir] {
      int mismatched = 0;
      for (int i = 0; i < 600 && countResultFiles(dir + "/tasks", mismatched) < 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      for (const char* suffix : {"", "-wal", "-shm", "-journal"})
        std::filesystem::remove(dir + "/journal.sqlite" + suffix);
      std::ofstream(dir + "/../go").close();  // only now may the other tasks end
    });
  }
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  if (rank == 0) {
    try {
      runCommand(dir, "mpi", opt);
      ADD_FAILURE() << "the pilot said done with its journal deleted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(dir + "/journal.sqlite: the journal this run recorded in is no longer "
                               "there"),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("campaign repair"), std::string::npos) << msg;
    }
    remover.join();
  } else {
    EXPECT_EQ(runCommand(dir, "mpi", opt), 0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// An input replaced since `campaign init`: every rank of the pilot refuses with the same one
// line (rank 0 checks, the others hear it: no rank left waiting in a collective) and no task
// runs; restored as it was, the pilot runs the campaign.
TEST(MpiExecutor, EveryRankRefusesAnInputChangedSinceInit) {
  registerTestTaskKinds();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string scratch;
  if (rank == 0) scratch = makeScratchDir("mpi_inputs");
  scratch = broadcastString(scratch);
  const std::string dir = scratch + "/c", mc = scratch + "/mc.h5";
  std::filesystem::file_time_type was;
  if (rank == 0) {
    writeText(mc, "simulation");
    was = std::filesystem::last_write_time(mc);
    const json spec{{"name", "mpi-inputs"},           {"task", "sleep"},        {"replicas", 4},
                    {"params", {{"seconds", 0.0}}},   {"inputs", {{"mc", mc}}}, {"executor", "mpi"},
                    {"resources", {{"cpu_slots", 1}}}};
    Campaign::init(parseCampaignSpec(spec, "spec", scratch), dir);
    writeText(mc, "simulation v2");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  std::string refused;
  try {
    runMpi(dir, opt);
  } catch (const InputError& e) {
    refused = e.what();
  }
  EXPECT_NE(refused.find(mc + " changed since `campaign init` (10 bytes"), std::string::npos)
      << "rank " << rank << ": " << refused;
  EXPECT_EQ(broadcastString(refused), refused) << "the ranks refused alike";
  if (rank == 0) {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kPending], 4);
    writeText(mc, "simulation");
    std::filesystem::last_write_time(mc, was);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  runMpi(dir, opt);
  if (rank == 0) {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 4);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// The pilot honours the task graph: a variation's task starts only after the nominal task
// it needs is done.
TEST(MpiExecutor, DispatchesOnlyTasksWhoseNeedsAreDone) {
  registerTestTaskKinds();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const json spec{{"name", "mpi-graph"},
                  {"task", "sleep"},
                  {"replicas", 6},
                  {"params", {{"seconds", 0.05}}},
                  {"variations", {{"v", {{"replicas", 6}, {"params", {{"seconds", 0.0}}}}}}},
                  {"executor", "mpi"},
                  {"resources", {{"cpu_slots", 1}}}};
  const std::string dir = runPilotCampaign(spec, "mpi_graph").first;
  if (rank == 0) {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 12);
    std::map<int, double> done_at, started_at;
    c.journal().forEachEvent([&](const CampaignJournal::Event& e) {
      if (e.to == TaskState::kDone) done_at[e.task] = e.at;
      if (e.from == TaskState::kPending && e.to == TaskState::kRunning && !started_at.count(e.task))
        started_at[e.task] = e.at;
    });
    const TaskGraph g = c.journal().graph();
    EXPECT_EQ(g.edges(), 6u);
    for (int i = 6; i < 12; ++i) {
      ASSERT_EQ(g.needs(i), std::vector<int>{i - 6});
      EXPECT_GE(started_at[i], done_at[i - 6]) << c.spec().taskPosition(i).id;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace foldfarm::jobs
