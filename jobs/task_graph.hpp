#pragma once
// The campaign's task graph: which tasks must be done before a task may run (a systematic
// variation's chain after the nominal chain it warm-starts from). Recorded in the journal
// at `campaign init` (table `needs`) and read back by every executor and by status.
//
// A pending task is
//   ready    when every task it needs is done;
//   waiting  when one it needs is pending, running or interrupted (it will run later);
//   held     when one it needs failed or was cancelled, or is itself held: it cannot run
//            until that task is retried (`campaign retry --failed`) and done.
// Tasks without needs are always ready. The graph is acyclic by construction (a task needs
// only tasks of lower index).
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "jobs/task_state.hpp"

namespace foldfarm::jobs {

class TaskGraph {
 public:
  TaskGraph() = default;
  // edges: (task, task it needs); indices below num_tasks. Throws Error on a bad edge.
  TaskGraph(int num_tasks, const std::vector<std::pair<int, int>>& edges);

  bool empty() const { return edges_ == 0; }
  size_t edges() const { return edges_; }
  const std::vector<int>& needs(int task) const;
  const std::vector<int>& dependents(int task) const;

  // Marks in `marked` (by task index) every task that needs a marked one, directly or not;
  // returns those it marked (not marked before), by index. (A task rerun makes its dependents'
  // results stale: `accept-inputs`, `retry --task`.)
  std::vector<int> markDependents(std::vector<char>& marked) const;

  // Whether every task `task` needs is done (states: by task index).
  bool ready(int task, const std::vector<TaskState>& states) const;

  struct Block {
    bool held = false;  // false: waiting
    int culprit = -1;   // held: the failed/cancelled task at the root; waiting: a need
    TaskState culprit_state = TaskState::kPending;
  };
  // Why pending task `task` is not ready (nullopt: it is). Held wins over waiting.
  std::optional<Block> blocked(int task, const std::vector<TaskState>& states) const;
  // "needs r0001m0, which failed" (held) or "waits for r0001m0 (running)" (waiting);
  // `culprit_id` is the id of block.culprit.
  static std::string reason(const Block& block, const std::string& culprit_id);

 private:
  std::vector<std::vector<int>> needs_, dependents_;
  size_t edges_ = 0;
};

}  // namespace foldfarm::jobs
