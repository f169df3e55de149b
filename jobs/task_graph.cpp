#include "jobs/task_graph.hpp"

#include "core/base/error.hpp"

namespace foldfarm::jobs {

namespace {
const std::vector<int> kNone;
}

TaskGraph::TaskGraph(int num_tasks, const std::vector<std::pair<int, int>>& edges)
    : needs_(static_cast<size_t>(num_tasks)), dependents_(static_cast<size_t>(num_tasks)) {
  for (const auto& [task, need] : edges) {
    if (task < 0 || task >= num_tasks || need < 0 || need >= task) {
      throw Error("task graph: bad dependency " + std::to_string(task) + " -> " +
                  std::to_string(need) + " (of " + std::to_string(num_tasks) + " tasks)");
    }
    needs_[task].push_back(need);
    dependents_[need].push_back(task);
    ++edges_;
  }
}

const std::vector<int>& TaskGraph::needs(int task) const {
  return task >= 0 && static_cast<size_t>(task) < needs_.size() ? needs_[task] : kNone;
}

const std::vector<int>& TaskGraph::dependents(int task) const {
  return task >= 0 && static_cast<size_t>(task) < dependents_.size() ? dependents_[task] : kNone;
}

std::vector<int> TaskGraph::markDependents(std::vector<char>& marked) const {
  // Needs point to lower indices: one pass in index order reaches every dependent.
  std::vector<int> added;
  for (size_t i = 0; i < marked.size() && i < needs_.size(); ++i) {
    if (marked[i]) continue;
    for (int need : needs_[i])
      if (marked[static_cast<size_t>(need)]) {
        marked[i] = 1;
        added.push_back(static_cast<int>(i));
        break;
      }
  }
  return added;
}

bool TaskGraph::ready(int task, const std::vector<TaskState>& states) const {
  for (int n : needs(task))
    if (states[n] != TaskState::kDone) return false;
  return true;
}

std::optional<TaskGraph::Block> TaskGraph::blocked(int task,
                                                   const std::vector<TaskState>& states) const {
  std::optional<Block> waiting;
  for (int n : needs(task)) {
    const TaskState s = states[n];
    if (s == TaskState::kDone) continue;
    if (s == TaskState::kFailed || s == TaskState::kCancelled) return Block{true, n, s};
    if (s == TaskState::kPending) {
      // Needs come first in index order, so this recursion is bounded by the graph's depth.
      auto inner = blocked(n, states);
      if (inner && inner->held) return inner;
    }
    if (!waiting) waiting = Block{false, n, s};
  }
  return waiting;
}

std::string TaskGraph::reason(const Block& block, const std::string& culprit_id) {
  if (block.held)
    return "needs " + culprit_id + ", which " +
           (block.culprit_state == TaskState::kFailed ? "failed" : "was cancelled");
  return "waits for " + culprit_id + " (" + std::string(toString(block.culprit_state)) + ")";
}

}  // namespace foldfarm::jobs
