// The MPI pilot (executor "mpi"): one allocation, launched by mpirun/srun.
//
// Protocol, rank 0 <-> worker rank r (payloads are worker-protocol frames, MPI_CHAR):
//   1. Every rank contributes its host name (MPI_Allgather): rank 0 journals host/slot, and
//      every rank refuses a pilot over several nodes whose file system locks per node.
//   2. rank 0 -> r, tag kTagTasks: "<generation>\n" then "run" frames (the dispatcher's
//      batch for slot r-1). r writes them to its local worker process (LocalWorkerPool,
//      one slot) when the generation (worker restarts reported so far) is current, and
//      drops a batch meant for a worker that has died since (rank 0 requeued its tasks).
//   3. r -> rank 0, tag kTagEvents: "done" frames as its worker answers; {"t":"died",
//      "reason", "blame"} when the worker process died (it is restarted, as locally);
//      {"t":"hb"} every heartbeat period. A rank silent for lost_after_s is lost: its tasks
//      go back to pending without counting as failures and it gets no more tasks. A rank
//      that ends with an error of its own sends {"t":"left", "reason"} first: rank 0 treats
//      it as lost at once, and says why, instead of waiting lost_after_s.
//   4. rank 0 -> r, tag kTagStop: stop the running task (interrupted) and answer the
//      queued ones unstarted. tag kTagExit: shut the worker down and return; its payload
//      "lost" says a rank is lost, and the worker then ends by MPI_Abort, not MPI_Finalize.
//      tag kTagPing (empty) every heartbeat period to every rank not fenced: a worker rank
//      that hears nothing from rank 0 for lost_after_s (4 lost_after_s before the first
//      message: rank 0 opens the journal first) takes rank 0 for lost: it stops its task (its
//      state saved), shuts its worker down and ends the job with PeerLostError (exit 3)
//      through MPI_Abort (before: under a launcher that keeps a job going when a rank dies,
//      Open MPI's recovery, the worker ranks waited for rank 0 forever).
//   5. On kTagExit a worker rank shuts its worker down, sends rank 0 a last frame {"t":"bye"}
//      (tag kTagEvents) and returns; rank 0's shutdown waits until every rank it did not
//      fence has said bye (at most lost_after_s), dropping the events that come before it
//      (a worker that ended as a stop asked): no message of a pilot outlives it, so a second
//      pilot in the same processes (tests run them so) never reads the first's as its own.
//   6. A lost rank is fenced: it is sent kTagStop with the payload "fenced" (in case it is
//      only slow) and gets no more tasks; a task it ran is retried elsewhere, where the task
//      lease keeps the two from overlapping. A fenced rank that hears it (stopped or stalled,
//      and running again) stops its task, shuts its worker down and leaves the pilot as a rank
//      that met an error of its own does (step 3), waiting for the job's end (before: it took
//      rank 0's silence towards it for rank 0's loss and aborted the whole pilot). A rank's
//      own stall (its loop did not turn for a second or more) is not counted as the others'
//      silence, on either side. When the campaign has run out of work, rank 0 names every lost
//      rank and ends the job with PeerLostError (exit 3) through MPI_Abort
//      (core/mpi/mpi_runtime.hpp): MPI_Finalize would wait for a lost rank forever, and the
//      abort also ends a rank that is alive but unreachable. `campaign resume` continues from
//      the journal.
// MPI is the one runtime of dist/ and jobs/ (core/mpi): MpiRuntime initialises and
// finalises it, FF_MPI_CHECK names the call, file:line, rank and host of a failure.
#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>

