#include "jobs/task_lease.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/stop_signal.hpp"
#include "jobs/journal.hpp"

namespace foldfarm::jobs {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

thread_local TaskLease* t_current = nullptr;

// The holder record in .lease; an empty object when it cannot be read (being rewritten).
json readHolder(int fd) {
  std::string s(4096, '\0');
  ssize_t n = ::pread(fd, s.data(), s.size(), 0);
  if (n <= 0) return json::object();
  s.resize(static_cast<size_t>(n));
  json j = json::parse(s, nullptr, false);
  return j.is_object() ? j : json::object();
}

std::string describeHolder(const json& h) {
  if (!h.contains("attempt")) return "another process";
  return "attempt " + std::to_string(h.value("attempt", 0)) + " (host " + h.value("host", "?") +
         ", pid " + std::to_string(h.value("pid", 0)) + ")";
}

int readAttemptFile(const std::string& path) {
  std::ifstream in(path);
  long long v = 0;
  if (in >> v && v >= 0 && v < (1LL << 31)) return static_cast<int>(v);
  return 0;
}

// Waits up to `seconds` for the exclusive lock of `path` (open as `fd`); false when it is still
// held.
bool waitForLock(int fd, const std::string& path, double seconds) {
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(seconds));
  for (;;) {
    if (tryFlock(fd, LOCK_EX, path)) return true;
    if (stopRequested()) throw InterruptedError("stopped while waiting for the task lease");
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Signals what the holder record names, if it lives on this host and is still the same
// process (pid and start time) or process group. Returns whether anything was signalled.
bool signalHolder(const json& h, int sig) {
  if (h.value("host", "") != hostName()) return false;
  bool any = false;
  const pid_t pgid = h.value("pgid", 0);
  // The group's id is its leader's pid. While the leader lives, its start time tells whether
  // the id is still that group's; an id whose leader is gone names the group's remaining
  // processes (Linux does not reuse a pid that is a live group's id).
  const unsigned long long leader_now = pgid > 1 ? processStartTicks(pgid) : 0;
  const unsigned long long leader_then = h.value("pgid_start", 0ULL);
  const bool same_group = leader_now == 0 || leader_then == 0 || leader_now == leader_then;
  if (!same_group)
    logWarn("process group {} of {} is another process's now; not signalled", pgid,
            describeHolder(h));
  if (pgid > 1 && pgid != ::getpgrp() && same_group && ::kill(-pgid, sig) == 0) any = true;
  const pid_t pid = h.value("pid", 0);
  const unsigned long long start = h.value("start", 0ULL);
  if (pid > 1 && pid != ::getpid() && start != 0 && processStartTicks(pid) == start &&
      ::kill(pid, sig) == 0) {
    any = true;
  }
  return any;
}

}  // namespace

unsigned long long processStartTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(s.substr(close + 2));
  std::string f;
  for (int i = 3; i <= 22 && (fields >> f); ++i) {
    if (i == 22) return std::stoull(f);
  }
  return 0;
}

