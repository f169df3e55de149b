#pragma once
// What to do about a full disk or quota, added to an error that says so in the system's,
// SQLite's or HDF5's words: nothing foldfarm wrote before is damaged by a write that found
// no space, so freeing space and running again is the whole remedy.
#include <string>

namespace foldfarm {

// True when `what` reports a full file system or an exceeded quota.
inline bool saysDiskFull(const std::string& what) {
  return what.find("No space left on device") != std::string::npos ||
         what.find("database or disk is full") != std::string::npos ||
         what.find("Disk quota exceeded") != std::string::npos;
}

// "; the disk or your quota is full (`df -h`, ...): free space, then <then>" when `what`
// says so, else "".
// For a write beyond the file size limit ("File too large": `ulimit -f`, which foldfarm
// meets as an error instead of dying of SIGXFSZ), "; a file reached the file size limit ...".
inline std::string fullDiskAdvice(const std::string& what, const std::string& then) {
  if (what.find("File too large") != std::string::npos)
    return "; a file reached the largest size allowed (`ulimit -f`, or the file system's "
           "limit): raise the limit, then " +
           then;
  if (!saysDiskFull(what)) return "";
  return "; the disk or your quota is full (`df -h`, `df -i` for files, `quota`): free space, "
         "then " +
         then;
}

}  // namespace foldfarm