#include <signal.h>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <list>
#include <set>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "core/base/text.hpp"
#include "core/mpi/check.hpp"
#include "core/mpi/mpi_runtime.hpp"
#include "jobs/dispatcher.hpp"
#include "jobs/file_locks.hpp"
#include "jobs/local_executor.hpp"
#include "jobs/worker_protocol.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kTagTasks = 7101;
constexpr int kTagStop = 7102;
constexpr int kTagExit = 7103;
constexpr int kTagEvents = 7104;
constexpr int kTagPing = 7105;
// kTagStop's payload that fences a rank (step 6); a stop as asked (a signal, a cancel) is empty.
// A literal: the buffer of a send whose request is freed lives until the send completes.
constexpr char kFencedPayload[] = "fenced";

void sendBytes(MPI_Comm comm, const std::string& bytes, int dest, int tag) {
  FF_MPI_CHECK(MPI_Send(bytes.data(), static_cast<int>(bytes.size()), MPI_CHAR, dest, tag, comm));
}

// Receives the message announced by `st` (from MPI_Iprobe).
std::string recvBytes(MPI_Comm comm, const MPI_Status& st) {
  int n = 0;
  FF_MPI_CHECK(MPI_Get_count(&st, MPI_CHAR, &n));
  std::string buf(static_cast<size_t>(n), '\0');
  FF_MPI_CHECK(
      MPI_Recv(buf.data(), n, MPI_CHAR, st.MPI_SOURCE, st.MPI_TAG, comm, MPI_STATUS_IGNORE));
  return buf;
}

class MpiTransport : public Transport {
 public:
  MpiTransport(MPI_Comm comm, std::vector<std::string> hosts, const RunOptions& options)
      : comm_(comm),
        hosts_(std::move(hosts)),
        lost_after_s_(options.lost_after_s),
        heartbeat_s_(options.heartbeat_s),
        usable_(hosts_.size(), true),
        gen_(hosts_.size(), 0),
        last_seen_(hosts_.size(), Clock::now()),
        lost_(hosts_.size(), false) {}
  ~MpiTransport() override {
    // Sends a lost rank never took: MPI may still read their bytes until the job's abort.
    if (!pending_.empty()) (void)new std::list<PendingSend>(std::move(pending_));
  }
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int slots() const override { return static_cast<int>(hosts_.size()); }
  bool usable(int slot) const override { return usable_[slot]; }
  std::string host(int slot) const override { return hosts_[slot]; }

  void send(int slot, const std::vector<Assignment>& batch) override {
    // Tagged with the worker generation rank 0 knows of: a batch sent before a worker's
    // death was handled here is dropped by the rank (its tasks were requeued already).
    std::string frames = std::to_string(gen_[slot]) + "\n";
    for (const auto& a : batch) appendFrame(frames, a.frame_payload);
    post(slot, std::move(frames), kTagTasks);
  }

