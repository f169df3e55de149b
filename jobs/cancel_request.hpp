#pragma once
// `campaign cancel D` while a run orchestrates D (a local run, an MPI pilot's rank 0, a Slurm
// watch): the journal has one writer, so the cancel asks it, through a file.
//
//   D/cancel.request   {"run": "<host> pid <pid>", "by": "<user> on <host> pid <pid>",
//                       "at": <epoch s>}, written atomically by `campaign cancel`; "run" is
//                       the line the run wrote into D/orchestrator.lock (the run it asks)
//
// Protocol:
//   1. `campaign cancel` opens D as the journal's writer. If it can, it cancels every
//      unfinished task itself (and removes a request no run read). Done.
//   2. Refused (Campaign::open throws CampaignBusy, naming the holder): it writes the request
//      addressed to that holder, then (unless told not to wait) watches.
//   3. The run polls the file (CancelWatch::poll, twice a second, a stat). A request addressed
//      to it: it sends no new task, stops the running ones as a stop signal does (they keep
//      their state), cancels every unfinished task in one journal transaction, and only then
//      removes the file (CancelWatch::done). A request addressed to another process (a run
//      that ended before it read it) is removed, with a warning: it asked a run that is gone.
//   4. `campaign cancel`, watching, goes back to 1 once the file is gone or the lock is free:
//      it cancels what is still unfinished itself when it can, is done when nothing is left,
//      and asks the new holder when another run took the campaign meanwhile.
// A killed run leaves the file (no task was cancelled, or the journal says so already): the
// next `campaign cancel` or run settles it as above.
#include <functional>
#include <optional>
#include <string>

#include "jobs/journal.hpp"

namespace foldfarm::jobs {

inline constexpr const char* kCancelRequestFile = "cancel.request";

struct CancelRequest {
  std::string run;  // the orchestrator asked ("node7 pid 4242")
  std::string by;   // who asked ("alice on login1 pid 77")
  double at = 0;    // when (epoch s)
};

// Writes D/cancel.request atomically (temp file, fsync, rename).
void writeCancelRequest(const std::string& dir, const CancelRequest& request);
// D/cancel.request; nullopt when there is none. A file that is no request (damaged, written
// by hand) reads as a request addressed to no run.
std::optional<CancelRequest> readCancelRequest(const std::string& dir);
// Removes D/cancel.request (durably); no error when it is gone.
void removeCancelRequest(const std::string& dir);

// "node7 pid 4242": how this process names itself in D/orchestrator.lock while it holds it,
// and how a cancel request names the run it asks.
std::string orchestratorIdentity();

// An orchestrator's view of D/cancel.request (step 3 above): poll() looks at the file at most
// every `interval_s`, returns a request addressed to this process, and removes (logging) one
// addressed to another. Once the cancel is in the journal, done() removes the request.
class CancelWatch {
 public:
  explicit CancelWatch(std::string dir, double interval_s = 0.5);
  // `now`: whatever the interval (a run that stops for a signal looks once more at its end).
  std::optional<CancelRequest> poll(bool now = false);
  void done();

 private:
  std::string dir_;
  std::string self_;
  double interval_s_;
  double next_at_ = 0;  // monotonic seconds
};

// What `campaign cancel D` did (cancelCampaign below).
struct CancelOutcome {
  int cancelled_here = 0;        // tasks this process cancelled (it held the journal)
  std::string run;               // the run that was asked ("" when none was)
  bool asked_only = false;       // the request was written and not waited for (wait_s = 0)
  bool timed_out = false;        // the run did not act on it within wait_s (the request stands)
  bool stopped_waiting = false;  // SIGINT/SIGTERM while waiting (the request stands)
  StateCounts counts;            // the journal's counts at the end
};

// `campaign cancel D` by the protocol above. `cancel_here` cancels the unfinished tasks of
// the campaign opened as writer and returns how many (the local journal's cancel, or with
// Slurm jobs the journal and scancel). wait_s: how long to wait for a run that was asked
// (0: ask and return). Messages while waiting go to the log.
class Campaign;
CancelOutcome cancelCampaign(const std::string& dir, double wait_s,
                             const std::function<int(Campaign&)>& cancel_here);

}  // namespace foldfarm::jobs
