#pragma once
// The framed protocol between the orchestrator and a worker process (pipes), also relayed
// over MPI by the pilot. A frame is a 4-byte little-endian length followed by that many
// bytes of JSON. Messages ("t" = type):
//   orchestrator -> worker
//     {"t":"run", "i":index, "id":task id, "a":attempt, "k":kind, "d":task dir,
//      "p":params, "l":time limit s (0 none), "lw":lease wait s, "s":slot,
//      "ir":the task's input records of `campaign init` (absent for campaigns without)}
//   worker -> orchestrator
//     {"t":"start", "i":index, "a":attempt}   before a task of a kind with a directory
//     {"t":"done", "i":index, "a":attempt, "s":status, "r":reason, "t0":start, "t1":end,
//      "res":result}   one per "run", in order
// A worker reads "run" frames until end of input, then exits 0. SIGTERM/SIGINT make the
// running task stop (status 75) and every later frame be answered "not started" (75).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/journal.hpp"

namespace foldfarm::jobs {

// Appends one frame holding `payload` to `out`.
void appendFrame(std::string& out, std::string_view payload);

// Accumulates bytes and splits them into frames.
class FrameReader {
 public:
  void feed(const char* data, size_t n) { buf_.append(data, n); }
  // Moves the next complete frame's payload into `payload`; false if none is complete.
  bool next(std::string& payload);
  bool empty() const { return buf_.size() == pos_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
};

// Writes all bytes (retrying on EINTR/short writes). Returns false on EPIPE/EBADF (the
// peer is gone); throws Error on other errors.
bool writeAll(int fd, std::string_view bytes);
// Blocking read of the next frame from fd. false at end of input.
bool readFrameBlocking(int fd, FrameReader& reader, std::string& payload);
// In a {"t":"done", …} message: true when the worker ends after it (its watchdog gave up on
// a task that did not stop, or a SIGTERM/SIGINT reached it) and starts no task queued behind
// it.
inline constexpr const char* kWorkerExitsKey = "x";
// In a {"t":"done", …} message: true when the attempt never started and counts toward no cap
// (Completion::counts_as_failure false: its lease was held by another attempt, or its worker
// was stopping).
inline constexpr const char* kNotAFailureKey = "nf";
// The {"t":"done", …} message that reports `c` (its host and slot are the receiver's): what
// completionFromDoneMessage reads back.
nlohmann::json doneMessageOf(const Completion& c);
// The completion a worker's {"t":"done", …} message reports (host and slot are the
// receiver's to fill). Throws nlohmann::json::exception when a required field is missing.
Completion completionFromDoneMessage(nlohmann::json& message);

}  // namespace foldfarm::jobs
