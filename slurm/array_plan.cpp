#include "slurm/array_plan.hpp"

#include <algorithm>

#include "core/base/error.hpp"

namespace foldfarm::slurm {

int ArrayPlan::elements() const {
  int n = 0;
  for (const auto& a : arrays) n += static_cast<int>(a.shards.size());
  return n;
}

int ArrayPlan::tasks() const {
  int n = 0;
  for (const auto& a : arrays) {
    for (const auto& s : a.shards) n += static_cast<int>(s.size());
  }
  return n;
}

ArrayPlan planArrays(const std::vector<std::string>& ids, const ArrayPlanOptions& o) {
  if (o.lanes < 1) throw InputError("array plan: lanes must be >= 1");
  if (o.tasksPerElement < 0) throw InputError("--tasks-per-element must be >= 0");
  if (o.throttle < 0) throw InputError("--throttle must be >= 0");
  if (o.limits.maxArraySize == 0) {
    // slurm.conf's way of disabling arrays (before: read as the default 1001, and every sbatch
    // refused).
    throw Error(
        "job arrays are disabled on this cluster (MaxArraySize = 0 in `scontrol show config`); "
        "the MPI pilot runs the campaign in one allocation without them: `foldfarm slurm render "
        "pilot D > pilot.sbatch` and `sbatch pilot.sbatch`");
  }
  if (o.limits.maxArraySize < 1 || o.limits.maxJobCount < 1 || o.limits.maxArrayTasks < 0) {
    throw InputError("array plan: MaxArraySize and MaxJobCount must be >= 1");
  }
  if (o.maxElementsPerArray < 0) throw InputError("array plan: elements per array must be >= 0");
  for (const auto& id : ids) {
    if (id.empty() || id.find_first_of(std::string("\t\n\r\0", 4)) != std::string::npos) {
      throw InputError("task id '" + id +
                       "' contains a tab, line break or NUL; it cannot go into a manifest");
    }
  }
  ArrayPlan plan;
  const long long n = static_cast<long long>(ids.size());
  if (n == 0) return plan;

  const long long queued = std::max(0, o.queuedJobs);
  const long long margin = o.limits.maxJobCount / 10;
  const long long budget = o.limits.maxJobCount - queued - margin;
  if (budget <= 0) {
    plan.deferred = ids;
    return plan;
  }
  // Both MaxArraySize (the largest index + 1) and max_array_tasks bound an array's elements.
  const long long arrayCap = o.limits.maxArrayElements();
  long long s = o.tasksPerElement;
  if (s == 0) {
    long long cap = std::min<long long>(arrayCap, budget);
    s = std::max<long long>(o.lanes, (n + cap - 1) / cap);
  }
  plan.tasksPerElement = static_cast<int>(s);
  long long elements = (n + s - 1) / s;
  long long submitted = n;
  if (elements > budget) {
    elements = budget;
    submitted = elements * s;
    plan.deferred.assign(ids.begin() + submitted, ids.end());
  }

  const long long perArray =
      o.maxElementsPerArray > 0 ? std::min<long long>(arrayCap, o.maxElementsPerArray) : arrayCap;
  long long e = 0;
  while (e < elements) {
    PlannedArray a;
    long long end = std::min(elements, e + perArray);
    for (long long k = e; k < end; ++k) {
      auto first = ids.begin() + k * s;
      auto last = ids.begin() + std::min(submitted, (k + 1) * s);
      a.shards.emplace_back(first, last);
    }
    plan.arrays.push_back(std::move(a));
    e = end;
  }
  if (o.throttle > 0 && o.maxElementsPerArray > 0) {
    // Arrays cut small for a submit limit, which refuses those after the first few: K goes to
    // the first arrays in order, each as much as it can run (proportional shares would go
    // mostly to refused arrays, and leave the first running one element at a time). Arrays
    // left without any wait for a later round.
    long long left = o.throttle;
    size_t kept = 0;
    for (; kept < plan.arrays.size() && left > 0; ++kept) {
      PlannedArray& a = plan.arrays[kept];
      a.throttle = static_cast<int>(std::min<long long>(left, a.shards.size()));
      left -= a.throttle;
    }
    std::vector<std::string> waiting;
    for (size_t k = kept; k < plan.arrays.size(); ++k) {
      for (const auto& shard : plan.arrays[k].shards)
        waiting.insert(waiting.end(), shard.begin(), shard.end());
    }
    plan.arrays.resize(kept);
    plan.deferred.insert(plan.deferred.begin(), waiting.begin(), waiting.end());
  } else if (o.throttle > 0) {
    // Proportional split of K; floors first, then the remainder one by one.
    long long given = 0;
    for (auto& a : plan.arrays) {
      long long size = static_cast<long long>(a.shards.size());
      a.throttle = static_cast<int>(std::max<long long>(1, o.throttle * size / elements));
      given += a.throttle;
    }
    for (auto& a : plan.arrays) {
      if (given >= o.throttle) break;
      if (a.throttle < static_cast<int>(a.shards.size())) {
        ++a.throttle;
        ++given;
      }
    }
    for (auto& a : plan.arrays)
      a.throttle = std::min<int>(a.throttle, static_cast<int>(a.shards.size()));
  }
  return plan;
}

std::string manifestText(const PlannedArray& array) {
  std::string out;
  for (const auto& shard : array.shards) {
    for (size_t i = 0; i < shard.size(); ++i) {
      if (i) out += '\t';
      out += shard[i];
    }
    out += '\n';
  }
  return out;
}

std::string manifestText(const PlannedArray& array, const std::map<std::string, int>& attempts) {
  std::string out;
  for (const auto& shard : array.shards) {
    for (size_t i = 0; i < shard.size(); ++i) {
      if (i) out += '\t';
      out += shard[i];
      auto it = attempts.find(shard[i]);
      if (it == attempts.end()) throw Error("manifest: no attempt for task " + shard[i]);
      out += "@" + std::to_string(it->second);
    }
    out += '\n';
  }
  return out;
}

}  // namespace foldfarm::slurm
