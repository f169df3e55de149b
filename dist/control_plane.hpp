#pragma once
// The MPI control plane of a data-parallel job: small collectives (metrics, stop agreement,
// barriers, hash comparison), the deadline every collective is waited on, and the arrival
// record that names the late or lost ranks when a deadline passes.
//
// Arrival protocol (why survivors can say WHO is missing):
//   1. Every collective that foldfarm starts - on this plane or on the data plane - is
//      numbered; all ranks start the same collectives in the same order, so the numbers
//      agree (collective #k is the same operation everywhere).
//   2. Before starting collective #k a rank calls announce(k's description): it sends k
//      (8 bytes, non-blocking) to every peer on a dedicated communicator.
//   3. Each rank keeps one receive posted per peer and records the highest number that
//      peer announced (pollArrivals(), called while waiting).
//   4. waitUntil() polls the collective; past the deadline, the ranks whose record is
//      below k have not reached collective #k: they are late, hung or dead. The error
//      names them (rank and host); when every rank has arrived it says the transport
//      stalled instead. The data plane is aborted and MPI_Finalize is skipped.
//   5. A rank that ends with an error calls leave(exit code, message): it sends every peer a
//      departure (the number of the last collective it finished, its exit code and message),
//      on a communicator of departures, where each rank keeps one receive posted per peer.
//      A rank waiting for collective #k that has a departure whose number is below k knows
//      that collective can never finish: it does not wait for the deadline but ends at once
//      as in step 4, with the departed rank's exit code, and the lowest such rank says why
//      (the departed rank, its host, its message). Ranks that end together after the same
//      collective (an error every rank meets, a stop they agreed on) wait for nothing more:
//      their departures change nothing.
//   6. Every rank departs: one that ends without an error sends a departure with exit code 0
//      when its plane is destroyed. Before MPI_Finalize (MpiRuntime::beforeFinalize) a rank
//      waits, polling, until every peer's departure has arrived (at most the collective
//      timeout). So no rank enters MPI_Finalize while another may still end the job with
//      MPI_Abort (a rank that failed because of a departure, step 5): Open MPI's launcher
//      can crash or hang when a job is aborted while a rank waits in MPI_Finalize. The rank
//      that left with an error is ended by that abort while it polls.
// Cost: worldSize()-1 eager 8-byte messages per collective per rank; one departure per rank.
//
// Thread-safety: every method may be called from any thread (MPI calls are serialised by
// mpiLock()); the collectives themselves must be started in the same order on all ranks.
#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/mpi/mpi_runtime.hpp"

namespace foldfarm::dist {

// Serialises every MPI call foldfarm makes (MPI_THREAD_SERIALIZED is enough).
std::mutex& mpiLock();

class ControlPlane {
 public:
  // (collective over MPI_COMM_WORLD) Initialises MPI if needed. timeout_s > 0.
  explicit ControlPlane(double timeout_s);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  int rank() const { return comm_.rank(); }
  int worldSize() const { return comm_.size(); }
  double timeoutSeconds() const { return timeout_s_; }
  const std::string& hostOf(int rank) const { return hosts_.at(static_cast<size_t>(rank)); }

  // Step 2 of the protocol: numbers the next collective and tells the peers we reached it.
  void announce(const std::string& what);
  std::int64_t collectiveNumber() const { return epoch_; }
  // Polls `done` (which must not block) until it returns true. Past the deadline: calls
  // `on_timeout` (abort the data plane), marks MPI aborted and throws PeerLostError naming
  // the ranks that have not announced the current collective. Throws Error when `done`
  // throws (a library failure), adding the same names.
  void waitUntil(const std::function<bool()>& done, const std::function<void()>& on_timeout = {});
  // The ranks that have not announced the current collective ("rank 1 (node2), ...").
  std::vector<int> lateRanks();
  // Step 5: tells every peer that this rank ends with `exit_code` because of `why` (its error
  // line), and waits up to `flush_s` seconds for the messages to leave. Once only, and not
  // after this rank gave up a collective (step 4: the others give up on theirs too).
  void leave(int exit_code, const std::string& why, double flush_s = 2.0) noexcept;

  // (collective) Element-wise sum / max over ranks, in place.
  void allreduceSum(std::vector<double>& values);
  void allreduceMax(std::vector<double>& values);
  // The bitwise OR of every rank's low 8 bits of `local` (the stop and save agreement).
  unsigned anyOf(unsigned local);
  void barrier();
  // (collective) Every rank's value, indexed by rank.
  std::vector<std::uint64_t> allgather(std::uint64_t value);
  // (collective) Copies `bytes` bytes from `root` into `data` on every rank.
  void broadcastBytes(void* data, int bytes, int root);

 private:
  // A peer's departure (step 5), as sent: fixed size, the message cut to fit.
  struct Departure {
    std::int64_t after = 0;  // the last collective the peer finished
    std::int64_t exit_code = 0;
    char why[496] = {};
  };
  // Steps 5 and 6: the departures sent and received, on a communicator of their own; kept
  // after the plane until MPI is finalised (step 6).
  struct Departures;

  void pollArrivalsLocked();
  void allreduce(std::vector<double>& values, MPI_Op op, const char* what);
  [[noreturn]] void failLate(const std::string& reason);
  // Step 5: the first peer that left before the current collective, or -1.
  int departedBeforeLocked() const;
  // Ends this rank because `peer` left: calls `on_timeout`, marks MPI aborted with the peer's
  // exit code and throws (Error naming the peer on the lowest rank still running, else
  // ReportedByAnotherRank).
  [[noreturn]] void failDeparted(int peer, const std::function<void()>& on_timeout);

  double timeout_s_;
  MpiComm comm_;
  MpiComm heartbeat_;
  std::vector<std::string> hosts_;
  std::int64_t epoch_ = 0;
  std::atomic<std::int64_t> finished_{0};  // the last collective waitUntil saw finish
  std::string current_;
  std::vector<std::int64_t> last_seen_;
  std::vector<std::int64_t> recv_buf_;
  std::vector<MPI_Request> recv_req_;
  // Per peer: the number in flight (one send at a time) and the newest one to send; only
  // the newest matters, so a slow peer never makes sends pile up.
  std::vector<std::int64_t> send_buf_;
  std::vector<MPI_Request> send_req_;
  std::vector<std::int64_t> send_pending_;
  std::shared_ptr<Departures> departures_;
};

}  // namespace foldfarm::dist
