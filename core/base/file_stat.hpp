#pragma once
// What stat() says of a path, as the checks that notice a changed input compare it (a
// campaign's record of its inputs, a chain's record of its MC and data, the workers' caches),
// and the one command that gives a file back a recorded modification time.
//
// Thread-safety: pure functions (one stat() each).
#include <string>

namespace foldfarm {

struct FileStat {
  bool exists = false;
  bool directory = false;
  bool regular = false;
  long long size = 0;      // bytes
  long long mtime_ns = 0;  // modification time, ns since the epoch
};

// stat(path); `exists` false when it cannot be read (never throws).
FileStat statPath(const std::string& path);

// `touch -d @<s>.<ns> '<path>'` (the path quoted for a POSIX shell): the command that sets
// the file's modification time back to `mtime_ns`, for messages that say how to restore an
// input copied again with the same bytes (GNU touch keeps the nanoseconds).
std::string restoreTimeCommand(const std::string& path, long long mtime_ns);

// "; if it holds the same bytes, copied again, `<restoreTimeCommand>` gives it back its time":
// the clause that messages about a file of its recorded size but a later time end with.
std::string restoreTimeHint(const std::string& path, long long mtime_ns);

// Sets the modification time of `path` to `mtime_ns` (the access time is left as it is), as
// restoreTimeCommand would; "" on success, else the system's reason ("Operation not
// permitted").
std::string setModificationTime(const std::string& path, long long mtime_ns);

}  // namespace foldfarm
