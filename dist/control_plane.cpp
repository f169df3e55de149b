#include "dist/control_plane.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <thread>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/mpi/check.hpp"

namespace foldfarm::dist {
namespace {

constexpr int kArrivalTag = 7301;
constexpr int kDepartureTag = 7302;
constexpr int kHostChars = 64;

}  // namespace

std::mutex& mpiLock() {
  static std::mutex m;
  return m;
}

struct ControlPlane::Departures {
  MpiComm comm;
  std::vector<Departure> in;  // one posted receive per peer
  std::vector<MPI_Request> in_req;
  std::vector<Departure> got;      // what each peer sent (after < 0: nothing yet)
  std::unique_ptr<Departure> out;  // this rank's, once sent
  std::vector<MPI_Request> out_req;

  explicit Departures(MpiComm c) : comm(std::move(c)) {
    const auto n = static_cast<size_t>(comm.size());
    in.assign(n, Departure{});
    in_req.assign(n, MPI_REQUEST_NULL);
    Departure none;
    none.after = -1;
    got.assign(n, none);
    for (int r = 0; r < comm.size(); ++r) {
      if (r == comm.rank()) continue;
      FF_MPI_CHECK(MPI_Irecv(&in[r], static_cast<int>(sizeof(Departure)), MPI_BYTE, r,
                             kDepartureTag, comm.get(), &in_req[r]));
    }
  }