  void wait(double timeout_s, std::vector<SlotEvent>& events) override {
    const auto entered = Clock::now();
    forgiveOwnStall(entered);
    auto deadline = entered + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(timeout_s));
    int nap_us = 50;
    for (;;) {
      bool got = false;
      pingWorkerRanks();
      progressSends();
      for (;;) {
        int flag = 0;
        MPI_Status st;
        FF_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kTagEvents, comm_, &flag, &st));
        if (!flag) break;
        got = true;
        handle(st.MPI_SOURCE - 1, recvBytes(comm_, st), events);
      }
      if (force_lost_) {
        for (int s = 0; s < slots(); ++s) {
          if (!usable_[s]) continue;
          SlotEvent ev;
          ev.kind = SlotEvent::Kind::kLost;
          ev.slot = s;
          ev.reason = "rank " + std::to_string(s + 1) + " did not stop in time";
          ev.blame_running_task = false;
          events.push_back(ev);
          fence(s, ev.reason);
        }
        force_lost_ = false;
        got = true;
      }
      auto now = Clock::now();
      forgiveOwnStall(now);
      for (int s = 0; s < slots(); ++s) {
        if (usable_[s] &&
            std::chrono::duration<double>(now - last_seen_[s]).count() > lost_after_s_) {
          SlotEvent ev;
          ev.kind = SlotEvent::Kind::kLost;
          ev.slot = s;
          ev.reason = "rank " + std::to_string(s + 1) + " on " + hosts_[s] + " silent for " +
                      fmt::format("{:g}", lost_after_s_) + " s (lost)";
          ev.blame_running_task = false;
          events.push_back(ev);
          fence(s, ev.reason);
          got = true;
        }
      }
      if (got || now >= deadline) return;
      std::this_thread::sleep_for(std::chrono::microseconds(nap_us));
      nap_us = std::min(nap_us * 2, 2000);
    }
  }

  void requestStop() override {
    for (int s = 0; s < slots(); ++s) {
      if (usable_[s]) post(s, "", kTagStop);
    }
  }
  void forceStop() override { force_lost_ = true; }
  void shutdown() override {
    if (shut_) return;
    shut_ = true;
    // "lost": a rank is missing, so the job will end by MPI_Abort; a survivor must not enter
    // MPI_Finalize (its fence would wait for the lost rank, and a launcher that aborts a job
    // with a fence pending can hang in its own finalisation: Open MPI 4.1's mpirun does).
    const std::string payload = lost_reasons_.empty() ? "" : "lost";
    std::vector<char> waiting(static_cast<size_t>(slots()), 0);
    for (int s = 0; s < slots(); ++s) {
      if (lost_[s]) continue;
      post(s, payload, kTagExit);
      waiting[static_cast<size_t>(s)] = 1;
    }
    // 5. Until every rank said bye.
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(lost_after_s_));
    while ((std::count(waiting.begin(), waiting.end(), 1) > 0 || pendingToLiveRanks()) &&
           Clock::now() < deadline) {
      progressSends();
      int flag = 0;
      MPI_Status st;
      FF_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kTagEvents, comm_, &flag, &st));
      if (!flag) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      const std::string bytes = recvBytes(comm_, st);
      FrameReader reader;
      reader.feed(bytes.data(), bytes.size());
      std::string frame;
      while (reader.next(frame)) {
        const json m = json::parse(frame, nullptr, false);
        if (m.is_object() && m.value("t", "") == "bye")
          waiting[static_cast<size_t>(st.MPI_SOURCE - 1)] = 0;
      }
    }
  }
  // "rank 2 on node7 (silent for 30 s)", one per lost rank.
  const std::vector<std::string>& lostRanks() const { return lost_reasons_; }

 private:
  // A message to a worker rank, sent without blocking: rank 0 must go on watching every rank
  // while one that hangs (alive, not receiving) holds a large batch (before: a blocking
  // MPI_Send there stopped rank 0, and the hung rank was never declared lost). Messages to
  // one rank arrive in the order posted. The bytes live here until the send completes.
  struct PendingSend {
    int slot = 0;
    std::string bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  void post(int slot, std::string bytes, int tag) {
    pending_.push_back(PendingSend{slot, std::move(bytes), MPI_REQUEST_NULL});
    PendingSend& p = pending_.back();
    FF_MPI_CHECK(MPI_Isend(p.bytes.data(), static_cast<int>(p.bytes.size()), MPI_CHAR, slot + 1,
                           tag, comm_, &p.request));
  }
  // Forgets the sends that completed; those to a lost rank are left (it may never take them).
  void progressSends() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (lost_[static_cast<size_t>(it->slot)]) {
        ++it;
        continue;
      }
      int done = 0;
      FF_MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
      it = done ? pending_.erase(it) : std::next(it);
    }
  }
  // This rank itself did not run since it last looked (stopped, swapped out, a journal commit
  // on a file system that hung): the ranks' silence meanwhile is its own, not theirs (before:
  // it fenced every healthy rank, and said "workers keep dying at start"). A second or more
  // between two looks is such a stall (this loop turns every few milliseconds between journal
  // writes), and the ranks' silence does not count for its length (before: only a stall longer
  // than lost_after_s was forgiven, so one just shorter, added to a rank's last heartbeat
  // period, could still fence a healthy rank). The worker ranks may have ended the job
  // meanwhile: they take a silent rank 0 for lost.
  void forgiveOwnStall(Clock::time_point now) {
    const auto gap = now - last_tick_;
    if (last_tick_ != Clock::time_point{} && gap > std::chrono::seconds(1)) {
      const double gap_s = std::chrono::duration<double>(gap).count();
      if (gap_s > lost_after_s_)
        logWarn(
            "mpi pilot: rank 0 did not run for {:.0f} s (stopped or stalled); the worker ranks' "
            "silence meanwhile is not held against them",
            gap_s);
      for (auto& seen : last_seen_) seen = std::min(seen + gap, now);
    }
    last_tick_ = now;
  }
  // 4. Every heartbeat period, every rank not fenced (one whose worker could not be restarted
  // too: it waits for its exit) hears that rank 0 is alive.
  void pingWorkerRanks() {
    const auto now = Clock::now();
    if (now - last_ping_ < std::chrono::duration<double>(heartbeat_s_)) return;
    last_ping_ = now;
    for (int s = 0; s < slots(); ++s)
      if (!lost_[static_cast<size_t>(s)]) post(s, "", kTagPing);
  }
  bool pendingToLiveRanks() const {
    for (const PendingSend& p : pending_)
      if (!lost_[static_cast<size_t>(p.slot)]) return true;
    return false;
  }

  // Stops using a rank and tells it to stop its task, without waiting: a dead rank never
  // receives it, a slow one stops; the job's abort at the end ends it in any case.
  void fence(int slot, const std::string& reason) {
    usable_[slot] = false;
    if (lost_[slot]) return;
    lost_[slot] = true;
    lost_reasons_.push_back(reason);
    logError("mpi pilot: {}; its tasks go back to pending", reason);
    MPI_Request req = MPI_REQUEST_NULL;
    if (MPI_Isend(kFencedPayload, static_cast<int>(sizeof kFencedPayload - 1), MPI_CHAR, slot + 1,
                  kTagStop, comm_, &req) == MPI_SUCCESS &&
        req != MPI_REQUEST_NULL) {
      MPI_Request_free(&req);
    }
  }

  void handle(int slot, const std::string& bytes, std::vector<SlotEvent>& events) {
    last_seen_[slot] = Clock::now();
    FrameReader reader;
    reader.feed(bytes.data(), bytes.size());
    std::string payload;
    while (reader.next(payload)) {
      json m = json::parse(payload);
      std::string t = m.value("t", "");
      if (t == "done") {
        SlotEvent ev;
        ev.slot = slot;
        ev.worker_exits = m.value(kWorkerExitsKey, false);
        ev.completion = completionFromDoneMessage(m);
        events.push_back(std::move(ev));
      } else if (t == "start") {
        SlotEvent ev;
        ev.kind = SlotEvent::Kind::kStarted;
        ev.slot = slot;
        ev.completion.index = m.at("i").get<int>();
        ev.completion.attempt = m.at("a").get<int>();
        events.push_back(std::move(ev));
      } else if (t == "left") {
        SlotEvent ev;
        ev.kind = SlotEvent::Kind::kLost;
        ev.slot = slot;
        ev.reason = "rank " + std::to_string(slot + 1) + " on " + hosts_[slot] +
                    " left: " + m.value("reason", std::string("an error"));
        ev.blame_running_task = false;
        events.push_back(ev);
        fence(slot, ev.reason);
      } else if (t == "died") {
        SlotEvent ev;
        ev.kind = SlotEvent::Kind::kLost;
        ev.slot = slot;
        ev.reason = m.value("reason", "worker died");
        ev.blame_running_task = m.value("blame", true);
        events.push_back(std::move(ev));
        ++gen_[slot];
        if (!m.value("restarted", true)) usable_[slot] = false;
      }
    }
  }

  MPI_Comm comm_;
  std::vector<std::string> hosts_;
  double lost_after_s_;
  double heartbeat_s_;
  Clock::time_point last_ping_{};
  Clock::time_point last_tick_{};  // when this rank last looked at the others (wait())
  std::vector<bool> usable_;
  std::vector<int> gen_;
  std::vector<Clock::time_point> last_seen_;
  std::vector<bool> lost_;
  std::vector<std::string> lost_reasons_;
  bool force_lost_ = false;
  bool shut_ = false;
  std::list<PendingSend> pending_;
};

