// The mpi executor under `mpirun -np 3`: rank 0 dispatches, ranks 1 and 2 run the tasks
// in their worker processes; a segfaulting task costs one attempt and the campaign ends
// with every task done.
#include <gtest/gtest.h>
#include <mpi.h>

#include "jobs/campaign.hpp"
#include "jobs/executor.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  }
  void TearDown() override { MPI_Finalize(); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

std::string broadcastString(std::string s) {
  int n = static_cast<int>(s.size());
  MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
  s.resize(n);
  MPI_Bcast(s.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD);
  return s;
}

TEST(MpiExecutor, CompletesACampaignAndSurvivesACrashingTask) {
  registerTestTaskKinds();
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ASSERT_EQ(size, 3) << "run under mpirun -np 3";
  std::string dir;
  if (rank == 0) {
    std::string scratch = makeScratchDir("mpi");
    dir = scratch + "/c";
    json spec{{"name", "mpi"},
              {"task", "crash"},
              {"replicas", 10},
              {"params", {{"crash", false}}},
              {"overrides", {{"r0003m0", {{"crash", true}}}, {"r0007m0", {{"crash", true}}}}},
              {"executor", "mpi"},
              {"retry", {{"max_attempts", 2}}},
              {"resources", {{"cpu_slots", 1}}}};
    Campaign::init(parseCampaignSpec(spec, "spec", scratch), dir);
  }
  dir = broadcastString(dir);
  RunOptions opt;
  opt.worker_argv = {FF_JOBS_TOOL, "worker"};
  opt.show_progress = false;
  opt.heartbeat_s = 0.2;
  RunSummary s = runMpi(dir, opt);
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

}  // namespace
}  // namespace foldfarm::jobs
