#pragma once
// Fault injection for tests of crash recovery. A fault point names a moment that a crash can
// hit only by chance (a worker killed between making a result durable and reporting it);
// the tests make it happen on purpose:
//
//   FOLDFARM_FAULT=<point>[:<context>]
//
// makes faultPoint(point, context) end the calling process with SIGKILL, the way the OOM
// killer or `kill -9` would (no handler, no unwinding, no output flushed), and
// faultError(point, context) throw an Error, the way a read that fails on one node would.
// Without `:<context>` every call of that point fires; with it, only the call whose context
// (a task id, say) is equal. Unset, either is one getenv.
//
// Points: "worker.result_durable" (faultPoint; jobs/worker.cpp, context: the task id): a
// task's task_result.json is durable and its lease released, its report not yet sent.
// "stream.read" (faultError; core/data/jet_stream.cpp, context: the piece's index in this
// process's feed of the epoch, from 0): a reader thread of `pretrain --stream` reads a piece.
// "pilot.forward" (faultError; jobs/mpi_executor.cpp, context: the task's index): a worker
// rank of the MPI pilot forwards a finished task to rank 0. "accept.journal" (faultPoint;
// jobs/accept_inputs.cpp): `campaign accept-inputs` has committed the journal, not yet written
// spec.json. "extend.journal" (faultPoint; jobs/extend_campaign.cpp): `campaign extend` has
// committed the journal, not yet written spec.json.
#include <string_view>

namespace foldfarm {

inline constexpr const char* kFaultEnv = "FOLDFARM_FAULT";

void faultPoint(std::string_view point, std::string_view context = {});
// Throws Error("<point> (<context>): failure injected by FOLDFARM_FAULT") when it names them.
void faultError(std::string_view point, std::string_view context = {});

// Whether FOLDFARM_FAULT (`spec`) names this point and context.
bool faultPointMatches(std::string_view spec, std::string_view point, std::string_view context);

}  // namespace foldfarm