// The slot index of this rank among the worker ranks of its node (for GPU binding).
int nodeLocalWorkerIndex(MPI_Comm comm, int world_rank) {
  const dist::MpiComm node = dist::MpiComm::splitShared(comm, world_rank, "node");
  std::vector<int> ranks(static_cast<size_t>(node.size()));
  FF_MPI_CHECK(MPI_Allgather(&world_rank, 1, MPI_INT, ranks.data(), 1, MPI_INT, node.get()));
  int idx = 0;
  for (int k = 0; k < node.rank(); ++k) idx += ranks[static_cast<size_t>(k)] != 0;
  return idx;
}

void workerRank(MPI_Comm comm, const std::string& campaign_dir, const CampaignSpec& spec,
                const RunOptions& options, int local_index) {
  std::vector<std::string> argv = options.worker_argv;
  if (argv.empty()) argv = {selfExecutable(), "worker"};
  try {
    LocalWorkerPool pool(argv, slotBindings(spec.resources, 1, local_index),
                         options.max_worker_restarts);
    auto last_hb = Clock::now();
    auto last_heard = Clock::now();  // from rank 0
    auto last_look = Clock::now();   // this loop's last look at rank 0's silence
    bool heard = false;
    int generation = 0;  // worker restarts so far (see MpiTransport::send)
    std::vector<SlotEvent> events;
    for (;;) {
      for (;;) {
        int flag = 0;
        MPI_Status st;
        FF_MPI_CHECK(MPI_Iprobe(0, MPI_ANY_TAG, comm, &flag, &st));
        if (!flag) break;
        std::string bytes = recvBytes(comm, st);
        last_heard = Clock::now();
        heard = true;
        if (st.MPI_TAG == kTagPing) {
          continue;
        } else if (st.MPI_TAG == kTagTasks) {
          auto nl = bytes.find('\n');
          if (nl == std::string::npos) throw Error("mpi pilot: malformed task batch from rank 0");
          if (std::stoi(bytes.substr(0, nl)) == generation) pool.sendRaw(0, bytes.substr(nl + 1));
        } else if (st.MPI_TAG == kTagStop) {
          pool.requestStop();
          if (bytes == kFencedPayload) {
            // 6. Fenced: rank 0 went on without this rank; its task goes back to pending there.
            pool.shutdown();
            throw PilotRankLeft(
                "mpi pilot: rank 0 fenced this rank (silent towards it for longer than "
                "--lost-after: stopped or stalled), so it stopped what it ran and leaves the "
                "pilot");
          }
        } else if (st.MPI_TAG == kTagExit) {
          if (bytes == "lost") dist::MpiRuntime::markAborted();
          pool.shutdown();
          std::string bye;  // 5.
          appendFrame(bye, R"({"t":"bye"})");
          sendBytes(comm, bye, 0, kTagEvents);
          return;
        }
      }
      events.clear();
      pool.wait(0.002, events);
      std::string out;
      for (const auto& ev : events) {
        if (ev.kind == SlotEvent::Kind::kDone) {
          faultError("pilot.forward", std::to_string(ev.completion.index));
          json done = doneMessageOf(ev.completion);
          if (ev.worker_exits) done[kWorkerExitsKey] = true;
          appendFrame(out, done.dump());
        } else if (ev.kind == SlotEvent::Kind::kStarted) {
          appendFrame(out,
                      json{{"t", "start"}, {"i", ev.completion.index}, {"a", ev.completion.attempt}}
                          .dump());
        } else {
          ++generation;
          appendFrame(out, json{{"t", "died"},
                                {"reason", ev.reason},
                                {"blame", ev.blame_running_task},
                                {"restarted", pool.usable(0)}}
                               .dump());
        }
      }
      if (Clock::now() - last_hb > std::chrono::duration<double>(options.heartbeat_s)) {
        appendFrame(out, R"({"t":"hb"})");
        last_hb = Clock::now();
      }
      if (!out.empty()) sendBytes(comm, out, 0, kTagEvents);
      const double limit_s = (heard ? 1 : 4) * options.lost_after_s;
      // This loop turns every few milliseconds: a second or more since it last looked is this
      // rank's own stall (stopped, swapped out), and rank 0's silence meanwhile is not rank
      // 0's: it does not count (rank 0's fence, step 6, or its pings reach this rank first).
      const auto now = Clock::now();
      if (const auto gap = now - last_look; gap > std::chrono::seconds(1)) {
        if (gap > std::chrono::duration<double>(options.lost_after_s))
          logWarn("mpi pilot: this rank did not run for {:.0f} s (stopped or stalled)",
                  std::chrono::duration<double>(gap).count());
        last_heard += gap;
      }
      last_look = now;
      if (now - last_heard > std::chrono::duration<double>(limit_s)) {
        // 4. Rank 0 is gone: the job cannot go on (no journal); this rank's task stops as a
        // time limit would stop it, its state saved and its lease released.
        pool.requestStop();
        pool.shutdown();
        dist::MpiRuntime::markAborted();
        throw PeerLostError(fmt::format(
            "[{}] mpi pilot: rank 0, which keeps the journal, silent for {:g} s (lost): this "
            "rank stopped what it ran and ends the job; `foldfarm campaign resume {}` continues "
            "from the journal",
            dist::processLabel(), limit_s, shellWord(campaign_dir)));
      }
    }
  } catch (const PeerLostError&) {
    throw;  // the job ends (exit 3 through MPI_Abort at exit)
  } catch (const std::exception& e) {
    // Rank 0 fences this rank at once and says why (step 3), rather than after lost_after_s,
    // and goes on with the others.
    try {
      std::string left;
      appendFrame(left, json{{"t", "left"}, {"reason", e.what()}}.dump());
      sendBytes(comm, left, 0, kTagEvents);
    } catch (const std::exception&) {
      // Rank 0 finds the silence instead.
    }
    throw PilotRankLeft(fmt::format("[{}] {}; rank 0 goes on with the other ranks",
                                    dist::processLabel(), e.what()));
  }
}

}  // namespace

