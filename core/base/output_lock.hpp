#pragma once
// One run per output directory. A command that writes a directory of results over a long run
// (pretrain, finetune, unfold, aggregate, study scaling) holds its --out with an
// OutputDirectoryLock: the directory is made (with its missing parents) and flock()ed
// itself, so nothing is added to it. A second run into the same directory is refused with one
// line instead of both writing the same state files. Under the lock, the temporaries that a
// run killed by SIGKILL (or the OOM killer) left in the directory can only be that run's, and
// removeLeftTemporaries() sweeps them.
//
// Where flock cannot lock a directory (NFS clients turn flock into POSIX locks, which need a
// file open for writing) the run goes on unlocked, after a warning that names the directory:
// concurrent runs into it are then not refused. Runs into a directory nested inside a locked
// one are not excluded by it.
#include <string>
#include <vector>

#include "core/base/atomic_file.hpp"
#include "core/base/fd.hpp"

namespace foldfarm {

class OutputDirectoryLock {
 public:
  // Makes `dir` and locks it. InputError("<dir>: another foldfarm run is writing into this
  // directory (...); wait for it or stop it, or choose another <option>") when a run holds
  // it; InputError when `dir` is a file (requireOutputDirectoryPath) or a file cannot be made
  // in it (read-only, not permitted: said before anything is computed); Error naming `dir`
  // when it cannot be made. `option` names the command-line option ("" when none chose it).
  OutputDirectoryLock(const std::string& dir, const std::string& option);
  ~OutputDirectoryLock() noexcept = default;  // closing the directory releases the lock
  OutputDirectoryLock(const OutputDirectoryLock&) = delete;
  OutputDirectoryLock& operator=(const OutputDirectoryLock&) = delete;

  // Whether the directory is locked (false: the file system refused flock; see above).
  bool locked() const { return locked_; }
  const std::string& dir() const { return dir_; }
  // Removes the AtomicFile temporaries in the directory itself and, recursively, in its
  // subdirectories named in `subdirs` (those the command writes), when locked; logs and
  // returns how many.
  int removeLeftTemporaries(const std::vector<std::string>& subdirs);

 private:
  void requireWritable(const std::string& option) const;

  std::string dir_;
  MadeDirectories made_;  // removed again at the end while empty (a run that wrote nothing)
  Fd fd_;                 // the directory, flocked
  bool locked_ = false;
};

// The process that holds a flock on the file or directory `fd` refers to, from /proc/locks:
// its pid, or 0 when none of this host's processes is listed (another node, no /proc). With
// `shared`, whether that holder's lock is a shared one (LOCK_SH) is stored there.
long flockHolder(int fd, bool* shared = nullptr);

// Takes the flock `how` (LOCK_EX or LOCK_SH) on `fd` without blocking, trying `tries` times 50 ms
// apart (1: once); false when another open file still holds a conflicting lock. Throws Error
// naming `what` (the file) when flock fails otherwise (a mount without flock: ENOLCK).
bool tryFlock(int fd, int how, const std::string& what, int tries = 1);

}  // namespace foldfarm
