#pragma once
// Whether flock(2) on files of a directory excludes processes on other nodes. A task lease
// (task_lease.hpp) keeps one task from running twice only if it does, and executors whose
// tasks run on several nodes (Slurm arrays, a pilot over several hosts) rely on it.
//
// Read from the mount table (/proc/self/mountinfo): the mount holding the directory, and
// its options. Node-local (or no) flock:
//   Lustre mounted with `localflock` (each node locks alone) or `noflock` (flock fails);
//   NFS with `local_lock=flock` or `local_lock=all` (or `nolock`, which implies it).
// Other file systems (local ones, GPFS, NFS with the default local_lock=none, Lustre with
// `flock`) lock across nodes or are on one node.
#include <string>

namespace foldfarm::jobs {

// Why flock under `path` does not exclude other nodes, from `mountinfo` (the text of
// /proc/self/mountinfo); "" when it does, or when the mount is not found.
std::string nodeLocalLocking(const std::string& path, const std::string& mountinfo);
// The same from this machine's /proc/self/mountinfo ("" where it cannot be read).
std::string nodeLocalLocking(const std::string& path);
// InputError naming `dir`, the reason and what to do when nodeLocalLocking(dir) is not
// empty. `spanning` says what would run the tasks on several nodes.
void requireClusterWideLocks(const std::string& dir, const std::string& spanning);

}  // namespace foldfarm::jobs
