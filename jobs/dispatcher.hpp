#pragma once
// The dispatcher loop shared by the executors (executor.hpp), written against a Transport
// that reaches the slots: a pool of local worker processes, or MPI ranks.
#include <string>
#include <vector>

#include "jobs/campaign.hpp"
#include "jobs/executor.hpp"

namespace foldfarm::jobs {

struct Assignment {
  int index = 0;
  int attempt = 0;
  std::string frame_payload;  // the "run" message (worker_protocol.hpp)
};

struct SlotEvent {
  // kStarted: the worker began a task (sent for kinds with a task directory, whose
  // completions may still be on their way when a worker dies: the lost event is then
  // blamed on the task that was really running, not on the oldest one in flight).
  enum class Kind { kDone, kLost, kStarted };
  Kind kind = Kind::kDone;
  int slot = 0;
  Completion completion;  // kDone: index, attempt, status, reason, times, result
  // kLost: why; whether the first task in flight on the slot caused it (a worker that
  // died while running it) and counts as a failed attempt; the slot's later tasks are
  // requeued without blame.
  std::string reason;
  bool blame_running_task = true;
  // kDone: the worker ends after this report (its watchdog gave up on a task that did not
  // stop): the kLost that follows blames no task.
  bool worker_exits = false;
};

// Thread-safety: every method is called from the dispatcher's thread only. Errors: Error
// (a failed system or MPI call) ends the run; a slot that cannot be reached is reported by
// wait() as kLost, never thrown.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual int slots() const = 0;
  virtual bool usable(int slot) const = 0;
  virtual std::string host(int slot) const = 0;
  // Sends assignments to a slot, in order. A slot whose worker is gone reports kLost later.
  virtual void send(int slot, const std::vector<Assignment>& batch) = 0;
  // Waits up to timeout_s for events; appends everything available.
  virtual void wait(double timeout_s, std::vector<SlotEvent>& events) = 0;
  // Asks every worker to stop its task (interrupted) and to answer the rest unstarted.
  virtual void requestStop() = 0;
  // Ends workers that did not stop in time; their in-flight tasks are reported lost.
  virtual void forceStop() = 0;
  // Normal end: no more work; workers exit.
  virtual void shutdown() = 0;
};

// Runs the campaign's pending tasks through `transport` until none is left or a stop is
// requested.
RunSummary dispatch(Campaign& campaign, Transport& transport, const RunOptions& options);

std::string runMessage(const Campaign& campaign, const TaskDef& def, int attempt, int slot);

}  // namespace foldfarm::jobs
