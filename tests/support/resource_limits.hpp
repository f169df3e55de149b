#pragma once
// Resource limits for the scope of a test, inherited by the commands it starts.
//
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

// An address-space limit (RLIMIT_AS): an allocation past it fails (std::bad_alloc) as it
// does on a node whose memory is spent, whatever the machine's overcommit policy.
class AddressSpaceLimit {
 public:
  explicit AddressSpaceLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_AS, &saved_);
    rlimit limited = saved_;
    limited.rlim_cur = bytes;
    ::setrlimit(RLIMIT_AS, &limited);
  }
  ~AddressSpaceLimit() { ::setrlimit(RLIMIT_AS, &saved_); }
  AddressSpaceLimit(const AddressSpaceLimit&) = delete;
  AddressSpaceLimit& operator=(const AddressSpaceLimit&) = delete;

 private:
  rlimit saved_{};
};

}  // namespace foldfarm::testing
