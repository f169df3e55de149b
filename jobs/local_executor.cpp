#include "jobs/local_executor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/spawn.hpp"
#include "core/base/stop_signal.hpp"

namespace foldfarm::jobs {

LocalWorkerPool::LocalWorkerPool(std::vector<std::string> worker_argv,
                                 std::vector<SlotBinding> bindings, int max_restarts)
    : argv_(std::move(worker_argv)),
      bindings_(std::move(bindings)),
      max_restarts_(max_restarts),
      host_(hostName()),
      workers_(bindings_.size()) {
  for (int s = 0; s < slots(); ++s) start(s);
}

LocalWorkerPool::~LocalWorkerPool() {
  // ChildProcess destructors kill and reap whatever is still running.
}

void LocalWorkerPool::start(int slot) {
  Worker& w = workers_[slot];
  w.process = ChildProcess::spawn(argv_, bindings_[slot].env);
  w.reader = FrameReader();
  const int flags = ::fcntl(w.process.stdoutFd(), F_GETFL);
  FF_CHECK_SYS(flags, "worker pipe");
  FF_CHECK_SYS(::fcntl(w.process.stdoutFd(), F_SETFL, flags | O_NONBLOCK), "worker pipe");
  logDebug("slot {}: worker pid {} started", slot, w.process.pid());
}

void LocalWorkerPool::send(int slot, const std::vector<Assignment>& batch) {
  std::string frames;
  for (const auto& a : batch) appendFrame(frames, a.frame_payload);
  sendRaw(slot, frames);
}

void LocalWorkerPool::sendRaw(int slot, const std::string& frames) {
  Worker& w = workers_[slot];
  if (w.process.stdinFd() < 0) return;
  // A dead worker shows up as end of input on its stdout; wait() reports it.
  if (!writeAll(w.process.stdinFd(), frames)) w.process.closeStdin();
}

void LocalWorkerPool::readAvailable(int slot, std::vector<SlotEvent>& events) {
  Worker& w = workers_[slot];
  char buf[65536];
  bool eof = false;
  for (;;) {
    ssize_t r = ::read(w.process.stdoutFd(), buf, sizeof(buf));
    if (r > 0) {
      w.reader.feed(buf, static_cast<size_t>(r));
      continue;
    }
    if (r == 0) {
      eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    throwSystemError("read", __FILE__, __LINE__, "worker of slot " + std::to_string(slot));
  }
  std::string payload;
  while (w.reader.next(payload)) {
    auto m = nlohmann::json::parse(payload, nullptr, false);
    std::string type = m.is_discarded() ? "" : m.value("t", "");
    if (type == "start") {
      SlotEvent ev;
      ev.kind = SlotEvent::Kind::kStarted;
      ev.slot = slot;
      ev.completion.index = m.at("i").get<int>();
      ev.completion.attempt = m.at("a").get<int>();
      events.push_back(std::move(ev));
      continue;
    }
    if (type != "done") {
      logWarn("slot {}: ignoring a malformed message from the worker", slot);
      continue;
    }
    SlotEvent ev;
    ev.kind = SlotEvent::Kind::kDone;
    ev.slot = slot;
    ev.worker_exits = m.value(kWorkerExitsKey, false);
    ev.completion = completionFromDoneMessage(m);
    events.push_back(std::move(ev));
  }
  if (!eof) return;
  const pid_t pid = w.process.pid();
  int status = w.process.wait();
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  // Reported even when it ended as asked (stopping, exit 0): a worker that a stop signal
  // reached ends after the task it stopped, and the tasks queued behind it, never started,
  // go back to pending through this event.
  SlotEvent ev;
  ev.kind = SlotEvent::Kind::kLost;
  ev.slot = slot;
  ev.reason = "worker (pid " + std::to_string(pid) + ") exited: " + describeWaitStatus(status);
  ev.blame_running_task = !stopping_;
  events.push_back(std::move(ev));
  if (stopping_ && clean) {
    w.usable = false;
    return;
  }
  if (stopping_) {
    w.usable = false;
  } else if (w.restarts >= max_restarts_) {
    w.usable = false;
    logError("slot {}: worker died {} times; slot disabled", slot, w.restarts + 1);
  } else {
    ++w.restarts;
    start(slot);
  }
}

void LocalWorkerPool::wait(double timeout_s, std::vector<SlotEvent>& events) {
  std::vector<pollfd> fds;
  std::vector<int> slot_of;
  for (int s = 0; s < slots(); ++s) {
    if (!workers_[s].process.running()) continue;
    fds.push_back({workers_[s].process.stdoutFd(), POLLIN, 0});
    slot_of.push_back(s);
  }
  if (fds.empty()) {
    if (timeout_s > 0) ::usleep(static_cast<useconds_t>(std::min(timeout_s, 0.05) * 1e6));
    return;
  }
  int ms = static_cast<int>(std::ceil(timeout_s * 1000.0));
  int n = ::poll(fds.data(), fds.size(), ms);
  if (n < 0) {
    if (errno == EINTR) return;
    throwSystemError("poll", __FILE__, __LINE__, "worker pipes");
  }
  for (size_t k = 0; k < fds.size(); ++k) {
    if (fds[k].revents) readAvailable(slot_of[k], events);
  }
}

void LocalWorkerPool::requestStop() {
  stopping_ = true;
  for (auto& w : workers_) {
    w.process.signal(SIGTERM);
    w.process.closeStdin();
  }
}

void LocalWorkerPool::forceStop() {
  stopping_ = true;
  for (auto& w : workers_) w.process.signal(SIGKILL);
}

void LocalWorkerPool::shutdown() {
  stopping_ = true;
  for (auto& w : workers_) w.process.closeStdin();
  for (auto& w : workers_) {
    if (w.process.running()) w.process.wait();
  }
}

RunSummary runLocal(Campaign& campaign, const RunOptions& options) {
  const CampaignSpec& spec = campaign.spec();
  checkResourcesOnThisNode(spec, campaign.dir() + "/spec.json");
  requireCampaignInputs(spec, campaign.dir() + "/spec.json");
  if (options.slots < 0 || options.slots > kMaxSlotsPerNode)
    throw InputError("--slots must be 0 (the spec's) to " + std::to_string(kMaxSlotsPerNode) +
                     " (task slots of one node), not " + std::to_string(options.slots));
  int nslots = options.slots > 0 ? options.slots : spec.slotsPerNode();
  std::vector<std::string> argv = options.worker_argv;
  if (argv.empty()) argv = {selfExecutable(), "worker"};
  // A worker that died leaves a pipe without a reader: its write fails with EPIPE (sendRaw),
  // instead of ending this process.
  if (::signal(SIGPIPE, SIG_IGN) == SIG_ERR)
    throwSystemError("signal", __FILE__, __LINE__, "ignoring SIGPIPE");
  installStopHandlers();
  int requeued = campaign.recoverAfterCrash();
  if (requeued > 0) logInfo("{} task(s) left running by an earlier run were requeued", requeued);
  const int retried = campaign.retry(options.retry);
  if (!options.retry.empty()) logInfo("{} task(s) back to pending for the retry", retried);
  if (const StateCounts counts = campaign.counts(); counts.at(TaskState::kPending) == 0) {
    // Nothing to run (every task done, failed or cancelled): no worker is started.
    RunSummary summary;
    summary.counts = counts;
    summary.slots = nslots;
    return summary;
  }
  // No more workers than tasks that can still run: each worker is a process (a LibTorch one
  // for chains) started before the first task.
  const int pending = campaign.counts().at(TaskState::kPending);
  if (nslots > pending) {
    logInfo("campaign {}: {} slot(s) asked for, {} task(s) to run: starting {} worker(s)",
            spec.name, nslots, pending, pending);
    nslots = pending;
  }
  const unsigned cores = std::thread::hardware_concurrency();
  const int threads = std::max(1, spec.resources.threads_per_task);
  if (spec.resources.gpus == 0 && cores > 0 &&
      static_cast<long>(nslots) * threads > static_cast<long>(cores))
    logWarn(
        "campaign {}: {} slot(s) x {} thread(s) per task on {} core(s): the tasks will share the "
        "cores (and the memory); fewer --slots (or resources.cpu_slots) run them as fast",
        spec.name, nslots, threads, cores);
  logInfo("campaign {}: {} slot(s) on {}, {} task(s)", spec.name, nslots, hostName(),
          spec.numTasks());
  LocalWorkerPool pool(argv, slotBindings(spec.resources, nslots), options.max_worker_restarts);
  RunSummary summary = dispatch(campaign, pool, options);
  summary.retried = retried;
  return summary;
}

}  // namespace foldfarm::jobs
