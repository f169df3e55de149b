// The worker process: runs tasks in-process, one at a time, for the orchestrator (local
// executor) or for an MPI pilot rank. See worker_protocol.hpp for the messages.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/fd.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "jobs/executor.hpp"
#include "jobs/task_execution.hpp"
#include "jobs/task_kind.hpp"
#include "jobs/worker_protocol.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Sends frames to the orchestrator; shared by the task loop and the time-limit watchdog.
class Reply {
 public:
  explicit Reply(int fd) : fd_(fd) {}
  bool send(const json& msg) {
    std::string frame;
    appendFrame(frame, msg.dump());
    std::lock_guard<std::mutex> lock(mutex_);
    return writeAll(fd_, frame);
  }

 private:
  int fd_;
  std::mutex mutex_;
};

json doneMessage(int index, int attempt, int status, const std::string& reason, double t0,
                 double t1, const json& result, bool counts_as_failure = true) {
  Completion c;
  c.index = index;
  c.attempt = attempt;
  c.status = status;
  c.reason = reason;
  c.started_at = t0;
  c.finished_at = t1;
  c.result = result;
  c.counts_as_failure = counts_as_failure;
  return doneMessageOf(c);
}

// Writes task_result.json files and then reports their attempts, on its own thread, so that a
// result's fsyncs overlap the next task instead of delaying it. An attempt is reported
// only after its file is durable.
class ResultWriter {
 public:
  explicit ResultWriter(Reply& reply) : reply_(reply), thread_([this] { loop(); }) {}
  ~ResultWriter() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void push(std::string path, TaskResult r, json done, TaskLease lease) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back({std::move(path), std::move(r), std::move(done), std::move(lease)});
    }
    cv_.notify_all();
  }

 private:
  struct Item {
    std::string path;
    TaskResult result;
    json done;
    TaskLease lease;  // released once the result is durable
  };
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;  // quit_ and drained
      Item item = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      try {
        item.lease.requireStillHeld(item.result.task_id);
        writeTaskResult(item.path, item.result);
      } catch (const std::exception& e) {
        item.done["s"] = 1;
        item.done["r"] = std::string("could not write the result: ") + e.what();
        item.done.erase("res");
      }
      item.lease.release();
      faultPoint("worker.result_durable", item.result.task_id);
      reply_.send(item.done);
      lock.lock();
    }
  }

  Reply& reply_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool quit_ = false;
  std::thread thread_;
};

// Enforces the per-task time limit of in-process tasks: at the limit it asks the task to
// stop (the stop flag); if the task has not returned after a grace period, it reports the
// attempt as failed itself and ends the process (the orchestrator starts a fresh worker).
class Watchdog {
 public:
  explicit Watchdog(Reply& reply) : reply_(reply), thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void arm(int index, int attempt, double limit_s) {
    std::lock_guard<std::mutex> lock(mutex_);
    index_ = index;
    attempt_ = attempt;
    armed_ = limit_s > 0;
    fired_ = false;
    started_wall_ = wallClockNow();
    limit_s_ = limit_s;
    if (armed_)
      deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(limit_s));
    cv_.notify_all();
  }
  // Disarms; true when the limit fired during the task.
  bool disarm() {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
    return fired_;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!quit_) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      if (!fired_) {
        if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && armed_ && !fired_ &&
            Clock::now() >= deadline_) {
          fired_ = true;
          requestStop(0);
          deadline_ = Clock::now() + std::chrono::seconds(10);
        }
        continue;
      }
      if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && armed_ && fired_ &&
          Clock::now() >= deadline_) {
        json done = doneMessage(index_, attempt_, 1,
                                "time limit of " + fmt::format("{:g}", limit_s_) +
                                    " s exceeded and the task did not stop; worker restarted",
                                started_wall_, wallClockNow(), json());
        // The worker ends after this report and starts no other task: its end is no task's
        // fault (the report has failed this one), nor that of a task queued behind it.
        done[kWorkerExitsKey] = true;
        reply_.send(done);
        ::_exit(1);
      }
    }
  }

  Reply& reply_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool quit_ = false;
  bool armed_ = false;
  bool fired_ = false;
  int index_ = 0;
  int attempt_ = 0;
  double limit_s_ = 0;
  double started_wall_ = 0;
  Clock::time_point deadline_;
  std::thread thread_;
};

}  // namespace

