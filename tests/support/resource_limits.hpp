#pragma once
// Resource limits for the scope of a test, inherited by the commands it starts.
//
//   FileSizeLimit (RLIMIT_FSIZE): writes past it fail with EFBIG ("File too large") as they
//   would on a full or quota-bound file system, without root or a small mount. SIGXFSZ, which
//   the kernel sends with the failure, is ignored meanwhile.
//   AddressSpaceLimit (RLIMIT_AS): an allocation past it fails (std::bad_alloc) as it does on
//   a node whose memory is spent, whatever the machine's overcommit policy. (A sanitizer
//   build cannot start under it: its shadow memory is terabytes of address space.)
#include <signal.h>
#include <sys/resource.h>

namespace foldfarm::testing {

template <int Resource>
class ResourceLimit {
 public:
  explicit ResourceLimit(rlim_t value) {
    ::getrlimit(Resource, &saved_);
    rlimit limited = saved_;
    limited.rlim_cur = value;
    ::setrlimit(Resource, &limited);
  }
  ~ResourceLimit() { ::setrlimit(Resource, &saved_); }
  ResourceLimit(const ResourceLimit&) = delete;
  ResourceLimit& operator=(const ResourceLimit&) = delete;

 private:
  rlimit saved_{};
};

class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) : limit_(bytes) {}

 private:
  // Declared first, so destroyed last: the handler comes back after the limit is lifted.
  struct IgnoredSignal {
    sighandler_t old = ::signal(SIGXFSZ, SIG_IGN);
    ~IgnoredSignal() { ::signal(SIGXFSZ, old); }
  } ignored_;
  ResourceLimit<RLIMIT_FSIZE> limit_;
};

using AddressSpaceLimit = ResourceLimit<RLIMIT_AS>;

}  // namespace foldfarm::testing