TaskLease TaskLease::acquire(const std::string& task_dir, const std::string& task_id, int attempt,
                             const LeaseOptions& o) {
  const std::string path = task_dir + "/" + kLeaseFile;
  TaskLease lease;
  lease.fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kNewFileMode));
  if (!lease.fd_.valid()) throwSystemError("open", __FILE__, __LINE__, path);
  lease.dir_ = task_dir;
  lease.attempt_ = attempt;
  const int fd = lease.fd_.get();
  const std::string attemptPath = task_dir + "/" + kAttemptFile;
  const auto refuseIfSuperseded = [&] {
    const int newest = readAttemptFile(attemptPath);
    if (attempt > 0 && newest > attempt)
      throw SupersededError("task " + task_id + ": attempt " + std::to_string(attempt) +
                            " is superseded by attempt " + std::to_string(newest) +
                            "; nothing was run or written");
  };
  // 0. An attempt older than the newest promised or granted ends at once: it never waits for,
  //    let alone fences, the newer attempt that may hold the lease (before: it waited, stopped
  //    the live newer attempt with SIGTERM, and only then found itself superseded).
  refuseIfSuperseded();

  // 1. Wait for an earlier holder.
  if (!tryFlock(fd, LOCK_EX, path)) {
    const json h = readHolder(fd);
    logWarn("task {} (attempt {}): {} still holds {}; waiting up to {} s for it to end", task_id,
            attempt, describeHolder(h), path, o.wait_s);
    if (!waitForLock(fd, path, o.wait_s)) {
      refuseIfSuperseded();  // a newer attempt promised meanwhile
      const json now = readHolder(fd);
      // A run by hand, or a second runner of the attempt that holds it (its array script
      // submitted again; another host's runner of the same number), never ends the runner that
      // holds it (before: it stopped the live attempt, whose work was lost). By hand: nothing is
      // run or written (76). A second runner: not started, retried later like a lease held
      // elsewhere (75, toward no cap).
      const int holder = now.contains("attempt") && now["attempt"].is_number_integer()
                             ? now["attempt"].get<int>()
                             : -1;
      const std::string held = "task " + task_id + ": " + describeHolder(now) +
                               " still runs it after " +
                               std::to_string(static_cast<int>(o.wait_s)) + " s; ";
      if (attempt == 0)
        throw SupersededError(held +
                              "a run by hand does not stop a running attempt: nothing was run or "
                              "written");
      if (holder == attempt)
        throw InterruptedError(held + "a second runner of attempt " + std::to_string(attempt) +
                               " does not stop the first: this one was not started and will be "
                               "retried");
      // 2. Fence it.
      if (signalHolder(now, SIGTERM)) {
        logWarn("task {}: fencing {}: SIGTERM", task_id, describeHolder(now));
        if (!waitForLock(fd, path, o.fence_grace_s)) {
          signalHolder(now, SIGKILL);
          logWarn("task {}: fencing {}: SIGKILL", task_id, describeHolder(now));
        }
      }
      if (!waitForLock(fd, path, o.fence_grace_s)) {
        throw InterruptedError("task " + task_id + ": " + describeHolder(now) + " still runs in " +
                               task_dir + " after " + std::to_string(static_cast<int>(o.wait_s)) +
                               " s; this attempt was not started and will be retried");
      }
    }
  }
  // 3. The newest attempt wins.
  refuseIfSuperseded();
  if (attempt > readAttemptFile(attemptPath))
    writeFileAtomic(attemptPath, std::to_string(attempt) + "\n");
  const json previous = readHolder(fd);
  if (previous.contains("attempt") && previous["attempt"].is_number_integer()) {
    lease.previous_holder_ = previous["attempt"].get<int>();
    lease.previous_record_ = previous.dump() + "\n";
  }
  lease.writeHolder(0, true);
  // 4. An earlier attempt's record that it never started has been read by the journal's
  //    writer (it made this attempt): it goes (before: it stayed beside the task's result).
  if (const auto r = readLeaseRefusal(task_dir); r && r->attempt < attempt)
    ::unlink((task_dir + "/" + kLeaseRefusedFile).c_str());
  return lease;
}

void TaskLease::writeHolder(pid_t pgid, bool durable) {
  json h{{"attempt", attempt_},    {"host", hostName()},
         {"pid", ::getpid()},      {"start", processStartTicks(::getpid())},
         {"pgid", pgid},           {"pgid_start", pgid > 0 ? processStartTicks(pgid) : 0ULL},
         {"since", wallClockNow()}};
  const std::string s = h.dump() + "\n";
  const int fd = fd_.get();
  if (::ftruncate(fd, 0) != 0)
    throwSystemError("ftruncate", __FILE__, __LINE__, dir_ + "/" + kLeaseFile);
  if (::pwrite(fd, s.data(), s.size(), 0) != static_cast<ssize_t>(s.size())) {
    throwSystemError("pwrite", __FILE__, __LINE__, dir_ + "/" + kLeaseFile);
  }
  // Durable before the attempt writes anything: a later attempt trusts it to say that no
  // attempt ran here since the one a result file names (executeTask). The process group
  // added later changes nothing of that.
  if (durable && ::fdatasync(fd) != 0)
    throwSystemError("fdatasync", __FILE__, __LINE__, dir_ + "/" + kLeaseFile);
}