  // Records what has arrived and moves this rank's sends on; true once this rank's departure
  // has left (or none was sent). Caller serialises MPI calls.
  bool poll() {
    for (int r = 0; r < comm.size(); ++r) {
      if (in_req[r] == MPI_REQUEST_NULL) continue;
      int flag = 0;
      if (MPI_Test(&in_req[r], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
        got[r] = in[r];
        got[r].why[sizeof(Departure::why) - 1] = '\0';
      }
    }
    int done = 1;
    if (!out_req.empty() && MPI_Testall(static_cast<int>(out_req.size()), out_req.data(), &done,
                                        MPI_STATUSES_IGNORE) != MPI_SUCCESS)
      return true;  // nothing more to wait for
    return done != 0;
  }

  // Sends this rank's departure to every peer (once). Caller serialises MPI calls.
  void send(std::int64_t after, int exit_code, const std::string& why) {
    if (out) return;
    out = std::make_unique<Departure>();
    out->after = after;
    out->exit_code = exit_code;
    std::strncpy(out->why, why.c_str(), sizeof(Departure::why) - 1);
    out_req.assign(static_cast<size_t>(comm.size()), MPI_REQUEST_NULL);
    for (int r = 0; r < comm.size(); ++r) {
      if (r == comm.rank()) continue;
      if (MPI_Isend(out.get(), static_cast<int>(sizeof(Departure)), MPI_BYTE, r, kDepartureTag,
                    comm.get(), &out_req[r]) != MPI_SUCCESS)
        logWarn("cannot tell rank {} that this rank ends", r);
    }
  }

  bool everyPeerDeparted() const {
    for (int r = 0; r < comm.size(); ++r)
      if (r != comm.rank() && got[r].after < 0) return false;
    return true;
  }

  // Step 6, at exit before MPI_Finalize (no other thread calls MPI then): waits until every
  // peer has departed, at most `timeout_s`, then releases the requests.
  void awaitEveryPeer(double timeout_s) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    auto nap = std::chrono::microseconds(100);
    for (poll(); !everyPeerDeparted(); poll()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        std::string who;
        for (int r = 0; r < comm.size(); ++r)
          if (r != comm.rank() && got[r].after < 0)
            who += (who.empty() ? "" : ", ") + std::to_string(r);
        logWarn("rank(s) {} did not end within {:g} s of this rank; finalising MPI all the same",
                who, timeout_s);
        break;
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(10000));
    }
    for (MPI_Request& req : in_req) {
      if (req != MPI_REQUEST_NULL) {
        MPI_Cancel(&req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
      }
    }
    bool sending = false;
    for (MPI_Request& req : out_req) {
      if (req != MPI_REQUEST_NULL) {
        sending = true;
        MPI_Request_free(&req);
      }
    }
    if (sending) out.release();  // MPI may read it until the send ends
  }
};

ControlPlane::ControlPlane(double timeout_s) : timeout_s_(timeout_s) {
  if (!(timeout_s > 0)) throw InputError("collective timeout must be > 0 seconds");
  MpiRuntime::ensure();
  std::lock_guard<std::mutex> lock(mpiLock());
  comm_ = MpiComm::duplicate(MPI_COMM_WORLD, "control");
  heartbeat_ = MpiComm::duplicate(MPI_COMM_WORLD, "arrivals");
  const int n = comm_.size();
  setErrorRank(comm_.rank());

  // Host names, so that errors can say where a lost rank ran. Blocking: nothing can be
  // late yet at start-up except a rank that never started, which mpirun reports itself.
  char mine[kHostChars] = {};
  std::strncpy(mine, hostName().c_str(), kHostChars - 1);
  std::vector<char> all(static_cast<size_t>(kHostChars) * static_cast<size_t>(n));
  FF_MPI_CHECK(
      MPI_Allgather(mine, kHostChars, MPI_CHAR, all.data(), kHostChars, MPI_CHAR, comm_.get()));
  for (int r = 0; r < n; ++r) hosts_.emplace_back(&all[static_cast<size_t>(r) * kHostChars]);

  last_seen_.assign(static_cast<size_t>(n), 0);
  recv_buf_.assign(static_cast<size_t>(n), 0);
  recv_req_.assign(static_cast<size_t>(n), MPI_REQUEST_NULL);
  send_buf_.assign(static_cast<size_t>(n), 0);
  send_req_.assign(static_cast<size_t>(n), MPI_REQUEST_NULL);
  send_pending_.assign(static_cast<size_t>(n), 0);
  for (int r = 0; r < n; ++r) {
    if (r == comm_.rank()) continue;
    FF_MPI_CHECK(
        MPI_Irecv(&recv_buf_[r], 1, MPI_INT64_T, r, kArrivalTag, heartbeat_.get(), &recv_req_[r]));
  }
  departures_ = std::make_shared<Departures>(MpiComm::duplicate(MPI_COMM_WORLD, "departures"));
}

ControlPlane::~ControlPlane() {
  if (MpiRuntime::aborted()) {
    // Requests may involve the lost peer: leave them, with the buffers they may still write
    // into until the job's MPI_Abort (a moved vector keeps its storage).
    (void)new std::vector<std::int64_t>(std::move(recv_buf_));
    (void)new std::shared_ptr<Departures>(departures_);
    return;
  }
  std::lock_guard<std::mutex> lock(mpiLock());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // Arrival messages still unmatched are harmless: cancel our receives, drop our sends.
  for (size_t r = 0; r < recv_req_.size(); ++r) {
    if (recv_req_[r] != MPI_REQUEST_NULL) {
      MPI_Cancel(&recv_req_[r]);
      MPI_Wait(&recv_req_[r], MPI_STATUS_IGNORE);
    }
    if (send_req_[r] != MPI_REQUEST_NULL) MPI_Request_free(&send_req_[r]);
  }
  // Step 6: this rank departs (if it has not left with an error already: with an error when
  // one is unwinding the stack, its exit code unknown here), and waits for the others'
  // departures before MPI is finalised.
  if (comm_.size() < 2) return;
  if (std::uncaught_exceptions() > 0)
    departures_->send(finished_.load(), kExitFailure, "(not told; see that rank's output)");
  else
    departures_->send(finished_.load(), 0, "");
  MpiRuntime::beforeFinalize([d = departures_, timeout_s = timeout_s_] {
    if (!MpiRuntime::aborted()) d->awaitEveryPeer(timeout_s);
  });
}

void ControlPlane::pollArrivalsLocked() {
  departures_->poll();  // step 5
  const int me = comm_.rank();
  for (int r = 0; r < comm_.size(); ++r) {
    if (r == me) continue;
    // Receives: record and re-post until nothing more has arrived.
    for (;;) {
      if (recv_req_[r] == MPI_REQUEST_NULL) break;
      int flag = 0;
      if (MPI_Test(&recv_req_[r], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag) break;
      last_seen_[r] = std::max(last_seen_[r], recv_buf_[r]);
      FF_MPI_CHECK(MPI_Irecv(&recv_buf_[r], 1, MPI_INT64_T, r, kArrivalTag, heartbeat_.get(),
                             &recv_req_[r]));
    }
    // Sends: one in flight per peer, always the newest number.
    if (send_req_[r] != MPI_REQUEST_NULL) {
      int flag = 0;
      if (MPI_Test(&send_req_[r], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag) continue;
    }
    if (send_pending_[r] > send_buf_[r]) {
      send_buf_[r] = send_pending_[r];
      FF_MPI_CHECK(MPI_Isend(&send_buf_[r], 1, MPI_INT64_T, r, kArrivalTag, heartbeat_.get(),
                             &send_req_[r]));
    }
  }
}

void ControlPlane::announce(const std::string& what) {
  std::lock_guard<std::mutex> lock(mpiLock());
  ++epoch_;
  current_ = what;
  std::fill(send_pending_.begin(), send_pending_.end(), epoch_);
  pollArrivalsLocked();
}

std::vector<int> ControlPlane::lateRanks() {
  std::lock_guard<std::mutex> lock(mpiLock());
  pollArrivalsLocked();
  std::vector<int> late;
  for (int r = 0; r < comm_.size(); ++r) {
    if (r != comm_.rank() && last_seen_[r] < epoch_) late.push_back(r);
  }
  return late;
}

void ControlPlane::failLate(const std::string& reason) {
  MpiRuntime::markAborted();
  std::vector<int> late = lateRanks();
  std::string who;
  for (int r : late) {
    if (!who.empty()) who += ", ";
    who += "rank " + std::to_string(r) + " (" + hosts_[r] + ", last at collective #" +
           std::to_string(last_seen_[r]) + ")";
  }
  std::string msg = "rank " + std::to_string(comm_.rank()) + " (" + hosts_[comm_.rank()] +
                    "): collective #" + std::to_string(epoch_) + " (" + current_ + ") " + reason +
                    "; ";
  if (late.empty()) {
    // Reached, not finished: a rank stopped inside it (SIGSTOP, a swap storm, a hung GPU
    // kernel) looks the same as a stalled network from here.
    msg +=
        "every rank reached it and it did not finish: a rank stalled inside it (stopped, "
        "swapping, a hung GPU) or the transport stalled or failed";
  } else {
    msg += "late or lost: " + who;
  }
  // Not every job has saved a state by then (the first epoch): said as a condition.
  msg +=
      ". Check those ranks' logs and node health; then run again (a training that saved a "
      "state: with --resume)";
  throw PeerLostError(msg);
}

int ControlPlane::departedBeforeLocked() const {
  for (int r = 0; r < comm_.size(); ++r) {
    const Departure& d = departures_->got[r];
    if (d.after >= 0 && d.after < epoch_) return r;
  }
  return -1;
}

void ControlPlane::failDeparted(int peer, const std::function<void()>& on_timeout) {
  Departure d;
  bool lowest = true;  // the lowest rank still running, as far as this rank knows
  {
    std::lock_guard<std::mutex> lock(mpiLock());
    d = departures_->got[peer];
    for (int r = 0; r < comm_.rank(); ++r) lowest = lowest && departures_->got[r].after >= 0;
  }
  const int code = d.exit_code != 0 ? static_cast<int>(d.exit_code) : kExitFailure;
  MpiRuntime::markAborted(code);  // first: the data plane's abort marks it with its own code
  if (on_timeout) on_timeout();
  const std::string ended =
      d.exit_code != 0 ? fmt::format("ended with exit {}", d.exit_code) : "ended without an error";
  const std::string after =
      d.after > 0 ? "after collective #" + std::to_string(d.after) : "before its first collective";
  std::string msg = fmt::format(
      "rank {} ({}) {} {}, so collective #{} ({}) cannot finish and "
      "every rank ends",
      peer, hosts_[peer], ended, after, epoch_, current_);
  if (d.exit_code != 0) msg += std::string("; its error: ") + d.why;
  // One line for the job, from the lowest rank still running; the others log it.
  if (!lowest) {
    logInfo("{}", msg);
    throw ReportedByAnotherRank(code);
  }
  throw Error(fmt::format("rank {} ({}): {}", comm_.rank(), hosts_[comm_.rank()], msg), code);
}

void ControlPlane::leave(int exit_code, const std::string& why, double flush_s) noexcept {
  if (comm_.size() < 2 || departures_->out || MpiRuntime::aborted()) return;
  try {
    std::unique_lock<std::mutex> lock(mpiLock());
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    departures_->send(finished_.load(), exit_code != 0 ? exit_code : kExitFailure, why);
    // Eager messages of this size leave at once; the wait drives MPI's progress meanwhile.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(flush_s);
    while (!departures_->poll() && std::chrono::steady_clock::now() < deadline) {
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lock.lock();
    }
  } catch (const std::exception& e) {
    logWarn("cannot tell the other ranks that this rank ends: {}", e.what());
  }
}

void ControlPlane::waitUntil(const std::function<bool()>& done,
                             const std::function<void()>& on_timeout) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s_);
  auto next_poll = start;
  for (long spins = 0;; ++spins) {
    bool finished = false;
    try {
      finished = done();
    } catch (const Error& e) {
      if (on_timeout) on_timeout();
      failLate(std::string("failed: ") + e.what());
    }
    if (finished) {
      finished_.store(epoch_);
      return;
    }
    const auto now = Clock::now();
    if (now >= next_poll) {
      int departed = -1;
      {
        std::lock_guard<std::mutex> lock(mpiLock());
        pollArrivalsLocked();
        departed = departedBeforeLocked();
      }
      if (departed >= 0) failDeparted(departed, on_timeout);
      next_poll = now + std::chrono::milliseconds(1);
    }
    if (now >= deadline) {
      if (on_timeout) on_timeout();
      char buf[64];
      std::snprintf(buf, sizeof buf, "did not finish within %.3g s", timeout_s_);
      failLate(buf);
    }
    // Spin briefly (bucket reductions finish in microseconds to milliseconds), then back
    // off so that a waiting rank does not steal a core from computing ones.
    if (spins > 2000)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    else
      std::this_thread::yield();
  }
}

void ControlPlane::allreduce(std::vector<double>& values, MPI_Op op, const char* what) {
  announce(what);
  MPI_Request req = MPI_REQUEST_NULL;
  {
    std::lock_guard<std::mutex> lock(mpiLock());
    FF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()),
                                MPI_DOUBLE, op, comm_.get(), &req));
  }
  waitUntil([&] {
    std::lock_guard<std::mutex> lock(mpiLock());
    int flag = 0;
    FF_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    return flag != 0;
  });
}