RunSummary runMpi(const std::string& campaign_dir, const RunOptions& options) {
  dist::MpiRuntime::ensure();
  // The pilot's own communicator: its messages can match no other layer's (a receive of any
  // source or tag on MPI_COMM_WORLD: a test's, a library's), nor theirs its own.
  const dist::MpiComm pilot = dist::MpiComm::duplicate(MPI_COMM_WORLD, "pilot");
  const MPI_Comm comm = pilot.get();
  const int rank = pilot.rank(), size = pilot.size();
  dist::setErrorRank(rank);
  if (size < 2) {
    throw InputError(
        "the mpi executor needs at least 2 ranks (rank 0 dispatches, the others "
        "run tasks); launch with mpirun -np N or srun, or use --executor local");
  }
  if (!(options.lost_after_s > 0)) throw InputError("--lost-after must be > 0 seconds");
  setLogRank(rank);
  char host[256] = {0};
  std::strncpy(host, hostName().c_str(), sizeof(host) - 1);
  std::vector<char> all(static_cast<size_t>(256) * static_cast<size_t>(size));
  FF_MPI_CHECK(MPI_Allgather(host, 256, MPI_CHAR, all.data(), 256, MPI_CHAR, comm));
  std::set<std::string> nodes;
  for (int r = 0; r < size; ++r) nodes.emplace(&all[256 * static_cast<size_t>(r)]);
  int local_index = nodeLocalWorkerIndex(comm, rank);
  ::signal(SIGPIPE, SIG_IGN);
  installStopHandlers();

  // Every rank checks that the inputs exist (on the shared file system all see the same) and
  // so refuses together; what the kind needs of them, and that they are as `campaign init`
  // recorded them, rank 0 alone checks (it opens the files: once, not once per rank) and tells
  // the others; so too RunOptions::before_run.
  const CampaignSpec frozen = loadFrozenSpec(campaign_dir);
  requireCampaignInputFiles(frozen, campaign_dir + "/spec.json");
  std::string problem;
  if (rank == 0) {
    try {
      checkCampaignInputsForKind(frozen, campaign_dir + "/spec.json");
      requireCampaignInputsAsRecorded(frozen, campaign_dir + "/spec.json");
      if (options.before_run) options.before_run(campaign_dir);
    } catch (const InputError& e) {
      problem = e.what();
    }
  }
  int length = static_cast<int>(problem.size());
  FF_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, 0, comm));
  if (length > 0) {
    problem.resize(static_cast<size_t>(length));
    FF_MPI_CHECK(MPI_Bcast(problem.data(), length, MPI_CHAR, 0, comm));
    throw InputError(problem);  // on every rank, as a missing file is
  }
  if (nodes.size() > 1)
    requireClusterWideLocks(campaign_dir, "the pilot's ranks run its tasks on " +
                                              std::to_string(nodes.size()) + " nodes");
  if (rank != 0) {
    // Workers read the frozen spec only; the journal belongs to rank 0.
    workerRank(comm, campaign_dir, frozen, options, local_index);
    return RunSummary{};
  }
  Campaign campaign = Campaign::open(campaign_dir, Campaign::Access::kWriter);
  int requeued = campaign.recoverAfterCrash();
  if (requeued > 0) logInfo("{} task(s) left running by an earlier run were requeued", requeued);
  const int retried = campaign.retry(options.retry);
  if (!options.retry.empty()) logInfo("{} task(s) back to pending for the retry", retried);
  std::vector<std::string> hosts;
  for (int r = 1; r < size; ++r) hosts.emplace_back(&all[256 * r]);
  MpiTransport transport(comm, hosts, options);
  logInfo("campaign {}: mpi pilot with {} worker rank(s), {} task(s)", campaign.spec().name,
          size - 1, campaign.spec().numTasks());
  RunSummary s;
  try {
    s = dispatch(campaign, transport, options);
    s.retried = retried;
  } catch (...) {
    transport.shutdown();
    if (!transport.lostRanks().empty()) dist::MpiRuntime::markAborted();
    throw;
  }
  transport.shutdown();
  if (!transport.lostRanks().empty()) {
    // The journal is consistent (every task of a lost rank went back to pending or ran
    // elsewhere), but MPI cannot be finalised with a rank missing.
    dist::MpiRuntime::markAborted();
    std::string names;
    for (const auto& r : transport.lostRanks()) names += (names.empty() ? "" : "; ") + r;
    const bool left = s.counts[TaskState::kPending] + s.counts[TaskState::kRunning] > 0;
    throw PeerLostError("mpi pilot: lost " + names + ". The journal is consistent: " +
                        (left ? "run `foldfarm campaign resume " + shellWord(campaign_dir) +
                                    "` to finish what is left"
                              : "every task has ended all the same (`foldfarm campaign status " +
                                    shellWord(campaign_dir) + "`)"));
  }
  // As a local run's end: records that went into a journal deleted or moved meanwhile are not
  // the campaign's. Said by runCommand after the pilot, whose ranks then finalise MPI as after
  // any run (an error thrown here would end the job by MPI_Abort).
  try {
    campaign.requireJournalInPlace();
  } catch (const Error& e) {
    s.journal_gone = e.what();
  }
  return s;
}

}  // namespace foldfarm::jobs
