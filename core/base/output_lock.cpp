#include "core/base/output_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/log.hpp"

namespace foldfarm {

long flockHolder(int fd, bool* shared) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  // Lines such as "3: FLOCK  ADVISORY  WRITE 4242 fd:01:1311 0 EOF"; a waiter's line has
  // "->" after the number and is skipped.
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string num, kind, advisory, mode, pid, where;
    if (!(ls >> num >> kind >> advisory >> mode >> pid >> where) || kind != "FLOCK") continue;
    unsigned dev_major = 0, dev_minor = 0;
    unsigned long long inode = 0;
    if (std::sscanf(where.c_str(), "%x:%x:%llu", &dev_major, &dev_minor, &inode) != 3) continue;
    if (dev_major == major(st.st_dev) && dev_minor == minor(st.st_dev) &&
        inode == static_cast<unsigned long long>(st.st_ino)) {
      if (shared) *shared = mode == "READ";
      return std::atol(pid.c_str());
    }
  }
  return 0;
}

bool tryFlock(int fd, int how, const std::string& what, int tries) {
  for (int attempt = 1;; ++attempt) {
    if (::flock(fd, how | LOCK_NB) == 0) return true;
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK) throw Error(what + ": cannot lock: " + errnoMessage(err));
    if (attempt >= tries) return false;
    ::usleep(50000);
  }
}

OutputDirectoryLock::OutputDirectoryLock(const std::string& dir, const std::string& option)
    : dir_((requireOutputDirectoryPath(dir, option.empty() ? "output directory" : option), dir)),
      made_(dir) {
  fd_.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_.valid()) throw Error(dir + ": cannot open the output directory: " + errnoMessage(errno));
  requireWritable(option);
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) {
    locked_ = true;
    return;
  }
  const int err = errno;
  if (err == EWOULDBLOCK) {
    const long pid = flockHolder(fd_.get());
    const std::string who =
        pid > 0 ? "pid " + std::to_string(pid) + " on " + hostName() + " holds its lock"
                : "a process on another host holds its lock";
    throw InputError(dir + ": another foldfarm run is writing into this directory (" + who +
                     "); wait for it or stop it" +
                     (option.empty() ? std::string() : ", or choose another " + option));
  }
  logWarn("{}: cannot lock the output directory ({}): a second run into it would not be refused",
          dir, errnoMessage(err));
}

// A file made and removed again: what the run will write is refused now, not after its first
// epoch (permissions, a read-only mount, an immutable directory; root passes access()).
void OutputDirectoryLock::requireWritable(const std::string& option) const {
  const std::string probe = ".foldfarm-write-check." + std::to_string(::getpid());
  Fd f(::openat(fd_.get(), probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!f.valid() && errno != EEXIST)
    throw InputError(dir_ + ": cannot write into this directory (" + errnoMessage(errno) +
                     "); make it writable" +
                     (option.empty() ? std::string() : " or choose another " + option));
  ::unlinkat(fd_.get(), probe.c_str(), 0);
}

int OutputDirectoryLock::removeLeftTemporaries(const std::vector<std::string>& subdirs) {
  if (!locked_) return 0;
  namespace fs = std::filesystem;
  std::error_code ec;
  int removed = removeTemporaryFilesUnder(dir_, /*recursive=*/false);
  for (const std::string& sub : subdirs) {
    const std::string path = (fs::path(dir_) / sub).string();
    if (fs::is_directory(fs::symlink_status(path, ec))) removed += removeTemporaryFilesUnder(path);
  }
  if (removed > 0)
    logInfo("{}: removed {} temporary file(s) that an earlier run, killed while writing, left",
            dir_, removed);
  return removed;
}

}  // namespace foldfarm
