#pragma once
// A file-size limit (RLIMIT_FSIZE) for the scope of a test: writes past it fail with EFBIG
// ("File too large") as they would on a full or quota-bound file system, without root or a
// small mount. SIGXFSZ, which the kernel sends with the failure, is ignored meanwhile.
#include <signal.h>
#include <sys/resource.h>

namespace foldfarm::testing {

class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit limited = saved_;
    limited.rlim_cur = bytes;
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::setrlimit(RLIMIT_FSIZE, &limited);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  sighandler_t old_handler_ = SIG_DFL;
};

}  // namespace foldfarm::testing
