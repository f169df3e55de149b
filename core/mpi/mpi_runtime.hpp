#pragma once
// MPI process lifetime and communicator ownership.
//
// MpiRuntime::ensure() initialises MPI once per process (MPI_THREAD_MULTIPLE requested; at
// least MPI_THREAD_SERIALIZED required: where several threads of a process may call MPI, the
// data-parallel trainer's and the control plane's, every call is made under mpiLock(); the
// MPI pilot calls it from one thread only) and
// finalises it at process exit, unless a collective was abandoned (markAborted()): then
// MPI_Finalize would wait for the lost peer forever, so the process ends the job with
// MPI_Abort(exit code given to markAborted, kExitPeerLost by default) instead (abortJob),
// after a one-second grace period for other survivors.
#include <mpi.h>

#include <functional>
#include <string>

#include "core/base/exit_codes.hpp"

namespace foldfarm::dist {

class MpiRuntime {
 public:
  // Initialises MPI if nobody has; safe to call repeatedly, from any thread. Where someone
  // else initialised it, checks the thread level and installs MPI_ERRORS_RETURN all the same
  // (its finalisation is left to them). Throws Error when MPI fails or provides a thread
  // level below MPI_THREAD_SERIALIZED.
  static void ensure();
  static bool initialized();
  // A collective was given up on: skip MPI_Finalize at exit and end the job with
  // MPI_Abort(`exit_code`) (the first code given wins: the reason the job ends).
  static void markAborted(int exit_code = kExitPeerLost) noexcept;
  static bool aborted() noexcept;
  // Runs `hook` at exit just before MPI_Finalize (the last registered first), unless the job
  // is aborted. For what must happen on every rank before any rank waits in MPI_Finalize
  // (dist/control_plane.hpp, step 6). Hooks must not throw.
  static void beforeFinalize(std::function<void()> hook);
  // Ends the whole job with exit status `code` through MPI_Abort. MPI_Abort itself can block
  // (it first sends its help text to the launcher, then waits for the launcher's answer): a
  // watchdog ends this process with `code` after `watchdog_s` seconds, and the launcher, which
  // sees a rank leave without MPI_Finalize, ends the others. Never returns.
  [[noreturn]] static void abortJob(int code, double watchdog_s = 15.0) noexcept;
};

// Move-only owner of one MPI communicator (a duplicate of MPI_COMM_WORLD by default), with
// MPI_ERRORS_RETURN installed so that failures reach FF_MPI_CHECK instead of aborting the
// job. The destructor frees it (logging, never throwing); after an abort it leaks it on
// purpose, since freeing may block on the lost peer.
class MpiComm {
 public:
  MpiComm() = default;
  // (collective over `parent`) Duplicates `parent`.
  static MpiComm duplicate(MPI_Comm parent, const std::string& name);
  // (collective over `parent`) The ranks of `parent` that share this rank's node
  // (MPI_COMM_TYPE_SHARED), ordered by `key`.
  static MpiComm splitShared(MPI_Comm parent, int key, const std::string& name);
  MpiComm(MpiComm&& o) noexcept;
  MpiComm& operator=(MpiComm&& o) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  ~MpiComm();

  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  void release() noexcept;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
};

}  // namespace foldfarm::dist