int runWorker(int in_fd, int out_fd) {
  installStopHandlers();
  // Held since it was started (kSignalsHeldEnv): a stop that came meanwhile stops it now. The
  // tasks it starts start as usual.
  ::unsetenv(kSignalsHeldEnv);
  releaseHeldSignals();
  ::signal(SIGPIPE, SIG_IGN);
  Reply reply(out_fd);
  Watchdog watchdog(reply);
  ResultWriter writer(reply);
  FrameReader reader;
  std::string payload;
  while (readFrameBlocking(in_fd, reader, payload)) {
    json m = json::parse(payload);
    if (m.at("t") != "run") continue;
    int index = m.at("i").get<int>();
    int attempt = m.at("a").get<int>();
    if (stopRequested() && stopSignal() != 0) {
      // A SIGTERM/SIGINT reached this worker while it was idle: the task was not started, which
      // costs it nothing (not a failure, not one of its own interruptions), and the worker
      // ends (the orchestrator starts another unless it is stopping too).
      double now = wallClockNow();
      json done = doneMessage(index, attempt, kExitInterrupted, "not started: worker stopping", now,
                              now, json(), /*counts_as_failure=*/false);
      done[kWorkerExitsKey] = true;
      reply.send(done);
      break;
    }
    TaskExecution e;
    e.index = index;
    e.kind = m.at("k").get<std::string>();
    e.params = std::move(m.at("p"));
    e.task_id = m.at("id").get<std::string>();
    e.task_dir = m.at("d").get<std::string>();
    e.attempt = attempt;
    e.slot = m.value("s", -1);
    e.write_result_file = false;
    double limit = m.value("l", 0.0);
    e.lease.wait_s = m.value("lw", e.lease.wait_s);
    if (m.contains("ir")) e.inputs_at_init = std::move(m["ir"]);
    if (hasTaskKind(e.kind) && taskKindTraits(e.kind).needs_directory) {
      if (!reply.send(json{{"t", "start"}, {"i", index}, {"a", attempt}})) break;
    }
    TaskResult r;
    TaskLease lease;
    watchdog.arm(index, attempt, limit);
    try {
      r = executeTask(e, lease);
    } catch (const std::exception& ex) {
      r.status = 1;
      r.reason = std::string("worker could not run the task: ") + ex.what();
      r.reason += taskFullDiskAdvice(r.reason);
      r.started_at = r.finished_at = wallClockNow();
    }
    if (watchdog.disarm()) {
      // The limit asked the task to stop. One that stopped with its state saved (75) made its
      // progress: one of its interruptions (retry.max_interruptions), its next attempt going
      // on (before: a failure, and max_attempts such attempts failed a task that advanced
      // each time). One that finished meanwhile is done; anything else failed.
      if (r.status == kExitInterrupted) {
        r.reason = "time limit of " + fmt::format("{:g}", limit) +
                   " s reached: stopped with its state saved";
      } else if (r.status != 0) {
        r.status = 1;
        r.reason = "time limit of " + fmt::format("{:g}", limit) + " s exceeded";
        r.result = json();
      }
      clearStopRequestUnlessSignalled();
    }
    json done = doneMessage(index, attempt, r.status, r.reason, r.started_at, r.finished_at,
                            r.status == 0 ? r.result : json(), r.counts_as_failure);
    // A SIGTERM/SIGINT that reached this worker (its whole group stopping, or a stray one):
    // the task saw it and stopped; the worker ends after this report rather than refuse every
    // task it is sent later. Its end is no task's fault.
    const bool leaving = stopSignal() != 0;
    if (leaving) done[kWorkerExitsKey] = true;
    if (resultFileWanted(e, r, lease)) {
      writer.push(e.task_dir + "/" + kTaskResultFile, std::move(r), std::move(done),
                  std::move(lease));
      if (leaving) break;  // the writer reports it before the worker returns
      continue;
    }
    lease.release();
    if (!reply.send(done)) break;  // the orchestrator is gone
    if (leaving) break;
  }
  return 0;
}

int workerMain() {
  // The protocol moves to private descriptors; fd 1 becomes a copy of stderr so that a
  // task writing to stdout cannot corrupt the frames.
  const Fd in(::fcntl(0, F_DUPFD_CLOEXEC, 3));
  const Fd out(::fcntl(1, F_DUPFD_CLOEXEC, 3));
  if (!in.valid() || !out.valid())
    throwSystemError("fcntl", __FILE__, __LINE__, "worker protocol fds");
  ::dup2(2, 1);
  if (Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC)); devnull.valid()) {
    ::dup2(devnull.get(), 0);
  }
  return runWorker(in.get(), out.get());
}

std::string selfExecutable() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n < 0) throwSystemError("readlink", __FILE__, __LINE__, "/proc/self/exe");
  buf[n] = 0;
  return buf;
}

}  // namespace foldfarm::jobs
