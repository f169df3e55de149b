#include "jobs/task_state.hpp"

#include "core/base/error.hpp"

namespace foldfarm::jobs {

std::string_view toString(TaskState s) {
  switch (s) {
    case TaskState::kPending:
      return "pending";
    case TaskState::kRunning:
      return "running";
    case TaskState::kDone:
      return "done";
    case TaskState::kFailed:
      return "failed";
    case TaskState::kInterrupted:
      return "interrupted";
    case TaskState::kCancelled:
      return "cancelled";
  }
  return "?";
}

std::optional<TaskState> parseTaskState(std::string_view s) {
  for (TaskState t : {TaskState::kPending, TaskState::kRunning, TaskState::kDone,
                      TaskState::kFailed, TaskState::kInterrupted, TaskState::kCancelled}) {
    if (toString(t) == s) return t;
  }
  return std::nullopt;
}

bool isTerminal(TaskState s) {
  return s == TaskState::kDone || s == TaskState::kFailed || s == TaskState::kCancelled;
}

bool transitionAllowed(TaskState from, TaskState to) {
  using S = TaskState;
  switch (from) {
    case S::kPending:
      return to == S::kRunning || to == S::kCancelled;
    case S::kRunning:
      return to == S::kDone || to == S::kFailed || to == S::kPending || to == S::kInterrupted ||
             to == S::kCancelled;
    case S::kInterrupted:
      return to == S::kPending || to == S::kCancelled;
    case S::kFailed:
      return to == S::kPending;
    case S::kDone:
      return to == S::kPending;
    case S::kCancelled:
      return to == S::kPending;
  }
  return false;
}

void requireTransition(TaskState from, TaskState to, const std::string& task) {
  if (!transitionAllowed(from, to))
    throw Error("journal: task " + task + ": " + std::string(toString(from)) + " -> " +
                std::string(toString(to)) +
                " is not a transition of the task state machine (jobs/task_state.hpp); the "
                "journal was not changed");
}

}  // namespace foldfarm::jobs
