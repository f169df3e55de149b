#include "core/mpi/mpi_runtime.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "core/base/exit_codes.hpp"
#include "core/base/log.hpp"
#include "core/mpi/check.hpp"

namespace foldfarm::dist {
namespace {

std::atomic<bool> g_aborted{false};
std::atomic<int> g_abort_code{kExitPeerLost};
std::once_flag g_init_once;
bool g_we_initialized = false;

// Never destroyed: finalizeAtExit runs after the static objects made since MPI_Init are gone.
std::vector<std::function<void()>>& finalizeHooks() {
  static auto* hooks = new std::vector<std::function<void()>>();
  return *hooks;
}

void finalizeAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || !g_we_initialized) return;
  if (g_aborted.load()) {
    // A peer is gone: MPI_Finalize would wait for it. End the job through the launcher so
    // that mpirun/srun exit with kExitPeerLost too (under mpirun --enable-recovery a plain
    // exit would leave mpirun's status 0). The grace period lets the other survivors,
    // whose deadlines pass at about the same time, print their own report first.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    MpiRuntime::abortJob(g_abort_code.load());
  }
  auto& hooks = finalizeHooks();
  for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) (*it)();
  hooks.clear();
  MPI_Finalize();
}

}  // namespace

void MpiRuntime::ensure() {
  std::call_once(g_init_once, [] {
    int already = 0;
    FF_MPI_CHECK(MPI_Initialized(&already));
    int provided = 0;
    if (already) {
      // Initialised by someone else (a host program, a test): the same checks and error
      // handler as our own initialisation, its finalisation left to it.
      FF_MPI_CHECK(MPI_Query_thread(&provided));
    } else {
      FF_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
      g_we_initialized = true;
      std::atexit(finalizeAtExit);
    }
    if (provided < MPI_THREAD_SERIALIZED) {
      throwCallError("MPI", "MPI_Init_thread", __FILE__, __LINE__,
                     "the MPI library provides thread level " + std::to_string(provided) +
                         " but foldfarm needs at least MPI_THREAD_SERIALIZED");
    }
    FF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  });
}

bool MpiRuntime::initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

void MpiRuntime::markAborted(int exit_code) noexcept {
  bool expected = false;
  if (g_aborted.compare_exchange_strong(expected, true)) g_abort_code.store(exit_code);
}
bool MpiRuntime::aborted() noexcept {
  return g_aborted.load();
}

void MpiRuntime::beforeFinalize(std::function<void()> hook) {
  finalizeHooks().push_back(std::move(hook));
}

void MpiRuntime::abortJob(int code, double watchdog_s) noexcept {
  try {
    std::thread([code, watchdog_s] {
      std::this_thread::sleep_for(std::chrono::duration<double>(watchdog_s));
      std::fprintf(stderr, "foldfarm: MPI_Abort did not end the job within %g s; exiting %d\n",
                   watchdog_s, code);
      std::_Exit(code);
    }).detach();
  } catch (...) {
    // No thread: MPI_Abort alone.
  }
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort returned (it should not)
}

MpiComm MpiComm::duplicate(MPI_Comm parent, const std::string& name) {
  MpiComm c;
  FF_MPI_CHECK(MPI_Comm_dup(parent, &c.comm_));
  FF_MPI_CHECK(MPI_Comm_set_errhandler(c.comm_, MPI_ERRORS_RETURN));
  FF_MPI_CHECK(MPI_Comm_rank(c.comm_, &c.rank_));
  FF_MPI_CHECK(MPI_Comm_size(c.comm_, &c.size_));
  c.name_ = name;
  return c;
}

MpiComm MpiComm::splitShared(MPI_Comm parent, int key, const std::string& name) {
  MpiComm c;
  FF_MPI_CHECK(MPI_Comm_split_type(parent, MPI_COMM_TYPE_SHARED, key, MPI_INFO_NULL, &c.comm_));
  FF_MPI_CHECK(MPI_Comm_set_errhandler(c.comm_, MPI_ERRORS_RETURN));
  FF_MPI_CHECK(MPI_Comm_rank(c.comm_, &c.rank_));
  FF_MPI_CHECK(MPI_Comm_size(c.comm_, &c.size_));
  c.name_ = name;
  return c;
}

MpiComm::MpiComm(MpiComm&& o) noexcept
    : comm_(o.comm_), rank_(o.rank_), size_(o.size_), name_(std::move(o.name_)) {
  o.comm_ = MPI_COMM_NULL;
}

MpiComm& MpiComm::operator=(MpiComm&& o) noexcept {
  if (this != &o) {
    release();
    comm_ = o.comm_;
    rank_ = o.rank_;
    size_ = o.size_;
    name_ = std::move(o.name_);
    o.comm_ = MPI_COMM_NULL;
  }
  return *this;
}

MpiComm::~MpiComm() {
  release();
}

void MpiComm::release() noexcept {
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && !MpiRuntime::aborted()) {
    const int rc = MPI_Comm_free(&comm_);
    if (rc != MPI_SUCCESS) {
      logWarn("MPI_Comm_free of communicator '{}' failed: {}", name_, mpiErrorString(rc));
    }
  }
  comm_ = MPI_COMM_NULL;
}

}  // namespace foldfarm::dist
