#include "core/base/file_stat.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>

#include "core/base/error.hpp"
#include "core/base/text.hpp"

namespace foldfarm {

FileStat statPath(const std::string& path) {
  struct stat st {};
  FileStat s;
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.directory = S_ISDIR(st.st_mode);
  s.regular = S_ISREG(st.st_mode);
  s.size = static_cast<long long>(st.st_size);
  s.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return s;
}

std::string restoreTimeCommand(const std::string& path, long long mtime_ns) {
  // touch reads "@-2.5" as 2.5 s before the epoch: the sign goes before both parts.
  const unsigned long long a = mtime_ns < 0 ? 0ULL - static_cast<unsigned long long>(mtime_ns)
                                            : static_cast<unsigned long long>(mtime_ns);
  char stamp[48];
  std::snprintf(stamp, sizeof stamp, "@%s%llu.%09llu", mtime_ns < 0 ? "-" : "", a / 1000000000ULL,
                a % 1000000000ULL);
  return std::string("touch -d ") + stamp + " " + shellQuote(path);
}

std::string restoreTimeHint(const std::string& path, long long mtime_ns) {
  return "; if it holds the same bytes, copied again, `" + restoreTimeCommand(path, mtime_ns) +
         "` gives it back its time";
}

std::string setModificationTime(const std::string& path, long long mtime_ns) {
  // Floor division: a time before the epoch keeps its nanoseconds in [0, 1e9).
  long long sec = mtime_ns / 1000000000LL, nsec = mtime_ns % 1000000000LL;
  if (nsec < 0) {
    nsec += 1000000000LL;
    --sec;
  }
  struct timespec times[2];
  times[0].tv_sec = 0;
  times[0].tv_nsec = UTIME_OMIT;
  times[1].tv_sec = static_cast<time_t>(sec);
  times[1].tv_nsec = static_cast<long>(nsec);
  if (::utimensat(AT_FDCWD, path.c_str(), times, 0) != 0) return errnoMessage(errno);
  return "";
}

}  // namespace foldfarm