void ControlPlane::allreduceSum(std::vector<double>& values) {
  allreduce(values, MPI_SUM, "sum of metrics");
}

void ControlPlane::allreduceMax(std::vector<double>& values) {
  allreduce(values, MPI_MAX, "max of values");
}

unsigned ControlPlane::anyOf(unsigned local) {
  std::vector<double> v(8);
  for (size_t b = 0; b < v.size(); ++b) v[b] = (local >> b) & 1u;
  allreduce(v, MPI_MAX, "stop agreement");
  unsigned any = 0;
  for (size_t b = 0; b < v.size(); ++b)
    if (v[b] > 0.0) any |= 1u << b;
  return any;
}

void ControlPlane::barrier() {
  announce("barrier");
  MPI_Request req = MPI_REQUEST_NULL;
  {
    std::lock_guard<std::mutex> lock(mpiLock());
    FF_MPI_CHECK(MPI_Ibarrier(comm_.get(), &req));
  }
  waitUntil([&] {
    std::lock_guard<std::mutex> lock(mpiLock());
    int flag = 0;
    FF_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    return flag != 0;
  });
}

std::vector<std::uint64_t> ControlPlane::allgather(std::uint64_t value) {
  announce("allgather");
  std::vector<std::uint64_t> out(static_cast<size_t>(comm_.size()));
  MPI_Request req = MPI_REQUEST_NULL;
  {
    std::lock_guard<std::mutex> lock(mpiLock());
    FF_MPI_CHECK(
        MPI_Iallgather(&value, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_.get(), &req));
  }
  waitUntil([&] {
    std::lock_guard<std::mutex> lock(mpiLock());
    int flag = 0;
    FF_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    return flag != 0;
  });
  return out;
}

void ControlPlane::broadcastBytes(void* data, int bytes, int root) {
  announce("broadcast from rank " + std::to_string(root));
  MPI_Request req = MPI_REQUEST_NULL;
  {
    std::lock_guard<std::mutex> lock(mpiLock());
    FF_MPI_CHECK(MPI_Ibcast(data, bytes, MPI_BYTE, root, comm_.get(), &req));
  }
  waitUntil([&] {
    std::lock_guard<std::mutex> lock(mpiLock());
    int flag = 0;
    FF_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    return flag != 0;
  });
}

}  // namespace foldfarm::dist
