#pragma once
// The states of a campaign task and the transitions between them. A task moves only
// through these named transitions; each is written to the journal before it takes effect.
//
//   pending --dispatch--> running --succeed--> done
//                         running --fail-----> failed       (attempts exhausted)
//                         running --fail-----> pending      (retry: attempts left)
//                         running --interrupt-> interrupted --requeue--> pending
//   failed  --retry-----> pending   (user: `campaign retry --failed`)
//   pending/running/interrupted --cancel--> cancelled
//   cancelled --retry--> pending   (user: `campaign retry --cancelled`)
//   done    --rerun-----> pending   (user: `campaign accept-inputs`: an input it read changed)
// CampaignJournal checks every transition it records against this table
// (requireTransition) and refuses the others.
#include <optional>
#include <string>
#include <string_view>

namespace foldfarm::jobs {

enum class TaskState { kPending, kRunning, kDone, kFailed, kInterrupted, kCancelled };

std::string_view toString(TaskState s);
std::optional<TaskState> parseTaskState(std::string_view s);
// Whether the state machine allows `from` -> `to`.
bool transitionAllowed(TaskState from, TaskState to);
// The one check the journal makes before it records a transition: throws Error naming the
// task and both states when the table above does not allow `from` -> `to`.
void requireTransition(TaskState from, TaskState to, const std::string& task);
bool isTerminal(TaskState s);

}  // namespace foldfarm::jobs