void TaskLease::restorePreviousHolder() {
  if (!fd_.valid() || previous_record_.empty()) return;
  const int fd = fd_.get();
  const std::string& s = previous_record_;
  if (::ftruncate(fd, 0) != 0)
    throwSystemError("ftruncate", __FILE__, __LINE__, dir_ + "/" + kLeaseFile);
  if (::pwrite(fd, s.data(), s.size(), 0) != static_cast<ssize_t>(s.size()))
    throwSystemError("pwrite", __FILE__, __LINE__, dir_ + "/" + kLeaseFile);
  if (::fdatasync(fd) != 0)
    throwSystemError("fdatasync", __FILE__, __LINE__, dir_ + "/" + kLeaseFile);
}

void TaskLease::requireStillHeld(const std::string& task_id) const {
  if (!fd_.valid()) return;
  const json h = readHolder(fd_.get());
  if (h.value("attempt", -1) == attempt_ && h.value("pid", 0) == ::getpid() &&
      h.value("host", "") == hostName())
    return;
  throw Error("task " + task_id + ": attempt " + std::to_string(attempt_) + " lost its lease to " +
              describeHolder(h) + " (the file system dropped the lock); its result is discarded");
}

void TaskLease::setProcessGroup(pid_t pgid) {
  if (fd_.valid()) writeHolder(pgid, false);
}

void promiseAttempt(const std::string& task_dir, int attempt) {
  makeDirectory(task_dir);
  const std::string path = task_dir + "/" + kAttemptFile;
  if (readAttemptFile(path) < attempt) writeFileAtomic(path, std::to_string(attempt) + "\n");
}

void recordLeaseRefusal(const std::string& task_dir, const LeaseRefusal& refusal) {
  try {
    // A task never started has no directory yet.
    makeDirectory(task_dir);
    writeFileAtomic(task_dir + "/" + kLeaseRefusedFile,
                    json{{"attempt", refusal.attempt}, {"reason", refusal.reason}}.dump() + "\n");
  } catch (const std::exception& e) {
    logWarn("could not record the refusal of attempt {}: {}", refusal.attempt, e.what());
  }
}

std::optional<LeaseRefusal> readLeaseRefusal(const std::string& task_dir) {
  std::ifstream in(task_dir + "/" + kLeaseRefusedFile);
  if (!in) return std::nullopt;
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const json j = json::parse(s, nullptr, false);
  if (!j.is_object() || !j.contains("attempt") || !j["attempt"].is_number_integer())
    return std::nullopt;
  return LeaseRefusal{j["attempt"].get<int>(), j.value("reason", "")};
}

std::string leaseHolderNow(const std::string& task_dir) {
  const std::string path = task_dir + "/" + kLeaseFile;
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ENOTDIR) return "";
    throwSystemError("open", __FILE__, __LINE__, path);
  }
  // A shared lock tests the holder's exclusive one. On NFS, flock is emulated with byte-range
  // locks, and an exclusive one needs a descriptor open for writing (before: EBADF there, and
  // `campaign retry` failed on every NFS campaign); a shared one needs only reading.
  if (tryFlock(fd.get(), LOCK_SH, path)) return "";  // released when fd closes
  return describeHolder(readHolder(fd.get()));
}

int newestAttempt(const std::string& task_dir) {
  return readAttemptFile(task_dir + "/" + kAttemptFile);
}

TaskLease* currentTaskLease() {
  return t_current;
}

CurrentTaskLeaseScope::CurrentTaskLeaseScope(TaskLease* lease) : previous_(t_current) {
  t_current = lease;
}

CurrentTaskLeaseScope::~CurrentTaskLeaseScope() {
  t_current = previous_;
}

}  // namespace foldfarm::jobs
