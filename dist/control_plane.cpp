#include "dist/control_plane.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
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
  departure_in_.assign(static_cast<size_t>(n), Departure{});
  departure_req_.assign(static_cast<size_t>(n), MPI_REQUEST_NULL);
  Departure none;
  none.after = -1;
  departed_.assign(static_cast<size_t>(n), none);
  for (int r = 0; r < n; ++r) {
    if (r == comm_.rank()) continue;
    FF_MPI_CHECK(
        MPI_Irecv(&recv_buf_[r], 1, MPI_INT64_T, r, kArrivalTag, heartbeat_.get(), &recv_req_[r]));
    FF_MPI_CHECK(MPI_Irecv(&departure_in_[r], static_cast<int>(sizeof(Departure)), MPI_BYTE, r,
                           kDepartureTag, heartbeat_.get(), &departure_req_[r]));
  }
}

ControlPlane::~ControlPlane() {
  if (MpiRuntime::aborted()) return;  // requests may involve the lost peer: leave them
  std::lock_guard<std::mutex> lock(mpiLock());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // Arrival messages still unmatched are harmless: cancel our receives, drop our sends.
  for (size_t r = 0; r < recv_req_.size(); ++r) {
    for (MPI_Request* req : {&recv_req_[r], &departure_req_[r]}) {
      if (*req != MPI_REQUEST_NULL) {
        MPI_Cancel(req);
        MPI_Wait(req, MPI_STATUS_IGNORE);
      }
    }
    if (send_req_[r] != MPI_REQUEST_NULL) MPI_Request_free(&send_req_[r]);
  }
  // A departure still being sent keeps its buffer: MPI may read it until the send ends.
  bool sending = false;
  for (MPI_Request& req : leaving_req_) {
    if (req != MPI_REQUEST_NULL) {
      sending = true;
      MPI_Request_free(&req);
    }
  }
  if (sending) leaving_.release();
}

void ControlPlane::pollArrivalsLocked() {
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
    // A departure (step 5): kept, and not received again.
    if (departure_req_[r] != MPI_REQUEST_NULL) {
      int flag = 0;
      if (MPI_Test(&departure_req_[r], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
        departed_[r] = departure_in_[r];
        departed_[r].why[sizeof(Departure::why) - 1] = '\0';
      }
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
    msg += "every rank reached it, so the transport itself stalled or failed";
  } else {
    msg += "late or lost: " + who;
  }
  msg += ". Check those ranks' logs and node health; resume from the last checkpoint";
  throw PeerLostError(msg);
}

int ControlPlane::departedBeforeLocked() const {
  for (int r = 0; r < comm_.size(); ++r) {
    if (departed_[r].after >= 0 && departed_[r].after < epoch_) return r;
  }
  return -1;
}

void ControlPlane::failDeparted(int peer, const std::function<void()>& on_timeout) {
  Departure d;
  bool lowest = true;  // the lowest rank still running, as far as this rank knows
  {
    std::lock_guard<std::mutex> lock(mpiLock());
    d = departed_[peer];
    for (int r = 0; r < comm_.rank(); ++r) lowest = lowest && departed_[r].after >= 0;
  }
  const int code = d.exit_code != 0 ? static_cast<int>(d.exit_code) : kExitFailure;
  MpiRuntime::markAborted(code);  // first: the data plane's abort marks it with its own code
  if (on_timeout) on_timeout();
  const std::string msg = fmt::format(
      "rank {} ({}) ended with exit {} {}, so collective #{} ({}) cannot finish and every rank "
      "ends; its error: {}",
      peer, hosts_[peer], code,
      d.after > 0 ? "after collective #" + std::to_string(d.after)
                  : std::string("before its first collective"),
      epoch_, current_, d.why);
  // One line for the job, from the lowest rank still running; the others log it.
  if (!lowest) {
    logInfo("{}", msg);
    throw ReportedByAnotherRank(code);
  }
  throw Error(fmt::format("rank {} ({}): {}", comm_.rank(), hosts_[comm_.rank()], msg), code);
}

void ControlPlane::leave(int exit_code, const std::string& why, double flush_s) noexcept {
  if (comm_.size() < 2 || leaving_ || MpiRuntime::aborted()) return;
  try {
    std::unique_lock<std::mutex> lock(mpiLock());
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    leaving_ = std::make_unique<Departure>();
    leaving_->after = finished_.load();
    leaving_->exit_code = exit_code != 0 ? exit_code : kExitFailure;
    std::strncpy(leaving_->why, why.c_str(), sizeof(Departure::why) - 1);
    leaving_req_.assign(static_cast<size_t>(comm_.size()), MPI_REQUEST_NULL);
    for (int r = 0; r < comm_.size(); ++r) {
      if (r == comm_.rank()) continue;
      const int rc = MPI_Isend(leaving_.get(), static_cast<int>(sizeof(Departure)), MPI_BYTE, r,
                               kDepartureTag, heartbeat_.get(), &leaving_req_[r]);
      if (rc != MPI_SUCCESS) logWarn("cannot tell rank {} that this rank ends", r);
    }
    // Eager messages of this size leave at once; the wait drives MPI's progress meanwhile.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(flush_s);
    for (;;) {
      int done = 0;
      if (MPI_Testall(static_cast<int>(leaving_req_.size()), leaving_req_.data(), &done,
                      MPI_STATUSES_IGNORE) != MPI_SUCCESS ||
          done || std::chrono::steady_clock::now() >= deadline)
        break;
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

bool ControlPlane::anyTrue(bool local) {
  std::vector<double> v{local ? 1.0 : 0.0};
  allreduce(v, MPI_MAX, "stop agreement");
  return v[0] > 0.0;
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
