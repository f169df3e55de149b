#include "jobs/cancel_request.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/stop_signal.hpp"
#include "core/base/text.hpp"
#include "jobs/campaign.hpp"

namespace foldfarm::jobs {
namespace {

using Clock = std::chrono::steady_clock;

double monotonicNow() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

std::string requestPath(const std::string& dir) {
  return dir + "/" + kCancelRequestFile;
}

std::string userName() {
  if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_name) return pw->pw_name;
  return "uid " + std::to_string(::geteuid());
}

bool requestPresent(const std::string& dir) {
  return ::access(requestPath(dir).c_str(), F_OK) == 0;
}

// The unfinished tasks of D as the journal says now (a read-only look).
StateCounts countsNow(const std::string& dir) {
  return Campaign::open(dir, Campaign::Access::kReadOnly).counts();
}

int unfinished(const StateCounts& counts) {
  int n = 0;
  for (TaskState s : {TaskState::kPending, TaskState::kRunning, TaskState::kInterrupted}) {
    auto it = counts.find(s);
    if (it != counts.end()) n += it->second;
  }
  return n;
}

}  // namespace

std::string orchestratorIdentity() {
  return hostName() + " pid " + std::to_string(::getpid());
}

void writeCancelRequest(const std::string& dir, const CancelRequest& request) {
  const nlohmann::json j{{"run", request.run}, {"by", request.by}, {"at", request.at}};
  writeFileAtomic(requestPath(dir), j.dump() + "\n");
}

std::optional<CancelRequest> readCancelRequest(const std::string& dir) {
  const std::string path = requestPath(dir);
  std::string text;
  try {
    text = readFile(path);
  } catch (const Error&) {
    if (!requestPresent(dir)) return std::nullopt;
    throw;
  }
  CancelRequest r;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.value("run", nlohmann::json()).is_string()) {
    r.run = j["run"].get<std::string>();
    if (j.value("by", nlohmann::json()).is_string()) r.by = j["by"].get<std::string>();
    if (j.value("at", nlohmann::json()).is_number()) r.at = j["at"].get<double>();
  } else {
    r.run = "(no run: " + path + " is not a request `foldfarm campaign cancel` wrote)";
  }
  return r;
}

void removeCancelRequest(const std::string& dir) {
  const std::string path = requestPath(dir);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return;
    throw Error(path + ": cannot remove: " + errnoMessage(errno));
  }
  fsyncPath(dir);
}

CancelWatch::CancelWatch(std::string dir, double interval_s)
    : dir_(std::move(dir)), self_(orchestratorIdentity()), interval_s_(interval_s) {}

std::optional<CancelRequest> CancelWatch::poll(bool now_anyway) {
  const double now = monotonicNow();
  if (now < next_at_ && !now_anyway) return std::nullopt;
  next_at_ = now + interval_s_;
  if (!requestPresent(dir_)) return std::nullopt;
  std::optional<CancelRequest> r;
  try {
    r = readCancelRequest(dir_);
  } catch (const Error& e) {
    logWarn("{}", e.what());  // unreadable for now: looked at again next time
    return std::nullopt;
  }
  // "": `campaign cancel` could not read who holds the lock; the holder is this process.
  if (!r || r->run.empty() || r->run == self_) return r;
  logWarn(
      "{}: a cancel request ({}{}) asked another run ({}), which ended before it read it; "
      "removed: nothing was cancelled (`foldfarm campaign cancel {}` cancels this run)",
      requestPath(dir_), r->by.empty() ? "" : "by " + r->by,
      r->at > 0 ? " at " + formatUtcTime(r->at) : "", r->run, shellWord(dir_));
  removeCancelRequest(dir_);
  return std::nullopt;
}

void CancelWatch::done() {
  removeCancelRequest(dir_);
}

CancelOutcome cancelCampaign(const std::string& dir, double wait_s,
                             const std::function<int(Campaign&)>& cancel_here) {
  if (!(wait_s >= 0) || !std::isfinite(wait_s))
    throw InputError("campaign cancel " + dir + ": --wait must be 0 or more seconds");
  CancelOutcome out;
  // Ctrl-C while waiting ends the wait, not the request (said by the caller).
  installStopHandlers();
  const double deadline = monotonicNow() + wait_s;
  double next_note = monotonicNow() + 15;
  for (;;) {
    // 1.
    try {
      Campaign c = Campaign::open(dir, Campaign::Access::kWriter);
      out.cancelled_here += cancel_here(c);
      removeCancelRequest(c.dir());  // answered, whoever it asked
      out.counts = c.counts();
      return out;
    } catch (const CampaignBusy& busy) {
      // 2. Asked once per holder, and again when the request went without the tasks being
      // cancelled (removed by hand).
      if (busy.holder() != out.run || !requestPresent(dir)) {
        writeCancelRequest(
            dir, CancelRequest{busy.holder(), userName() + " on " + orchestratorIdentity(),
                               wallClockNow()});
        out.run = busy.holder();
        logInfo(
            "{}: asked the run that orchestrates it ({}) to cancel ({}/{}): it stops its running "
            "tasks (they keep their state) and cancels every unfinished task",
            dir, out.run.empty() ? "its holder" : out.run, dir, kCancelRequestFile);
      }
      if (wait_s <= 0) {
        out.asked_only = true;
        out.counts = countsNow(dir);
        return out;
      }
    }
    // 4. Watching.
    const double look_again = monotonicNow() + 1.0;
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (monotonicNow() < look_again && requestPresent(dir) && !stopRequested());
    // The journal read once a round (a read-only open).
    const bool present = requestPresent(dir);
    out.counts = countsNow(dir);
    if (stopRequested() && present) {
      out.stopped_waiting = true;
      return out;
    }
    // Gone with nothing unfinished: the run cancelled (or finished) every task; it is ending.
    if (!present && unfinished(out.counts) == 0) return out;
    if (monotonicNow() >= deadline) {
      out.timed_out = true;
      return out;
    }
    if (monotonicNow() >= next_note) {
      logInfo("{}: waiting for the run ({}) to stop its tasks and cancel; {} task(s) unfinished",
              dir, out.run, unfinished(out.counts));
      next_note = monotonicNow() + 15;
    }
  }
}

}  // namespace foldfarm::jobs
